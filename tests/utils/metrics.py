"""Read one sample out of a ``/metrics`` page (Prometheus text format)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(page: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` whose labels include ``labels``; None when there is none."""
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def by_label(page: str, name: str, label: str) -> dict[str, float]:
    """Every sample named ``name``: its ``label`` -> value."""
    return {
        s.labels[label]: s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == name
    }
