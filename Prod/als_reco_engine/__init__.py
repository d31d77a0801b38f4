"""ALS serving engine: fast top-k from an in-memory, hot-swapped item index; fold-in; lists."""

from Prod.als_reco_engine.main import create_app
from Prod.als_reco_engine.service import RecoEngine

__all__ = ["RecoEngine", "create_app"]
