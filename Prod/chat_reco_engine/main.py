"""The conversational recommender service: ``python -m Prod.chat_reco_engine.main``."""

from __future__ import annotations

from contextlib import asynccontextmanager

from Prod.common.hub import prefer_offline_hub

prefer_offline_hub()  # before the models' libraries read it; an explicit 0 is kept

from fastapi import FastAPI  # noqa: E402

from config import Settings  # noqa: E402
from Prod.chat_reco_engine.routes import health_router, router  # noqa: E402
from Prod.chat_reco_engine.service import ChatEngine  # noqa: E402
from Prod.common.api import (  # noqa: E402
    QUERY_RULE,
    attach_settings,
    install_error_handlers,
    install_metrics,
    install_offline_docs,
    install_request_guard,
)
from Prod.common.logs import configure_logging  # noqa: E402
from Prod.common.metrics import register_metrics  # noqa: E402

DESCRIPTION = """Conversational product recommender (RAG): filters read from the text, semantic
retrieval from Chroma, cross-encoder reranking, ALS-personalised ranking, answers by Mistral via
Ollama (grounded template when the LLM is unavailable), history in PostgreSQL.

Ranking: `score = (1 - w) * relevance + w * affinity`, both min-max scaled over the candidates,
`w = PERSONALISATION_WEIGHT` (default 0.3); without an ALS factor for the user, relevance only."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The chat API; models load in the background at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine.start()
        yield

    app = FastAPI(
        title="chat_reco_engine",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[QUERY_RULE],  # an unknown query parameter is a 422 naming it
    )
    resolved = attach_settings(app, settings)
    app.state.engine = ChatEngine(resolved)
    install_error_handlers(app)
    install_offline_docs(app)  # /docs and /redoc without a CDN
    install_request_guard(app)
    install_metrics(app, "chat_reco_engine")
    engine = app.state.engine
    register_metrics(app, *engine.metrics.collectors(), *engine.wish.metrics.collectors())
    app.include_router(health_router)
    app.include_router(router)
    return app


def main() -> None:
    from config import get_settings

    settings = get_settings()
    configure_logging("chat_reco_engine", settings.log_level)
    import uvicorn

    # log_config=None: uvicorn's own lines go through configure_logging's handler (LOG_FORMAT)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.chat_port, log_config=None)


if __name__ == "__main__":
    main()
