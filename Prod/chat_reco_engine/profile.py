"""Preference summaries (``GET /api/v1/users/{user_id}/profile``): a user's taste in a sentence
or two, with the facts behind it.

**Facts.** The user's (user, item) pairs under the negative-feedback rule
(:func:`Prod.common.feedback.user_pairs_sql`: summed event weights - view 1, click 2, add to cart
4, purchase 8 (``EVENT_WEIGHTS``), a rating its stars - and disliked pairs apart), each weight
halved every ``HALF_LIFE_DAYS`` before the user's newest event. From them: the top categories
and brands (weight, share, products), the weighted quartiles of the prices paid, the strongest
and the most recent products, the categories disliked; and, with an active ALS model, the
products the user's ALS factor scores highest (not yet interacted with).

**Summary.** The LLM (the chat's client: timeouts, outage breaker) writes it from those facts
only; :func:`.grounding.check_summary` rejects one naming none of the facts, reciting the
prompt, stopping mid-sentence, or naming a brand, category, model or price not in the facts,
and the template replaces it (``generated_by: guard``,
counted in ``reco_chat_profile_ungrounded_total{reason}``). No LLM answer: the template
(``fallback``).

**Cache** (Redis, ``reco:profile:{user_id}:{digest}``): the digest covers the active model
version, the user's interaction count and newest interaction id, and the LLM. Interaction ids
only grow, so any new event (or a deletion, which lowers the count) changes the key: the cache
is invalidated by the read itself, with no hook in the ALS engine's write path (another
service). The fingerprint costs one index range scan of the user's rows. Old keys expire.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from Prod.chat_reco_engine.grounding import check_summary
from Prod.chat_reco_engine.llm import FALLBACK, GUARD, LLM, LLMUnavailable
from Prod.chat_reco_engine.schemas import PriceBand, ProfileItem, ProfileResponse, TasteShare
from Prod.common import model_store
from Prod.common.canonical_format import EVENT_WEIGHTS, RATING_EVENT
from Prod.common.db import session_scope
from Prod.common.errors import InfraError, ModelNotReady, NotFound
from Prod.common.feedback import user_pairs_sql
from Prod.common.logs import get_logger
from Prod.common.stores import redis_for

if TYPE_CHECKING:
    from Prod.chat_reco_engine.service import ChatEngine

log = get_logger(__name__)

HALF_LIFE_DAYS = 90.0  # an interaction a quarter older than the newest counts half
TOP = 3  # categories, brands, disliked categories, recent products, ALS picks
SAMPLE_ITEMS = 5  # strongest interactions shown
CACHE_TTL_S = 86_400  # catalogue edits (titles, prices) show within a day
RETRY_LLM_TTL_S = 60  # a template written because the LLM did not answer: ask again soon
MAX_SUMMARY_CHARS = 600
FORMAT = "1"  # bump when the response or the summary rules change
# a rating is an explicit verdict on a product the user knows: stronger than a cart, not a sale
_RATING_RANK = (EVENT_WEIGHTS["add_to_cart"] + EVENT_WEIGHTS["purchase"]) / 2
_VERBS = {
    "purchase": "buys",
    "add_to_cart": "puts in the cart",
    "click": "clicks on",
    "view": "browses",
    RATING_EVENT: "rates",
}

SUMMARY_PROMPT = """You describe one shopper's taste for the shop's staff.
Rules: use ONLY the FACTS below. Never name a product, brand or category that is not in the
FACTS, and never state a price that is not in them. Write one or two short sentences in the
third person ("Mostly buys ..."): no greeting, no advice, no list."""
QUESTION = 'In one or two sentences, what does this shopper like? Start with "Mostly".'

_FINGERPRINT = text(
    'select exists(select 1 from "user" where user_id = :user_id), count(x.id), '
    "coalesce(max(x.id), 0) from interaction x where x.user_id = :user_id"
)
_EVENTS = text(
    "select x.item_id, x.event, max(x.occurred_at), i.title, i.brand, i.category, i.price, "
    "i.avg_rating from interaction x join item i on i.item_id = x.item_id "
    "where x.user_id = :user_id group by x.item_id, x.event, i.item_id"
)
_ITEMS = text(
    "select item_id, title, brand, category, price, avg_rating from item where item_id = any(:ids)"
)


@dataclass(frozen=True)
class Fingerprint:
    """What the cache key knows of the user's interactions."""

    events: int
    last_id: int


@dataclass
class ItemTaste:
    item_id: str
    meta: dict[str, Any]  # title, brand, category, price, avg_rating
    weight: float  # recency-decayed
    event: str  # strongest
    last_at: datetime


@dataclass
class Taste:
    """The facts of one user's taste (see the module docstring)."""

    user_id: str
    events: int
    items: list[ItemTaste]  # liked, strongest first
    recent: list[ItemTaste]
    categories: list[TasteShare]
    brands: list[TasteShare]
    price_band: PriceBand | None
    verb: str
    disliked_categories: list[str] = field(default_factory=list)


def fingerprint(database_url: str, user_id: str) -> Fingerprint | None:
    """(count, newest id) of the user's interactions; None when the platform has never seen the
    user (no user row, no interaction)."""
    with session_scope(database_url) as db:
        known, events, last_id = db.execute(_FINGERPRINT, {"user_id": user_id}).one()
    if not known and not events:
        return None
    return Fingerprint(int(events), int(last_id))


def _rank(event: str) -> float:
    return _RATING_RANK if event == RATING_EVENT else EVENT_WEIGHTS.get(event, 0.0)


def _shares(items: list[ItemTaste], key: str, total: float) -> list[TasteShare]:
    weights: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        name = item.meta.get(key)
        if name:
            weights[name] += item.weight
            counts[name] += 1
    order = sorted(weights, key=lambda n: (-weights[n], -counts[n], n))
    return [
        TasteShare(
            name=n,
            items=counts[n],
            weight=round(weights[n], 3),
            share=round(weights[n] / total, 4) if total > 0 else 0.0,
        )
        for n in order[:TOP]
    ]


def weighted_quantile(prices: list[float], weights: list[float], q: float) -> float:
    """The first price (ascending) whose cumulative weight reaches ``q`` of the total: always
    one of ``prices``."""
    pairs = sorted(zip(prices, weights, strict=True))
    total = sum(w for _, w in pairs)
    running = 0.0
    for price, weight in pairs:
        running += weight
        if running >= q * total - 1e-12:
            return price
    return pairs[-1][0]


def _price_band(items: list[ItemTaste]) -> PriceBand | None:
    priced = [(float(i.meta["price"]), i.weight) for i in items if i.meta.get("price") is not None]
    if not priced:
        return None
    prices, weights = [p for p, _ in priced], [w for _, w in priced]
    low, median, high = (weighted_quantile(prices, weights, q) for q in (0.25, 0.5, 0.75))
    return PriceBand(low=low, median=median, high=high)


def read_taste(database_url: str, user_id: str, negative_below: float, events: int) -> Taste:
    """The user's taste from PostgreSQL (two queries)."""
    with session_scope(database_url) as db:
        pairs = db.execute(user_pairs_sql(negative_below), {"user_id": user_id}).all()
        rows = db.execute(_EVENTS, {"user_id": user_id}).all()
    meta: dict[str, dict[str, Any]] = {}
    strongest: dict[str, str] = {}
    last_at: dict[str, datetime] = {}
    for item_id, event, at, title, brand, category, price, rating in rows:
        meta[item_id] = {
            "title": title,
            "brand": brand,
            "category": category,
            "price": price,
            "avg_rating": rating,
        }
        if item_id not in strongest or _rank(event) > _rank(strongest[item_id]):
            strongest[item_id] = event
        last_at[item_id] = max(at, last_at.get(item_id, at))
    newest = max(last_at.values(), default=None)
    liked, disliked = [], []
    for item_id, weight, _, is_disliked in pairs:
        if item_id not in meta:
            continue
        if is_disliked:
            disliked.append(item_id)
        elif weight > 0:
            age_days = (newest - last_at[item_id]).total_seconds() / 86_400
            decayed = float(weight) * 0.5 ** (age_days / HALF_LIFE_DAYS)
            liked.append(
                ItemTaste(item_id, meta[item_id], decayed, strongest[item_id], last_at[item_id])
            )
    liked.sort(key=lambda i: (-i.weight, -i.last_at.timestamp(), i.item_id))
    total = sum(i.weight for i in liked)
    by_event: dict[str, float] = defaultdict(float)
    for item in liked:
        by_event[item.event] += item.weight
    verb_event = max(by_event, key=lambda e: (by_event[e], _rank(e)), default="view")
    disliked_counts: dict[str, int] = defaultdict(int)
    for item_id in disliked:
        if meta[item_id].get("category"):
            disliked_counts[meta[item_id]["category"]] += 1
    return Taste(
        user_id=user_id,
        events=events,
        items=liked,
        recent=sorted(liked, key=lambda i: (-i.last_at.timestamp(), i.item_id))[:TOP],
        categories=_shares(liked, "category", total),
        brands=_shares(liked, "brand", total),
        price_band=_price_band(liked),
        verb=_VERBS.get(verb_event, "browses"),
        disliked_categories=sorted(disliked_counts, key=lambda c: (-disliked_counts[c], c))[:TOP],
    )


# -- summaries ---------------------------------------------------------------------------


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _money(value: float) -> str:
    return f"${value:.2f}"


def template_summary(taste: Taste) -> str:
    """Deterministic English from the facts: "Mostly buys Books and Electronics (Anker,
    Kindle), usually $8.99-$29.99; recently: Kindle Paperwhite, Anker PowerCore."."""
    if not taste.items:
        if taste.disliked_categories:
            return f"No positive interactions yet; not keen on {_and(taste.disliked_categories)}."
        return "No interactions recorded yet, so there is no taste to describe."
    categories = [c.name for c in taste.categories[:2]]
    brands = [b.name for b in taste.brands[:2]]
    what = _and(categories) if categories else (f"{_and(brands)} products" if brands else "")
    sentence = f"Mostly {taste.verb} {what or 'a bit of everything'}"
    if categories and brands:
        sentence += f" ({', '.join(brands)})"
    band = taste.price_band
    if band is not None:
        if band.low == band.high:
            sentence += f", usually around {_money(band.median)}"
        else:
            sentence += f", usually {_money(band.low)}-{_money(band.high)}"
    recent = [str(i.meta.get("title") or i.item_id) for i in taste.recent]
    sentence += f"; recently: {', '.join(recent)}."
    if taste.disliked_categories:
        sentence += f" Not keen on {_and(taste.disliked_categories)}."
    return sentence


# the labels of the fact lines: a summary that copies one recites the prompt (guard: echo)
LABELS = (
    "FACTS:",
    "Most of their activity:",
    "Top categories:",
    "Favourite brands:",
    "Usual price:",
    "Strongest interactions:",
    "Most recent:",
    "Not keen on:",
    "of activity",
)


def facts_text(taste: Taste) -> str:
    """The facts as the LLM gets them (nothing else about the user)."""
    lines = [f"Most of their activity: they {taste.verb} products."]
    if taste.categories:
        lines.append(
            "Top categories: "
            + "; ".join(
                f"{c.name} ({round(100 * c.share)}% of activity, {c.items} products)"
                for c in taste.categories
            )
        )
    if taste.brands:
        lines.append(
            "Favourite brands: " + "; ".join(f"{b.name} ({b.items} products)" for b in taste.brands)
        )
    band = taste.price_band
    if band is not None:
        lines.append(
            f"Usual price: {_money(band.low)} to {_money(band.high)}, median {_money(band.median)}"
        )
    strongest = taste.items[:SAMPLE_ITEMS]
    lines.append(
        "Strongest interactions: "
        + "; ".join(f"{i.meta.get('title')} ({i.event.replace('_', ' ')})" for i in strongest)
    )
    lines.append("Most recent: " + "; ".join(str(i.meta.get("title")) for i in taste.recent))
    if taste.disliked_categories:
        lines.append(f"Not keen on: {', '.join(taste.disliked_categories)}")
    return "\n".join(lines)


def _fact_items(taste: Taste) -> list[ItemTaste]:
    seen = {i.item_id: i for i in [*taste.items[:SAMPLE_ITEMS], *taste.recent]}
    return list(seen.values())


def _clean(answer: str) -> str:
    """One line, without a "Summary:" prefix, cut after its last full sentence (an answer cut
    at the token limit loses its unfinished one; with none it stays, and the guard rejects it)."""
    answer = re.sub(r"\s+", " ", answer).strip().strip('"').strip()
    answer = re.sub(r"^(summary|answer)\s*:\s*", "", answer, flags=re.IGNORECASE)
    answer = answer[:MAX_SUMMARY_CHARS]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", answer)]
    return answer[: ends[-1]] if ends else answer


def summarise(engine: ChatEngine, taste: Taste) -> tuple[str, str]:
    """(summary, generated_by): the LLM's when it answers and the guard lets it through."""
    template = template_summary(taste)
    if not taste.items:
        return template, FALLBACK  # nothing to describe: no LLM call
    # the facts in the system message, a question as the user's: with the facts as the user's
    # message SmolLM2 recited them (0 of 8 summaries kept), asked this way 3 of 8 were kept
    messages = [
        {"role": "system", "content": f"{SUMMARY_PROMPT}\n\nFACTS:\n{facts_text(taste)}"},
        {"role": "user", "content": QUESTION},
    ]
    try:
        answer = _clean("".join(engine.llm.stream_answer(messages)))
    except LLMUnavailable:
        return template, FALLBACK
    if not answer:
        return template, FALLBACK
    try:
        vocabulary = engine.vocabulary()
    except (InfraError, ModelNotReady) as exc:  # no catalogue names to check against
        log.info("profile summary of %s not checkable (%s): template", taste.user_id, exc)
        return template, FALLBACK
    band = taste.price_band
    verdict = check_summary(
        answer,
        items=[(i.item_id, i.meta) for i in _fact_items(taste)],
        categories=[*(c.name for c in taste.categories), *taste.disliked_categories],
        brands=[b.name for b in taste.brands],
        amounts=[band.low, band.median, band.high] if band else [],
        vocabulary=vocabulary,
        labels=list(LABELS),
    )
    if verdict.grounded:
        return answer, LLM
    for reason in verdict.reasons:
        engine.metrics.profile_ungrounded.labels(reason=reason).inc()
    log.info("profile summary replaced by the template: %s", "; ".join(verdict.reasons))
    return template, GUARD


# -- ALS picks -----------------------------------------------------------------------------


def als_picks(engine: ChatEngine, user_id: str) -> list[ProfileItem]:
    """The products the active model's factor of the user (published, or folded in) scores
    highest, without those they interacted with; none without a model or on a store error."""
    try:
        ranked, _ = engine.personaliser.ranked_items(user_id, TOP)
        if not ranked:
            return []
        with session_scope(engine.settings.database_url) as db:
            rows = db.execute(_ITEMS, {"ids": [item_id for item_id, _ in ranked]}).all()
    except Exception as exc:  # an enhancement of the profile: never fail it
        log.info("ALS picks for %s skipped: %s", user_id, exc)
        return []
    by_id = {r[0]: r for r in rows}
    return [
        ProfileItem(
            item_id=item_id,
            title=by_id[item_id][1],
            brand=by_id[item_id][2],
            category=by_id[item_id][3],
            price=by_id[item_id][4],
            avg_rating=by_id[item_id][5],
            source="als",
            weight=round(score, 6),
        )
        for item_id, score in ranked
        if item_id in by_id and math.isfinite(score)
    ]


# -- the endpoint --------------------------------------------------------------------------


def cache_key(user_id: str, version: str | None, stamp: Fingerprint, llm_label: str) -> str:
    digest = hashlib.sha1(
        f"{FORMAT}|{version}|{stamp.events}|{stamp.last_id}|{llm_label}".encode()
    ).hexdigest()[:20]
    return f"reco:profile:{user_id}:{digest}"


def _active_version(engine: ChatEngine) -> str | None:
    try:
        return model_store.active_version(redis_for(engine.settings))
    except Exception as exc:  # Redis down: no model, no cache; the profile still answers
        log.info("active model unknown (%s)", exc)
        return None


def _history_item(item: ItemTaste) -> ProfileItem:
    return ProfileItem(
        item_id=item.item_id,
        title=str(item.meta.get("title") or item.item_id),
        brand=item.meta.get("brand"),
        category=item.meta.get("category"),
        price=item.meta.get("price"),
        avg_rating=item.meta.get("avg_rating"),
        source="history",
        event=item.event,
        weight=round(item.weight, 3),
    )


def user_profile(engine: ChatEngine, user_id: str) -> ProfileResponse:
    """The profile of ``user_id``, from the cache when the model version and the user's
    interactions are unchanged. Unknown user: NotFound; PostgreSQL down: InfraError (503)."""
    settings = engine.settings
    stamp = fingerprint(settings.database_url, user_id)
    if stamp is None:
        raise NotFound(
            f"user {user_id!r} not found: no such user and no interactions", user_id=user_id
        )
    version = _active_version(engine)
    key = cache_key(user_id, version, stamp, engine.llm.endpoint.label)
    redis_client = redis_for(settings)
    try:
        raw = redis_client.get(key)
    except Exception as exc:  # the cache is an optimisation
        log.info("profile cache unavailable: %s", exc)
        raw = None
    if raw is not None:
        engine.metrics.profile_cache.labels(result="hit").inc()
        return ProfileResponse.model_validate_json(raw).model_copy(update={"cached": True})
    engine.metrics.profile_cache.labels(result="miss").inc()
    taste = read_taste(settings.database_url, user_id, settings.negative_rating_below, stamp.events)
    summary, producer = summarise(engine, taste)
    engine.metrics.profile_summaries.labels(producer=producer).inc()
    picks = als_picks(engine, user_id) if version else []
    response = ProfileResponse(
        user_id=user_id,
        summary=summary,
        generated_by=producer,
        model_version=version,
        events=taste.events,
        top_categories=taste.categories,
        top_brands=taste.brands,
        price_band=taste.price_band,
        disliked_categories=taste.disliked_categories,
        sample_items=[*(_history_item(i) for i in taste.items[:SAMPLE_ITEMS]), *picks],
        cached=False,
        generated_at=datetime.now(timezone.utc),
    )
    final = producer != FALLBACK or not taste.items  # else the LLM did not answer: retry soon
    try:
        redis_client.set(
            key, response.model_dump_json(), ex=CACHE_TTL_S if final else RETRY_LLM_TTL_S
        )
    except Exception as exc:
        log.info("profile not cached: %s", exc)
    return response
