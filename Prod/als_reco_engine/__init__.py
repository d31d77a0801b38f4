"""ALS serving engine: fast top-k from an in-memory, hot-swapped item index; fold-in; lists."""

__all__ = ["RecoEngine", "create_app"]


def __getattr__(name: str):
    # imported on first use: `python -m Prod.als_reco_engine.main` warns (RuntimeWarning) when
    # the package has imported its main module already
    if name == "create_app":
        from Prod.als_reco_engine.main import create_app

        return create_app
    if name == "RecoEngine":
        from Prod.als_reco_engine.service import RecoEngine

        return RecoEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
