"""Wish recommendations: a known user's ALS candidates, filtered by what the wish states, reranked
by the rest of the wish (and the LLM's validated judgement), blended with the ALS score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from Prod.als_trainer.publisher import switch_active
from Prod.chat_reco_engine.wish import (
    final_scores,
    order,
    parse_judgement,
    wish_of_request,
    wish_scores,
)
from Prod.common.stores import redis_for
from Prod.orchestrate.local_infra import free_port
from tests.utils.publish import publish_factors

# the fan's ALS taste: laptops first, running shoes last (distinct scores inside each)
TASTE = {
    "Laptops": 0.9,
    "Televisions": 0.7,
    "Coffee Makers": 0.5,
    "Headphones": 0.3,
    "Running Shoes": 0.1,
}


def _reference_blend(wish, als, weight):
    """Slow and obvious: min-max each list by hand, then mix."""

    def scaled(values):
        low, high = min(values), max(values)
        return [0.0 if high == low else (v - low) / (high - low) for v in values]

    w, a = scaled(list(wish)), scaled(list(als))
    return [weight * w[i] + (1 - weight) * a[i] for i in range(len(w))]


def test_blend_matches_the_slow_reference(rng):
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        relevance, als = rng.normal(size=30), rng.normal(size=30)
        expected = _reference_blend(relevance, als, weight)
        assert np.allclose(final_scores(wish_scores(relevance), als, weight), expected)
    judgement = rng.integers(0, 3, size=30)
    relevance = rng.normal(size=30)
    low, high = relevance.min(), relevance.max()
    by_hand = [
        0.5 * (r - low) / (high - low) + 0.5 * j / 2
        for r, j in zip(relevance, judgement, strict=True)
    ]
    assert np.allclose(wish_scores(relevance, judgement), by_hand)


def test_zero_weight_keeps_the_als_order_even_with_ties():
    als = np.array([3.0, 5.0, 5.0, 1.0])
    wish = np.array([9.0, 0.0, 1.0, 4.0])
    assert list(order(final_scores(wish, als, 0.0), als)) == [1, 2, 0, 3]
    assert list(order(final_scores(wish, als, 1.0), als)) == [0, 3, 2, 1]


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ('{"scores": {"a": 2, "b": 0}}', "applied"),
        ('```json\n{"scores": {"a": 1, "b": 1}}\n```', "applied"),
        ("Sure! a is great", "invalid_json"),
        ('["a", "b"]', "invalid_json"),
        ('{"scores": {"a": 3, "b": 0}}', "schema"),
        ('{"scores": {"a": 1.5, "b": 0}}', "schema"),
        ('{"scores": {"a": true, "b": 0}}', "schema"),
        ('{"scores": {"a": 1, "b": 0}, "note": "x"}', "schema"),
        ('{"scores": {"a": 1, "b": 0, "zz": 2}}', "unknown_id"),
        ('{"scores": {"a": 1}}', "missing_id"),
    ],
)
def test_judgement_parsing_is_strict(text, outcome):
    judgement = parse_judgement(text, ["a", "b"])
    assert judgement.outcome == outcome
    assert bool(judgement.scores) == (outcome == "applied")


@pytest.mark.parametrize(
    ("message", "wish"),
    [
        ("recommend me something, but lighter", "lighter"),
        ("Could you suggest something for a 5-year-old under $30?", "for a 5-year-old under $30"),
        ("what should I buy next", ""),
        ("recommend me earbuds", None),
        ("something for a 5-year-old", None),
    ],
)
def test_wish_requests_are_recognised(message, wish):
    assert wish_of_request(message) == wish


@pytest.fixture(scope="module")
def fan_model(settings, catalogue) -> dict:
    """A published model whose one user ranks the catalogue by TASTE (ids: distinct scores)."""
    item_ids = list(catalogue["items"])
    affinity = {
        item: TASTE[catalogue["items"][item]["category"]] - 0.001 * n
        for n, item in enumerate(item_ids)
    }
    fan = f"{catalogue['prefix']}-wishfan"
    factors = np.array([[affinity[i], 1.0] for i in item_ids], dtype=np.float32)
    version = publish_factors(settings, {fan: [1.0, 0.0]}, item_ids, factors).version
    return {"fan": fan, "version": version, "affinity": affinity}


@pytest.fixture
def fan(settings, fan_model) -> dict:
    """The fan's model active for this test (other modules of the suite switch it too)."""
    switch_active(redis_for(settings), fan_model["version"])
    return fan_model


def _wish(client, user_id, **body):
    return client.post(f"/api/v1/users/{user_id}/recommendations", json=body)


def test_zero_weight_reproduces_the_als_order(make_client, fan, catalogue):
    client = make_client(wish_weight=0.0)
    response = _wish(client, fan["fan"], wish="something for trail running", k=20)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["strategy"] == "wish" and payload["personalisation"] == "factor"
    ids = [p["item_id"] for p in payload["products"]]
    best = sorted(catalogue["items"], key=lambda i: -fan["affinity"][i])[:20]
    assert ids == best
    assert payload["scored_by"]["llm_outcome"] == "not_asked"  # w = 0: the wish cannot matter


def test_the_wish_reorders_the_candidates(make_client, fan, catalogue):
    client = make_client(wish_weight=1.0, wish_llm_top_n=0)
    payload = _wish(client, fan["fan"], wish="something for trail running", k=5).json()
    categories = [p["category"] for p in payload["products"]]
    assert categories[:3] == ["Running Shoes"] * 3  # the fan's least liked category
    scores = [p["score"] for p in payload["products"]]
    assert scores == sorted(scores, reverse=True)
    assert payload["scored_by"] == {
        "relevance": "bi-encoder",
        "llm": False,
        "llm_outcome": "not_asked",
    }
    assert all(p["als_score"] is not None for p in payload["products"])


def test_stated_filters_are_hard_constraints(make_client, fan, catalogue):
    client = make_client(wish_llm_top_n=0)
    payload = _wish(client, fan["fan"], wish="something for the gym under $70", k=50).json()
    assert payload["filters"] == {"max_price": 70.0}
    assert payload["wish"] == "for the gym"
    prices = [p["price"] for p in payload["products"]]
    affordable = [i for i, it in catalogue["items"].items() if it["price"] <= 70]
    assert prices and max(prices) <= 70
    assert payload["candidates"] == len(affordable)  # every affordable item, none other
    explicit = _wish(
        client, fan["fan"], wish="something for the gym under $70", filters={"max_price": 50}
    ).json()
    assert explicit["filters"] == {"max_price": 50.0}  # explicit filters win
    assert max(p["price"] for p in explicit["products"]) <= 50


def test_llm_judgement_applied_when_valid(make_client, fan, llm):
    client = make_client(wish_weight=1.0, wish_llm_top_n=5)
    body = {"wish": "something for trail running", "k": 10}
    plain = _wish(client, fan["fan"], **body, use_llm=False).json()
    head = [p["item_id"] for p in plain["products"][:5]]
    llm.behaviour.answer = json.dumps({"scores": {i: 2 if i == head[4] else 0 for i in head}})
    judged = _wish(client, fan["fan"], **body).json()
    assert judged["scored_by"] == {"relevance": "bi-encoder", "llm": True, "llm_outcome": "applied"}
    assert judged["products"][0]["item_id"] == head[4]  # the LLM's favourite leads
    assert judged["products"][0]["llm_judgement"] == 2
    prompt = llm.chat_prompts()[-1]
    assert all(i in prompt for i in head) and "trail running" in prompt


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [("I'd go for the first one!", "invalid_json"), ('{"scores": {"nope": 2}}', "unknown_id")],
)
def test_invalid_llm_judgement_is_dropped_and_counted(make_client, fan, llm, answer, outcome):
    client = make_client(wish_weight=1.0, wish_llm_top_n=5)
    body = {"wish": "something for trail running", "k": 10}
    plain = _wish(client, fan["fan"], **body, use_llm=False).json()
    llm.behaviour.answer = answer
    judged = _wish(client, fan["fan"], **body).json()
    assert judged["scored_by"] == {"relevance": "bi-encoder", "llm": False, "llm_outcome": outcome}
    assert [p["item_id"] for p in judged["products"]] == [
        p["item_id"] for p in plain["products"]
    ]  # never applied
    assert all(p["llm_judgement"] is None for p in judged["products"])
    metrics = client.get("/metrics").text
    assert f'reco_chat_wish_llm_judgements_total{{outcome="{outcome}"}} 1.0' in metrics


def test_llm_down_is_named_and_changes_nothing(make_client, fan, down_url):
    client = make_client(wish_weight=1.0, ollama_host=down_url)
    payload = _wish(client, fan["fan"], wish="something for trail running").json()
    assert payload["scored_by"]["llm_outcome"] == "unavailable"
    assert payload["products"]


def test_unknown_user_gets_a_plain_search(make_client, fan):
    client = make_client()
    response = _wish(client, "nobody-known-wish", wish="something for trail running", k=3)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["strategy"] == "search" and payload["personalisation"] == "none"
    assert [p["category"] for p in payload["products"]] == ["Running Shoes"] * 3
    assert all(p["als_score"] is None for p in payload["products"])


def test_filters_only_wish_keeps_the_als_order(make_client, fan, catalogue):
    client = make_client()
    payload = _wish(client, fan["fan"], wish="something under $100", k=10).json()
    assert payload["strategy"] == "als" and payload["scored_by"]["relevance"] == "none"
    cheap = [i for i in catalogue["items"] if catalogue["items"][i]["price"] <= 100]
    best = sorted(cheap, key=lambda i: -fan["affinity"][i])[:10]
    assert [p["item_id"] for p in payload["products"]] == best


@pytest.mark.parametrize(
    ("user_id", "body", "field"),
    [
        ("u1", {"wish": ""}, "wish"),
        ("u1", {"wish": "   "}, "wish"),
        ("u1", {"wish": "lighter", "k": 0}, "k"),
        ("u1", {"wish": "lighter", "k": 51}, "k"),
        ("u1", {"wish": "lighter", "filters": {"max_price": -1}}, "max_price"),
        ("bad id!", {"wish": "lighter"}, "user_id"),
    ],
)
def test_bad_input_is_a_422_naming_it(client, user_id, body, field):
    response = _wish(client, user_id, **body)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_chat_routes_a_known_users_wish_through_the_wish_path(make_client, fan, llm):
    client = make_client(wish_weight=0.9, wish_llm_top_n=0)
    message = "recommend me something for trail running under $100"
    reply = client.post(
        "/api/v1/chat", json={"message": message, "user_id": fan["fan"], "k": 4}
    ).json()
    assert reply["personalisation"] == "factor"
    assert any("from your taste" in n for n in reply["notes"])
    assert reply["filters"] == {"max_price": 100.0}
    assert [p["category"] for p in reply["products"]] == ["Running Shoes"] * 4
    assert all(p["price"] <= 100 for p in reply["products"])
    stranger = client.post("/api/v1/chat", json={"message": message, "user_id": "nobody-wish"})
    assert stranger.status_code == 200
    assert not any("from your taste" in n for n in stranger.json()["notes"])
    search = client.post(
        "/api/v1/chat", json={"message": "recommend me earbuds", "user_id": fan["fan"]}
    ).json()
    assert not any("from your taste" in n for n in search["notes"])


@pytest.mark.slow
def test_real_small_model_judgement_is_applied_or_dropped(make_client, fan, smollm2):
    """SmolLM2-135M (the packaged GGUF behind the OpenAI-compatible loopback server) judges three
    candidates: whatever it writes is either a valid judgement, applied, or dropped and counted
    with the order unchanged. ~1-2 minutes on 2 busy cores."""
    from Prod.llm_server import SMOLLM2

    client = make_client(
        llm_provider="openai",
        llm_base_url=smollm2.base_url,
        llm_model=SMOLLM2,
        ollama_timeout_s=180.0,
        llm_max_tokens=80,
        wish_weight=1.0,
        wish_llm_top_n=3,
    )
    body = {"wish": "something for trail running", "k": 5}
    plain = _wish(client, fan["fan"], **body, use_llm=False).json()
    judged = _wish(client, fan["fan"], **body).json()
    metrics = client.get("/metrics").text
    outcome = judged["scored_by"]["llm_outcome"]
    assert outcome in ("applied", "invalid_json", "schema", "unknown_id", "missing_id")
    assert f'reco_chat_wish_llm_judgements_total{{outcome="{outcome}"}} 1.0' in metrics
    values = [p["llm_judgement"] for p in judged["products"]]
    if outcome == "applied":
        assert judged["scored_by"]["llm"] is True
        assert sum(v is not None for v in values) == 3 and {v for v in values} <= {0, 1, 2, None}
    else:
        assert values == [None] * 5
        assert [p["item_id"] for p in judged["products"]] == [
            p["item_id"] for p in plain["products"]
        ]


def test_without_an_active_model_a_plain_search(make_client, settings, fan):
    # another Redis database of the same server: no active model there
    client = make_client(redis_url=settings.redis_url.rsplit("/", 1)[0] + "/14")
    payload = _wish(client, fan["fan"], wish="something for trail running", k=3).json()
    assert payload["strategy"] == "search" and payload["personalisation"] == "none"
    assert payload["products"]


def test_redis_down_is_a_503_naming_it_and_the_chat_still_answers(make_client, fan):
    client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = _wish(client, fan["fan"], wish="something for trail running")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["store"] == "redis"
    message = {"message": "recommend me something for trail running", "user_id": fan["fan"]}
    reply = client.post("/api/v1/chat", json=message)
    assert reply.status_code == 200, reply.text
    assert not any("from your taste" in n for n in reply.json()["notes"])


_BENCH_TEXTS = {
    "Hiking": "Trail hiking boots with a waterproof leather upper and a grippy rubber sole.",
    "Coffee": "An espresso coffee machine with a milk frother for lattes and cappuccinos.",
}


def test_bench_finds_that_the_wish_helps_when_taste_and_wish_differ(tmp_path, embedder):
    """Users who mostly hike and then buy coffee things: ALS alone ranks boots first, the wish
    ("something in coffee") finds the held-out coffee items."""
    import pandas as pd
    import torch

    from Prod.bench.wish import bench_wish, parse_weights, render
    from Prod.chat_reco_engine.rerank import Reranker
    from Prod.common.als import ALSParams
    from Prod.common.errors import InvalidInput

    rows = []
    for u in range(40):
        for n in range(8):
            rows.append((f"u{u:02d}", f"hike{(u + n) % 30:02d}", 1.0, 1000 + n))
        rows.append((f"u{u:02d}", f"coffee{u % 30:02d}", 1.0, 1010))
        for n, shift in enumerate((3, 7)):  # held out: the last two
            rows.append((f"u{u:02d}", f"coffee{(u + shift) % 30:02d}", 1.0, 5000 + n))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    frame["event"] = "click"
    frame.to_csv(tmp_path / "interactions.csv", index=False)
    records = [
        {
            "item_id": f"{key}{n:02d}",
            "text": f"{key}{n:02d}. {text}",
            "metadata": {"title": f"{key}{n:02d}", "category": category},
        }
        for category, text in _BENCH_TEXTS.items()
        for key in [{"Hiking": "hike", "Coffee": "coffee"}[category]]
        for n in range(30)
    ]
    (tmp_path / "ProductsRAG.json").write_text(json.dumps(records), encoding="utf-8")
    torch.manual_seed(0)
    report = bench_wish(
        tmp_path,
        embedder=embedder,
        reranker=Reranker(""),
        n_last=2,
        params=ALSParams(factors=8, iterations=5, regularization=0.1),
    )
    ndcg = report["ndcg@10"]
    assert report["users_evaluated"] == 40 and report["relevance"] == {"bi-encoder": 40}
    assert ndcg["w=1"] > 2 * ndcg["w=0"] and ndcg["w=1"] > ndcg["w=0"] + 0.1
    assert report["best_weight"] > 0
    lines: list[str] = []
    render({"reranker": Reranker("").status(), "datasets": [report]}, lines.append)
    assert any("<- best blend" in line for line in lines)
    assert parse_weights("0,0.5,1") == (0.0, 0.5, 1.0)
    for bad in ("0,x", "1.5"):
        with pytest.raises(InvalidInput):
            parse_weights(bad)
