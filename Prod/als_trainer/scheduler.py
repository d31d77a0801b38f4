"""Who runs training when: one run at a time per process (a mutex) and across processes (the
Redis lock), in the background for ``POST /train``, on an APScheduler interval otherwise."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from config import Settings
from Prod.als_trainer.lock import TrainerLock
from Prod.als_trainer.publisher import new_version_id
from Prod.als_trainer.service import (
    RunResult,
    fail_dead_runs,
    run_training,
    running_run,
    skip_reason,
    store_errors,
)
from Prod.common import model_store
from Prod.common.errors import InfraError
from Prod.common.logs import get_logger
from Prod.common.stores import redis_for

log = get_logger(__name__)

JOB_ID = "als-retrain"


@dataclass(frozen=True)
class RunTicket:
    """Answer to "start a run": the run that is going now, and whether it was already going; or
    ``skipped`` (with the reason) when a non-forced request found nothing new."""

    version_id: str | None
    status: str
    already_running: bool
    started_at: datetime | None = None
    reason: str = ""
    data_watermark: int | None = None


@dataclass
class _Current:
    version_id: str
    started_at: datetime
    forced: bool
    stage: str = "starting"


class TrainerRunner:
    """Starts runs of :func:`run_training`, never two at once, and remembers the last outcome."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._mutex = threading.Lock()
        self._current: _Current | None = None
        self._thread: threading.Thread | None = None
        self.last_result: RunResult | None = None
        self.last_finished_at: datetime | None = None

    # --- starting -------------------------------------------------------------------------

    def _claim(self, force: bool) -> tuple[_Current, TrainerLock] | RunTicket:
        """Take the in-process slot and the Redis lock, or say which run holds them, or that a
        non-forced run has nothing new to train on. Dead runs (a trainer killed mid-run) are
        marked failed first and their lock removed. InfraError when Redis or Postgres is down."""
        with self._mutex:
            if self._current is not None:
                cur = self._current
                return RunTicket(cur.version_id, "running", True, cur.started_at)
            with store_errors():
                fail_dead_runs(self.settings)
                version = new_version_id()
                client = redis_for(self.settings)
                lock = TrainerLock(client, version, self.settings.train_lock_ttl_s)
                if not lock.acquire():  # another process is training (and alive)
                    other = running_run(self.settings) or {"version_id": None}
                    return RunTicket(other["version_id"], "running", True, other.get("started_at"))
                try:
                    reason, watermark = (None, None) if force else skip_reason(self.settings)
                except BaseException:
                    _release_quietly(lock)
                    raise
            if reason:
                _release_quietly(lock)
                log.info("training request skipped: %s", reason)
                return RunTicket(
                    None, "skipped", False, reason=f"skipped: {reason}", data_watermark=watermark
                )
            self._current = _Current(version, datetime.now(timezone.utc), force)
            return self._current, lock

    def start_background(self, *, force: bool = True, evaluate: bool = True) -> RunTicket:
        """Start a run in a thread; when one is going (here or elsewhere), report that one."""
        claimed = self._claim(force)
        if isinstance(claimed, RunTicket):
            return claimed
        current, lock = claimed
        self._thread = threading.Thread(
            target=self._execute, args=(current, lock, evaluate), name="als-train", daemon=True
        )
        self._thread.start()
        return RunTicket(current.version_id, "running", False, current.started_at)

    def run_now(self, *, force: bool = False, evaluate: bool = True) -> RunResult:
        """Run in this thread (the scheduler's job); ``locked`` when another run is going."""
        try:
            claimed = self._claim(force)
        except InfraError as exc:  # a store is down: this tick does nothing, the next one retries
            log.warning("scheduled run not started: %s", exc.message)
            return self._finish(RunResult("failed", None, error=exc.message))
        if isinstance(claimed, RunTicket):
            if claimed.status == "skipped":
                return self._finish(
                    RunResult(
                        "skipped",
                        None,
                        reason=claimed.reason,
                        data_watermark=claimed.data_watermark,
                    )
                )
            log.info("scheduled run not started: %s is running", claimed.version_id)
            return RunResult("locked", claimed.version_id, reason="another run is going")
        current, lock = claimed
        return self._execute(current, lock, evaluate)

    def _finish(self, result: RunResult) -> RunResult:
        with self._mutex:
            self.last_result = result
            self.last_finished_at = datetime.now(timezone.utc)
        return result

    def _execute(self, current: _Current, lock: TrainerLock, evaluate: bool) -> RunResult:
        try:
            result = run_training(
                self.settings,
                force=current.forced,
                evaluate=evaluate,
                version_id=current.version_id,
                lock=lock,
                on_stage=self._on_stage,
            )
        except Exception as exc:  # e.g. Postgres down before the run registered itself
            log.exception("training run %s crashed", current.version_id)
            _release_quietly(lock)
            result = RunResult("failed", current.version_id, error=f"{type(exc).__name__}: {exc}")
        with self._mutex:
            self._current = None
        return self._finish(result)

    def _on_stage(self, stage: str) -> None:
        current = self._current
        if current is not None:
            current.stage = stage

    # --- reading --------------------------------------------------------------------------

    def running(self) -> dict[str, Any] | None:
        current = self._current
        if current is None:
            return None
        return {
            "version_id": current.version_id,
            "stage": current.stage,
            "started_at": current.started_at,
            "forced": current.forced,
        }

    def last_check(self) -> dict[str, Any] | None:
        result = self.last_result
        if result is None:
            return None
        return {
            "status": result.status,
            "version_id": result.version_id,
            "reason": result.reason,
            "error": result.error,
            "finished_at": self.last_finished_at,
        }

    def wait(self, timeout_s: float = 120) -> RunResult | None:
        """Block until the background run (if any) ends; for commands and tests."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return self.last_result


def _release_quietly(lock: TrainerLock) -> None:
    try:
        lock.release()
    except Exception as exc:  # Redis gone meanwhile: the lock expires without a heartbeat
        log.warning("could not release the trainer lock: %s", exc)


def first_run_at(has_active_model: bool, now: datetime, interval_minutes: int) -> datetime:
    """At start-up: train right away when no model is published, else after one interval."""
    return now if not has_active_model else now + timedelta(minutes=interval_minutes)


class TrainerScheduler:
    """APScheduler interval job that calls :meth:`TrainerRunner.run_now` (not forced)."""

    def __init__(self, settings: Settings, runner: TrainerRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 600},
        )

    def _has_active_model(self) -> bool:
        try:
            return model_store.active_version(redis_for(self.settings)) is not None
        except Exception as exc:  # Redis down at start-up: try a run now; it will report why
            log.warning("cannot read the active model at start-up: %s", exc)
            return False

    def start(self) -> None:
        now = datetime.now(timezone.utc)
        interval = self.settings.train_interval_minutes
        self.scheduler.add_job(
            self.runner.run_now,
            "interval",
            minutes=interval,
            id=JOB_ID,
            next_run_time=first_run_at(self._has_active_model(), now, interval),
            kwargs={"force": False},
            replace_existing=True,
        )
        self.scheduler.start()
        log.info("scheduler started: every %d min, next run %s", interval, self.next_run_at())

    def next_run_at(self) -> datetime | None:
        job = self.scheduler.get_job(JOB_ID)
        return job.next_run_time if job else None

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
