"""A Redis lock so that two trainers (threads or processes) never run at the same time.

``SET key token NX PX ttl`` takes it; a Lua script deletes it only when it still holds our token,
so a trainer whose lock expired can never release the lock of the trainer that took over. While
held, a heartbeat thread renews the expiry every third of the TTL (again only while the token is
ours): a long run (minutes on 10M interactions) keeps its lock, and a crashed trainer's lock
frees itself one TTL later instead of blocking training for a fixed hour.
"""

from __future__ import annotations

import threading

import redis

from Prod.common.logs import get_logger

LOCK_KEY = "reco:trainer:lock"

# Compare-and-delete in one atomic step (GET + DEL from Python could race with an expiry).
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# Compare-and-renew, for the heartbeat.
_RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

log = get_logger(__name__)


class TrainerLock:
    """Exclusive, expiring lock whose token is the model version being trained.

    ``heartbeat``: renew the expiry in a background thread while held (see the module docstring).
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
        self.held = False
        self._heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock if free; never waits."""
        self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        if self.held and self._heartbeat:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._renew_until_released, name="trainer-lock-heartbeat", daemon=True
            )
            self._thread.start()
        return self.held

    def renew(self) -> bool:
        """Reset the expiry to the full TTL if the lock is still ours; returns whether it was."""
        return bool(self.client.eval(_RENEW_SCRIPT, 1, self.key, self.token, self.ttl_ms))

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
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
        return bool(self.client.eval(_RELEASE_SCRIPT, 1, self.key, self.token))

    def __enter__(self) -> TrainerLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def lock_holder(client: redis.Redis, key: str = LOCK_KEY) -> str | None:
    """The version id of the run holding the lock, if any (in any process)."""
    raw = client.get(key)
    return raw.decode() if isinstance(raw, bytes) else raw
