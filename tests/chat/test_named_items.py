"""Conversational cold start by named items: phrases found in messages, titles matched (typos,
partial titles, years, remakes; checked against a brute-force reference over every title), and
the chat turn end to end: the matches in the response, the products = the cosine with the named
items' ALS factors plus the popularity prior, the embedding fallback without a model."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid

import numpy as np
import pytest
from rapidfuzz import fuzz

from Prod.als_trainer.publisher import switch_active
from Prod.chat_reco_engine import named_items
from Prod.chat_reco_engine.named_items import (
    TitleIndex,
    TitleMatcher,
    named_phrases,
    phrase_keys,
    title_key,
)
from Prod.common import model_store
from Prod.common.embeddings import embed_texts
from Prod.common.stores import chroma_for, redis_for
from tests.utils.publish import publish_factors

# a small written catalogue: remakes, sequels, subtitles, markup, accents, near-duplicates
FIXTURE = [
    ("m01", "The Matrix (1999)", 300),
    ("m02", "The Matrix Reloaded (2003)", 120),
    ("m03", "Toy Story (1995)", 250),
    ("m04", "Toy Story 2 (1999)", 110),
    ("m05", "Ocean's Eleven (1960)", 15),
    ("m06", "Ocean's Eleven (2001)", 140),
    ("m07", "The Shawshank Redemption (1994)", 320),
    ("m08", "Pride and Prejudice (1995)", 40),
    ("m09", "Pride (2014)", 10),
    ("m10", "Star Wars: Episode IV - A New Hope (1977)", 260),
    ("m11", "Star Wars: Episode V - The Empire Strikes Back (1980)", 210),
    ("m12", "Blade Runner (1982)", 150),
    ("m13", "Blade Runner 2049 (2017)", 60),
    ("m14", "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)", 90),
    ("m15", "Monty Python &amp; the Holy Grail (1975)", 130),
    ("m16", "Heat (1995)", 100),
    ("m17", "Good Will Hunting (1997)", 140),
    ("m18", "Funny Games (1997)", 20),
    ("m19", "Scary Movie (2000)", 30),
    ("m20", "The Lord of the Rings: The Fellowship of the Ring (2001)", 200),
]
# (phrase, expected item): typos, partial titles, years, case, markup, accents
MATCHES = [
    ("The Matrix", "m01"),
    ("matrix", "m01"),
    ("Mtarix", "m01"),
    ("the matrix reloded", "m02"),
    ("Toy Story", "m03"),
    ("toy stroy 2", "m04"),
    ("Ocean's Eleven (1960)", "m05"),
    ("oceans eleven 2001", "m06"),
    ("Oceans Eleven", "m06"),  # no year: the most rated of the two
    ("shawshank", "m07"),
    ("Shawshank Redemption", "m07"),
    ("pride and prejudice", "m08"),
    ("star wars a new hope", "m10"),
    ("empire strikes back", "m11"),
    ("Blade Runner 2049", "m13"),
    ("blade runner (1982)", "m12"),
    ("amelie", "m14"),
    ("Monty Python and the Holy Grail", "m15"),
    ("Heat", "m16"),
    ("good will huntin", "m17"),
    ("Fellowship of the Ring", "m20"),
]
NON_TITLES = ["something cheap", "funny movies", "scary horror films", "a gift for my dad"]


@pytest.fixture(scope="module")
def matcher(embedder) -> TitleMatcher:
    ids, titles, counts = zip(*FIXTURE, strict=True)
    return TitleMatcher(
        ids, titles, popularity=counts, embed=lambda texts: embed_texts(embedder, texts)
    )


def test_title_keys_normalise_years_articles_markup_and_alternative_names():
    assert title_key("The Matrix (1999)") == ("matrix", 1999)
    assert title_key("Monty Python &amp; the Holy Grail (1975)") == (
        "monty python the holy grail",
        1975,
    )
    assert title_key("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)") == ("amelie", 2001)
    assert phrase_keys("the matrix 1999") == [("matrix", 1999), ("matrix 1999", None)]
    assert phrase_keys("Heat (1995)") == [("heat", 1995)]


def _reference_best(matcher: TitleMatcher, phrase: str, embedder) -> str | None:
    """Brute force: every title scored with the documented formula (no shortlist); the best
    one if its rapidfuzz score is confident."""
    query = named_items._PARENS_TAIL.sub("", phrase).strip() or phrase
    vector = embed_texts(embedder, [query])[0]
    counts = np.array([c for _, _, c in FIXTURE], dtype=float)
    prior = np.log1p(counts) / np.log1p(counts.max())
    words = [set(title_key(t)[0].split()) for _, t, _ in FIXTURE]
    ranked = []
    for key, year in phrase_keys(phrase):
        rare = any(0 < sum(w in ws for ws in words) <= 3 for w in key.split())
        for row, (item_id, title, count) in enumerate(FIXTURE):
            tkey, tyear = title_key(title)
            full = max(fuzz.ratio(key, tkey), fuzz.token_sort_ratio(key, tkey))
            part = (
                0.95 * max(fuzz.partial_ratio(key, tkey), fuzz.token_set_ratio(key, tkey))
                if len(key) < len(tkey)
                else 0.0
            )
            if part > full and not rare:
                continue
            fuzzy = max(full, part)
            score = 0.7 * fuzzy / 100 + 0.3 * float(matcher.vectors[row] @ vector)
            score += 0.03 * prior[row]
            if year is not None and tyear is not None:
                score += 0.1 if year == tyear else -0.05
            ranked.append(((round(score, 6), count, -row), item_id, fuzzy))
    if not ranked:
        return None
    _, item_id, fuzzy = max(ranked)
    return item_id if fuzzy >= named_items.MIN_FUZZY else None


@pytest.mark.parametrize(("phrase", "expected"), MATCHES)
def test_matches_typos_partial_titles_years_and_remakes(matcher, embedder, phrase, expected):
    found = matcher.match(phrase)
    assert found is not None, matcher.candidates(phrase, 3)
    assert found.item_id == expected, matcher.candidates(phrase, 3)
    assert found.item_id == _reference_best(matcher, phrase, embedder)


@pytest.mark.parametrize("phrase", NON_TITLES)
def test_non_titles_do_not_match(matcher, embedder, phrase):
    assert matcher.match(phrase) is None, matcher.candidates(phrase, 3)
    assert _reference_best(matcher, phrase, embedder) is None


def test_phrases_after_cues_and_quotes_with_spans():
    message = "I loved The Matrix and Toy Story, what else?"
    phrases = named_phrases(message)
    assert [p.text for p in phrases] == ["The Matrix", "Toy Story"]
    assert all(message[p.start : p.end] == p.text for p in phrases)
    assert [p.text for p in named_phrases('something like "Heat" (1995), please')] == ["Heat"]
    assert [p.text for p in named_phrases("fans of Star Wars, Blade Runner & Heat")] == [
        "Star Wars",
        "Blade Runner",
        "Heat",
    ]
    assert named_phrases("wireless earbuds under $100") == []
    assert named_phrases("I want a laptop") == []


def test_message_matches_keep_titles_with_and_whole(matcher):
    found = matcher.match_message("I really enjoyed Pride and Prejudice and the matrix 1999!")
    assert [(m.item_id, m.query) for m in found] == [
        ("m08", "Pride and Prejudice"),
        ("m01", "the matrix 1999"),
    ]
    assert matcher.match_message("I like cheap stuff, what else?") == []


# -- the title index: MiniLM vectors built in the background ------------------------------------


@pytest.fixture
def titles_collection(settings):
    """A Chroma collection holding the written catalogue (titles and rating counts)."""
    client = chroma_for(settings)
    name = f"titles-{uuid.uuid4().hex[:10]}"
    collection = client.create_collection(name)
    ids, titles, counts = zip(*FIXTURE, strict=True)
    collection.add(
        ids=list(ids),
        embeddings=[[float(n), 1.0, 0.0] for n in range(len(ids))],
        metadatas=[{"title": t, "rating_count": c} for t, c in zip(titles, counts, strict=True)],
    )
    yield collection
    client.delete_collection(name)


def test_title_index_matches_by_rapidfuzz_while_the_titles_are_embedded(
    titles_collection, embedder, matcher
):
    release, calls = threading.Event(), []

    def held_embed(texts):  # the real MiniLM, held back as on a catalogue of thousands
        calls.append(len(texts))
        release.wait(60)
        return embed_texts(embedder, texts)

    index = TitleIndex(wait_s=0.2)
    started = time.perf_counter()
    first = index.matcher(1, titles_collection, held_embed)
    assert time.perf_counter() - started < 5  # the bounded wait, not the embedding
    assert first.vectors is None and first.embedding_weight == 0.0
    assert first.match("toy stroy 2").item_id == "m04"
    release.set()
    index.wait_s = 60
    full = index.matcher(1, titles_collection, held_embed)  # same catalogue load: no re-read
    assert calls == [20] and full.vectors is not None and full.embedding_weight > 0
    order = [full.item_ids.index(i) for i in matcher.item_ids]
    np.testing.assert_allclose(full.vectors[order], matcher.vectors, atol=1e-5)
    for phrase, expected in MATCHES:
        assert full.match(phrase).item_id == expected, phrase


def test_title_index_retries_a_failed_embedding_and_embeds_only_new_titles(
    titles_collection, embedder
):
    def broken(texts):
        raise RuntimeError("embedder not loaded")

    index, calls = TitleIndex(wait_s=30), []

    def counted(texts):
        calls.append(len(texts))
        return embed_texts(embedder, texts)

    plain = index.matcher(1, titles_collection, broken)
    assert plain.vectors is None and plain.match("Heat").item_id == "m16"
    full = index.matcher(1, titles_collection, counted)  # the same load: retried
    assert calls == [20] and full.vectors is not None
    titles_collection.add(
        ids=["m21"],
        embeddings=[[21.0, 1.0, 0.0]],
        metadatas=[{"title": "Spirited Away (2001)", "rating_count": 80}],
    )
    grown = index.matcher(2, titles_collection, counted)  # a new load sees the new title
    assert calls == [20, 1] and len(grown) == 21 and grown.vectors is not None
    assert grown.match("spirted away").item_id == "m21"


# -- the chat turn -------------------------------------------------------------------------------


def _title_id(catalogue: dict, title: str) -> str:
    return next(i for i, it in catalogue["items"].items() if it["title"] == title)


@pytest.fixture(scope="module")
def named_model(settings, catalogue) -> dict:
    """A published model (through the trainer's publisher) over the test catalogue, random
    seeded factors; active for this module's tests, the previous active restored after."""
    item_ids = list(catalogue["items"])
    rng = np.random.default_rng(17)
    item_factors = rng.normal(size=(len(item_ids), 4)).astype(np.float32)
    user = {f"{catalogue['prefix']}-named": rng.normal(size=4)}
    meta = publish_factors(settings, user, item_ids, item_factors, alpha=2.0)
    version = meta.version
    before = switch_active(redis_for(settings), version)
    yield {"version": version, "meta": meta, "ids": item_ids, "factors": item_factors}
    if before.active and redis_for(settings).exists(model_store.meta_key(before.active)):
        switch_active(redis_for(settings), before.active)


@pytest.fixture
def active_named_model(settings, named_model) -> dict:
    """This module's model active now (another module may have switched in between)."""
    if model_store.active_version(redis_for(settings)) != named_model["version"]:
        switch_active(redis_for(settings), named_model["version"])
    return named_model


def _cosine_popularity_top(
    model: dict, catalogue: dict, named: list[str], k: int, weight: float
) -> list[str]:
    """The top k the slow obvious way: per item, the sum of 5 x its cosine with each named
    item's factor, and its log rating count, each min-max scaled over every model item; the
    first plus ``weight`` times the second."""
    y = model["factors"].astype(np.float64).tolist()

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(p * q for p, q in zip(a, b, strict=True))
        return dot / (math.sqrt(sum(p * p for p in a)) * math.sqrt(sum(q * q for q in b)))

    rows = [model["ids"].index(i) for i in named]
    sims = [sum(5.0 * cos(y[r], y[j]) for j in rows) for r in range(len(y))]
    logs = [math.log1p(catalogue["items"][i]["rating_count"]) for i in model["ids"]]
    score = {}
    for r, item_id in enumerate(model["ids"]):
        sim_part = (sims[r] - min(sims)) / (max(sims) - min(sims))
        pop_part = (logs[r] - min(logs)) / (max(logs) - min(logs))
        score[item_id] = sim_part + weight * pop_part
    others = [i for i in model["ids"] if i not in named]
    return sorted(others, key=lambda i: (-score[i], model["ids"].index(i)))[:k]


def test_chat_turn_ranks_by_the_named_items(
    make_client, settings, catalogue, active_named_model, down_url
):
    client = make_client(ollama_host=down_url)  # the template answers: its wording is checked
    bose, sony = "Bose earbuds Pro", "Sony 4K smart TV Lite"
    message = "I loved the bose earbuds pro and the Sony 4K smart TV lite, what else?"
    response = client.post("/api/v1/chat", json={"message": message, "k": 6})
    assert response.status_code == 200, response.text
    body = response.json()
    named = [(n["item_id"], n["title"]) for n in body["named_items"]]
    expected = [_title_id(catalogue, bose), _title_id(catalogue, sony)]
    assert named == list(zip(expected, [bose, sony], strict=True))
    assert [n["query"] for n in body["named_items"]] == [
        "the bose earbuds pro",
        "the Sony 4K smart TV lite",
    ]
    assert body["personalisation"] == "item_cosine"
    assert body["filters"] == {}  # the brands inside the named titles set no filter
    ids = [p["item_id"] for p in body["products"]]
    weight = settings.named_items_popularity_weight
    assert weight > 0  # the popularity prior is on by default
    assert ids == _cosine_popularity_top(active_named_model, catalogue, expected, 6, weight)
    assert body["products"][0]["score"] == 1.0
    assert body["answer"].startswith(f"You mentioned {bose} and {sony}")
    assert body["generated_by"] == "fallback"

    # the session keeps them: a later named item joins them
    jbl = "JBL earbuds Lite"
    follow = client.post(
        "/api/v1/chat",
        json={"message": f"we also like the {jbl}", "session_id": body["session_id"], "k": 6},
    ).json()
    third = _title_id(catalogue, jbl)
    assert [n["item_id"] for n in follow["named_items"]] == [third]
    assert [p["item_id"] for p in follow["products"]] == _cosine_popularity_top(
        active_named_model, catalogue, [third, *expected], 6, weight
    )
    # weight 0: by the cosine alone
    plain = make_client(ollama_host=down_url, named_items_popularity_weight=0.0)
    again = plain.post("/api/v1/chat", json={"message": message, "k": 6}).json()
    assert [p["item_id"] for p in again["products"]] == _cosine_popularity_top(
        active_named_model, catalogue, expected, 6, 0.0
    )


def test_llm_prompt_names_the_matches(make_client, catalogue, active_named_model, llm):
    client = make_client()
    body = client.post(
        "/api/v1/chat", json={"message": "I loved the Bose earbuds Pro, what else?"}
    ).json()
    assert [n["title"] for n in body["named_items"]] == ["Bose earbuds Pro"]
    prompts = [str(r) for r in llm.requests]
    assert any("NAMED ITEMS" in p and "Bose earbuds Pro" in p for p in prompts)

    message = {"message": "I loved the Bose earbuds Pro, what else?"}
    with client.stream("POST", "/api/v1/chat/stream", json=message) as streamed:
        assert streamed.status_code == 200
        streamed.read()
    events = []
    for block in streamed.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    first, final = events[0][1], events[-1][1]
    assert events[0][0] == "products" and events[-1][0] == "done"
    assert [n["item_id"] for n in first["named_items"]] == [
        n["item_id"] for n in body["named_items"]
    ]
    assert final["named_items"] == first["named_items"]
    assert [p["item_id"] for p in first["products"]] == [p["item_id"] for p in body["products"]]


def test_no_named_item_behaves_as_before(make_client, active_named_model, down_url):
    client = make_client(ollama_host=down_url)
    body = client.post("/api/v1/chat", json={"message": "I like cheap earbuds"}).json()
    assert body["named_items"] == []
    assert body["personalisation"] == "none"
    assert body["products"]


def test_without_a_model_the_neighbours_of_the_named_items(
    make_client, settings, catalogue, down_url, embedder
):
    # another Redis database of the same server: no active model there
    redis_url = settings.redis_url.rsplit("/", 1)[0] + "/13"
    client = make_client(ollama_host=down_url, redis_url=redis_url)
    response = client.post(
        "/api/v1/chat", json={"message": 'something like "Samsung OLED television Plus"', "k": 4}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    named_id = _title_id(catalogue, "Samsung OLED television Plus")
    assert [n["item_id"] for n in body["named_items"]] == [named_id]
    assert body["personalisation"] == "none"
    collection = chroma_for(settings).get_collection(catalogue["collection"])
    vector = np.asarray(collection.get(ids=[named_id], include=["embeddings"])["embeddings"][0])
    nearest = collection.query(query_embeddings=[vector.tolist()], n_results=5)["ids"][0]
    assert [p["item_id"] for p in body["products"]] == [i for i in nearest if i != named_id][:4]


def test_popularity_prior_blend_matches_its_formula():
    """with_popularity: minmax(scores) + w * minmax(log1p(counts)) on the finite scores; -inf
    (left-out items) stays; w = 0 or no counts: unchanged."""
    from Prod.chat_reco_engine.personalise import with_popularity

    scores = np.array([2.0, -1.0, 0.5, -np.inf, 3.0])
    counts = np.array([0.0, 99.0, 9.0, 999.0, 1.0])
    out = with_popularity(scores, counts, 0.5)
    logs = [math.log1p(c) for c in counts]
    for n in (0, 1, 2, 4):
        expected = (scores[n] + 1.0) / 4.0 + 0.5 * (logs[n] - min(logs)) / (max(logs) - min(logs))
        assert out[n] == pytest.approx(expected)
    assert out[3] == -np.inf
    assert np.array_equal(with_popularity(scores, counts, 0.0), scores)
    assert np.array_equal(with_popularity(scores, None, 0.5), scores)
