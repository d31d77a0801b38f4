"""Example client of ``chat_reco_engine``: a short shopping conversation, or your own.

The scripted conversation asks for products under a price, then follows up twice ("4 stars and
up", "cheaper ones?"): the engine condenses each follow-up into a standalone query and carries the
earlier filters over. Each turn prints the recommended products, the filters applied and the
answer (written by Mistral through Ollama, or the grounded fallback when Ollama is not running).

    python -m Prod.examples.main_example_chat [--chat-url http://127.0.0.1:8001] [--user-id ID]
    python -m Prod.examples.main_example_chat --interactive    # type your own; answers stream

The scripted session is deleted at the end (``--keep`` keeps it); interactive sessions are kept.
Exits 1 with one clear message when a call fails or a product breaks the requested price limit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import httpx
from rich.console import Console
from rich.table import Table

from Prod.chat_reco_engine.retrieval import clip_words
from Prod.examples._client import ApiError, call, money, run_example, stars

console = Console()
PRICE_LIMIT = 100.0
CONVERSATION = (
    f"I'm looking for wireless earbuds under ${PRICE_LIMIT:.0f}",
    "only 4 stars and up please",
    "any cheaper ones?",
)


def why(reason: str, width: int = 70) -> str:
    """The product's "why" sentence shortened to ``width`` at a word boundary ("…" when cut)."""
    return clip_words(reason, width)


def _products_table(products: list[dict]) -> Table:
    table = Table(show_lines=False)
    for column in ("#", "item", "title", "price", "rating", "score", "why"):
        table.add_column(column, overflow="fold")
    for rank, product in enumerate(products, 1):
        table.add_row(
            str(rank),
            product["item_id"],
            product["title"],
            money(product.get("price")),
            stars(product.get("avg_rating")),
            f"{product['score']:.2f}",
            why(product.get("reason", "")),
        )
    return table


def _show_turn(message: str, reply: dict) -> None:
    console.rule(f"[bold]you:[/] {message}")
    console.print(
        f"searched for: [italic]{reply['standalone_query']}[/]  filters: "
        f"{json.dumps(reply['filters'])}  (reranker: {reply['reranker']}, "
        f"personalisation: {reply['personalisation']})"
    )
    console.print(_products_table(reply["products"]))
    source = {"llm": "LLM", "guard": "template: the LLM's answer was not grounded"}.get(
        reply["generated_by"], "fallback, no LLM reachable"
    )
    console.print(f"[bold green]assistant[/] ({source}): {reply['answer']}\n")


def _check_price_limit(reply: dict, limit: float) -> None:
    too_dear = [p["item_id"] for p in reply["products"] if (p.get("price") or 0) > limit]
    if too_dear:
        raise ApiError(f"products above the ${limit:.0f} limit were recommended: {too_dear}")


def scripted(
    client: httpx.Client, user_id: str | None, k: int, quiet: bool, keep: bool = False
) -> dict:
    """The three-turn conversation; returns a summary of every turn. The session is deleted at
    the end (``DELETE /chat/{session_id}``) unless ``keep``."""
    session_id = None
    turns = []
    for message in CONVERSATION:
        body = {"message": message, "session_id": session_id, "user_id": user_id, "k": k}
        reply = call(
            client, "POST", "/api/v1/chat", json={k_: v for k_, v in body.items() if v is not None}
        )
        session_id = reply["session_id"]
        if not quiet:
            _show_turn(message, reply)
        _check_price_limit(reply, PRICE_LIMIT)  # turn 1 sets it; the follow-ups must carry it
        turns.append(
            {
                "message": message,
                "filters": reply["filters"],
                "products": [p["item_id"] for p in reply["products"]],
                "generated_by": reply["generated_by"],
            }
        )
    if not turns[0]["products"]:
        raise ApiError("the first question found no products: is the catalogue ingested?")
    history = call(client, "GET", f"/api/v1/chat/{session_id}/history")
    if not quiet:
        console.print(f"session {session_id}: {len(history['messages'])} messages stored")
    deleted = None
    if not keep:
        deleted = call(client, "DELETE", f"/api/v1/chat/{session_id}")["deleted_messages"]
        if not quiet:
            console.print(f"session {session_id} deleted ({deleted} messages); --keep keeps it")
    return {
        "session_id": session_id,
        "turns": turns,
        "history_messages": len(history["messages"]),
        "deleted_messages": deleted,
    }


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """Server-sent events -> (event name, decoded data)."""
    event, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def _stream_turn(client: httpx.Client, body: dict) -> dict:
    final: dict = {}
    try:
        with client.stream("POST", "/api/v1/chat/stream", json=body) as response:
            if response.is_error:
                response.read()
                raise ApiError(f"HTTP {response.status_code}: {response.text[:300]}")
            for event, data in _sse_events(response.iter_lines()):
                if event == "products":
                    console.print(_products_table(data.get("products", [])))
                    console.print("[bold green]assistant:[/] ", end="")
                elif event == "token":
                    console.print(data["text"], end="", soft_wrap=True, highlight=False)
                elif event == "replace":  # the grounding guard rejected the streamed answer
                    console.print("\n[yellow]not grounded in the products; instead:[/]")
                    console.print(data["text"], highlight=False)
                elif event == "done":
                    final = data
    except httpx.HTTPError as exc:
        raise ApiError(f"chat stream failed: {exc!r}") from exc
    console.print("\n")
    return final


def interactive(client: httpx.Client, user_id: str | None, k: int) -> None:
    """Type messages; `/new` starts a new session, `/quit` (or Ctrl-D) leaves."""
    console.print("Ask for products (e.g. 'a smartwatch under $250'); /new = new session, /quit")
    session_id = None
    while True:
        try:
            message = console.input("[bold]you> [/]").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if message in ("/quit", "/exit"):
            break
        if message == "/new":
            session_id = None
            continue
        if not message:
            continue
        body = {"message": message, "k": k, "session_id": session_id, "user_id": user_id}
        try:
            final = _stream_turn(client, {k_: v for k_, v in body.items() if v is not None})
        except ApiError as exc:
            console.print(f"[red]{exc}[/]")
            continue
        session_id = final.get("session_id", session_id)


def _parser() -> argparse.ArgumentParser:
    from config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chat-url", default=settings.chat_url, help="chat_reco_engine base URL")
    parser.add_argument("--api-key", default=settings.api_key, help="X-API-Key, when required")
    parser.add_argument("--user-id", default=None, help="personalise with this user's ALS taste")
    parser.add_argument("-k", type=int, default=5, help="products per answer")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--interactive", "-i", action="store_true", help="your own conversation")
    parser.add_argument("--keep", action="store_true", help="keep the scripted session")
    parser.add_argument("--json", action="store_true", help="one JSON summary as the last line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def work(client):
        if args.interactive:
            return interactive(client, args.user_id, args.k)
        return scripted(client, args.user_id, args.k, quiet=args.json, keep=args.keep)

    return run_example(args.chat_url, args.api_key, args.timeout, args.json, work)


if __name__ == "__main__":
    sys.exit(main())
