"""``reco ingest postgres|chroma``, ``reco bench ingest`` and ``reco bench embed``: thin wrappers
over Prod/scripts and the embedding loader."""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, run_reporting_errors
from Prod.cli.servers import configured_or_temporary

DatasetOption = typer.Option(None, "--dataset", help="Canonical dataset folder (default: setting).")
SkipOption = typer.Option(False, "--skip-bad-rows", help="Load good rows, report skipped ones.")


def _render_postgres(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"postgres ingest of {result['dataset']}")
    for column in ("table", "inserted", "updated", "unchanged"):
        table.add_column(column)
    for name in ("users", "items", "interactions"):
        counts = result[name]
        table.add_row(name, *(str(counts[k]) for k in ("inserted", "updated", "unchanged")))
    console.print(table)
    for name, columns in result["kept_columns"].items():
        console.print(
            f"{name} has no {', '.join(columns)} column: stored values kept "
            "(--clear-column NAME clears one)"
        )
    if result["cleared_columns"]:
        console.print(f"cleared (set to NULL): {', '.join(result['cleared_columns'])}")
    if result["skipped_rows"]:
        console.print(f"[yellow]skipped {result['skipped_rows']} bad row(s):[/]")
        for line in result["bad_rows"][:20]:
            console.print(f"  {line}")
    console.print(f"done in {result['seconds']['total']} s")


def _render_chroma(result: dict) -> None:
    shown = {
        k: result[k]
        for k in (
            "collection",
            "added",
            "updated",
            "unchanged",
            "deleted",
            "kept_skipped",
            "embedded",
            "products_per_s",
            "skipped_rows",
        )
    }
    if result["deleted_ids"]:
        more = " ..." if result["deleted"] > len(result["deleted_ids"]) else ""
        shown["deleted_ids"] = ", ".join(result["deleted_ids"]) + more
    if result["deletes_held_back"]:
        shown["deletes_held_back"] = "a bad entry has no item_id: nothing deleted"
    shown["seconds"] = result["seconds"]["total"]
    console.print(dict_table(shown, title=f"chroma ingest of {result['dataset']}"))


# --- bench ----------------------------------------------------------------------------------


def _generate(folder: Path, n_interactions: int, n_products: int) -> dict:
    from Prod.common.data.generate import generate_dataset

    return generate_dataset(
        folder,
        n_users=max(100, n_interactions // 60),
        n_items=n_products,
        n_interactions=n_interactions,
        progress=True,
    )


def _postgres_cpu_s(pid: int | None) -> float:
    """CPU seconds of the postmaster and its children, living and reaped (Linux /proc)."""
    import os

    if pid is None:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for child in Path("/proc").iterdir():
        try:
            stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if child.name.isdigit() and int(stat[1]) == pid:
            total += int(stat[11]) + int(stat[12])
    return total / tick


@contextmanager
def _bench_database(database_url: str):
    """A scratch database on the same server (dropped after), so no real data is touched."""
    import os

    import psycopg
    from sqlalchemy.engine import make_url

    from Prod.common.db import migrate
    from Prod.common.ingest.postgres import psycopg_conninfo

    name = f"reco_bench_ingest_{os.getpid()}"
    admin = psycopg_conninfo(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = make_url(database_url).set(database=name).render_as_string(False)
    try:
        migrate(url)
        yield url
    finally:
        from Prod.common.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def _reset_tables(database_url: str) -> None:
    import psycopg

    from Prod.common.ingest.postgres import psycopg_conninfo

    with psycopg.connect(psycopg_conninfo(database_url), autocommit=True) as conn:
        conn.execute('truncate interaction, "user", item restart identity cascade')


def _bench_postgres(database_url: str, dataset: Path, repeats: int, postmaster: int | None) -> dict:
    from Prod.common.ingest.postgres import ingest_postgres

    fresh, rerun, cpu = [], [], []
    for _ in range(repeats):
        _reset_tables(database_url)
        cpu_before, client_before = _postgres_cpu_s(postmaster), time.process_time()
        report = ingest_postgres(database_url, dataset)
        cpu.append(_postgres_cpu_s(postmaster) - cpu_before + time.process_time() - client_before)
        fresh.append(report)
        rerun.append(ingest_postgres(database_url, dataset))
    rows = fresh[0].interactions.inserted
    total_s = statistics.median(r.seconds["total"] for r in fresh)
    return {
        "interactions": rows,
        "fresh_load_s": round(total_s, 3),
        "validate_s": round(statistics.median(r.seconds["validate"] for r in fresh), 3),
        "load_s": round(statistics.median(r.seconds["load"] for r in fresh), 3),
        "interactions_per_s": round(rows / total_s) if total_s else 0,
        "s_per_1m_interactions": round(total_s * 1_000_000 / rows, 3) if rows else None,
        "cpu_s_client_plus_server": round(statistics.median(cpu), 3),
        "rerun_s": round(statistics.median(r.seconds["total"] for r in rerun), 3),
        "rerun_inserted": rerun[-1].interactions.inserted,
        "repeats": repeats,
    }


def _bench_chroma(settings, dataset: Path, batch_size: int) -> dict:
    from Prod.common.embeddings import load_embedder
    from Prod.common.ingest.chroma import embedder_function, ingest_chroma
    from Prod.common.stores import chroma_for

    client = chroma_for(settings)
    name = f"bench-products-{int(time.time())}"
    model = load_embedder(settings.embedding_model)
    embed = embedder_function(model, batch_size)
    embed(["warm-up", "lazy initialisation"])  # the first calls pay for it
    try:
        cpu_before = time.process_time()
        first = ingest_chroma(
            client, dataset, embed, collection_name=name, embed_batch_size=batch_size
        )
        cpu_s = time.process_time() - cpu_before
        again = ingest_chroma(
            client, dataset, embed, collection_name=name, embed_batch_size=batch_size
        )
    finally:
        client.delete_collection(name)
    seconds = first.seconds
    return {
        "products": first.embedded,
        "products_per_s": round(first.products_per_s, 1),
        "embed_and_write_s": round(seconds["embed_and_write"], 3),
        # embedding alone, and what is left for Chroma (upserts, reads of stored hashes)
        "embed_s": round(seconds["embed"], 3),
        "write_s": round(seconds["embed_and_write"] - seconds["embed"], 3),
        # this process's CPU seconds (all threads): a rate a busy machine disturbs less
        "products_per_cpu_s": round(first.embedded / cpu_s, 1) if cpu_s > 0 else None,
        "embedder": first.embedder,
        "embed_workers": getattr(model, "workers", None),
        "embed_device": str(model.device),
        "rerun_s": round(again.seconds["total"], 3),
        "rerun_embedded": again.embedded,
        "batch_size": batch_size,
    }


def run_bench(n_interactions: int, n_products: int, repeats: int, batch_size: int) -> dict:
    """Generate a dataset in a temp folder, ingest it into a scratch Postgres database and a
    scratch Chroma collection (both removed after), report rates."""
    import os

    import torch

    from config import get_settings

    with tempfile.TemporaryDirectory(prefix="reco-bench-ingest-") as tmp:
        workdir = Path(tmp)
        dataset = workdir / "dataset"
        generated = _generate(dataset, n_interactions, n_products)
        with configured_or_temporary(get_settings(), workdir) as (settings, which):
            from Prod.common.supervisor import LocalInfra

            postgres_pid = LocalInfra.from_settings(settings).servers[0].pid()
            with _bench_database(settings.database_url) as database_url:
                postgres = _bench_postgres(database_url, dataset, repeats, postgres_pid)
            result = {
                "servers": which,
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "torch_threads": torch.get_num_threads(),
                "dataset": {k: generated.get(k) for k in ("users", "items", "interactions")},
                "postgres": postgres,
                "chroma": _bench_chroma(settings, dataset, batch_size),
            }
            result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
            return result


def _product_texts(dataset: Path | None, n_products: int) -> list[str]:
    """What the Chroma ingest embeds of the first ``n_products`` products of ``dataset``'s
    ProductsRAG.json, or of a freshly generated catalogue."""
    from Prod.common.data.canonical import embedding_text
    from Prod.common.ingest.validate import read_products

    if dataset is None:
        with tempfile.TemporaryDirectory(prefix="reco-bench-embed-") as tmp:
            _generate(Path(tmp), 1_000, n_products)
            return _product_texts(Path(tmp), n_products)
    products = read_products(Path(dataset)).products[:n_products]
    return [embedding_text(product.text) for product in products]


def _time_embedding(model, texts: list[str], repeats: int) -> tuple[np.ndarray, float, float]:
    """Vectors, median wall seconds and median process CPU seconds of embedding ``texts``."""
    from Prod.common.embeddings import embed_texts

    embed_texts(model, ["warm-up", "lazy initialisation"])  # the first calls pay for it
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        vectors = embed_texts(model, texts)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return vectors, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def run_embed_bench(
    n_products: int, backends: list[str], repeats: int, dataset: Path | None
) -> dict:
    """Embed the same product texts with each CPU backend (and on the GPU when torch sees one):
    products/s, products per CPU-second and cosine to torch fp32 on the CPU (the reference)."""
    import os

    import torch

    from config import get_settings
    from Prod.common.embeddings import BACKENDS, embed_texts, load_embedder, resolve_device
    from Prod.common.errors import InvalidInput

    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise InvalidInput(
            f"unknown embedding backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}"
        )
    configured = get_settings().embedding_model
    texts = _product_texts(dataset, n_products)
    reference_model = load_embedder(configured, "cpu", "torch")
    reference = embed_texts(reference_model, texts)
    limit = reference_model.max_seq_length
    tokens = reference_model.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    targets = [("cpu", backend) for backend in backends]
    gpu = resolve_device("auto")
    if gpu != "cpu":
        targets.append((gpu, "torch"))
    rows = []
    load_before = os.getloadavg()[0]
    for device, backend in targets:
        model = load_embedder(configured, device, backend)
        vectors, wall_s, cpu_s = _time_embedding(model, texts, repeats)
        cosine = (vectors * reference).sum(axis=1)
        rows.append(
            {
                "backend": backend,
                "device": device,
                "embedder": model.embedder_id,
                # ONNX: texts side by side, one thread each; torch: one batch over all threads
                "threads": getattr(model, "workers", None) or torch.get_num_threads(),
                "products_per_s": round(len(texts) / wall_s, 1),
                "products_per_cpu_s": round(len(texts) / cpu_s, 1) if cpu_s > 0 else None,
                "seconds": round(wall_s, 3),
                "cosine_to_fp32_mean": round(float(cosine.mean()), 4),
                "cosine_to_fp32_min": round(float(cosine.min()), 4),
            }
        )
    return {
        "products": len(texts),
        "mean_tokens": round(float(np.mean([len(ids) for ids in tokens])), 1),
        "repeats": repeats,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "backends": rows,
    }


def _render_embed_bench(result: dict) -> None:
    from rich.table import Table

    table = Table(
        title=f"embedding {result['products']} products ({result['mean_tokens']} tokens on average)"
    )
    columns = (
        "backend",
        "device",
        "threads",
        "products_per_s",
        "products_per_cpu_s",
        "cosine_to_fp32_mean",
        "cosine_to_fp32_min",
    )
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in result["backends"]:
        table.add_row(*(str(row[column]) for column in columns))
    console.print(table)
    load = f"{result['load_avg_1m']} -> {result['load_avg_1m_after']}"
    console.print(
        f"median of {result['repeats']} run(s); {result['cpus']} CPUs, load {load}", style="dim"
    )


def _render_bench(result: dict) -> None:
    console.print(
        dict_table(
            {k: v for k, v in result.items() if k not in ("postgres", "chroma")},
            title="bench ingest",
        )
    )
    console.print(dict_table(result["postgres"], title="postgres"))
    console.print(dict_table(result["chroma"], title="chroma (MiniLM)"))


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco ingest postgres|chroma``, ``reco bench ingest`` and ``reco bench embed``."""
    ingest_app = typer.Typer(
        help="One-shot ingest jobs (same code as Prod/scripts).", no_args_is_help=True
    )
    app.add_typer(ingest_app, name="ingest")

    @ingest_app.command("postgres")
    def ingest_postgres_cmd(
        dataset: Path = DatasetOption,
        skip_bad_rows: bool = SkipOption,
        clear_columns: list[str] = typer.Option(
            [],
            "--clear-column",
            metavar="NAME",
            help="Set an optional column absent from users.csv/items.csv to NULL (repeat); "
            "without it an absent column keeps the stored values.",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Load users, items, interactions into PostgreSQL (one transaction, idempotent)."""
        from config import get_settings
        from Prod.scripts.ingest_postgres_db import run

        report = run_reporting_errors(
            lambda: run(
                get_settings(), dataset, skip_bad_rows=skip_bad_rows, clear_columns=clear_columns
            )
        )
        emit(report.to_dict(), as_json, _render_postgres)

    @ingest_app.command("chroma")
    def ingest_chroma_cmd(
        dataset: Path = DatasetOption,
        skip_bad_rows: bool = SkipOption,
        batch_size: int = typer.Option(None, "--batch-size", help="Texts embedded per batch."),
        max_delete_share: float = typer.Option(
            None,
            "--max-delete-share",
            min=0.0,
            max=1.0,
            help="Largest share of the stored catalogue a run may delete (default: setting, 0.2).",
        ),
        allow_mass_delete: bool = typer.Option(
            False, "--allow-mass-delete", help="Delete every stored product missing from the file."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Embed new/changed products into Chroma, delete removed ones (refuses to delete more
        than a share of the catalogue unless --allow-mass-delete)."""
        from config import get_settings
        from Prod.scripts.ingest_chroma_db import run

        report = run_reporting_errors(
            lambda: run(
                get_settings(),
                dataset,
                skip_bad_rows=skip_bad_rows,
                batch_size=batch_size,
                max_delete_share=max_delete_share,
                allow_mass_delete=allow_mass_delete,
            )
        )
        emit(report.to_dict(), as_json, _render_chroma)

    @bench_app.command("ingest")
    def bench_ingest(
        interactions: int = typer.Option(
            1_000_000, "--interactions", min=1, help="Interactions in the generated dataset."
        ),
        products: int = typer.Option(
            2000, "--products", min=1, help="Products in the generated dataset (embedded)."
        ),
        repeats: int = typer.Option(3, "--repeats", min=1, help="Postgres loads (median)."),
        batch_size: int = typer.Option(
            256, "--batch-size", min=1, help="Texts embedded per batch."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Ingest throughput: fresh load into Postgres and MiniLM embedding into Chroma."""
        result = run_reporting_errors(
            lambda: run_bench(interactions, products, repeats, batch_size)
        )
        emit(result, as_json, _render_bench)

    @bench_app.command("embed")
    def bench_embed(
        products: int = typer.Option(500, "--products", min=1, help="Products embedded per run."),
        backends: list[str] = typer.Option(
            ["torch", "onnx", "onnx-int8"], "--backend", help="CPU backends to compare (repeat)."
        ),
        repeats: int = typer.Option(3, "--repeats", min=1, help="Runs per backend (median)."),
        dataset: Path = typer.Option(
            None,
            "--dataset",
            help="Canonical dataset whose products to embed (default: a "
            "freshly generated catalogue).",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Products/s, products per CPU-second and cosine to fp32 of each embedding backend on
        the same texts (plus torch on the GPU when there is one). No servers needed."""
        result = run_reporting_errors(lambda: run_embed_bench(products, backends, repeats, dataset))
        emit(result, as_json, _render_embed_bench)
