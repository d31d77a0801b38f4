"""The chat service's domain metrics (one set per app, shared by engines made with
:meth:`ChatEngine.with_settings`).

Per answered turn (counted once, where the exchange is saved):
``reco_chat_answers_total{producer="llm|fallback"}``, ``reco_chat_turns_total{kind="refine|new|
reset"}``, ``reco_chat_unmatched_total{kind="brands|terms|filters"}`` (turns whose request named
something no product matches). Per LLM answer: ``reco_chat_llm_duration_seconds`` (to its last
token) and ``reco_chat_llm_errors_total``; ``reco_chat_llm_ungrounded_total{reason}`` (answers
the grounding guard replaced, ``producer="guard"`` above; one answer may count several reasons).
Per filter proposal asked of the LLM: ``reco_chat_llm_filter_proposals_total{outcome="kept|
dropped|empty|invalid|unavailable"}`` (``invalid``: failed the schema, never applied; ``dropped``:
valid but nothing in it grounded in the message). Per profile request:
``reco_chat_profile_cache_total{result="hit|miss"}``; per summary written
``reco_chat_profile_summaries_total{producer}`` and ``reco_chat_profile_ungrounded_total{reason}``
(:data:`.grounding.SUMMARY_REASONS`). At scrape time:
``reco_chat_reranker_state{state}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric

from Prod.chat_reco_engine.dialogue import TurnKind
from Prod.chat_reco_engine.grounding import REASONS, SUMMARY_REASONS
from Prod.chat_reco_engine.llm import FALLBACK, LLM
from Prod.common.metrics import one_hot

if TYPE_CHECKING:
    from Prod.chat_reco_engine.rerank import Reranker
    from Prod.chat_reco_engine.schemas import Unmatched

UNMATCHED_KINDS = ("brands", "terms", "filters")
RERANKER_STATES = ("disabled", "loading", "ready", "unavailable")
PROPOSAL_OUTCOMES = ("kept", "dropped", "empty", "invalid", "unavailable")
# a local Mistral answers in seconds; a cold one or a long answer takes tens
LLM_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class ChatMetrics:
    """Counters and histograms the chat pipeline updates, plus the reranker state collector."""

    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker
        self.answers = Counter(
            "reco_chat_answers", "Chat answers by producer", ["producer"], registry=None
        )
        self.by_producer = {p: self.answers.labels(producer=p) for p in (LLM, FALLBACK)}
        self.turns = Counter("reco_chat_turns", "Chat turns by kind", ["kind"], registry=None)
        self.by_kind = {k.value: self.turns.labels(kind=k.value) for k in TurnKind}
        self.unmatched = Counter(
            "reco_chat_unmatched",
            "Turns naming brands, terms or filter bounds no product meets",
            ["kind"],
            registry=None,
        )
        self.by_unmatched = {k: self.unmatched.labels(kind=k) for k in UNMATCHED_KINDS}
        self.llm_seconds = Histogram(
            "reco_chat_llm_duration_seconds",
            "LLM answers, first request to last token",
            buckets=LLM_BUCKETS,
            registry=None,
        )
        self.llm_errors = Counter(
            "reco_chat_llm_errors",
            "LLM answers that failed (unreachable, timed out, model missing, empty)",
            registry=None,
        )
        self.ungrounded = Counter(
            "reco_chat_llm_ungrounded",
            "LLM answers replaced by the grounded template, by reason",
            ["reason"],
            registry=None,
        )
        self.by_reason = {r: self.ungrounded.labels(reason=r) for r in REASONS}
        self.proposals = Counter(
            "reco_chat_llm_filter_proposals",
            "LLM filter proposals by outcome (invalid ones are never applied)",
            ["outcome"],
            registry=None,
        )
        self.by_outcome = {o: self.proposals.labels(outcome=o) for o in PROPOSAL_OUTCOMES}
        # preference summaries (GET /users/{user_id}/profile, :mod:`.profile`)
        self.profile_summaries = Counter(
            "reco_chat_profile_summaries",
            "Preference summaries written (cache misses), by producer",
            ["producer"],
            registry=None,
        )
        self.profile_ungrounded = Counter(
            "reco_chat_profile_ungrounded",
            "LLM preference summaries replaced by the template, by reason",
            ["reason"],
            registry=None,
        )
        for reason in SUMMARY_REASONS:
            self.profile_ungrounded.labels(reason=reason)
        self.profile_cache = Counter(
            "reco_chat_profile_cache", "Profile requests by cache result", ["result"], registry=None
        )

    def record_turn(self, kind: str, producer: str, unmatched: Unmatched | None) -> None:
        # llm and fallback are labelled at start, guard on first use
        self.answers.labels(producer=producer).inc()
        self.by_kind[kind].inc()
        if unmatched is not None:
            for name in UNMATCHED_KINDS:
                if getattr(unmatched, name):
                    self.by_unmatched[name].inc()

    def collectors(self) -> tuple:
        return (
            self.answers,
            self.turns,
            self.unmatched,
            self.llm_seconds,
            self.llm_errors,
            self.ungrounded,
            self.proposals,
            self.profile_summaries,
            self.profile_ungrounded,
            self.profile_cache,
            self,
        )

    def collect(self) -> Iterator[Metric]:
        yield one_hot(
            "reco_chat_reranker_state",
            "Cross-encoder state (1); bi-encoder ranking unless ready",
            "state",
            self.reranker.state,
            RERANKER_STATES,
        )
