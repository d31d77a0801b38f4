"""HTTP routes of the trainer: thin (parse -> one service call -> schema)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request, Response, status
from sqlalchemy import text

from Prod.als_trainer import schemas, service
from Prod.als_trainer.scheduler import TrainerRunner, TrainerScheduler
from Prod.common.api import SettingsDep, error_body, require_api_key
from Prod.common.db import get_engine
from Prod.common.stores import redis_for

health_router = APIRouter(tags=["ops"])
router = APIRouter(prefix="/api/v1", tags=["trainer"], dependencies=[Depends(require_api_key)])

_UNAVAILABLE = {
    503: {
        "description": "Redis or Postgres is down (`store` names it); nothing was changed",
        "content": {
            "application/json": {
                "example": error_body(
                    "infra_error",
                    "PostgreSQL is unavailable (the model registry); try again shortly",
                    store="postgres",
                )
            }
        },
    }
}
_CONFLICT = {
    409: {
        "description": "No previous version to roll back to, the version is not "
        "published, or the pointers moved meanwhile",
        "content": {
            "application/json": {
                "example": error_body(
                    "conflict",
                    "no previous model version to roll back to",
                    active="20250301T120000.123Z-3fa9c1",
                )
            }
        },
    }
}
_TRAIN_200 = {
    200: {
        "model": schemas.TrainTicket,
        "description": "A run was already going (`already_running: true`), or, with "
        "`force: false`, nothing new to train on (`status: skipped`, no version)",
        "content": {
            "application/json": {
                "examples": {
                    "already_running": {"value": schemas.TICKET_RUNNING},
                    "skipped": {"value": schemas.TICKET_SKIPPED},
                }
            }
        },
    }
}


def _runner(request: Request) -> TrainerRunner:
    return request.app.state.runner


def _scheduler(request: Request) -> TrainerScheduler | None:
    return request.app.state.scheduler


def _reachable(check) -> bool:
    try:
        check()
        return True
    except Exception:
        return False


@health_router.get("/health", response_model=schemas.Health, summary="Liveness and store checks")
def read_health(request: Request, settings: SettingsDep, response: Response) -> schemas.Health:
    def ping_pg() -> None:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("select 1"))

    scheduler = _scheduler(request)
    health = schemas.Health(
        status="ok",
        postgres=_reachable(ping_pg),
        redis=_reachable(lambda: redis_for(settings).ping()),
        scheduler=bool(scheduler and scheduler.scheduler.running),
    )
    if not (health.postgres and health.redis):
        health.status = "degraded"
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return health


@router.get(
    "/status",
    response_model=schemas.TrainerStatus,
    summary="Models and runs",
    responses=_UNAVAILABLE,
)
def read_status(request: Request, settings: SettingsDep) -> schemas.TrainerStatus:
    """Active and previous version, last finished run, the run in progress, next scheduled run."""
    report = service.read_status(settings)
    runner, scheduler = _runner(request), _scheduler(request)
    running = runner.running() or report["running"]
    return schemas.TrainerStatus(
        active=report["active"],
        previous=report["previous"],
        last_run=report["last_run"],
        running=running
        and {k: running.get(k) for k in ("version_id", "stage", "started_at", "forced")},
        next_run_at=scheduler.next_run_at() if scheduler else None,
        interval_minutes=settings.train_interval_minutes,
        last_check=runner.last_check(),
    )


@router.post(
    "/train",
    response_model=schemas.TrainTicket,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a training run in the background",
    responses={**_TRAIN_200, **_UNAVAILABLE},
)
def create_training_run(
    request: Request, response: Response, body: schemas.TrainRequest | None = Body(None)
) -> schemas.TrainTicket:
    """Starts one run (forced by default) and returns its id (202). A request while a run is going
    returns the running one (200) instead of starting another; a run whose trainer died (no lock
    heartbeat) is marked failed first, never reported as running. With `force: false` and no
    interaction since the newest model, nothing starts: 200 with `status: skipped` and the reason
    ("skipped: no new interactions since watermark N")."""
    body = body or schemas.TrainRequest()
    ticket = _runner(request).start_background(force=body.force, evaluate=body.evaluate)
    if ticket.already_running or ticket.status == "skipped":
        response.status_code = status.HTTP_200_OK
    return schemas.TrainTicket(**ticket.__dict__)


@router.post(
    "/rollback",
    response_model=schemas.RollbackResponse,
    responses={**_CONFLICT, **_UNAVAILABLE},
    summary="Re-activate the previous (or a given) model version",
)
def create_rollback(
    settings: SettingsDep, body: schemas.RollbackRequest | None = Body(None)
) -> schemas.RollbackResponse:
    """Re-activates `version` (default: the recorded previous version) and says which. Repeating
    it changes nothing (`changed: false`): the version rolled back from is marked `rolled_back`,
    and a rollback onto it needs its `version` named. Registry and Redis pointer change together
    or not at all; 503 when either store is down."""
    version = body.version if body else None
    return schemas.RollbackResponse(**service.rollback(settings, version))
