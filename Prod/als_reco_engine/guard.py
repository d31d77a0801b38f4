"""A small circuit breaker: after a store fails, skip it for ``cooldown_s`` instead of paying a
socket timeout on every request, then try it again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from Prod.common.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The guarded store failed just now or recently (circuit open)."""


class CircuitBreaker:
    def __init__(self, name: str, errors: tuple[type[BaseException], ...], cooldown_s: float = 2.0):
        self.name = name
        self._errors = errors
        self._cooldown_s = cooldown_s
        self._open_until = 0.0
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, or StoreUnavailable when the circuit is open or ``fn`` raises a store error."""
        if self._open_until and self.is_open:
            raise StoreUnavailable(f"{self.name} unavailable (recent failure)")
        try:
            result = fn()
        except self._errors as exc:
            self.failures += 1
            if not self.is_open:
                log.warning(
                    "%s unreachable, falling back for %.1f s: %s", self.name, self._cooldown_s, exc
                )
            self._open_until = time.monotonic() + self._cooldown_s
            raise StoreUnavailable(f"{self.name} unavailable: {exc}") from exc
        self._open_until = 0.0
        return result
