"""Real store faults for regression tests: stop one of the session's servers for the duration of a
``with`` block, then start it again and wait until it is healthy, whatever the block did, so the
tests after it find the store up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from Prod.common.errors import InfraError
from Prod.orchestrate.local_infra import LocalInfra


def _server(infra: LocalInfra, name: str):
    return next(s for s in infra.servers if s.name == name)


@contextmanager
def store_down(infra: LocalInfra, name: str, restart_timeout_s: float = 120) -> Iterator[None]:
    """``name`` (postgres, redis or chroma) of the shared test servers is stopped inside."""
    server = _server(infra, name)
    server.stop()
    try:
        yield
    finally:
        try:
            server.start(restart_timeout_s)  # waits until healthy
        except InfraError:
            # a server whose shutdown went wrong (e.g. another pytest session made the shared
            # temp root 0700 under a postgres running as another user) may still hold its lock
            # for a moment: one more try, after it is gone
            time.sleep(3)
            server.start(restart_timeout_s)


class CuttingProxy:
    """A loopback TCP proxy in front of a real server that, once ``cut_on`` is set, resets the
    connection of the next request whose request line contains it, after the request was sent:
    the client sees what a server dying mid-request looks like (``ECONNRESET`` on read)."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        from Prod.orchestrate.local_infra import free_port

        self.port = free_port()
        self.cut_on: bytes | None = None
        self.cuts = 0
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._threading = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._threading.Thread(
                target=self._pump, args=(client, upstream, True), daemon=True
            ).start()
            self._threading.Thread(
                target=self._pump, args=(upstream, client, False), daemon=True
            ).start()

    def _pump(self, source, sink, from_client: bool) -> None:
        import socket
        import struct

        try:
            while chunk := source.recv(65536):
                request_line = chunk.split(b"\r\n", 1)[0]
                if from_client and self.cut_on and self.cut_on in request_line:
                    self.cut_on, self.cuts = None, self.cuts + 1
                    for sock in (source, sink):  # RST, not FIN: a reset, as when a server dies
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        sock.close()
                    return
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass
