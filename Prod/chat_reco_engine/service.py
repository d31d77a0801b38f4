"""The chat pipeline: conversation context -> filters -> retrieval -> rerank -> personalise ->
generation (or the grounded fallback) -> persistence. Routes call one function of
:class:`ChatEngine` each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from config import Settings
from Prod.chat_reco_engine import conversation
from Prod.chat_reco_engine.filters import (
    ProductFilters,
    Vocabulary,
    canonicalise,
    merge_filters,
    to_chroma_where,
)
from Prod.chat_reco_engine.llm import (
    FALLBACK,
    LLM,
    LLMClient,
    LLMUnavailable,
    build_messages,
    fallback_answer,
    grounded_proposal,
)
from Prod.chat_reco_engine.personalise import Personaliser, blend, min_max
from Prod.chat_reco_engine.rerank import Reranker
from Prod.chat_reco_engine.retrieval import (
    Candidate,
    best_sentence,
    fetch_metadatas,
    load_vocabulary,
    retrieve_many,
)
from Prod.chat_reco_engine.schemas import (
    ChatRequest,
    ChatResponse,
    DeleteResponse,
    HealthResponse,
    HistoryMessage,
    HistoryResponse,
    ProductOut,
    SearchResponse,
)
from Prod.common.embeddings import embed_texts, load_embedder
from Prod.common.errors import InvalidInput, ModelNotReady
from Prod.common.logs import get_logger
from Prod.common.stores import chroma_for

log = get_logger(__name__)

VOCABULARY_TTL_S = 300.0


@dataclass
class Ranking:
    """Top-k candidates, best first, and how they were scored."""

    candidates: list[Candidate]
    scorer: str
    personalisation: str
    n_retrieved: int


@dataclass
class PreparedTurn:
    """Everything a chat turn decided before generation (shared by /chat and /chat/stream)."""

    request: ChatRequest
    state: conversation.SessionState
    query: str
    filters: ProductFilters
    ranking: Ranking
    products: list[ProductOut]
    suspicious: bool
    timings_ms: dict[str, float] = field(default_factory=dict)


def validated_filters(raw: dict[str, Any]) -> ProductFilters:
    """Filters from query parameters; schema violations become a 422 naming the problem."""
    try:
        return ProductFilters.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'filters'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid filters: {problems}") from None


def _refuse_nul(value: str | None, name: str) -> None:
    # PostgreSQL text cannot hold NUL: refuse it here with a 422 rather than fail in the database
    if value is not None and "\x00" in value:
        raise InvalidInput(f"{name} must not contain NUL (\\x00) characters", field=name)


def _product(candidate: Candidate, query: str) -> ProductOut:
    meta = candidate.metadata
    return ProductOut(
        item_id=candidate.item_id, title=str(meta.get("title") or candidate.item_id),
        brand=meta.get("brand"), category=meta.get("category"), price=meta.get("price"),
        rating=meta.get("avg_rating"), rating_count=meta.get("rating_count"),
        score=round(float(candidate.score), 6), relevance=round(float(candidate.relevance), 6),
        affinity=None if candidate.affinity is None else round(float(candidate.affinity), 6),
        reason=best_sentence(candidate.document, query),
    )  # fmt: skip


def _reranking(settings: Settings) -> tuple[str, int, int]:
    """The settings a loaded :class:`Reranker` depends on."""
    return settings.reranker_model, settings.rerank_max_tokens, settings.rerank_top_n


class ChatEngine:
    """Long-lived models and caches of one chat service (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reranker = Reranker(settings.reranker_model, max_length=settings.rerank_max_tokens,
                                 top_n=settings.rerank_top_n)  # fmt: skip
        self.llm = LLMClient(settings.ollama_host, settings.ollama_model, settings.ollama_timeout_s)
        self.personaliser = Personaliser(settings)
        self._embedder = None
        self._embedding_state = "loading"
        self._embedding_error: str | None = None
        self._embedder_lock = threading.Lock()
        self._vocabulary: tuple[float, str, Vocabulary] | None = None

    def with_settings(self, settings: Settings) -> ChatEngine:
        """An engine for other settings (e.g. another collection) that shares this one's loaded
        cross-encoder; the embedding model is shared through ``load_embedder``'s cache."""
        engine = ChatEngine(settings)
        if _reranking(settings) == _reranking(self.settings):
            engine.reranker = self.reranker
        else:
            engine.reranker.start()
        return engine

    # -- start-up ------------------------------------------------------------------------
    def start(self) -> None:
        """Load the embedding model and the cross-encoder in the background."""
        self.reranker.start()
        threading.Thread(target=self._safe_embedder, name="embedder-load", daemon=True).start()

    def _safe_embedder(self) -> None:
        try:
            self.embedder()
        except ModelNotReady:
            pass  # recorded for /health

    def embedder(self):
        with self._embedder_lock:
            if self._embedder is None:
                try:
                    self._embedder = load_embedder(self.settings.embedding_model)
                    self._embedding_state, self._embedding_error = "ready", None
                except Exception as exc:
                    self._embedding_state = "unavailable"
                    self._embedding_error = f"{type(exc).__name__}: {exc}"[:300]
                    raise ModelNotReady(f"embedding model unavailable: {exc}") from exc
            return self._embedder

    # -- catalogue -----------------------------------------------------------------------
    def collection(self):
        name = self.settings.products_collection
        try:
            return chroma_for(self.settings).get_collection(name)
        except Exception as exc:
            raise ModelNotReady(
                f"product collection {name!r} is not available (run the ingest job): {exc}"
            ) from exc

    def vocabulary(self) -> Vocabulary:
        """Known brands and categories, cached for a few minutes."""
        name = self.settings.products_collection
        cached = self._vocabulary
        if cached and cached[1] == name and time.monotonic() - cached[0] < VOCABULARY_TTL_S:
            return cached[2]
        vocabulary = load_vocabulary(self.collection())
        self._vocabulary = (time.monotonic(), name, vocabulary)
        return vocabulary

    # -- ranking -------------------------------------------------------------------------
    def rank(
        self, query: str, filters: ProductFilters, k: int, user_id: str | None,
        rerank: bool = True,
    ) -> Ranking:  # fmt: skip
        """Retrieve ``retrieval_candidates`` with the filters, rerank, blend, keep the top ``k``."""
        vectors = embed_texts(self.embedder(), [query])
        return self.rank_candidates(query, self.retrieve(vectors, filters)[0], k, user_id, rerank)

    def retrieve(self, query_vectors: np.ndarray, filters: ProductFilters) -> list[list[Candidate]]:
        """``retrieval_candidates`` products per query vector ((n, dim) float32) meeting the
        filters, nearest first, in one Chroma request."""
        return retrieve_many(self.collection(), query_vectors, to_chroma_where(filters),
                             self.settings.retrieval_candidates)  # fmt: skip

    def rank_candidates(
        self, query: str, candidates: list[Candidate], k: int, user_id: str | None,
        rerank: bool = True,
    ) -> Ranking:  # fmt: skip
        """Rerank (cross-encoder, or bi-encoder similarity when ``rerank`` is off or it is not
        loaded), blend with the user's ALS affinity, keep the top ``k``. Sets the candidates'
        ``relevance``, ``affinity`` and ``score``."""
        if not candidates:
            return Ranking([], "bi-encoder", "none", 0)
        if rerank:
            relevance, scorer = self.reranker.score(query, candidates)
        else:
            relevance = np.array([c.similarity for c in candidates], dtype=np.float32)
            scorer = "bi-encoder"
        affinity, source = (None, "none")
        if user_id is not None:
            item_ids = [c.item_id for c in candidates]
            affinity, source = self.personaliser.affinities(user_id, item_ids)
        weight = self.settings.personalisation_weight
        scores = blend(relevance, affinity, weight)
        scaled_affinity = min_max(affinity) if affinity is not None else None
        for n, candidate in enumerate(candidates):
            candidate.relevance = float(relevance[n])
            candidate.score = float(scores[n])
            candidate.affinity = None if scaled_affinity is None else float(scaled_affinity[n])
        order = sorted(range(len(candidates)), key=lambda i: (-scores[i], -relevance[i]))
        return Ranking([candidates[i] for i in order[:k]], scorer, source, len(candidates))

    # -- chat ----------------------------------------------------------------------------
    def _check_message(self, message: str, name: str = "message") -> str:
        limit = self.settings.chat_max_message_chars
        if not message.strip():
            raise InvalidInput(f"{name} must not be empty", field=name)
        _refuse_nul(message, name)
        if len(message) > limit:
            raise InvalidInput(
                f"message is {len(message)} characters; the limit is {limit}", field="message"
            )
        return message.strip()

    def _turn_filters(self, request: ChatRequest, state, message: str, vocabulary: Vocabulary):
        previous = fetch_metadatas(self.collection(), state.last_item_ids)
        condensed = conversation.condense(
            message, previous_query=state.last_query, carried=state.filters,
            previous_products=previous, vocabulary=vocabulary,
        )  # fmt: skip
        changes = dict(condensed.changes)
        if self.settings.chat_llm_filters and not condensed.suspicious:
            proposal = self.llm.propose_filters(message, vocabulary)
            if proposal is not None:
                for name, value in grounded_proposal(proposal, message, vocabulary).items():
                    changes.setdefault(name, value)  # the deterministic parser wins
        explicit = canonicalise(request.filters, vocabulary) if request.filters else None
        try:
            merged = merge_filters(condensed.carried, changes, explicit)
        except ValidationError as exc:
            raise InvalidInput(f"inconsistent filters: {exc.errors()[0]['msg']}") from None
        return condensed, canonicalise(merged, vocabulary)

    def prepare_turn(self, request: ChatRequest) -> PreparedTurn:
        """Context, filters and ranked products for one message (no LLM answer yet)."""
        started = time.perf_counter()
        message = self._check_message(request.message)
        _refuse_nul(request.user_id, "user_id")
        state = conversation.load_state(
            self.settings.database_url,
            session_id=str(request.session_id) if request.session_id else None,
            user_id=request.user_id, turns=self.settings.chat_history_turns,
        )  # fmt: skip
        vocabulary = self.vocabulary()
        condensed, filters = self._turn_filters(request, state, message, vocabulary)
        context_ms = (time.perf_counter() - started) * 1000
        ranking = self.rank(condensed.query, filters, request.k, state.user_id)
        products = [_product(c, condensed.query) for c in ranking.candidates]
        return PreparedTurn(
            request=request, state=state, query=condensed.query, filters=filters,
            ranking=ranking, products=products, suspicious=condensed.suspicious,
            timings_ms={"context": round(context_ms, 1),
                        "ranking": round((time.perf_counter() - started) * 1000 - context_ms, 1)},
        )  # fmt: skip

    @staticmethod
    def _listing(turn: PreparedTurn) -> list[tuple[str, dict[str, Any], str]]:
        pairs = zip(turn.products, turn.ranking.candidates, strict=True)
        return [(p.item_id, c.metadata, p.reason) for p, c in pairs]

    def _prompt(self, turn: PreparedTurn) -> list[dict[str, str]]:
        listing = self._listing(turn)
        recent = turn.state.turns[-2 * self.settings.chat_history_turns:]
        return build_messages(products=listing, turns=recent, message=turn.request.message.strip(),
                              filters=turn.filters)  # fmt: skip

    def _fallback(self, turn: PreparedTurn) -> str:
        return fallback_answer(self._listing(turn), turn.filters)

    def _finish(self, turn: PreparedTurn, answer: str, generated_by: str) -> ChatResponse:
        """Persist the exchange (committed before anyone sees the final payload)."""
        conversation.save_exchange(
            self.settings.database_url, state=turn.state, user_text=turn.request.message.strip(),
            standalone_query=turn.query, filters=turn.filters, answer=answer,
            item_ids=[p.item_id for p in turn.products], generated_by=generated_by,
        )  # fmt: skip
        return ChatResponse(
            session_id=turn.state.session_id, answer=answer, products=turn.products,
            filters=turn.filters.set_fields(), standalone_query=turn.query,
            generated_by=generated_by, reranker=turn.ranking.scorer,
            personalisation=turn.ranking.personalisation,
        )  # fmt: skip

    def answer_tokens(self, turn: PreparedTurn) -> Iterator[tuple[str, str]]:
        """(token, producer) pairs: the LLM's tokens, or the template's lines if it fails
        before its first token. A failure mid-answer ends the answer where it stopped."""
        produced = False
        try:
            for token in self.llm.stream_answer(self._prompt(turn)):
                produced = True
                yield token, LLM
        except LLMUnavailable:
            pass
        if not produced:  # unreachable, timed out, model missing, or an empty answer
            for line in self._fallback(turn).splitlines(keepends=True):
                yield line, FALLBACK

    def chat(self, request: ChatRequest) -> ChatResponse:
        turn = self.prepare_turn(request)
        parts, producer = [], FALLBACK
        for token, source in self.answer_tokens(turn):
            parts.append(token)
            producer = source
        return self._finish(turn, "".join(parts).strip(), producer)

    def stream_events(self, turn: PreparedTurn) -> Iterator[tuple[str, dict[str, Any]]]:
        """SSE events: ``products`` first, ``token`` per piece of the answer, then ``done`` with
        the final payload (sent after the exchange is committed)."""
        yield "products", {
            "session_id": turn.state.session_id,
            "filters": turn.filters.set_fields(),
            "standalone_query": turn.query,
            "reranker": turn.ranking.scorer,
            "personalisation": turn.ranking.personalisation,
            "products": [p.model_dump() for p in turn.products],
        }
        parts, producer = [], FALLBACK
        for token, source in self.answer_tokens(turn):
            parts.append(token)
            producer = source
            yield "token", {"text": token}
        final = self._finish(turn, "".join(parts).strip(), producer)
        yield "done", final.model_dump(mode="json")

    # -- search, history -----------------------------------------------------------------
    def search(
        self, q: str, filters: ProductFilters, k: int, user_id: str | None = None
    ) -> SearchResponse:
        query = self._check_message(q, "q")
        _refuse_nul(user_id, "user_id")
        vocabulary = self.vocabulary()
        filters = canonicalise(filters, vocabulary)
        ranking = self.rank(query, filters, k, user_id)
        return SearchResponse(
            query=query, filters=filters.set_fields(),
            products=[_product(c, query) for c in ranking.candidates],
            reranker=ranking.scorer, personalisation=ranking.personalisation,
        )  # fmt: skip

    def history(self, session_id: str, limit: int) -> HistoryResponse:
        user_id, turns = conversation.read_history(self.settings.database_url, session_id, limit)
        return HistoryResponse(
            session_id=session_id, user_id=user_id,
            messages=[HistoryMessage(
                role=t.role, content=t.content, filters=t.filters, product_ids=t.item_ids,
                standalone_query=t.standalone_query, generated_by=t.generated_by,
                created_at=t.created_at) for t in turns],
        )  # fmt: skip

    def delete(self, session_id: str) -> DeleteResponse:
        deleted = conversation.delete_session(self.settings.database_url, session_id)
        return DeleteResponse(session_id=session_id, deleted_messages=deleted)

    # -- health --------------------------------------------------------------------------
    def health(self) -> HealthResponse:
        embedding = {"model": self.settings.embedding_model or "all-MiniLM-L6-v2 (packaged)",
                     "status": self._embedding_state, "error": self._embedding_error}  # fmt: skip
        try:
            count = self.collection().count()
            chroma = {"status": "ready", "collection": self.settings.products_collection,
                      "products": count}  # fmt: skip
        except ModelNotReady as exc:
            chroma = {"status": "unavailable", "collection": self.settings.products_collection,
                      "error": exc.message[:300]}  # fmt: skip
        llm = self.llm.status()
        reranker = self.reranker.status()
        if embedding["status"] == "unavailable" or chroma["status"] != "ready":
            overall = "down"
        elif reranker["status"] == "ready" and llm["status"] == "ready":
            overall = "ok"
        else:
            overall = "degraded"  # answers still work: bi-encoder scores / templated answers
        return HealthResponse(status=overall, embedding=embedding, reranker=reranker, llm=llm,
                              chroma=chroma)  # fmt: skip
