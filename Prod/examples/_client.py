"""What both example clients share: one HTTP call that fails with a readable message."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(RuntimeError):
    """A request failed: the service is down, or it answered with an error body."""


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """``method path`` -> the decoded JSON body; raises :class:`ApiError` on any failure."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiError(
            f"{method} {client.base_url}{path}: {exc!r} - is the platform up? "
            "(bash start_services.sh status)"
        ) from exc
    if response.is_error:
        try:
            error = response.json().get("error", {})
            message = f"{error.get('type', 'error')}: {error.get('message', response.text)}"
        except ValueError:
            message = response.text[:300]
        raise ApiError(f"{method} {path} -> HTTP {response.status_code} {message}")
    return response.json()


def make_client(base_url: str, api_key: str | None, timeout_s: float) -> httpx.Client:
    headers = {"X-API-Key": api_key} if api_key else {}
    return httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def stars(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_example(base_url: str, api_key: str | None, timeout_s: float, as_json: bool, work) -> int:
    """Run ``work(client)`` against ``base_url``; an API error is one red line and exit code 1.

    With ``as_json`` the summary ``work`` returns is printed as one JSON line.
    """
    import json

    from rich.console import Console

    with make_client(base_url, api_key, timeout_s) as client:
        try:
            summary = work(client)
        except ApiError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}")
            return 1
    if as_json and summary is not None:
        print(json.dumps(summary))
    return 0
