"""Conversational recommender: RAG with filters, reranking, ALS personalisation, Ollama LLM."""

__all__ = ["create_app"]


def __getattr__(name: str):
    # imported on first use: `python -m Prod.chat_reco_engine.main` warns (RuntimeWarning) when
    # the package has imported its main module already
    if name == "create_app":
        from Prod.chat_reco_engine.main import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
