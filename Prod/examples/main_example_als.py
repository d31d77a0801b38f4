"""Example client of ``als_reco_engine``: a new customer browses, buys, and gets recommendations.

1. a brand-new user gets the popular items (nothing known about them yet);
2. the user views, adds to cart, buys and rates a few of them (``POST /interactions``);
3. their recommendations now come from fold-in: the ALS factor solved from those events;
4. items similar to the one they bought (``/similar``), and the history of what was served.

Run against a running platform (``bash start_services.sh``)::

    python -m Prod.examples.main_example_als [--reco-url http://127.0.0.1:8000] [--user-id ID]

Exits 1 with one clear message when a call fails. ``--json``: one JSON summary as the last line.
Its user (``example-<random>``) is forgotten at the end (``DELETE /api/v1/users/{user_id}``:
events, served history and cached factor); ``--keep`` keeps it.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import httpx
from rich.console import Console
from rich.table import Table

from Prod.examples._client import ApiError, call, money, run_example, stars

console = Console()


def _items_table(title: str, items: list[dict]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "item", "title", "category", "price", "rating", "score"):
        table.add_column(column)
    for rank, item in enumerate(items, 1):
        score = "-" if item.get("score") is None else f"{item['score']:.4g}"
        table.add_row(
            str(rank),
            item["item_id"],
            item.get("title") or "",
            item.get("category") or "",
            money(item.get("price")),
            stars(item.get("avg_rating")),
            score,
        )
    return table


def _events(user_id: str, items: list[dict]) -> list[dict]:
    """A small, believable session: look at three items, add one to the cart, buy and rate it."""
    first, second, third = (item["item_id"] for item in items[:3])
    return [
        {"user_id": user_id, "item_id": first, "event": "view"},
        {"user_id": user_id, "item_id": second, "event": "view"},
        {"user_id": user_id, "item_id": third, "event": "click"},
        {"user_id": user_id, "item_id": first, "event": "add_to_cart"},
        {"user_id": user_id, "item_id": first, "event": "purchase"},
        {"user_id": user_id, "item_id": first, "event": "rating", "rating": 5},
    ]


def _wait_for_history(client: httpx.Client, user_id: str, timeout_s: float = 10) -> dict:
    # serving logs responses off the hot path: give the writer a moment
    deadline = time.monotonic() + timeout_s
    while True:
        page = call(client, "GET", "/api/v1/history", params={"user_id": user_id, "limit": 5})
        if page["entries"] or time.monotonic() > deadline:
            return page
        time.sleep(0.3)


def run(client: httpx.Client, user_id: str, k: int, quiet: bool, keep: bool = False) -> dict:
    show = (lambda *_: None) if quiet else console.print
    status = call(client, "GET", "/api/v1/status")
    show(
        f"[bold]als_reco_engine[/] at {client.base_url}: model {status.get('model_version')}, "
        f"{status.get('item_count')} items, status {status.get('status')}"
    )

    before = call(client, "GET", f"/api/v1/recommend/{user_id}", params={"k": max(k, 3)})
    show(_items_table(f"1. new user {user_id}: strategy '{before['strategy']}'", before["items"]))
    if len(before["items"]) < 3:
        raise ApiError("the engine returned fewer than 3 items: is the catalogue ingested?")

    events = _events(user_id, before["items"])
    ack = call(client, "POST", "/api/v1/interactions", json={"events": events})
    show(
        f"2. recorded {ack['accepted']} events for {user_id} "
        f"(viewed {events[0]['item_id']}, {events[1]['item_id']}; bought and rated "
        f"{events[0]['item_id']} 5/5)"
    )

    after = call(client, "GET", f"/api/v1/recommend/{user_id}", params={"k": k})
    show(
        _items_table(
            f"3. after those events: strategy '{after['strategy']}' "
            f"(model {after['model_version']})",
            after["items"],
        )
    )
    seen = {e["item_id"] for e in events}
    if seen & {item["item_id"] for item in after["items"]}:
        raise ApiError("already-seen items came back in the recommendations")

    bought = events[0]["item_id"]
    similar = call(client, "GET", f"/api/v1/similar/{bought}", params={"k": 5})
    show(_items_table(f"4. customers who liked {bought} also liked", similar["items"]))

    history = _wait_for_history(client, user_id)
    show(f"5. history of {user_id}: {history['total']} responses served, newest first")
    for entry in history["entries"]:
        ids = ", ".join(item["item_id"] for item in entry["items"][:5])
        show(f"   {entry['served_at']}  {entry['strategy']:<8} {ids} ...")
    forgotten = None
    if not keep:
        forgotten = call(client, "DELETE", f"/api/v1/users/{user_id}")["postgres"]
        show(f"6. {user_id} forgotten ({forgotten['interactions']} interactions); --keep keeps it")
    return {
        "user_id": user_id,
        "model_version": after["model_version"],
        "strategy_before": before["strategy"],
        "strategy_after": after["strategy"],
        "interacted": sorted(seen),
        "recommended": [item["item_id"] for item in after["items"]],
        "similar_to": bought,
        "similar": [item["item_id"] for item in similar["items"]],
        "history_entries": history["total"],
        "forgotten": forgotten,
    }


def _parser() -> argparse.ArgumentParser:
    from config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reco-url", default=settings.reco_url, help="als_reco_engine base URL")
    parser.add_argument("--api-key", default=settings.api_key, help="X-API-Key, when required")
    parser.add_argument("--user-id", default=f"example-{uuid.uuid4().hex[:10]}")
    parser.add_argument("-k", type=int, default=8, help="recommendations to show")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="one JSON summary as the last line")
    parser.add_argument("--keep", action="store_true", help="keep the example user and its events")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_example(
        args.reco_url,
        args.api_key,
        args.timeout,
        args.json,
        lambda client: run(client, args.user_id, args.k, quiet=args.json, keep=args.keep),
    )


if __name__ == "__main__":
    sys.exit(main())
