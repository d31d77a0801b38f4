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
from Prod.chat_reco_engine.chat_models import LLMEndpoint
from Prod.chat_reco_engine.dialogue import Condensed, TopicFit, TurnKind, condense
from Prod.chat_reco_engine.filters import (
    ProductFilters,
    Vocabulary,
    canonicalise,
    merge_filters,
    to_chroma_where,
)
from Prod.chat_reco_engine.grounding import check_answer
from Prod.chat_reco_engine.llm import (
    FALLBACK,
    GUARD,
    LLM,
    RESET_ANSWER,
    LLMClient,
    LLMUnavailable,
    build_messages,
    fallback_answer,
    grounded_proposal,
)
from Prod.chat_reco_engine.metrics import ChatMetrics
from Prod.chat_reco_engine.named_items import (
    TitleIndex,
    TitleMatch,
    confirmation,
    named_phrases,
    recommend_for_named,
)
from Prod.chat_reco_engine.personalise import Personaliser, blend, min_max
from Prod.chat_reco_engine.profile import user_profile
from Prod.chat_reco_engine.relevance import (
    RelevanceFloor,
    calibrate_floor,
    text_words,
)
from Prod.chat_reco_engine.rerank import Reranker
from Prod.chat_reco_engine.retrieval import (
    Candidate,
    best_sentence,
    fetch_metadatas,
    read_catalogue,
    retrieve_many,
)
from Prod.chat_reco_engine.schemas import (
    ChatRequest,
    ChatResponse,
    DeleteResponse,
    HealthResponse,
    HistoryMessage,
    HistoryResponse,
    NamedItem,
    ProductOut,
    ProfileResponse,
    SearchResponse,
    Unmatched,
)
from Prod.chat_reco_engine.wish import WishRecommender
from Prod.common.embeddings import embed_texts, load_embedder
from Prod.common.errors import InfraError, InvalidInput, ModelNotReady
from Prod.common.logs import get_logger
from Prod.common.stores import chroma_errors, chroma_for, ping_redis, redis_for

log = get_logger(__name__)

VOCABULARY_TTL_S = 300.0
RECALIBRATE_CHANGE = 0.05  # recalibrate the floor when the catalogue grew or shrank by 5%


@dataclass(frozen=True)
class Catalogue:
    """What the chat knows of the whole catalogue, refreshed every few minutes."""

    name: str
    size: int
    vocabulary: Vocabulary
    words: frozenset[str]  # every word of the product texts (relevance.word_key)
    floor: RelevanceFloor | None
    loaded_at: float


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
    turn: TurnKind = TurnKind.NEW
    unmatched: Unmatched | None = None
    notes: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    named: list[TitleMatch] = field(default_factory=list)  # liked items the message names


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


def _product(candidate: Candidate, query: str, alternative: bool = False) -> ProductOut:
    meta = candidate.metadata
    return ProductOut(
        item_id=candidate.item_id,
        title=str(meta.get("title") or candidate.item_id),
        brand=meta.get("brand"),
        category=meta.get("category"),
        price=meta.get("price"),
        avg_rating=meta.get("avg_rating"),
        rating_count=meta.get("rating_count"),
        score=round(float(candidate.score), 6),
        relevance=round(float(candidate.relevance), 6),
        affinity=None if candidate.affinity is None else round(float(candidate.affinity), 6),
        reason=best_sentence(candidate.document, query),
        alternative=alternative,
    )


def _without_spans(message: str, spans: list[tuple[int, int]]) -> str:
    for start, end in sorted(spans, reverse=True):
        message = f"{message[:start]} {message[end:]}"
    return message


def _named_out(named: list[TitleMatch]) -> list[NamedItem]:
    return [
        NamedItem(query=m.query, item_id=m.item_id, title=m.title, score=m.score) for m in named
    ]


def _reranking(settings: Settings) -> tuple[str, int, int]:
    """The settings a loaded :class:`Reranker` depends on."""
    return settings.reranker_model, settings.rerank_max_tokens, settings.rerank_top_n


class ChatEngine:
    """Long-lived models and caches of one chat service (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reranker = Reranker(
            settings.reranker_model,
            max_length=settings.rerank_max_tokens,
            top_n=settings.rerank_top_n,
        )
        self.llm = LLMClient(LLMEndpoint.from_settings(settings))
        self.personaliser = Personaliser(settings)
        self.titles = TitleIndex()  # "I loved X and Y": catalogue titles (named_items.py)
        self.metrics = ChatMetrics(self.reranker)
        self.wish = WishRecommender(self)  # "recommend me something, but ..." (wish.py)
        self._embedder = None
        self._embedding_state = "loading"
        self._embedding_error: str | None = None
        self._embedder_lock = threading.Lock()
        self._catalogue: Catalogue | None = None
        self._catalogue_lock = threading.Lock()

    def with_settings(self, settings: Settings) -> ChatEngine:
        """An engine for other settings (e.g. another collection) that shares this one's loaded
        cross-encoder; the embedding model is shared through ``load_embedder``'s cache."""
        engine = ChatEngine(settings)
        engine.metrics = self.metrics
        if _reranking(settings) == _reranking(self.settings):
            engine.reranker = self.reranker
        else:
            engine.reranker.start()
        return engine

    # -- start-up ------------------------------------------------------------------------
    def start(self) -> None:
        """Load the embedding model and the cross-encoder in the background."""
        self.reranker.start()
        threading.Thread(target=self._warm_up, name="embedder-load", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            self.embedder()
            catalogue = self.catalogue()  # calibrates the relevance floor before the first turn
            self.titles.matcher(catalogue.loaded_at, self.collection(), self._embed)
        except (ModelNotReady, InfraError) as exc:
            log.warning("not ready: %s (see /health)", exc)  # recorded for /health
            return
        floor = (self._floor_status() or {}).get("value")
        log.info(
            "ready: %d products in %r, relevance floor %s; reranker %s; answers by %s at %s "
            "(grounded template when it does not answer)",
            catalogue.size,
            catalogue.name,
            "none" if floor is None else f"{floor:.3f}",
            self.reranker.state,
            self.settings.ollama_model,
            self.settings.ollama_host,
        )

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
            with chroma_errors():  # the server is down: 503 naming chroma, not "run the ingest"
                return chroma_for(self.settings).get_collection(name)
        except InfraError:
            raise
        except Exception as exc:
            raise ModelNotReady(
                f"product collection {name!r} is not available (run the ingest job): {exc}"
            ) from exc

    def vocabulary(self) -> Vocabulary:
        """Known brands and categories, cached for a few minutes."""
        return self.catalogue().vocabulary

    def catalogue(self) -> Catalogue:
        """Vocabulary, words and relevance floor of the catalogue, re-read every few minutes;
        the floor is recalibrated only when the catalogue changed size (it costs ~1 s)."""
        name = self.settings.products_collection
        with self._catalogue_lock:
            cached = self._catalogue
            if (
                cached
                and cached.name == name
                and time.monotonic() - cached.loaded_at < (VOCABULARY_TTL_S)
            ):
                return cached
            collection = self.collection()
            recalibrate = (
                cached is None
                or cached.name != name
                or abs(collection.count() - cached.size) > RECALIBRATE_CHANGE * cached.size
            )
            page = read_catalogue(collection, max_vectors=5000 if recalibrate else 0)
            vocabulary = Vocabulary.from_metadatas(page.metadatas)
            words = text_words(page.documents)
            floor = cached.floor if cached and not recalibrate else None
            if recalibrate and len(page.vectors):
                titles = [str(m.get("title") or "") for m in page.metadatas[: len(page.vectors)]]
                floor = calibrate_floor(page.vectors, titles, vocabulary, words, self._embed)
            self._catalogue = Catalogue(
                name=name,
                size=len(page.metadatas),
                vocabulary=vocabulary,
                words=words,
                floor=floor,
                loaded_at=time.monotonic(),
            )
            return self._catalogue

    def _embed(self, texts: list[str]) -> np.ndarray:
        return embed_texts(self.embedder(), texts, self.settings.embedding_batch_size)

    def _floor_status(self) -> dict[str, Any] | None:
        """The floor in force and where it comes from (None until the catalogue was read)."""
        if self.settings.chat_relevance_floor is not None:
            return {"value": self.settings.chat_relevance_floor, "source": "settings"}
        cached = self._catalogue
        return cached.floor.as_dict() if cached and cached.floor else None

    def _unsold(self, condensed: Condensed, best_similarity: float) -> bool:
        """Whether the request names something no product text mentions and the best product
        fits it less well than a typical match (the calibrated match median): "treadmill" in a
        shop of running shoes. Synonyms ("sneakers", "hoodie") fit like matches and pass."""
        floor = self.catalogue().floor
        topic = condensed.topic_words
        return (
            floor is not None
            and bool(topic)
            and len(condensed.unknown_terms) == len(topic)
            and best_similarity < floor.match_median
        )

    def _topic_margin(self) -> float | None:
        """How much better another product must fit a message than the ones shown for it to
        be a new request: the calibrated gap between a typical match and a typical request for
        something unsold."""
        floor = self.catalogue().floor
        return None if floor is None else floor.match_median - floor.non_match_median

    def relevance_floor(self) -> float | None:
        """The configured floor, else the calibrated one (None: no floor could be derived)."""
        if self.settings.chat_relevance_floor is not None:
            return self.settings.chat_relevance_floor
        floor = self.catalogue().floor
        return None if floor is None else floor.value

    # -- ranking -------------------------------------------------------------------------
    def rank(
        self,
        query: str,
        filters: ProductFilters,
        k: int,
        user_id: str | None,
        rerank: bool = True,
    ) -> Ranking:
        """Retrieve ``retrieval_candidates`` with the filters, rerank, blend, keep the top ``k``."""
        vectors = embed_texts(self.embedder(), [query])
        return self.rank_candidates(query, self.retrieve(vectors, filters)[0], k, user_id, rerank)

    def retrieve(self, query_vectors: np.ndarray, filters: ProductFilters) -> list[list[Candidate]]:
        """``retrieval_candidates`` products per query vector ((n, dim) float32) meeting the
        filters, nearest first, in one Chroma request."""
        return retrieve_many(
            self.collection(),
            query_vectors,
            to_chroma_where(filters),
            self.settings.retrieval_candidates,
        )

    def rank_candidates(
        self,
        query: str,
        candidates: list[Candidate],
        k: int,
        user_id: str | None,
        rerank: bool = True,
    ) -> Ranking:
        """Rerank (cross-encoder, or bi-encoder similarity when ``rerank`` is off or it is not
        loaded), blend with the user's ALS affinity, keep the top ``k``. Sets the candidates'
        ``relevance``, ``affinity`` and ``score``. The user's disliked products are dropped and
        products like them pushed down (negative feedback, :mod:`.personalise`)."""
        n_retrieved = len(candidates)
        disliked = self.personaliser.disliked(user_id) if user_id is not None else frozenset()
        if disliked:
            candidates = [c for c in candidates if c.item_id not in disliked]
        if not candidates:
            return Ranking([], "bi-encoder", "none", n_retrieved)
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
        push = None
        if disliked:
            categories = [c.metadata.get("category") for c in candidates]
            push = self.personaliser.push_away(user_id, item_ids, categories)
        if push is not None:
            scores = scores * (1.0 - weight * push)  # stays in [0, 1]
        scaled_affinity = min_max(affinity) if affinity is not None else None
        for n, candidate in enumerate(candidates):
            candidate.relevance = float(relevance[n])
            candidate.score = float(scores[n])
            candidate.affinity = None if scaled_affinity is None else float(scaled_affinity[n])
        order = sorted(range(len(candidates)), key=lambda i: (-scores[i], -relevance[i]))
        return Ranking([candidates[i] for i in order[:k]], scorer, source, n_retrieved)

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

    def _turn_filters(
        self, request: ChatRequest, state, message: str, catalogue: Catalogue
    ) -> tuple[Condensed, ProductFilters]:
        vocabulary = catalogue.vocabulary
        previous_ids = state.last_item_ids
        condensed = condense(
            message,
            previous_query=state.last_query,
            carried=state.filters,
            previous_products=fetch_metadatas(self.collection(), previous_ids),
            vocabulary=vocabulary,
            floor=self.relevance_floor(),
            margin=self._topic_margin(),
            known_words=catalogue.words,
            topic_fit=lambda words: self._topic_fit(words, previous_ids),
        )
        changes = dict(condensed.changes)
        if self.settings.chat_llm_filters and condensed.query and not condensed.suspicious:
            proposal = self.llm.propose_filters(message, vocabulary)
            outcome = proposal.outcome
            if proposal.filters is not None:
                kept = grounded_proposal(proposal.filters, message, vocabulary)
                proposed = proposal.filters.model_dump(exclude_defaults=True)
                outcome = "kept" if kept else ("dropped" if proposed else "empty")
                for name, value in kept.items():
                    changes.setdefault(name, value)  # the deterministic parser wins
            self.metrics.by_outcome[outcome].inc()
        explicit = canonicalise(request.filters, vocabulary) if request.filters else None
        try:
            merged = merge_filters(condensed.carried, changes, explicit)
        except ValidationError as exc:
            raise InvalidInput(f"inconsistent filters: {exc.errors()[0]['msg']}") from None
        return condensed, canonicalise(merged, vocabulary)

    def _topic_fit(self, words: list[str], previous_ids: list[str]) -> TopicFit:
        """How well the topic words fit the products just shown, and the whole catalogue."""
        vector = self._embed([" ".join(words)])
        collection = self.collection()
        current = -1.0
        if previous_ids:
            shown = collection.get(ids=list(previous_ids), include=["embeddings"])["embeddings"]
            if shown is not None and len(shown):
                current = float(np.max(np.asarray(shown, dtype=np.float32) @ vector[0]))
        best = retrieve_many(collection, vector, None, 1)[0]
        return TopicFit(current=current, catalogue=best[0].similarity if best else -1.0)

    def _rank_honestly(
        self, condensed: Condensed, filters: ProductFilters, k: int, user_id: str | None
    ) -> tuple[Ranking, Unmatched | None, bool]:
        """(ranking, what we don't have, whether the products are only alternatives).

        Products under the relevance floor are not matches, nor are products merely related to
        words no product text contains (see ``_unsold``). When none passes: a requested brand
        is relaxed first (other brands' products of that kind are alternatives); then the
        closest products within the filters are offered as alternatives, reporting either the
        price or rating bound that no product of the kind meets or the request's words."""
        floor = self.relevance_floor()
        vector = self._embed([condensed.query])
        candidates = self.retrieve(vector, filters)[0]
        passing = [c for c in candidates if floor is None or c.similarity >= floor]
        brands, terms, bounds = list(condensed.unknown_brands), [], []
        if passing and self._unsold(condensed, max(c.similarity for c in passing)):
            terms = list(condensed.unknown_terms)  # related products only: alternatives
        elif not passing and candidates and filters.brands:
            relaxed = filters.model_copy(update={"brands": []})
            passing = [c for c in self.retrieve(vector, relaxed)[0] if c.similarity >= floor]
            brands.extend(filters.brands if passing else [])
        if not passing and candidates:
            bounds = [
                name
                for name in ("min_price", "max_price", "min_rating")
                if getattr(filters, name) is not None
            ]
            unbounded = filters.model_copy(
                update={"min_price": None, "max_price": None, "min_rating": None}
            )
            if not (
                bounds and any(c.similarity >= floor for c in self.retrieve(vector, unbounded)[0])
            ):
                bounds = []  # the kind itself is missing, not just within these bounds
                terms = condensed.unknown_terms or condensed.topic_words
            passing = candidates  # the closest products within the filters, as alternatives
        alternative = bool(brands or terms or bounds)
        ranking = self.rank_candidates(condensed.query, passing, k, user_id)
        unmatched = Unmatched(brands=brands, terms=terms, filters=bounds)
        return ranking, (unmatched if brands or terms or bounds else None), alternative

    def _named_items(self, message: str) -> list[TitleMatch]:
        """Liked items the message names ("I loved X and Y"), matched to catalogue titles."""
        if not named_phrases(message):  # no cue, no quoted title: no matcher needed
            return []
        catalogue = self.catalogue()
        matcher = self.titles.matcher(catalogue.loaded_at, self.collection(), self._embed)
        return matcher.match_message(message)

    def _rank_named(
        self, named: list[TitleMatch], filters: ProductFilters, k: int, state
    ) -> tuple[Ranking, None, bool]:
        """The items nearest by ALS factors (plus a popularity prior) to the items named in this
        message and earlier in the session (the session's positives, kept on its user turns),
        plus a known user's liked items; their embedding neighbours when no model knows them."""
        earlier = [i for t in state.turns if t.role == "user" for i in t.item_ids]
        ids = list(dict.fromkeys([m.item_id for m in named] + earlier))
        candidates, source = recommend_for_named(
            self.personaliser,
            self.collection(),
            ids,
            where=to_chroma_where(filters),
            k=k,
            user_id=state.user_id,
            n_candidates=self.settings.retrieval_candidates,
            popularity=self.titles.popularity(),
        )
        return Ranking(candidates, "bi-encoder", source, len(candidates)), None, False

    def prepare_turn(self, request: ChatRequest) -> PreparedTurn:
        """Context, filters and ranked products for one message (no LLM answer yet)."""
        started = time.perf_counter()
        message = self._check_message(request.message)
        _refuse_nul(request.user_id, "user_id")
        state = conversation.load_state(
            self.settings.database_url,
            session_id=str(request.session_id) if request.session_id else None,
            user_id=request.user_id,
            turns=self.settings.chat_history_turns,
        )
        named = self._named_items(message)  # "I loved X and Y": the items nearest them (ALS)
        # a known user's "recommend me something, but ..." (named titles take precedence)
        wished = None if named else self.wish.chat_turn(request, state, message)
        if wished is not None:
            return wished
        # a named title's words are no request: "the Sony TV" I loved sets no brand filter
        rest = _without_spans(message, [(m.start, m.end) for m in named])
        condensed, filters = self._turn_filters(request, state, rest, self.catalogue())
        context_ms = (time.perf_counter() - started) * 1000
        if named:
            ranking, unmatched, alternative = self._rank_named(named, filters, request.k, state)
        elif condensed.query:
            ranking, unmatched, alternative = self._rank_honestly(
                condensed, filters, request.k, state.user_id
            )
        else:  # a reset and nothing else: ask what they are looking for
            ranking, unmatched, alternative = Ranking([], "bi-encoder", "none", 0), None, False
        products = [_product(c, condensed.query, alternative) for c in ranking.candidates]
        return PreparedTurn(
            request=request,
            state=state,
            query=condensed.query,
            filters=filters,
            ranking=ranking,
            products=products,
            suspicious=condensed.suspicious,
            turn=condensed.kind,
            unmatched=unmatched,
            notes=condensed.notes,
            named=named,
            timings_ms={
                "context": round(context_ms, 1),
                "ranking": round((time.perf_counter() - started) * 1000 - context_ms, 1),
            },
        )

    @staticmethod
    def _listing(turn: PreparedTurn) -> list[tuple[str, dict[str, Any], str]]:
        pairs = zip(turn.products, turn.ranking.candidates, strict=True)
        return [(p.item_id, c.metadata, p.reason) for p, c in pairs]

    def _prompt(self, turn: PreparedTurn) -> list[dict[str, str]]:
        listing = self._listing(turn)
        recent = turn.state.turns[-2 * self.settings.chat_history_turns :]
        messages = build_messages(
            products=listing,
            turns=recent,
            message=turn.request.message.strip(),
            filters=turn.filters,
            unmatched=turn.unmatched,
        )
        if turn.named:  # the matches, to be confirmed by title
            titles = ", ".join(repr(m.title) for m in turn.named)
            messages[-1]["content"] = (
                f"NAMED ITEMS the customer likes (matched in the catalogue): {titles}. Confirm "
                "them by title in one short sentence, then recommend from PRODUCTS.\n\n"
                + messages[-1]["content"]
            )
        return messages

    def _fallback(self, turn: PreparedTurn) -> str:
        alternatives = any(p.alternative for p in turn.products)
        answer = fallback_answer(self._listing(turn), turn.filters, turn.unmatched, alternatives)
        return f"{confirmation(turn.named)}\n{answer}" if turn.named else answer

    def _finish(self, turn: PreparedTurn, answer: str, generated_by: str) -> ChatResponse:
        """Persist the exchange (committed before anyone sees the final payload)."""
        conversation.save_exchange(
            self.settings.database_url,
            state=turn.state,
            user_text=turn.request.message.strip(),
            standalone_query=turn.query,
            filters=turn.filters,
            answer=answer,
            item_ids=[p.item_id for p in turn.products],
            generated_by=generated_by,
            named_ids=[m.item_id for m in turn.named],
        )
        self.metrics.record_turn(turn.turn.value, generated_by, turn.unmatched)
        return ChatResponse(
            session_id=turn.state.session_id,
            answer=answer,
            products=turn.products,
            filters=turn.filters.set_fields(),
            standalone_query=turn.query,
            generated_by=generated_by,
            reranker=turn.ranking.scorer,
            personalisation=turn.ranking.personalisation,
            turn=turn.turn.value,
            unmatched=turn.unmatched,
            notes=turn.notes,
            named_items=_named_out(turn.named),
        )

    def answer_tokens(self, turn: PreparedTurn) -> Iterator[tuple[str, str]]:
        """(token, producer) pairs: the LLM's tokens, or the template's lines if it fails
        before its first token. A failure mid-answer ends the answer where it stopped."""
        if not turn.query:  # a bare reset: nothing to recommend, nothing to ask the LLM
            yield RESET_ANSWER, FALLBACK
            return
        produced = False
        started = time.perf_counter()
        try:
            for token in self.llm.stream_answer(self._prompt(turn)):
                produced = True
                yield token, LLM
        except LLMUnavailable:
            pass
        if produced:
            self.metrics.llm_seconds.observe(time.perf_counter() - started)
        else:  # unreachable, timed out, model missing, or an empty answer
            self.metrics.llm_errors.inc()
            for line in self._fallback(turn).splitlines(keepends=True):
                yield line, FALLBACK

    def guarded(self, turn: PreparedTurn, answer: str, producer: str) -> tuple[str, str]:
        """(answer, producer): an LLM answer the grounding guard rejects becomes the template."""
        if producer != LLM:
            return answer, producer
        verdict = check_answer(
            answer,
            products=self._listing(turn),
            filters=turn.filters,
            vocabulary=self.vocabulary(),
            message=" ".join([turn.request.message, *(m.title for m in turn.named)]),
            unmatched=turn.unmatched,
        )
        if verdict.grounded:
            return answer, producer
        for reason in verdict.reasons:
            self.metrics.by_reason[reason].inc()
        log.info("LLM answer replaced by the template: %s", "; ".join(verdict.detail)[:300])
        return self._fallback(turn), GUARD

    def chat(self, request: ChatRequest) -> ChatResponse:
        turn = self.prepare_turn(request)
        parts, producer = [], FALLBACK
        for token, source in self.answer_tokens(turn):
            parts.append(token)
            producer = source
        return self._finish(turn, *self.guarded(turn, "".join(parts).strip(), producer))

    def stream_events(self, turn: PreparedTurn) -> Iterator[tuple[str, dict[str, Any]]]:
        """SSE events: ``products`` first, ``token`` per piece of the answer, ``replace`` with the
        template when the grounding guard rejects the streamed answer, then ``done`` with the
        final payload (sent after the exchange is committed)."""
        yield (
            "products",
            {
                "session_id": turn.state.session_id,
                "filters": turn.filters.set_fields(),
                "standalone_query": turn.query,
                "reranker": turn.ranking.scorer,
                "personalisation": turn.ranking.personalisation,
                "turn": turn.turn.value,
                "unmatched": turn.unmatched.model_dump() if turn.unmatched else None,
                "notes": turn.notes,
                "named_items": [n.model_dump() for n in _named_out(turn.named)],
                "products": [p.model_dump() for p in turn.products],
            },
        )
        parts, producer = [], FALLBACK
        for token, source in self.answer_tokens(turn):
            parts.append(token)
            producer = source
            yield "token", {"text": token}
        answer, checked = self.guarded(turn, "".join(parts).strip(), producer)
        if checked == GUARD:
            yield "replace", {"text": answer, "generated_by": GUARD}
        final = self._finish(turn, answer, checked)
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
            query=query,
            filters=filters.set_fields(),
            products=[_product(c, query) for c in ranking.candidates],
            reranker=ranking.scorer,
            personalisation=ranking.personalisation,
        )

    def history(self, session_id: str, limit: int) -> HistoryResponse:
        user_id, turns = conversation.read_history(self.settings.database_url, session_id, limit)
        return HistoryResponse(
            session_id=session_id,
            user_id=user_id,
            messages=[
                HistoryMessage(
                    role=t.role,
                    content=t.content,
                    filters=t.filters,
                    product_ids=t.item_ids,
                    standalone_query=t.standalone_query,
                    generated_by=t.generated_by,
                    created_at=t.created_at,
                )
                for t in turns
            ],
        )

    def delete(self, session_id: str) -> DeleteResponse:
        deleted = conversation.delete_session(self.settings.database_url, session_id)
        return DeleteResponse(session_id=session_id, deleted_messages=deleted)

    def profile(self, user_id: str) -> ProfileResponse:
        """The user's preference summary and the facts behind it (:mod:`.profile`)."""
        return user_profile(self, user_id)

    # -- health --------------------------------------------------------------------------
    def health(self) -> HealthResponse:
        embedding = {
            "model": self.settings.embedding_model or "all-MiniLM-L6-v2 (packaged)",
            "status": self._embedding_state,
            "error": self._embedding_error,
        }
        try:
            count = self.collection().count()
            chroma = {
                "status": "ready",
                "collection": self.settings.products_collection,
                "products": count,
                "relevance_floor": self._floor_status(),
            }
        except (ModelNotReady, InfraError) as exc:
            chroma = {
                "status": "unavailable",
                "collection": self.settings.products_collection,
                "error": exc.message[:300],
            }
        try:
            conversation.check_reachable(self.settings.database_url)
            postgres = {"status": "ready"}
        except InfraError as exc:
            postgres = {"status": "unavailable", "error": exc.message}
        redis_ok = ping_redis(redis_for(self.settings))
        redis_state = {"status": "ready" if redis_ok else "unavailable"}
        llm = self.llm.status()
        reranker = self.reranker.status()
        if "unavailable" in (embedding["status"], postgres["status"]) or (
            chroma["status"] != "ready"
        ):
            overall = "down"  # no turn can be answered and stored
        elif reranker["status"] == "ready" and llm["status"] == "ready" and redis_ok:
            overall = "ok"
        else:
            overall = "degraded"  # bi-encoder scores / templated answers / no ALS affinity
        return HealthResponse(
            status=overall,
            embedding=embedding,
            reranker=reranker,
            llm=llm,
            chroma=chroma,
            postgres=postgres,
            redis=redis_state,
        )
