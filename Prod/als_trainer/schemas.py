"""Request and response models of the trainer API (with OpenAPI examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_VERSION_EXAMPLE = "20250301T120000.123Z-3fa9c1"
_OLDER_EXAMPLE = "20250301T113000.001Z-aa11bb"


class TrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"force": True, "evaluate": True}]}
    )

    force: bool = Field(
        True,
        description="Train even when no interactions arrived since the "
        "last model (false = behave like a scheduled run).",
    )
    evaluate: bool = Field(True, description="Also fit on a holdout split and report metrics.")


TICKET_STARTED = {
    "version_id": _VERSION_EXAMPLE,
    "status": "running",
    "already_running": False,
    "started_at": "2025-03-01T12:00:00.123Z",
    "reason": "",
}
TICKET_RUNNING = {**TICKET_STARTED, "already_running": True}
TICKET_SKIPPED = {
    "version_id": None,
    "status": "skipped",
    "already_running": False,
    "started_at": None,
    "data_watermark": 120345,
    "reason": "skipped: no new interactions since watermark 120345",
}


class TrainTicket(BaseModel):
    """202 when this request started a run; 200 when one was already going (``already_running``)
    or when a non-forced request found nothing new to train on (``status: skipped``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [TICKET_STARTED]})

    version_id: str | None = Field(
        description="Run id = the model version it will publish; null when skipped."
    )
    status: str = Field(description="`running` or `skipped`.")
    already_running: bool
    started_at: datetime | None = None
    reason: str = Field("", description="Why the request was skipped.")
    data_watermark: int | None = Field(None, description="Newest interaction id (when skipped).")


class VersionInfo(BaseModel):
    """A model version from the Postgres registry."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version_id": _VERSION_EXAMPLE,
                    "status": "active",
                    "data_watermark": 120345,
                    "n_users": 2000,
                    "n_items": 500,
                    "n_interactions": 120345,
                    "metrics": {"ndcg@10": 0.31, "recall@10": 0.42, "popularity_ndcg@10": 0.12},
                    "durations": {"load": 0.2, "train": 1.4, "total": 2.6},
                }
            ]
        }
    )

    version_id: str
    status: str | None = None
    created_at: datetime | None = None
    trained_at: datetime | None = None
    activated_at: datetime | None = None
    data_watermark: int | None = None
    n_users: int | None = None
    n_items: int | None = None
    n_interactions: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    durations: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class RunningRun(BaseModel):
    version_id: str | None
    stage: str | None = Field(None, description="Current stage (only known in this process).")
    started_at: datetime | None = None
    forced: bool | None = None


class LastCheck(BaseModel):
    """Outcome of this process's latest run attempt, skips included."""

    status: str
    version_id: str | None = None
    reason: str = ""
    error: str | None = None
    finished_at: datetime | None = None


class TrainerStatus(BaseModel):
    active: VersionInfo | None
    previous: VersionInfo | None
    last_run: VersionInfo | None = Field(description="Newest finished run (active/retired/failed).")
    running: RunningRun | None
    next_run_at: datetime | None = Field(
        description="Next scheduled run; null when the scheduler is not running in this process."
    )
    interval_minutes: int
    last_check: LastCheck | None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"version": _OLDER_EXAMPLE}]}
    )

    version: str | None = Field(
        None,
        description="Version to re-activate; default: the recorded previous version.",
        max_length=64,
    )


class RollbackResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "active": _OLDER_EXAMPLE,
                    "previous": _VERSION_EXAMPLE,
                    "changed": True,
                    "rolled_back_from": _VERSION_EXAMPLE,
                    "message": f"rolled back from {_VERSION_EXAMPLE} to {_OLDER_EXAMPLE}",
                }
            ]
        }
    )

    active: str | None
    previous: str | None
    changed: bool = Field(
        description="False when the wanted version was already active (a "
        "repeated rollback changes nothing)."
    )
    rolled_back_from: str | None = Field(None, description="The version that was active before.")
    message: str


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    postgres: bool
    redis: bool
    scheduler: bool
