"""A/B test of two model versions: the contract between ``reco ab start|stop`` (writer), the
engines (serve it), the trainer (keeps its version) and ``reco report ab`` (reads it).

Redis key ``reco:{experiment}:current`` holds the running or last experiment as one JSON document
(:class:`Experiment`); ``reco:{experiment}:all`` keeps every one by id for later reports (one hash
tag: both are written in one MULTI/EXEC, one slot on a Redis Cluster). Arm A is
the active version (the control follows what the trainer publishes); arm B is the pinned
``version_b``. A user is in arm B when ``blake2b("{experiment_id}:{user_id}")``, read as a
number in [0, 1), is below ``share_b``: stable for the experiment, disjoint, and reshuffled by
a new experiment id. The hot path pays one 8-byte hash (~0.5 us), no store access: engines poll
the key with the active pointer.

Redis rather than settings (``AB_VERSION_B``): every replica, the trainer's pruning and the
report read one document, and starting or stopping needs no restart.

Upgrade: the keys were ``reco:experiment`` / ``reco:experiments``; on a standalone Redis the
readers fall back to them while the new ones are absent, so an experiment running across the
upgrade keeps being served and its version kept; the next start or stop writes the new keys.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from Prod.common import model_store
from Prod.common.errors import Conflict, InvalidInput, NotFound
from Prod.common.stores import is_cluster

EXPERIMENT_KEY = "reco:{experiment}:current"
EXPERIMENTS_KEY = "reco:{experiment}:all"  # hash: experiment_id -> JSON, every experiment started
LEGACY_EXPERIMENT_KEY, LEGACY_EXPERIMENTS_KEY = "reco:experiment", "reco:experiments"
ARM_A, ARM_B = "a", "b"
_SCALE = float(2**64)


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    version_b: str
    share_b: float
    started_at: str  # ISO-8601 UTC
    stopped_at: str | None = None
    version_a_at_start: str | None = None  # the active version when it started (for the record)

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Experiment:
        return cls(**json.loads(raw))


def bucket(experiment_id: str, user_id: str) -> float:
    """The user's position in [0, 1) for this experiment (uniform, stable)."""
    digest = hashlib.blake2b(f"{experiment_id}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def arm_of(experiment: Experiment, user_id: str) -> str:
    return ARM_B if bucket(experiment.experiment_id, user_id) < experiment.share_b else ARM_A


def read_experiment(redis_client) -> Experiment | None:
    """The running or last experiment, or None when none was ever started."""
    raw = redis_client.get(EXPERIMENT_KEY)
    if raw is None and not is_cluster(redis_client):
        raw = redis_client.get(LEGACY_EXPERIMENT_KEY)
    return Experiment.from_json(raw) if raw else None


def running_experiment(redis_client) -> Experiment | None:
    experiment = read_experiment(redis_client)
    return experiment if experiment is not None and experiment.running else None


def find_experiment(redis_client, experiment_id: str) -> Experiment:
    raw = redis_client.hget(EXPERIMENTS_KEY, experiment_id)
    if raw is None and not is_cluster(redis_client):
        raw = redis_client.hget(LEGACY_EXPERIMENTS_KEY, experiment_id)
    if raw is None:
        raise NotFound(f"no experiment {experiment_id!r}", experiment_id=experiment_id)
    return Experiment.from_json(raw)


def protected_versions(redis_client) -> set[str]:
    """Versions the trainer must keep: arm B of the running experiment."""
    experiment = running_experiment(redis_client)
    return {experiment.version_b} if experiment is not None else set()


def start_experiment(
    redis_client, *, version_b: str, share_b: float, experiment_id: str | None = None
) -> Experiment:
    """Start serving ``version_b`` to ``share_b`` of the users. The version must be published
    (its meta hash exists) and differ from the active one; one experiment runs at a time."""
    if not 0.0 < share_b < 1.0:
        raise InvalidInput(f"share_b must be between 0 and 1, exclusive (got {share_b})")
    try:
        model_store.item_collection_name(version_b)  # the version id's characters
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not redis_client.exists(model_store.meta_key(version_b)):
        raise NotFound(f"model version {version_b!r} is not published", version=version_b)
    active = model_store.active_version(redis_client)
    if version_b == active:
        raise InvalidInput(f"version {version_b!r} is the active one: arm A serves it already")
    if running_experiment(redis_client) is not None:
        raise Conflict("an experiment is running; stop it first (reco ab stop)")
    now = datetime.now(timezone.utc)
    experiment = Experiment(
        experiment_id=experiment_id or f"ab-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}",
        version_b=version_b,
        share_b=share_b,
        started_at=now.isoformat(),
        version_a_at_start=active,
    )
    _write(redis_client, experiment)
    return experiment


def stop_experiment(redis_client) -> Experiment:
    experiment = running_experiment(redis_client)
    if experiment is None:
        raise NotFound("no experiment is running")
    stopped = Experiment(**{**asdict(experiment), "stopped_at": _now()})
    _write(redis_client, stopped)
    return stopped


def _write(redis_client, experiment: Experiment) -> None:
    document = experiment.to_json()
    with redis_client.pipeline(transaction=True) as pipe:
        pipe.set(EXPERIMENT_KEY, document)
        pipe.hset(EXPERIMENTS_KEY, experiment.experiment_id, document)
        pipe.execute()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
