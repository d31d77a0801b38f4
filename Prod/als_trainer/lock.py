"""A Redis lock so that two trainers (threads or processes) never run at the same time.

``SET key token NX PX ttl`` takes it; a Lua script deletes it only when it still holds our token,
so a trainer whose lock expired can never release the lock of the trainer that took over.
"""

from __future__ import annotations

import redis

LOCK_KEY = "reco:trainer:lock"

# Compare-and-delete in one atomic step (GET + DEL from Python could race with an expiry).
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class TrainerLock:
    """Exclusive, expiring lock whose token is the model version being trained."""

    def __init__(self, client: redis.Redis, token: str, ttl_s: float, key: str = LOCK_KEY) -> None:
        self.client = client
        self.token = token
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.key = key
        self.held = False

    def acquire(self) -> bool:
        """Take the lock if free; never waits."""
        self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    def release(self) -> bool:
        """Drop the lock if it is still ours; returns whether it was."""
        if not self.held:
            return False
        self.held = False
        return bool(self.client.eval(_RELEASE_SCRIPT, 1, self.key, self.token))

    def __enter__(self) -> TrainerLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def lock_holder(client: redis.Redis, key: str = LOCK_KEY) -> str | None:
    """The version id of the run holding the lock, if any (in any process)."""
    raw = client.get(key)
    return raw.decode() if isinstance(raw, bytes) else raw
