"""The platform's main actions as LangChain tools for an agent, calling the REST APIs (the ALS
engine for recommendations, similar items and interactions; the chat service for search)."""

from __future__ import annotations

from typing import Any, Literal

import httpx
from langchain_core.tools import BaseTool, StructuredTool

Event = Literal["view", "click", "add_to_cart", "purchase", "rating", "dislike"]


def _brief(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("item_id", "title", "brand", "category", "price", "avg_rating", "score")
    return [{k: item[k] for k in keys if item.get(k) is not None} for item in items]


def platform_tools(
    reco_url: str = "http://127.0.0.1:8000",
    chat_url: str = "http://127.0.0.1:8001",
    api_key: str | None = None,
    timeout_s: float = 30.0,
    clients: dict[str, httpx.Client] | None = None,
) -> list[BaseTool]:
    """``recommend_for_user``, ``similar_items``, ``search_products``, ``record_interaction``.
    ``clients`` ({"reco": ..., "chat": ...}) replaces the HTTP clients (e.g. TestClients)."""
    headers = {"X-API-Key": api_key} if api_key else {}
    clients = clients or {}
    reco = clients.get("reco") or httpx.Client(base_url=reco_url, timeout=timeout_s)
    chat = clients.get("chat") or httpx.Client(base_url=chat_url, timeout=timeout_s)

    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:  # the agent reads the API's own explanation
            return {"error": response.json().get("error", response.text)}
        return response.json()

    def recommend_for_user(user_id: str, k: int = 5) -> dict[str, Any]:
        """Top-k products for a known user from the ALS model (popular ones for a new user)."""
        body = _json(reco.get(f"/api/v1/recommend/{user_id}", params={"k": k}, headers=headers))
        if "error" in body:
            return body
        return {"strategy": body.get("strategy"), "items": _brief(body.get("items", []))}

    def similar_items(item_id: str, k: int = 5) -> dict[str, Any]:
        """Products similar to one product (ALS item factors)."""
        body = _json(reco.get(f"/api/v1/similar/{item_id}", params={"k": k}, headers=headers))
        return body if "error" in body else {"items": _brief(body.get("items", []))}

    def search_products(
        query: str,
        max_price: float | None = None,
        brand: str | None = None,
        user_id: str | None = None,
        k: int = 5,
    ) -> dict[str, Any]:
        """Search the catalogue by meaning, optionally under a price or for one brand."""
        params: dict[str, Any] = {"q": query, "k": k}
        for name, value in (("max_price", max_price), ("brand", brand), ("user_id", user_id)):
            if value is not None:
                params[name] = value
        body = _json(chat.get("/api/v1/search", params=params, headers=headers))
        return body if "error" in body else {"products": _brief(body.get("products", []))}

    def record_interaction(
        user_id: str, item_id: str, event: Event, rating: float | None = None
    ) -> dict[str, Any]:
        """Record that a user viewed, clicked, bought, rated or disliked a product."""
        payload: dict[str, Any] = {"user_id": user_id, "item_id": item_id, "event": event}
        if rating is not None:
            payload["rating"] = rating
        return _json(reco.post("/api/v1/interactions", json=payload, headers=headers))

    return [
        StructuredTool.from_function(f)
        for f in (recommend_for_user, similar_items, search_products, record_interaction)
    ]
