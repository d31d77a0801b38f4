"""A LangChain retriever over the chat service's ``GET /api/v1/search``."""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

_PARAMS = {"brands": "brand", "categories": "category"}


class PlatformRetriever(BaseRetriever):
    """Products for a query, ranked as the chat ranks them: Chroma retrieval with ``filters``
    (brands, categories, min_price, max_price, min_rating), cross-encoder reranking and, with
    ``user_id``, the user's ALS affinity blended in. One ``Document`` per product:
    ``page_content`` = title and its best-matching sentence, ``metadata`` = the product (item_id,
    brand, category, price, avg_rating, ...) and its scores."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str = "http://127.0.0.1:8001"
    api_key: str | None = None
    k: int = Field(5, ge=1, le=50)
    user_id: str | None = None
    filters: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = 30.0
    client: Any = None  # an httpx.Client (e.g. a FastAPI TestClient); default: one per call

    def _params(self, query: str) -> list[tuple[str, Any]]:
        params: list[tuple[str, Any]] = [("q", query), ("k", self.k)]
        if self.user_id:
            params.append(("user_id", self.user_id))
        for name, value in self.filters.items():
            name = _PARAMS.get(name, name)  # the API's repeatable `brand` / `category`
            for one in value if isinstance(value, list | tuple) else [value]:
                params.append((name, one))
        return params

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        if self.client is not None:
            response = self.client.get(
                "/api/v1/search", params=self._params(query), headers=headers
            )
        else:
            response = httpx.get(
                f"{self.base_url.rstrip('/')}/api/v1/search",
                params=self._params(query),
                headers=headers,
                timeout=self.timeout_s,
            )
        response.raise_for_status()
        return [_document(p) for p in response.json()["products"]]


def _document(product: dict[str, Any]) -> Document:
    reason = product.get("reason") or ""
    text = f"{product['title']}. {reason}".strip()
    return Document(page_content=text, metadata=dict(product), id=product["item_id"])
