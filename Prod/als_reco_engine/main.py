"""The ALS serving engine: ``python -m Prod.als_reco_engine.main`` (port ``settings.reco_port``)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from config import Settings
from Prod.als_reco_engine.catalogue_routes import catalogue_router
from Prod.als_reco_engine.fast_path import RecommendFastPath
from Prod.als_reco_engine.history import HistoryCollector
from Prod.als_reco_engine.metrics import ModelCollector
from Prod.als_reco_engine.routes import RECOMMEND_ROUTE_NAME, health_router, router
from Prod.als_reco_engine.service import RecoEngine
from Prod.common.api import (
    QUERY_RULE,
    attach_settings,
    install_error_handlers,
    install_metrics,
    install_offline_docs,
    install_request_guard,
)
from Prod.common.logs import configure_logging, get_logger
from Prod.common.metrics import register_metrics

log = get_logger("Prod.als_reco_engine.main")  # not __main__ under `python -m`

DESCRIPTION = """Fast ALS recommendations: an in-memory item index of the active model version
(hot-swapped when the trainer publishes), real-time fold-in for new users and fresh events,
popularity for users with no history. Send `X-API-Key` when the service is configured with one."""


def create_app(
    settings: Settings | None = None,
    *,
    poll_interval_s: float = 1.0,
    popularity_interval_s: float = 60.0,
    profile_ttl_s: float = 60.0,
) -> FastAPI:
    """The serving app; its engine starts (loads the active model) with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = RecoEngine(
            app.state.settings,
            poll_interval_s=poll_interval_s,
            popularity_interval_s=popularity_interval_s,
            profile_ttl_s=profile_ttl_s,
        )
        engine.start()
        app.state.engine = engine
        _log_ready(engine)
        register_metrics(
            app,
            *engine.metrics.collectors(),
            ModelCollector(engine),
            HistoryCollector(engine.history),
        )
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(
        title="als_reco_engine",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[QUERY_RULE],  # an unknown query parameter is a 422 naming it
    )
    attach_settings(app, settings)
    install_error_handlers(app)
    install_offline_docs(app)  # /docs and /redoc without a CDN
    # added before the guard and the metrics middleware: metrics (outermost) count fast
    # responses too, and the guard's key and body-size rules apply to the fast path as well
    app.add_middleware(RecommendFastPath, router=router, route_name=RECOMMEND_ROUTE_NAME)
    install_request_guard(app)
    install_metrics(app, "als_reco_engine")
    app.include_router(health_router)
    app.include_router(router)
    app.include_router(catalogue_router)
    return app


def _log_ready(engine: RecoEngine) -> None:
    """One start-up line: what is served and by which strategies."""
    report = engine.status()
    model = report["model_version"] or "none yet (popularity until the trainer publishes one)"
    usable = [name for name, ok in report["strategies"].items() if ok] or ["none"]
    popular = (report["popularity"] or {}).get("items", 0)
    log.info(
        "ready: model %s, %d items; strategies %s; %d popular items; stores %s",
        model,
        report["item_count"],
        ", ".join(usable),
        popular,
        ", ".join(f"{name} {'up' if up else 'DOWN'}" for name, up in report["stores"].items()),
    )


def serving_app() -> FastAPI:
    """The app as a server process runs it (also each uvicorn worker's factory): settings from
    the environment, one BLAS/torch thread."""
    import threadpoolctl
    import torch

    from config import get_settings

    settings = get_settings()
    configure_logging("als_reco_engine", settings.log_level)
    # one request = one small mat-vec and a tiny fold-in solve: BLAS/torch worker threads only
    # spin against the request loop on a small machine (measured: 8 ms vs 1 ms CPU a request)
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)
    return create_app(settings)


def main() -> None:
    import uvicorn

    from config import get_settings

    settings = get_settings()
    configure_logging("als_reco_engine", settings.log_level)
    options = dict(
        host=settings.host,
        port=settings.reco_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's own lines go through configure_logging's handler (LOG_FORMAT)
        access_log=False,
        server_header=False,  # fewer bytes to build and send per response
        **_fast_server_options(),
    )
    if settings.reco_workers > 1:
        uvicorn.run(
            "Prod.als_reco_engine.main:serving_app",
            factory=True,
            workers=settings.reco_workers,
            # a worker imports torch before it answers the supervisor's first ping: seconds on
            # a busy machine, and uvicorn's default 5 s restarts it over and over
            timeout_worker_healthcheck=60,
            **options,
        )
    else:
        uvicorn.run(serving_app(), **options)


def _fast_server_options() -> dict:
    """uvloop + httptools when installed (both are dependencies; plain asyncio otherwise)."""
    options = {}
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:
        pass
    return options


if __name__ == "__main__":
    main()
