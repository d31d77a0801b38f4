"""Conversational cold start by named items: "I loved The Matrix and Toy Story, what else?".

Two steps, both deterministic:

1. :func:`named_phrases` finds the phrases of a message that name liked items: quoted titles
   anywhere, and the text after a cue ("I loved", "fans of", "something like", "similar to"),
   up to the end of the sentence or a follow-on clause ("what else?"), split on commas and
   "and" / "&" / "or".
2. :class:`TitleMatcher` (built once per catalogue: titles normalised, MiniLM vectors of the
   titles) scores each phrase against every title. The shortlist is rapidfuzz's best titles by
   ``ratio`` and by ``token_set_ratio`` plus the nearest titles by MiniLM cosine; each is scored
   ``fuzzy = max(ratio, token_sort_ratio, 0.95 * max(partial_ratio, token_set_ratio))``, the
   partial scores only when the phrase is the shorter (a partial title "Shawshank" fits "The
   Shawshank Redemption"; a title inside a longer phrase, "Go" in "good movies", does not),
   blended with the cosine:
   ``score = (1 - EMBEDDING_WEIGHT) * fuzzy / 100 + EMBEDDING_WEIGHT * cosine``, plus a small
   prior for the most rated (a partial "Star Wars" means the film most people saw). A year in
   the phrase ("(1999)" or a trailing "1999") moves titles of that year up and other years
   down, so it picks between remakes. The blend ranks; the string decides: the best title is a
   match when its ``fuzzy >= MIN_FUZZY`` (a typo's cosine is low, "mtarix"). A partial match
   also needs a word of the phrase that few titles have (``df <= max(3, 1% of titles)``), so
   "wireless headphones" names no product of a shop full of them while "Shawshank" names its
   film.

Normalisation: lower case, HTML entities unescaped, accents folded, apostrophes dropped, other
punctuation to spaces, trailing parenthesised groups (the year, "a.k.a." names) and a leading
"the"/"a"/"an" removed (MovieLens "Matrix, The (1999)" is stored article-first by the importer).
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from Prod.chat_reco_engine.personalise import item_cosine, min_max, with_popularity
from Prod.chat_reco_engine.retrieval import Candidate, retrieve_many
from Prod.common.logs import get_logger

log = get_logger(__name__)

EMBEDDING_WEIGHT = 0.3  # share of the MiniLM cosine in the blend (reco bench named-items)
MIN_FUZZY = 82.0  # rapidfuzz score of a confident match (reco bench named-items: non-titles)
POPULARITY_WEIGHT = 0.03  # log rating count prior: a partial "Star Wars" means the most seen
YEAR_BONUS = 0.1  # same year as the phrase; a different year costs half of it
PARTIAL_FACTOR = 0.95  # a partial title never beats the whole title
SHORTLIST = 20  # titles per scorer rescored in full
RARE_SHARE = 0.01  # a "distinctive" word is in at most max(3, 1% of) titles
MAX_PHRASES = 8  # phrases matched per message

_YEAR_TAIL = re.compile(r"\s*[\(\[]?\b((?:18|19|20)\d{2})\b[\)\]]?\s*$")
_PARENS_TAIL = re.compile(r"\s*[\(\[][^()\[\]]*[\)\]]\s*$")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_NON_WORD = re.compile(r"[^\w]+")
_QUOTED = re.compile(r"[\"“”«»]([^\"“”«»]{2,120})[\"“”«»]")
_CUE = re.compile(
    r"\b(?:i|we)(?:\s+(?:really|absolutely|just|also|totally|so|have|'ve))*\s+"
    r"(?:loved|love|liked|like|enjoyed|enjoy|adored|adore)\b"
    r"|\bbig\s+fans?\s+of\b|\bfans?\s+of\b|\bsimilar\s+to\b"
    r"|\b(?:something|anything|more|stuff|ones?|others?|films?|movies?|books?|shows?|products?)"
    r"\s+like\b"
    r"|\bmy\s+favou?rites?\s+(?:are|were|is|was|include)\b",
    re.IGNORECASE,
)
# where the list of names ends: sentence punctuation or a follow-on clause
_END = re.compile(
    r"[?!;]|\.(?:\s|$)|\s+-\s+"
    r"|,?\s*\b(?:what|which|can|could|would|any|anything|please|recommend|suggest|so|but|"
    r"because|now|give|show|find|got|do\s+you)\b",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|&|or|as\s+well\s+as|plus)\s+", re.I)
_LEAD = re.compile(
    r"^(?:(?:both|all|also|really|watching|reading|playing|using|the\s+(?:movies?|films?|"
    r"books?|shows?|series|product|game))\s+)+",
    re.IGNORECASE,
)
_TRAIL = re.compile(r"\s+(?:a\s+lot|so\s+much|very\s+much|too|as\s+well|lately)\s*$", re.I)


def fold(text: str) -> str:
    """Lower case, HTML entities unescaped, accents folded, apostrophes dropped, other
    punctuation to single spaces."""
    text = unicodedata.normalize("NFKD", html.unescape(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("'", "").replace("’", "")
    return " ".join(_NON_WORD.sub(" ", text).replace("_", " ").split())


def title_key(title: str) -> tuple[str, int | None]:
    """(matching key, year) of a catalogue title: trailing parenthesised groups removed (the
    last year among them kept), leading article dropped. "The Matrix (1999)" -> ("matrix", 1999)."""
    text, year = html.unescape(title).strip(), None
    while True:
        found = _PARENS_TAIL.search(text)
        if not found or found.start() == 0:
            break
        digits = re.fullmatch(r"\s*[\(\[]((?:18|19|20)\d{2})[\)\]]\s*", found.group(0))
        if digits and year is None:
            year = int(digits.group(1))
        text = text[: found.start()]
    return _ARTICLE.sub("", fold(text)), year


def phrase_keys(phrase: str) -> list[tuple[str, int | None]]:
    """Readings of a phrase as (key, year): trailing parenthesised groups as in
    :func:`title_key` ("(1999)" is a year); a bare trailing number that could be a year is read
    both ways ("Blade Runner 2049")."""
    key, year = title_key(phrase.strip())
    found = _YEAR_TAIL.search(phrase.strip())
    if year is not None or not found or found.start() == 0:
        return [(key, year)]
    head = _ARTICLE.sub("", fold(phrase.strip()[: found.start()]))
    return [(head, int(found.group(1))), (key, None)]


@dataclass(frozen=True)
class Phrase:
    """Text of a message that may name an item, and where it is (``message[start:end]``)."""

    text: str
    start: int
    end: int
    quoted: bool = False


@dataclass(frozen=True)
class Scored:
    """Score parts of one shortlisted title: rapidfuzz (0..100), MiniLM cosine, and the year
    and popularity adjustments; ``by_embedding``: shortlisted by the cosine only."""

    row: int
    fuzzy: float
    cosine: float
    adjust: float
    by_embedding: bool

    def blended(self, weight: float) -> float:
        return (1 - weight) * self.fuzzy / 100.0 + weight * self.cosine + self.adjust


@dataclass(frozen=True)
class TitleMatch:
    """A phrase matched to a catalogue item."""

    query: str
    item_id: str
    title: str
    score: float  # blended, the year adjustment included
    fuzzy: float  # 0..100
    cosine: float
    start: int
    end: int


def _parts(message: str, start: int, end: int) -> list[Phrase]:
    """The list after a cue split into names, with offsets."""
    out, cursor = [], start
    segment = message[start:end]
    pieces = []
    for sep in _SPLIT.finditer(segment):
        pieces.append((cursor, start + sep.start()))
        cursor = start + sep.end()
    pieces.append((cursor, end))
    for a, b in pieces:
        text = message[a:b]
        lead = _LEAD.match(text)
        if lead:
            a, text = a + lead.end(), text[lead.end() :]
        trail = _TRAIL.search(text)
        if trail:
            b, text = b - len(text) + trail.start(), text[: trail.start()]
        stripped = text.strip(" \t\"'“”,:")
        if len(fold(stripped)) >= 2:
            a += text.find(stripped)
            out.append(Phrase(stripped, a, a + len(stripped)))
    return out


def named_phrases(message: str) -> list[Phrase]:
    """Phrases that may name liked items: quoted titles, then the text after each cue up to the
    end of its sentence or clause, split into names. The whole unsplit list is kept first too
    (titles with "and" in them: "Pride and Prejudice"); :meth:`TitleMatcher.match_message`
    decides between the whole and its parts."""
    phrases: list[Phrase] = []
    for found in _QUOTED.finditer(message):
        phrases.append(Phrase(found.group(1).strip(), found.start(1), found.end(1), quoted=True))
    for cue in _CUE.finditer(message):
        start = cue.end()
        stop = _END.search(message, start)
        end = stop.start() if stop else len(message)
        quoted = [p for p in phrases if p.quoted and start <= p.start < end]
        if quoted or end - start < 2:
            continue
        whole = _parts(message, start, end)
        phrases.extend(whole)
    unique: dict[tuple[int, int], Phrase] = {}
    for phrase in phrases:
        unique.setdefault((phrase.start, phrase.end), phrase)
    return list(unique.values())[:MAX_PHRASES]


class TitleMatcher:
    """Scores phrases against a catalogue's titles (see the module docstring).

    ``item_ids``, ``titles``: the catalogue; ``popularity``: (n,) tie-breaker (rating counts);
    ``embed``: texts -> (n, dim) unit float32 vectors (MiniLM), or None for rapidfuzz alone;
    ``vectors``: precomputed title vectors (rows of ``titles``) to reuse instead of embedding.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        titles: Sequence[str],
        *,
        popularity: Sequence[float] | None = None,
        embed: Callable[[list[str]], np.ndarray] | None = None,
        vectors: np.ndarray | None = None,
        embedding_weight: float = EMBEDDING_WEIGHT,
        min_fuzzy: float = MIN_FUZZY,
    ) -> None:
        self.item_ids = list(item_ids)
        self.titles = [html.unescape(str(t)) for t in titles]
        keyed = [title_key(t) for t in self.titles]
        self.keys = [k for k, _ in keyed]
        self.years = [y for _, y in keyed]
        self.popularity = np.asarray(
            popularity if popularity is not None else np.zeros(len(self.titles)), dtype=np.float64
        )
        self.embed = embed
        self.embedding_weight = embedding_weight if embed is not None else 0.0
        self.min_fuzzy = min_fuzzy
        top = float(self.popularity.max()) if len(self.popularity) else 0.0
        self._prior = (
            np.log1p(np.maximum(self.popularity, 0)) / np.log1p(top)
            if top > 0
            else np.zeros(len(self.popularity))
        )
        df = Counter(w for key in set(self.keys) for w in set(key.split()))
        self._df = df
        self._vocabulary = sorted(df)
        self._postings: dict[str, list[int]] = {}
        for row, key in enumerate(self.keys):
            for word in set(key.split()):
                self._postings.setdefault(word, []).append(row)
        self._rare_df = max(3, int(RARE_SHARE * len(set(self.keys))))
        self.vectors = None
        if embed is not None:
            if vectors is not None and len(vectors) == len(self.titles):
                self.vectors = np.asarray(vectors, dtype=np.float32)
            else:
                self.vectors = self.embed_titles(embed, self.titles)

    @staticmethod
    def embed_titles(embed: Callable[[list[str]], np.ndarray], titles: list[str]) -> np.ndarray:
        """(n, dim) MiniLM vectors of the titles without their year (what a shopper types)."""
        texts = [(_PARENS_TAIL.sub("", t).strip() or t) for t in titles]
        return np.asarray(embed(texts), dtype=np.float32) if texts else np.zeros((0, 384))

    def __len__(self) -> int:
        return len(self.titles)

    # -- scoring -------------------------------------------------------------------------
    def _fuzzy(self, key: str, row: int) -> tuple[float, bool]:
        """(0..100 score, whether it came from the partial path) of a phrase key vs a title."""
        from rapidfuzz import fuzz

        title = self.keys[row]
        full = max(fuzz.ratio(key, title), fuzz.token_sort_ratio(key, title))
        partial = 0.0
        if len(key) < len(title):  # a part of the title: a run of it, or some of its words
            partial = PARTIAL_FACTOR * max(
                fuzz.partial_ratio(key, title), fuzz.token_set_ratio(key, title)
            )
        return (full, False) if full >= partial else (partial, True)

    def _by_words(self, key: str) -> set[int]:
        """The SHORTLIST titles sharing the most (idf-weighted) words with ``key``, a word
        counting when spelt within a typo (rapidfuzz ratio >= 80 in the titles' vocabulary):
        what ``token_set_ratio`` over every title finds, at ~1/20 of its cost."""
        from rapidfuzz import fuzz, process

        weight: Counter[int] = Counter()
        n = len(self.keys)
        for word in set(key.split()):
            near = process.extract(
                word, self._vocabulary, scorer=fuzz.ratio, limit=3, score_cutoff=80
            )
            for spelt, similarity, _ in near:
                idf = np.log(n / self._df[spelt]) * similarity / 100
                for row in self._postings[spelt]:
                    weight[row] += idf
        return {row for row, _ in weight.most_common(SHORTLIST)}

    def _distinctive(self, key: str) -> bool:
        return any(0 < self._df.get(w, 0) <= self._rare_df for w in key.split())

    def scored(self, text: str, query_vector: np.ndarray | None = None) -> list[Scored]:
        """Every shortlisted title for ``text`` with its score parts (not yet blended).
        ``query_vector``: the phrase's MiniLM vector when already computed (benchmarks)."""
        from rapidfuzz import fuzz, process

        readings = [(k, y) for k, y in phrase_keys(text) if k]
        if not self.titles or not readings:
            return []
        cosines = None
        if self.vectors is not None and len(self.vectors):
            if query_vector is None:
                query = _PARENS_TAIL.sub("", text).strip() or text
                query_vector = np.asarray(self.embed([query]), dtype=np.float32)[0]
            cosines = self.vectors @ query_vector
        found: list[Scored] = []  # a title may come once per reading; ranked keeps its best
        for key, year in readings:
            hits = process.extract(key, self.keys, scorer=fuzz.ratio, limit=SHORTLIST)
            rows = {r for _, _, r in hits} | self._by_words(key)
            by_embedding = set()
            if cosines is not None:
                top = min(SHORTLIST, len(cosines))
                by_embedding = set(np.argpartition(-cosines, top - 1)[:top].tolist()) - rows
            for row in rows | by_embedding:
                fuzzy, partial = self._fuzzy(key, row)
                if partial and not self._distinctive(key):
                    continue
                adjust = 0.0
                if year is not None and self.years[row] is not None:
                    adjust = YEAR_BONUS if self.years[row] == year else -YEAR_BONUS / 2
                found.append(
                    Scored(
                        row=row,
                        fuzzy=fuzzy,
                        cosine=float(cosines[row]) if cosines is not None else 0.0,
                        adjust=adjust + POPULARITY_WEIGHT * self._prior[row],
                        by_embedding=row in by_embedding,
                    )
                )
        return found

    def ranked(
        self, text: str, scored: list[Scored], limit: int = 5, weight: float | None = None
    ) -> list[TitleMatch]:
        """The ``limit`` best of ``scored`` for the blend ``weight`` (default: this matcher's;
        0 = rapidfuzz alone, titles found only by the embedding left out)."""
        w = self.embedding_weight if weight is None else weight
        best: dict[int, Scored] = {}
        for s in scored:
            if (w > 0 or not s.by_embedding) and (
                s.row not in best or s.blended(w) > best[s.row].blended(w)
            ):
                best[s.row] = s
        pool = list(best.values())
        order = sorted(
            pool, key=lambda s: (-round(s.blended(w), 6), -self.popularity[s.row], s.row)
        )
        return [
            TitleMatch(
                query=text,
                item_id=self.item_ids[s.row],
                title=self.titles[s.row],
                score=round(float(s.blended(w)), 4),
                fuzzy=round(s.fuzzy, 2),
                cosine=round(s.cosine, 4),
                start=0,
                end=len(text),
            )
            for s in order[:limit]
        ]

    def candidates(self, text: str, limit: int = 5) -> list[TitleMatch]:
        """The ``limit`` best titles for ``text``, best first, confident or not (:meth:`match`)."""
        return self.ranked(text, self.scored(text), limit)

    def confident(self, match: TitleMatch) -> bool:
        """Whether a ranked title is a match: its rapidfuzz score (0..100) reaches ``min_fuzzy``.
        The blend ranks; the string decides, as a typo's MiniLM cosine is low ("mtarix")."""
        return match.fuzzy >= self.min_fuzzy

    def match(self, text: str) -> TitleMatch | None:
        """The best title for ``text`` when it is a confident match (``score >= min_score``)."""
        found = self.candidates(text, limit=1)
        return found[0] if found and self.confident(found[0]) else None

    def match_message(self, message: str) -> list[TitleMatch]:
        """Confident matches of the phrases of ``message`` (:func:`named_phrases`), one per
        item, in message order, with the phrase's span in the message. Phrases split on "and"
        are rejoined, longest run first, when the run matches a title at least as closely as
        each of its parts does alone ("Pride and Prejudice", not "Pride" + "Prejudice")."""
        matches: dict[str, TitleMatch] = {}
        cache: dict[str, TitleMatch | None] = {}

        def match(text: str) -> TitleMatch | None:
            if text not in cache:
                cache[text] = self.match(text)
            return cache[text]

        for group in _rejoined(message, named_phrases(message)):
            i = 0
            while i < len(group):
                for j in range(len(group) - 1, i - 1, -1):
                    start, end = group[i].start, group[j].end
                    found = match(message[start:end])
                    if found is None:
                        continue
                    parts = [match(p.text) for p in group[i : j + 1]] if j > i else []
                    if all(p is None or found.fuzzy >= p.fuzzy for p in parts):
                        if found.item_id not in matches:
                            span = {"query": message[start:end], "start": start, "end": end}
                            matches[found.item_id] = TitleMatch(**{**found.__dict__, **span})
                        i = j
                        break
                i += 1
        return sorted(matches.values(), key=lambda m: m.start)


def _rejoined(message: str, phrases: list[Phrase]) -> list[list[Phrase]]:
    """Neighbouring phrases separated only by "and" / "&" grouped (they may be one title)."""
    groups: list[list[Phrase]] = []
    for phrase in sorted(phrases, key=lambda p: p.start):
        if groups and not phrase.quoted and not groups[-1][-1].quoted:
            gap = message[groups[-1][-1].end : phrase.start]
            if re.fullmatch(r"\s+(?:and|&)\s+", gap, re.IGNORECASE):
                groups[-1].append(phrase)
                continue
        groups.append([phrase])
    return groups


# -- the chat's use: one matcher per catalogue, the ALS items nearest the matches ----------------

LOVED_WEIGHT = 5.0  # a named favourite weighs a 5-star rating (beside a user's own items)
POOL = 200  # best-scored items read from the catalogue to fill k after filters


class TitleIndex:
    """The matcher of one products collection, rebuilt when its titles change (checked when the
    chat re-reads its catalogue); unchanged titles keep their MiniLM vectors.

    Embedding new titles takes minutes on a large catalogue (9.7k MovieLens titles: 55-136 s on
    2 cores), so it runs in a background thread. A turn waits for it at most ``wait_s``, then
    matches by rapidfuzz alone (0.13 s to build; accuracy@1 0.934 against 0.937 with MiniLM on
    the MovieLens benchmark) until the vectors are in. A failed embedding is retried on the
    next call.
    """

    def __init__(self, wait_s: float = 2.0) -> None:
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._stamp: object = None
        self._fingerprint: str | None = None
        self._matcher: TitleMatcher | None = None
        self._pending: threading.Event | None = None  # set when the running embedding ends
        self._popular: tuple[TitleMatcher, dict[str, float]] | None = None

    def matcher(self, stamp: object, collection, embed) -> TitleMatcher:
        """``stamp``: changes when the catalogue is re-read (its load time)."""
        with self._lock:
            if self._matcher is None or stamp != self._stamp:
                self._refresh(collection, embed)
                self._stamp = stamp
            elif self._matcher.vectors is None and self._pending is None:
                self._embed_later(self._matcher, self._fingerprint, embed, {})  # a retry
            pending = self._pending
        if pending is not None:
            pending.wait(self.wait_s)
        with self._lock:
            return self._matcher

    def _refresh(self, collection, embed) -> None:
        """Re-read the titles; on a change, a rapidfuzz matcher now and MiniLM vectors later
        (at once when every title already has its vector). Holds the lock."""
        ids, titles, counts = read_titles(collection)
        digest = hashlib.blake2b(digest_size=16)
        for item_id, title in zip(ids, titles, strict=True):
            digest.update(f"{item_id}\x1f{title}\x1e".encode())
        fingerprint = digest.hexdigest()
        if self._matcher is not None and fingerprint == self._fingerprint:
            return
        known = self._known_vectors()
        if titles and all(t in known for t in titles):
            vectors = np.stack([known[t] for t in titles])
            self._matcher = TitleMatcher(
                ids, titles, popularity=counts, embed=embed, vectors=vectors
            )
        else:
            self._matcher = TitleMatcher(ids, titles, popularity=counts)
            self._embed_later(self._matcher, fingerprint, embed, known)
        self._fingerprint = fingerprint

    def _known_vectors(self) -> dict[str, np.ndarray]:
        matcher = self._matcher
        if matcher is None or matcher.vectors is None:
            return {}
        return dict(zip(matcher.titles, matcher.vectors, strict=True))

    def _embed_later(
        self,
        plain: TitleMatcher,
        fingerprint: str | None,
        embed,
        known: dict[str, np.ndarray],
    ) -> None:
        """Embed ``plain``'s titles missing from ``known`` in a thread, then swap in the full
        matcher unless the titles changed meanwhile. Holds the lock."""
        if embed is None or not plain.titles:  # nothing to embed
            return
        done = threading.Event()
        self._pending = done

        def run() -> None:
            try:
                fresh = [t for t in dict.fromkeys(plain.titles) if t not in known]
                if fresh:
                    known.update(zip(fresh, TitleMatcher.embed_titles(embed, fresh), strict=True))
                vectors = np.stack([known[t] for t in plain.titles])
                full = TitleMatcher(
                    plain.item_ids,
                    plain.titles,
                    popularity=plain.popularity,
                    embed=embed,
                    vectors=vectors,
                )
                with self._lock:
                    if self._fingerprint == fingerprint:
                        self._matcher = full
            except Exception as exc:  # the embedder not loaded, or failing: retried next call
                log.warning("title vectors not built, matching by rapidfuzz alone: %s", exc)
            finally:
                with self._lock:
                    if self._pending is done:
                        self._pending = None
                done.set()

        threading.Thread(target=run, name="title-vectors", daemon=True).start()

    def popularity(self) -> dict[str, float] | None:
        """item id -> the catalogue's ``rating_count`` (the matcher's prior, the same field the
        ALS engine's popularity falls back to), None before the first match."""
        with self._lock:
            matcher = self._matcher
            if matcher is None:
                return None
            if self._popular is None or self._popular[0] is not matcher:
                counts = dict(zip(matcher.item_ids, matcher.popularity.tolist(), strict=True))
                self._popular = (matcher, counts)
            return self._popular[1]


def read_titles(collection, page_size: int = 5000) -> tuple[list[str], list[str], list[float]]:
    """(item ids, titles, rating counts) of every product of a Chroma collection."""
    ids: list[str] = []
    titles: list[str] = []
    counts: list[float] = []
    offset = 0
    while True:
        page = collection.get(include=["metadatas"], limit=page_size, offset=offset)
        if not page["ids"]:
            break
        for item_id, meta in zip(page["ids"], page["metadatas"], strict=True):
            meta = meta or {}
            ids.append(item_id)
            titles.append(html.unescape(str(meta.get("title") or item_id)))
            counts.append(float(meta.get("rating_count") or 0))
        offset += len(page["ids"])
    return ids, titles, counts


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def recommend_for_named(
    personaliser,
    collection,
    named_ids: list[str],
    *,
    where: dict | None,
    k: int,
    user_id: str | None,
    n_candidates: int,
    popularity: Mapping[str, float] | None = None,
) -> tuple[list[Candidate], str]:
    """(top ``k`` products, source) for a shopper who likes ``named_ids``.

    ``"item_cosine"``: the items of the active ALS model ranked by their summed cosine with the
    named items' factors (weight :data:`LOVED_WEIGHT`; a known user's liked items join with
    their weights; :func:`~Prod.chat_reco_engine.personalise.item_cosine`) plus a popularity
    prior (``popularity``: item id -> rating count;
    :func:`~Prod.chat_reco_engine.personalise.with_popularity`) - it beat the fold-in of the
    named items and popularity on validation users (``reco bench named-items``); the named and
    disliked items are left out, ``where`` (the turn's filters) applies. ``score`` and
    ``affinity`` are that score min-max scaled over its top :data:`POOL`; ``relevance``
    is the product's best MiniLM cosine with a named item. ``"none"``: no active model or no
    named item has a factor: the products nearest by MiniLM to the named items' mean vector."""
    stored = collection.get(ids=list(named_ids), include=["embeddings"])
    vectors = np.asarray(stored["embeddings"], dtype=np.float32) if len(stored["ids"]) else None
    excluded = set(named_ids)
    if user_id is not None:
        excluded |= personaliser.disliked(user_id)
    ranked = _als_ranking(personaliser, named_ids, user_id, excluded, popularity)
    if ranked is not None:
        ids, als = ranked
        page = collection.get(
            ids=ids, where=where, include=["documents", "metadatas", "embeddings"]
        )
        found = {
            i: (d or "", dict(m or {}), np.asarray(e, dtype=np.float32))
            for i, d, m, e in zip(
                page["ids"], page["documents"], page["metadatas"], page["embeddings"], strict=True
            )
        }
        kept = [n for n, i in enumerate(ids) if i in found][:k]
        if kept:
            scaled = min_max(np.asarray(als))
            out = []
            for n in kept:
                document, meta, vector = found[ids[n]]
                cosine = float(np.max(vectors @ vector)) if vectors is not None else 0.0
                out.append(
                    Candidate(
                        item_id=ids[n],
                        document=document,
                        metadata=meta,
                        similarity=cosine,
                        relevance=cosine,
                        affinity=float(scaled[n]),
                        score=float(scaled[n]),
                    )
                )
            return out, "item_cosine"
    if vectors is None:
        return [], "none"
    query = _unit(vectors.mean(axis=0))[None, :]
    nearest = retrieve_many(collection, query, where, n_candidates + len(excluded))[0]
    nearest = [c for c in nearest if c.item_id not in excluded][:k]
    scores = min_max(np.array([c.similarity for c in nearest]))
    for candidate, score in zip(nearest, scores, strict=True):
        candidate.relevance, candidate.score = candidate.similarity, float(score)
    return nearest, "none"


def _als_ranking(
    personaliser,
    named_ids: list[str],
    user_id: str | None,
    excluded: set[str],
    popularity: Mapping[str, float] | None = None,
) -> tuple[list[str], list[float]] | None:
    """(ids, scores) of the top :data:`POOL` by item cosine plus popularity prior, best first;
    None when no model is active or none of the items has a factor. A store error counts as no
    model."""
    from Prod.common import model_store
    from Prod.common.stores import redis_for

    try:
        redis_client = redis_for(personaliser.settings)
        version = model_store.active_version(redis_client)
        meta = model_store.read_meta(redis_client, version) if version else None
        if meta is None:
            return None
        items = personaliser._item_factors(meta)
        known = [(items.index[i], LOVED_WEIGHT) for i in named_ids if i in items.index]
        if not known:
            return None
        if user_id is not None:
            liked = personaliser._user_pairs(user_id).liked
            known += [(items.index[i], w) for i, w in liked if i in items.index]
        scores = item_cosine(items.matrix, known)
        counts = None
        if popularity is not None:
            counts = np.array([popularity.get(i, 0.0) for i in items.index], dtype=np.float64)
        weight = personaliser.settings.named_items_popularity_weight
        scores = with_popularity(scores, counts, weight)
    except Exception as exc:  # the content fallback answers instead; never fail the turn
        log.warning("named-item ranking skipped: %s", exc)
        return None
    ids = list(items.index)
    for item_id in excluded:
        row = items.index.get(item_id)
        if row is not None:
            scores[row] = -np.inf
    top = min(POOL, len(scores))
    rows = np.argpartition(-scores, top - 1)[:top]
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    rows = [r for r in rows if np.isfinite(scores[r])]
    return [ids[r] for r in rows], [float(scores[r]) for r in rows]


def confirmation(matches: list[TitleMatch]) -> str:
    """ "You mentioned The Matrix (1999) and Toy Story (1995); people who liked them also
    liked these." """
    titles = [m.title for m in matches]
    said = titles[0] if len(titles) == 1 else f"{', '.join(titles[:-1])} and {titles[-1]}"
    them = "it" if len(titles) == 1 else "them"
    return f"You mentioned {said}; people who liked {them} also liked these."
