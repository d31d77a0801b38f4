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

_CONFLICT = {409: {"description": "No previous version to roll back to",
                   "content": {"application/json": {"example": error_body(
                       "conflict", "no previous model version to roll back to",
                       active="20250301T120000.123Z-3fa9c1")}}}}  # fmt: skip


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


@router.get("/status", response_model=schemas.TrainerStatus, summary="Models and runs")
def read_status(request: Request, settings: SettingsDep) -> schemas.TrainerStatus:
    """Active and previous version, last finished run, the run in progress, next scheduled run."""
    report = service.read_status(settings)
    runner, scheduler = _runner(request), _scheduler(request)
    running = runner.running() or report["running"]
    return schemas.TrainerStatus(
        active=report["active"], previous=report["previous"], last_run=report["last_run"],
        running=running and {k: running.get(k) for k in ("version_id", "stage", "started_at",
                                                         "forced")},
        next_run_at=scheduler.next_run_at() if scheduler else None,
        interval_minutes=settings.train_interval_minutes,
        last_check=runner.last_check(),
    )  # fmt: skip


@router.post(
    "/train",
    response_model=schemas.TrainTicket,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a training run in the background",
    responses={200: {"model": schemas.TrainTicket, "description": "A run was already going"}},
)
def create_training_run(
    request: Request, response: Response, body: schemas.TrainRequest | None = Body(None)
) -> schemas.TrainTicket:
    """Starts one run (forced by default) and returns its id; a second request while it runs
    returns the running one (200) instead of starting another."""
    body = body or schemas.TrainRequest()
    ticket = _runner(request).start_background(force=body.force, evaluate=body.evaluate)
    if ticket.already_running:
        response.status_code = status.HTTP_200_OK
    return schemas.TrainTicket(**ticket.__dict__)


@router.post("/rollback", response_model=schemas.RollbackResponse, responses=_CONFLICT,
             summary="Re-activate the previous model version")  # fmt: skip
def create_rollback(settings: SettingsDep) -> schemas.RollbackResponse:
    return schemas.RollbackResponse(**service.rollback(settings))
