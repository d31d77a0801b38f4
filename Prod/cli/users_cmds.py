"""``reco users forget USER_ID``: erase a person, the code path of ``DELETE /api/v1/users/{id}``
(:func:`Prod.als_reco_engine.forget.forget_user`), straight against the stores."""

from __future__ import annotations

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, fail, run_reporting_errors
from Prod.common.schemas import ID_PATTERN, ID_RULE


def _render(result: dict) -> None:
    console.print(
        dict_table(
            {**result["postgres"], "redis user_factors": result["redis"]["user_factors"]},
            title=f"forgot user {result['user_id']}",
        )
    )
    versions = result["redis"]["model_versions"]
    console.print(f"model versions that held a factor: {', '.join(versions) or '-'}")
    if result["training_in_progress"]:
        console.print(
            "[yellow]a training run is in progress: it may publish this user's factor again; "
            "run the command again after it finishes[/]"
        )


def _forget(user_id: str) -> dict:
    from config import get_settings
    from Prod.als_reco_engine.forget import forget_user
    from Prod.als_reco_engine.profiles import ProfileInvalidations
    from Prod.common.db import get_engine
    from Prod.common.stores import get_redis

    settings = get_settings()
    # the running engines drop their cached profile and fold-in when told on this channel
    channel = ProfileInvalidations(settings.redis_url, lambda _: None)
    try:
        return forget_user(
            db=get_engine(settings.database_url),
            redis_client=get_redis(settings.redis_url),
            user_id=user_id,
            forget_cached=channel.publish,
        )
    finally:
        channel.stop()


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``reco users ...`` to ``reco``."""
    users_app = typer.Typer(help="Users: erase a person from every store.", no_args_is_help=True)
    app.add_typer(users_app, name="users")

    @users_app.command("forget")
    def forget(
        user_id: str = typer.Argument(..., help=f"The user to erase ({ID_RULE})."),
        as_json: bool = JsonOption,
    ) -> None:
        """Remove the user's interactions, served recommendations, stored list, suppressions,
        chat sessions and messages (one Postgres transaction), their factor in every stored
        model version (Redis) and the engines' cached profile; print what was removed."""
        import re

        if not re.match(ID_PATTERN, user_id):
            raise fail(f"user_id {user_id!r} is not a valid id: {ID_RULE}")
        emit(run_reporting_errors(lambda: _forget(user_id)), as_json, _render)
