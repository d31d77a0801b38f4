"""Readable output of local mode (rich tables and the "what to try next" hints)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def status_table(result: dict) -> None:
    table = Table(title=f"platform ({result['mode']} mode, data in {result['data_dir']})")
    for column in ("component", "state", "pid", "port", "url / data"):
        table.add_column(column)
    for name, row in result["services"].items():
        state = {"up": "[green]up[/]", "starting": "[yellow]starting[/]"}.get(
            row["state"], "[red]down[/]"
        )
        table.add_row(name, state, str(row["pid"] or "-"), str(row["port"]), row["url"])
    for name, row in result["infra"].items():
        state = "[green]up[/]" if row["healthy"] else "[red]down[/]"
        table.add_row(name, state, str(row["pid"] or "-"), str(row["port"]), row["data"])
    console.print(table)
    console.print(f"active model version: [bold]{result['model_version'] or 'none yet'}[/]")
    console.print(_ollama_line(result["ollama"]))


def _ollama_line(ollama: dict) -> str:
    if not ollama["reachable"]:
        return (
            f"[yellow]Ollama is NOT reachable at {ollama['host']}[/]: the chat answers with its "
            "retrieval-only fallback (grounded template). Install Ollama and run "
            "`ollama pull mistral:7b` to get LLM answers."
        )
    if not ollama["model_present"]:
        return (
            f"[yellow]Ollama answers at {ollama['host']} but lacks the configured model[/]: "
            "run `ollama pull <OLLAMA_MODEL>`; until then the chat uses its fallback."
        )
    return f"[green]Ollama reachable at {ollama['host']}[/] with the configured model."


def summary(result: dict) -> None:
    status_table(result)
    data = result["data"]
    if data["ingested"]:
        console.print(f"ingested {', '.join(data['ingested'])} from {data['dataset']}")
    if result["offline_hub"]:
        console.print(
            "[yellow]reranker not cached[/]: chat ranks by embedding similarity (HF_HUB_OFFLINE=1)."
        )
    reco = result["services"]["als_reco_engine"]["url"]
    chat = result["services"]["chat_reco_engine"]["url"]
    trainer = result["services"]["als_trainer"]["url"]
    console.print(f"\n[bold green]platform up[/] in {result['seconds']} s.")
    web = result["services"].get("web")
    if web:  # the page to try and operate the platform
        console.print(f"Open [bold]{web['url']}/[/] in a browser (web app).", highlight=False)
    console.print("Try:")
    hints = [
        f"curl '{reco}/api/v1/recommend/<user_id>?k=5'",
        f"curl -X POST {chat}/api/v1/chat -H 'Content-Type: application/json' "
        '-d \'{"message": "wireless earbuds under $100"}\'',
        f"curl -X POST {trainer}/api/v1/train",
        "python -m Prod.examples.main_example_als",
        "python -m Prod.examples.main_example_chat --interactive",
        f"API docs: {reco}/docs  {chat}/docs  {trainer}/docs",
        "bash start_services.sh status | logs [service] [-f] | down",
    ]
    for hint in hints:  # plain text: no markup, no wrapping inside a command
        console.print(f"  {hint}", markup=False, highlight=False, soft_wrap=True)
