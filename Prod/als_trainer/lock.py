"""A Redis lock so that two trainers (threads or processes) never run at the same time.

``SET key token NX PX ttl`` takes it; a Lua script deletes it only when it still holds our token,
so a trainer whose lock expired can never release the lock of the trainer that took over. While
held, a heartbeat thread renews the expiry (again only while the token is ours) and refreshes a
short-lived heartbeat key (``reco:{trainer}:lock:heartbeat``) holding the same token, every
``HEARTBEAT_S``: a long run (minutes on 10M interactions) keeps its lock. Both keys carry the hash
tag ``{trainer}``: each script touches both, which a Redis Cluster allows within one slot only.

A trainer that is killed stops beating: its heartbeat key expires after ``HEARTBEAT_TIMEOUT_S``
while its lock would live on for up to the lock TTL (120 s by default). :func:`reap_dead_lock`
removes a lock whose holder has no live heartbeat, so the next start does not wait for the TTL
and does not report a dead run as running.
"""

from __future__ import annotations

import threading

import redis

from Prod.common.logs import get_logger

# Before the hash tag it was reco:trainer:lock; a trainer of an older release still running
# beside a new one would not see this lock: stop the old trainers when upgrading
LOCK_KEY = "reco:{trainer}:lock"
HEARTBEAT_S = 1.0
# 10 missed beats in a row: a live trainer beats from its own thread (the GIL switches every
# 5 ms), so only a process stalled for 10 s on a saturated machine could be taken for dead
HEARTBEAT_TIMEOUT_S = 10.0

# Take the lock and start the heartbeat in one atomic step.
_ACQUIRE_SCRIPT = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[3])
    return 1
end
return 0
"""

# Compare-and-delete in one atomic step (GET + DEL from Python could race with an expiry).
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[2]) == ARGV[1] then
    redis.call('del', KEYS[2])
end
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# Compare-and-renew, for the heartbeat: the lock's expiry and the heartbeat key.
_RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[3])
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

# A lock whose holder has no live heartbeat is removed; returns that holder's token.
_REAP_SCRIPT = """
local holder = redis.call('get', KEYS[1])
if holder and redis.call('get', KEYS[2]) ~= holder then
    redis.call('del', KEYS[1])
    return holder
end
return false
"""

log = get_logger(__name__)


def _text(raw) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


class TrainerLock:
    """Exclusive, expiring lock whose token is the model version being trained.

    ``heartbeat``: renew the expiry and the heartbeat key in a background thread while held
    (see the module docstring).
    """

    def __init__(
        self,
        client: redis.Redis,
        token: str,
        ttl_s: float,
        key: str = LOCK_KEY,
        heartbeat: bool = True,
    ) -> None:
        self.client = client
        self.token = token
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.key = key
        self.heartbeat_key = heartbeat_key(key)
        self.held = False
        self._heartbeat = heartbeat
        self._beat_ms = min(int(HEARTBEAT_S * 1000), max(1, self.ttl_ms // 3))
        self._beat_ttl_ms = max(int(HEARTBEAT_TIMEOUT_S * 1000), 3 * self._beat_ms)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock if free; never waits."""
        self.held = bool(
            self.client.eval(
                _ACQUIRE_SCRIPT,
                2,
                self.key,
                self.heartbeat_key,
                self.token,
                self.ttl_ms,
                self._beat_ttl_ms,
            )
        )
        if self.held and self._heartbeat:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._renew_until_released, name="trainer-lock-heartbeat", daemon=True
            )
            self._thread.start()
        return self.held

    def renew(self) -> bool:
        """Reset the expiry to the full TTL if the lock is still ours; returns whether it was."""
        return bool(
            self.client.eval(
                _RENEW_SCRIPT,
                2,
                self.key,
                self.heartbeat_key,
                self.token,
                self.ttl_ms,
                self._beat_ttl_ms,
            )
        )

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self._beat_ms / 1000):
            try:
                if not self.renew():
                    log.warning("trainer lock %s was lost (expired or taken over)", self.key)
                    return
            except redis.RedisError as exc:  # keep trying: the next beat may reach Redis
                log.warning("could not renew trainer lock %s: %s", self.key, exc)

    def release(self) -> bool:
        """Drop the lock if it is still ours; returns whether it was."""
        if not self.held:
            return False
        self.held = False
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
            self._thread = None
        return bool(self.client.eval(_RELEASE_SCRIPT, 2, self.key, self.heartbeat_key, self.token))

    def __enter__(self) -> TrainerLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def heartbeat_key(key: str = LOCK_KEY) -> str:
    """The key a live holder of lock ``key`` keeps refreshing (the same hash tag as ``key``)."""
    return f"{key}:heartbeat"


def lock_holder(client: redis.Redis, key: str = LOCK_KEY) -> str | None:
    """The version id of the run holding the lock, if any (in any process)."""
    return _text(client.get(key))


def reap_dead_lock(client: redis.Redis, key: str = LOCK_KEY) -> str | None:
    """Remove the lock if its holder has no live heartbeat (killed, crashed); returns the dead
    holder's version id, None when the lock was free or its holder is alive."""
    dead = _text(client.eval(_REAP_SCRIPT, 2, key, heartbeat_key(key)))
    if dead:
        log.warning("trainer lock of run %s removed: its heartbeat stopped", dead)
    return dead
