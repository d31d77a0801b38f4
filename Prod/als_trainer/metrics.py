"""The trainer's domain metrics, recorded by :func:`Prod.als_trainer.service.run_training` at the
end of every run (one set per process: the service's scheduled and requested runs share it).

``reco_trainer_runs_total{status}``, ``reco_trainer_last_run_status{status}`` (1 for the last
run's status), ``reco_trainer_last_run_timestamp_seconds``; of the last run that trained
(``active`` or ``failed``): ``reco_trainer_last_run_stage_duration_seconds{stage}``,
``reco_trainer_last_run_duration_seconds`` and ``reco_trainer_last_run_ndcg_at_10`` (holdout
nDCG@10; absent when the run did not evaluate).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from Prod.common.metrics import one_hot

if TYPE_CHECKING:
    from Prod.als_trainer.service import RunResult

RUN_STATUSES = ("active", "skipped", "locked", "failed")
NDCG_KEY = "ndcg@10"


class TrainerMetrics:
    """Run counters plus the last run, exposed through :meth:`collect` (a collector)."""

    def __init__(self) -> None:
        self.runs = Counter(
            "reco_trainer_runs", "Training runs by outcome", ["status"], registry=None
        )
        for status in RUN_STATUSES:
            self.runs.labels(status=status)  # every series exists from the start
        self._status: str | None = None
        self._finished_at: float | None = None
        self._durations: dict[str, float] = {}
        self._ndcg: float | None = None

    def record_run(self, result: RunResult) -> RunResult:
        """Count ``result`` and keep its figures; returns it."""
        self.runs.labels(status=result.status).inc()
        self._status, self._finished_at = result.status, time.time()
        if result.durations:  # it trained (a skipped or locked run leaves the last figures)
            self._durations = dict(result.durations)
            ndcg = result.metrics.get(NDCG_KEY)
            self._ndcg = float(ndcg) if ndcg is not None else None
        return result

    def collectors(self) -> tuple[Counter, TrainerMetrics]:
        return self.runs, self

    def collect(self) -> Iterator[Metric]:
        yield one_hot(
            "reco_trainer_last_run_status",
            "Outcome of the last training run (1)",
            "status",
            self._status,
            RUN_STATUSES,
        )
        finished = GaugeMetricFamily(
            "reco_trainer_last_run_timestamp_seconds", "Unix time the last training run ended"
        )
        stages = GaugeMetricFamily(
            "reco_trainer_last_run_stage_duration_seconds",
            "Seconds each stage of the last run that trained took",
            labels=["stage"],
        )
        total = GaugeMetricFamily(
            "reco_trainer_last_run_duration_seconds", "Seconds the last run that trained took"
        )
        ndcg = GaugeMetricFamily(
            "reco_trainer_last_run_ndcg_at_10", "Holdout nDCG@10 of the last run that evaluated"
        )
        if self._finished_at is not None:
            finished.add_metric([], self._finished_at)
        for stage, seconds in self._durations.items():
            if stage == "total":
                total.add_metric([], seconds)
            else:
                stages.add_metric([stage], seconds)
        if self._ndcg is not None:
            ndcg.add_metric([], self._ndcg)
        yield from (finished, stages, total, ndcg)


TRAINER_METRICS = TrainerMetrics()
