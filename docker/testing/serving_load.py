"""`reco bench serving`-style load on a running als_reco_engine (or the load balancer in front of
several): keep-alive HTTP/1.1 GET /api/v1/recommend over raw asyncio streams, with the API key.

    python docker/testing/serving_load.py --url http://127.0.0.1:8080 --api-key KEY \\
        --users users.txt --seconds 20 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from pathlib import Path
from urllib.parse import urlparse

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


async def _connection(host, port, paths, api_key, deadline, latencies, errors) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for path in paths:
            if time.perf_counter() > deadline:
                break
            start = time.perf_counter()
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {api_key}\r\n\r\n"
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            match = _LENGTH.search(head)
            body = await reader.readexactly(int(match.group(1))) if match else b""
            latencies.append(time.perf_counter() - start)
            if head[9:12] != b"200" or b'"items"' not in body:
                errors.append(head[:12])
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()


async def run(url: str, api_key: str, users: list[str], seconds: float, concurrency: int) -> dict:
    parsed = urlparse(url)
    rng = random.Random(7)
    paths = [f"/api/v1/recommend/{rng.choice(users)}?k=10" for _ in range(200_000)]
    latencies: list[float] = []
    errors: list = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(
        *(
            _connection(
                parsed.hostname,
                parsed.port,
                paths[i::concurrency],
                api_key,
                deadline,
                latencies,
                errors,
            )
            for i in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--users", type=Path, required=True, help="one user id a line")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    users = args.users.read_text().split()
    result = asyncio.run(run(args.url, args.api_key, users, args.seconds, args.concurrency))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
