"""The stores a command needs: the configured ones when they answer, else temporary ones.

Shared by the commands that only read or write scratch data (``reco bench ingest``,
``reco eval chat``, ``reco bench chat``); commands that change the platform's own data
(``reco train``, ``reco ingest ...``) never start servers: they report which store to start.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from Prod.cli.output import err_console


@contextmanager
def configured_or_temporary(settings, workdir: Path | None = None) -> Iterator[tuple[object, str]]:
    """Yield ``(settings, "configured")`` when the configured PostgreSQL, Redis and Chroma all
    answer, else ``(settings pointing at temporary servers, "temporary")``: fresh servers on free
    ports in a temp folder (``workdir`` or a new one), schema migrated, stopped and removed
    after."""
    from Prod.common.db import get_engine, migrate
    from Prod.orchestrate.local_infra import LocalInfra, free_port

    configured = LocalInfra.from_settings(settings)
    if all(row["healthy"] for row in configured.status().values()):
        yield settings, "configured"
        return
    with tempfile.TemporaryDirectory(prefix="reco-servers-") as tmp:
        folder = Path(workdir or tmp) / "infra"
        temporary = LocalInfra(folder, free_port(), free_port(), free_port())
        err_console.print(  # stderr: --json output stays pure JSON
            "configured servers not running: starting temporary ones "
            f"(PostgreSQL {temporary.postgres_port}, Redis {temporary.redis_port}, "
            f"Chroma {temporary.chroma_port}; removed after)",
            style="dim",
        )
        overridden = settings.model_copy(update=temporary.settings_overrides())
        try:
            temporary.up(timeout_s=120)
            migrate(overridden.database_url)
            yield overridden, "temporary"
        finally:
            get_engine(overridden.database_url).dispose()
            temporary.down()


def with_servers(run, *args) -> dict:
    """``run(settings, *args)`` against the configured stores, or temporary ones started (and
    removed) for this run when the configured ones do not answer; the report says which."""
    from config import get_settings

    with configured_or_temporary(get_settings()) as (settings, which):
        return {**run(settings, *args), "servers": which}
