"""The naive serving design, kept only as the benchmark's baseline (``reco bench serving``).

Per request: read the user's factor JSON-encoded from Redis (with their seen items), query the
model's Chroma collection over HTTP with it, over-fetching by the number of seen items, drop those.
Run: ``python -m Prod.bench.naive --port P --collection C --redis-url URL``
(plus ``--chroma-port Q``).
"""

from __future__ import annotations

import argparse
import json

from fastapi import FastAPI, Query

NAIVE_KEY = "bench:naive:user:{user_id}"


def create_naive_app(redis_url: str, chroma_host: str, chroma_port: int, collection: str):
    from Prod.common.stores import get_chroma, get_redis

    app = FastAPI(title="naive serving baseline")
    redis_client = get_redis(redis_url)
    items = get_chroma(chroma_host, chroma_port).get_collection(collection)

    @app.get("/api/v1/recommend/{user_id}")
    def read_recommendations(user_id: str, k: int = Query(10, ge=1, le=100)) -> dict:
        raw = redis_client.get(NAIVE_KEY.format(user_id=user_id))
        if raw is None:
            return {"user_id": user_id, "items": []}
        user = json.loads(raw)
        seen = set(user["seen"])
        found = items.query(
            query_embeddings=[user["factor"]],
            n_results=k + len(seen),
            include=["metadatas", "distances"],
        )
        hits = [
            {"item_id": item_id, "score": -distance, **(meta or {})}
            for item_id, distance, meta in zip(
                found["ids"][0], found["distances"][0], found["metadatas"][0], strict=True
            )
            if item_id not in seen
        ]
        return {"user_id": user_id, "items": hits[:k]}

    return app


def main() -> None:
    import uvicorn

    from Prod.als_reco_engine.main import _fast_server_options

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--chroma-host", default="127.0.0.1")
    parser.add_argument("--chroma-port", type=int, required=True)
    args = parser.parse_args()
    app = create_naive_app(args.redis_url, args.chroma_host, args.chroma_port, args.collection)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        **_fast_server_options(),
    )


if __name__ == "__main__":
    main()
