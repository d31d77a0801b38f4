"""The ALS trainer service: ``python -m Prod.als_trainer.main`` (uvicorn on settings.trainer_port).

The lifespan starts the APScheduler job (every ``train_interval_minutes``; at once when no model is
active) and stops it on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from config import Settings, get_settings
from Prod.als_trainer.metrics import TRAINER_METRICS
from Prod.als_trainer.routes import health_router, router
from Prod.als_trainer.scheduler import TrainerRunner, TrainerScheduler
from Prod.common.api import (
    QUERY_RULE,
    attach_settings,
    install_error_handlers,
    install_metrics,
    install_offline_docs,
    install_request_guard,
)
from Prod.common.hub import prefer_offline_hub
from Prod.common.logs import configure_logging
from Prod.common.metrics import register_metrics


def create_app(settings: Settings | None = None, *, schedule: bool = True) -> FastAPI:
    """The trainer API. ``schedule=False`` serves the API without the interval job (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if schedule:
            app.state.scheduler = TrainerScheduler(app.state.settings, app.state.runner)
            app.state.scheduler.start()
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                app.state.scheduler.shutdown()

    app = FastAPI(
        title="ALS trainer",
        version="1.0",
        summary="Trains implicit ALS from Postgres and publishes versioned models to Redis+Chroma.",
        lifespan=lifespan,
        dependencies=[QUERY_RULE],  # an unknown query parameter is a 422 naming it
    )
    resolved = attach_settings(app, settings)
    app.state.runner = TrainerRunner(resolved)
    app.state.scheduler = None
    install_error_handlers(app)
    install_offline_docs(app)  # /docs and /redoc without a CDN
    install_request_guard(app)
    install_metrics(app, "als_trainer")
    register_metrics(app, *TRAINER_METRICS.collectors())
    app.include_router(health_router)
    app.include_router(router)
    return app


def main() -> None:
    import uvicorn

    prefer_offline_hub()
    settings = get_settings()
    configure_logging("als_trainer", settings.log_level)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.trainer_port, log_config=None
    )


if __name__ == "__main__":
    main()
