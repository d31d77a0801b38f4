"""A plain-HTTP package index for image builds on a machine whose containers cannot verify PyPI.

Serves ``/simple/<project>/`` (PEP 503 HTML) from PyPI, with every file link rewritten to come
through this server (``/files/...``, cached on disk), and the wheels of ``--find-links`` in place of
PyPI's for the projects they hold (the CPU build of torch). The host's CA bundle stays on the host:
builds only get ``--index-url http://<bridge>:<port>/simple`` and ``--trusted-host`` as build
arguments (``PYPI_INDEX_URL`` / ``PYPI_TRUSTED_HOST`` in docker-compose.yaml, empty by default).

    python docker/testing/pypi_proxy.py --host 172.17.0.1 --port 3141 --cache /var/tmp/pypi-cache
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import html
import re
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

UPSTREAM_SIMPLE = "https://pypi.org/simple/"
UPSTREAM_FILES = "https://files.pythonhosted.org/"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _local_wheels(folder: Path | None) -> dict[str, list[Path]]:
    """Canonical project name -> its files in ``folder``."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()) if folder and folder.is_dir() else []:
        if path.suffix in (".whl", ".gz", ".zip"):
            found.setdefault(canonical(path.name.split("-")[0]), []).append(path)
    return found


@functools.cache
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_handler(context: ssl.SSLContext, cache: Path, local: dict[str, list[Path]]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "text/html") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_file(self, path: Path) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as handle:
                shutil.copyfileobj(handle, self.wfile, 1 << 20)

        def _fetch(self, url: str, accept: str = "*/*") -> bytes | None:
            request = urllib.request.Request(url, headers={"Accept": accept})
            for attempt in range(3):  # PyPI's CDN drops a transfer now and then
                try:
                    with urllib.request.urlopen(request, context=context, timeout=120) as response:
                        return response.read()
                except urllib.error.HTTPError as exc:
                    if exc.code == 404:
                        return None
                    error: Exception = exc
                except (OSError, urllib.error.URLError) as exc:
                    error = exc
                print(f"attempt {attempt + 1}: {url}: {error}", file=sys.stderr, flush=True)
                time.sleep(1 + attempt)
            raise error

        def do_GET(self) -> None:
            self.path = urllib.parse.unquote(self.path)  # pip quotes "+" of local versions
            try:
                if self.path.startswith("/simple/"):
                    self._simple(canonical(self.path[len("/simple/") :].strip("/")))
                elif self.path.startswith("/files/"):
                    self._file(self.path[len("/files/") :].split("#", 1)[0])
                elif self.path.startswith("/local/"):
                    name = self.path[len("/local/") :]
                    paths = [p for ps in local.values() for p in ps if p.name == name]
                    self._send_file(paths[0]) if paths else self._send(404, b"not found")
                else:
                    self._send(404, b"not found")
            except (OSError, urllib.error.URLError) as exc:
                self._send(503, f"upstream: {exc}".encode())  # pip retries a 503

        def _simple(self, project: str) -> None:
            if project in local:  # the local build replaces PyPI's (e.g. CPU torch)
                links = []
                for path in local[project]:
                    digest = _sha256(path)
                    links.append(f'<a href="/local/{path.name}#sha256={digest}">{path.name}</a>')
                body = "<html><body>\n" + "\n".join(links) + "\n</body></html>"
                self._send(200, body.encode())
                return
            page = self._fetch(f"{UPSTREAM_SIMPLE}{project}/", "text/html")
            if page is None:
                self._send(404, b"not found")
                return
            text = page.decode()
            text = text.replace(UPSTREAM_FILES, "/files/")
            text = text.replace(html.escape(UPSTREAM_FILES), "/files/")
            self._send(200, text.encode())

        def _file(self, path: str) -> None:
            target = cache / path
            if not target.exists():
                data = self._fetch(UPSTREAM_FILES + path)
                if data is None:
                    self._send(404, b"not found")
                    return
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                partial.write_bytes(data)
                partial.replace(target)
            self._send_file(target)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3141)
    parser.add_argument("--cache", type=Path, default=Path("/var/tmp/reco-pypi-cache"))
    parser.add_argument("--find-links", type=Path, help="folder of wheels that replace PyPI's")
    parser.add_argument("--cafile", help="CA bundle for PyPI (default: the system's)")
    args = parser.parse_args(argv)
    context = ssl.create_default_context(cafile=args.cafile)
    handler = make_handler(context, args.cache, _local_wheels(args.find_links))
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    print(f"index on http://{args.host}:{args.port}/simple", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
