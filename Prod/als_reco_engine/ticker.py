"""A daemon thread that calls a function at a fixed interval (index watcher, popularity refresh)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    """Calls ``tick()`` every ``interval_s`` seconds in a daemon thread between start and stop."""

    def __init__(self, name: str, tick: Callable[[], object], interval_s: float) -> None:
        self._name, self._tick, self._interval_s = name, tick, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._tick()
