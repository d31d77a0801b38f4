"""The fast path of ``GET /api/v1/recommend/{user_id}``: FastAPI's routing, dependency and
parameter machinery cost more CPU a request here than the recommendation itself (measured
in-process: 2.8 ms with it, 0.8 ms for the service call).

:class:`RecommendFastPath` is a pure ASGI layer in front of FastAPI's router. A request in the
canonical form (only the route's parameters, each once except the repeatable ``category`` /
``brand``, plain decimal values within the route's limits, a valid API key when one is
configured, judged by :func:`Prod.common.api.api_key_ok` like every route) is parsed by
:func:`parse_recommend_query` and answered directly; anything else (an unknown parameter, a
malformed or unusual value, a missing key, an error while serving) goes on to FastAPI's
documented route, which answers exactly as it always does (422 naming the problem or the unknown
parameter, 401, 503...). The limits come from the schemas the route is declared with, the route
is found by name, and both paths call the same service function and encoder, so their responses
are identical. The request guard (:class:`Prod.common.api.RequestGuard`, outside this layer) has
already applied the API-key and body-size rules to every request, fast or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.types import ASGIApp, Receive, Scope, Send

from Prod.als_reco_engine.index import ItemFilters
from Prod.als_reco_engine.schemas import K_MAX
from Prod.common.api import api_key_ok, query_param_names
from Prod.common.schemas import (
    FILTER_TEXT_MAX,
    FILTER_VALUES_MAX,
    ID_PATTERN,
    PRICE_MAX,
    RATING_MAX,
)

__all__ = ["PARAMS", "RecommendFastPath", "RecommendQuery", "api_key_ok", "parse_recommend_query"]

_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_K = re.compile(rf"[1-9][0-9]{{0,{len(str(K_MAX)) - 1}}}")  # 1..999 for K_MAX 100
_NUMBER = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?")
_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_LISTS = ("category", "brand")  # repeatable: any of the values, as on the documented route
_SCALARS = ("k", "exclude_seen", "min_price", "max_price", "min_rating")
_HANDED_OVER = ("explain",)  # the route's, always answered there (an explained answer is rare)
#: the query parameters the fast path parses: exactly the route's (checked when it is built)
PARAMS = frozenset(_SCALARS + _LISTS + _HANDED_OVER)


@dataclass(frozen=True)
class RecommendQuery:
    k: int = 10
    exclude_seen: bool = True
    filters: ItemFilters = ItemFilters()


def parse_recommend_query(query_string: bytes) -> RecommendQuery | None:
    """The query of a canonical request, or None when the documented route must judge it.

    Decoded as Starlette does (latin-1, then percent-decoding). ``category`` and ``brand`` may
    repeat (any of them); any other parameter repeated, and any parameter the route does not
    take (a 422 naming it there), goes to the route.
    """
    if not query_string:
        return RecommendQuery()
    values: dict[str, str] = {}
    lists: dict[str, list[str]] = {name: [] for name in _LISTS}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if not value:
            return None  # empty: the route's rules decide
        if key in lists:
            lists[key].append(value)
        elif key in values or key not in PARAMS or key in _HANDED_OVER:
            return None  # repeated or unknown: the route's rules decide
        else:
            values[key] = value
    try:
        min_price = _number(values.get("min_price"), upper=PRICE_MAX)
        max_price = _number(values.get("max_price"), upper=PRICE_MAX)
        if min_price is not None and max_price is not None and min_price > max_price:
            return None  # an empty range: the route's 422 names it
        return RecommendQuery(
            k=_k(values.get("k", "10")),
            exclude_seen=_flag(values.get("exclude_seen", "true")),
            filters=ItemFilters(
                categories=_texts(lists["category"]),
                brands=_texts(lists["brand"]),
                min_price=min_price,
                max_price=max_price,
                min_rating=_number(values.get("min_rating"), upper=RATING_MAX),
            ),
        )
    except _NotCanonical:
        return None


class _NotCanonical(ValueError):
    """A value the fast path leaves to FastAPI's validation."""


def _k(raw: str) -> int:
    if not _K.fullmatch(raw) or int(raw) > K_MAX:
        raise _NotCanonical(raw)
    return int(raw)


def _flag(raw: str) -> bool:
    if raw not in _BOOLS:
        raise _NotCanonical(raw)
    return _BOOLS[raw]


def _texts(raw: list[str]) -> list[str]:
    """Values of a repeatable filter, within the route's limits (count and length)."""
    if len(raw) > FILTER_VALUES_MAX or any(len(value) > FILTER_TEXT_MAX for value in raw):
        raise _NotCanonical(raw)
    return raw


def _number(raw: str | None, *, upper: float) -> float | None:
    """A plain decimal in [0, upper] (always finite: at most 15 + 15 digits)."""
    if raw is None:
        return None
    if not _NUMBER.fullmatch(raw) or float(raw) > upper:
        raise _NotCanonical(raw)
    return float(raw)


class RecommendFastPath:
    """ASGI middleware answering canonical ``GET`` requests of the route named ``route_name``
    in ``router`` directly (built with the app's middleware, when the routes are in place).

    The route is set as ``scope["route"]`` so request metrics count fast responses under the
    same route template; its path gives the prefix the fast path answers
    (``/api/v1/recommend/``).
    """

    def __init__(self, app: ASGIApp, *, router: APIRouter, route_name: str) -> None:
        self.app = app
        self.route = next((r for r in router.routes if r.name == route_name), None)
        if self.route is None:
            raise LookupError(f"no route named {route_name!r} for the fast path")
        declared = frozenset(query_param_names(self.route))
        if declared != PARAMS:
            raise ValueError(
                f"the fast path parses {sorted(PARAMS)} but route {route_name!r} takes "
                f"{sorted(declared)}: teach parse_recommend_query the difference"
            )
        self.prefix = self.route.path.removesuffix("{user_id}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(self.prefix):
                body = await self._serve(scope, path[len(self.prefix) :])
                if body is not None:
                    scope["route"] = self.route
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, user_id: str) -> bytes | None:
        """The response body, or None to hand the request to FastAPI's route."""
        state = scope["app"].state
        engine = getattr(state, "engine", None)
        query = parse_recommend_query(scope["query_string"])
        if (
            engine is None
            or query is None
            or not _ID.fullmatch(user_id)
            or not api_key_ok(scope["headers"], state.settings.api_key)
        ):
            return None
        try:
            result = await engine.recommend(
                user_id, k=query.k, exclude_seen=query.exclude_seen, filters=query.filters
            )
        except Exception:  # the documented route meets the same error and reports it properly
            return None
        return result.to_json()
