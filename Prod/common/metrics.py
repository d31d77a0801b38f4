"""Helpers for the services' domain metrics on ``/metrics`` (beside the HTTP ones of
:func:`Prod.common.api.install_metrics`).

Each service defines its metrics in its own ``metrics.py``: counters and histograms the request
path updates through pre-bound children, and collectors that read state (model version, reranker
state, last training run) only when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["one_hot", "register_metrics"]


def register_metrics(app: FastAPI, *collectors: Collector) -> None:
    """Add ``collectors`` to the registry ``/metrics`` renders, replacing those a previous call
    registered for ``app`` (a lifespan that runs again must not register names twice)."""
    registry = app.state.metrics_registry
    for old in getattr(app.state, "domain_collectors", ()):
        registry.unregister(old)
    for collector in collectors:
        registry.register(collector)
    app.state.domain_collectors = collectors


def one_hot(
    name: str, documentation: str, label: str, value: str | None, choices: Iterable[str]
) -> GaugeMetricFamily:
    """A gauge with one series per choice: 1 for ``value``, 0 for the others (a state as
    Prometheus expects it: the series exist before the state is ever entered)."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for choice in choices:
        family.add_metric([choice], 1.0 if choice == value else 0.0)
    return family
