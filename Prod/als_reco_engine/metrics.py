"""The serving engine's domain metrics.

Request path (pre-bound children, one ``inc``/``observe`` each):
``reco_recommendations_total{strategy="als|fold_in|popular"}`` (both the fast path and the route
call :meth:`RecoEngine.recommend`, which counts) and ``reco_fold_in_duration_seconds`` (solves
only; cache hits are not timed). Read at scrape time (:class:`ModelCollector`):
``reco_model_info{version}``, ``reco_model_age_seconds``, ``reco_model_items``,
``reco_popularity_items``. The history writer's ``reco_history_rows_*`` come from
:class:`Prod.als_reco_engine.history.HistoryCollector`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from Prod.als_reco_engine.service import RecoEngine

# a fold-in is a (dim, dim) solve: ~0.1 ms at dim 64, tens of ms for a long history at dim 256
FOLD_IN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class RecoMetrics:
    """Counters and histograms the request path updates (registered by ``main.create_app``)."""

    def __init__(self, strategies: Sequence[str]) -> None:
        self.recommendations = Counter(
            "reco_recommendations",
            "Recommendation lists served, by strategy",
            ["strategy"],
            registry=None,
        )
        self.served = {s: self.recommendations.labels(strategy=s) for s in strategies}
        self.fold_in_seconds = Histogram(
            "reco_fold_in_duration_seconds",
            "Fold-in solves of a user factor",
            buckets=FOLD_IN_BUCKETS,
            registry=None,
        )

    def collectors(self) -> tuple[Counter, Histogram]:
        return self.recommendations, self.fold_in_seconds


class ModelCollector:
    """The active model as the engine holds it, read when Prometheus scrapes."""

    def __init__(self, engine: RecoEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        index = self._engine.holder.current
        info = GaugeMetricFamily(
            "reco_model_info",
            "Model version being served (1; none while unpublished)",
            labels=["version"],
        )
        if index is not None:
            info.add_metric([index.version], 1.0)
        yield info
        yield GaugeMetricFamily(
            "reco_model_items",
            "Items in the served model's index",
            value=len(index) if index is not None else 0,
        )
        age = GaugeMetricFamily(
            "reco_model_age_seconds", "Seconds since the served model was trained"
        )
        if index is not None:
            age.add_metric([], _age_seconds(index.meta.trained_at, index.loaded_at))
        yield age
        popularity = self._engine.popularity.current
        yield GaugeMetricFamily(
            "reco_popularity_items",
            "Items in the popularity table (cold-start fallback)",
            value=len(popularity.catalogue) if popularity is not None else 0,
        )


def _age_seconds(trained_at: str, loaded_at: datetime) -> float:
    """Age from the meta's ISO ``trained_at``; the load time when the meta has none."""
    try:
        born = datetime.fromisoformat(trained_at)
    except ValueError:
        born = loaded_at
    if born.tzinfo is None:
        born = born.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - born).total_seconds())
