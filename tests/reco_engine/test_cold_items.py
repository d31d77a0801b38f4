"""Cold items: content-based similar items and fresh items mixed into recommendations (real
Chroma and MiniLM), and explained recommendations (against a dense brute-force computation)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

from Prod.als_reco_engine.content import fresh_count, fresh_slots, mix
from Prod.als_reco_engine.foldin import params_from_meta
from Prod.als_reco_engine.main import create_app
from Prod.common.embeddings import embed_texts
from Prod.common.items import COLLECTION_METADATA
from Prod.common.stores import chroma_for
from tests.reco_engine.conftest import new_user_id
from tests.utils.faults import store_down
from tests.utils.publish import CATEGORIES

SHARE = 0.2
_WORDS = {
    "books": "a hardcover novel with gripping chapters, a story to read by the fireplace",
    "garden": "a steel garden spade for digging soil, planting flowers and trimming hedges",
    "audio": "wireless headphones with deep bass, noise cancelling and a long battery life",
}


def _text(title: str, category: str) -> str:
    return f"{title}. Category: {category}. {_WORDS[category].capitalize()}."


@pytest.fixture(scope="module")
def catalogue(settings, dataset, published, embedder):
    """A products collection of its own: every dataset item plus 4 fresh items per category
    (never trained on), embedded by the real MiniLM."""
    name = f"products-cold-{uuid.uuid4().hex[:8]}"
    fresh = {f"{dataset.prefix}-fresh-{c}-{n}": c for c in CATEGORIES for n in range(4)}
    items = {**dataset.item_category, **fresh}
    ids = sorted(items)
    titles = {i: f"{items[i].title()} {i.rsplit('-', 1)[-1]}" for i in ids}
    vectors = embed_texts(embedder, [_text(titles[i], items[i]) for i in ids])
    collection = chroma_for(settings).create_collection(name, metadata=COLLECTION_METADATA)
    collection.add(
        ids=ids,
        embeddings=vectors.tolist(),
        documents=[_text(titles[i], items[i]) for i in ids],
        metadatas=[{"title": titles[i], "category": items[i], "price": 10.0} for i in ids],
    )
    yield {"name": name, "fresh": fresh, "vectors": dict(zip(ids, vectors, strict=True))}
    chroma_for(settings).delete_collection(name)


@pytest.fixture(scope="module")
def cold_client(settings, catalogue):
    own = settings.model_copy(
        update={"products_collection": catalogue["name"], "fresh_share": SHARE}
    )
    app = create_app(own, poll_interval_s=0.2, popularity_interval_s=0.5)
    with TestClient(app) as test_client:
        yield test_client


def test_cold_item_gets_content_neighbours_labelled(cold_client, catalogue, active):
    fresh = catalogue["fresh"]
    item = next(i for i, c in fresh.items() if c == "garden")
    body = cold_client.get(f"/api/v1/similar/{item}", params={"k": 5}).json()
    assert body["strategy"] == "content" and body["model_version"] == active
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 5 and item not in ids
    vectors = catalogue["vectors"]
    expected = sorted(
        (i for i in vectors if i != item), key=lambda i: -float(vectors[i] @ vectors[item])
    )[:5]
    assert ids == expected  # the exact cosine top-5 over the stored embeddings
    for entry in body["items"]:
        cosine = float(vectors[entry["item_id"]] @ vectors[item])
        assert entry["score"] == pytest.approx(cosine, abs=1e-4)
        assert entry["category"] == "garden"


def test_cold_item_similar_applies_filters(cold_client, catalogue):
    item = next(i for i, c in catalogue["fresh"].items() if c == "books")
    body = cold_client.get(f"/api/v1/similar/{item}", params={"k": 4, "category": "AUDIO"}).json()
    assert body["strategy"] == "content"
    assert len(body["items"]) == 4 and {i["category"] for i in body["items"]} == {"audio"}


def test_item_with_a_factor_still_uses_als(cold_client, dataset):
    body = cold_client.get(f"/api/v1/similar/{dataset.item_ids[0]}", params={"k": 3}).json()
    assert body["strategy"] == "als" and len(body["items"]) == 3


def test_item_unknown_everywhere_is_404_naming_it(cold_client):
    response = cold_client.get("/api/v1/similar/nowhere-item")
    assert response.status_code == 404
    assert "nowhere-item" in response.json()["error"]["message"]


@pytest.mark.parametrize("k", [5, 10, 20])
def test_fresh_items_fill_their_share_and_follow_the_taste(cold_client, catalogue, dataset, k):
    fresh = catalogue["fresh"]
    user = dataset.user_ids[0]
    body = cold_client.get(f"/api/v1/recommend/{user}", params={"k": k}).json()
    assert body["strategy"] in ("als", "fold_in")
    items = body["items"]
    content = [n for n, item in enumerate(items) if item["strategy"] == "content"]
    assert len(content) == round(SHARE * k) == fresh_count(k, SHARE, k)
    assert content == fresh_slots(len(items), len(content))
    assert {items[n]["item_id"] for n in content} <= set(fresh)
    # mostly the fresh items of the user's favourite category (85% of their events)
    taste = [fresh[items[n]["item_id"]] == dataset.taste[user] for n in content]
    assert sum(taste) >= len(taste) / 2
    others = [item for n, item in enumerate(items) if n not in content]
    assert {item["strategy"] for item in others} == {body["strategy"]}
    assert not {item["item_id"] for item in others} & set(fresh)


def test_share_zero_mixes_nothing(cold_client, dataset):
    engine = cold_client.app.state.engine
    kept = engine.settings
    engine.settings = kept.model_copy(update={"fresh_share": 0.0})
    try:
        body = cold_client.get(f"/api/v1/recommend/{dataset.user_ids[1]}").json()
    finally:
        engine.settings = kept
    assert len(body["items"]) == 10
    assert all("strategy" not in item for item in body["items"])


def test_popular_users_get_no_fresh_items_and_no_explanation(cold_client):
    body = cold_client.get(f"/api/v1/recommend/{new_user_id()}", params={"explain": "true"}).json()
    assert body["strategy"] == "popular" and body["items"]
    assert all(item["explanation"] is None for item in body["items"])
    assert all("strategy" not in item for item in body["items"])


def test_explanations_match_a_dense_brute_force(cold_client, dataset):
    user = dataset.user_ids[2]
    body = cold_client.get(f"/api/v1/recommend/{user}", params={"k": 10, "explain": "true"}).json()
    engine = cold_client.app.state.engine
    index = engine.holder.current
    profile = engine.load_profile(user)
    params = params_from_meta(index.meta)
    y = index.factors.astype(np.float64)
    rows = profile.rows_for(index.catalogue)
    conf = np.ones(len(y))
    conf[rows.liked] = 1 + params.alpha * rows.weights  # linear confidence (the trainer's default)
    assert params.confidence == "linear"
    lam = params.regularization * rows.liked.size**params.frequency_exponent
    w_u = np.linalg.inv(y.T @ (conf[:, None] * y) + lam * np.eye(y.shape[1]))
    checked = 0
    for item in body["items"]:
        if item.get("strategy") == "content":
            assert item["explanation"] is None
            continue
        i = index.catalogue.row_of[item["item_id"]]
        contrib = np.array([y[i] @ w_u @ y[j] * conf[j] for j in rows.liked])
        order = np.argsort(-contrib)[:3]
        expected = [
            (index.catalogue.item_ids[rows.liked[j]], contrib[j] / np.abs(contrib).sum())
            for j in order
            if contrib[j] > 0
        ]
        got = item["explanation"]
        assert [e["item_id"] for e in got] == [e[0] for e in expected]
        assert [e["share"] for e in got] == pytest.approx([e[1] for e in expected], abs=2e-4)
        assert sum(e["share"] for e in got) <= 1.0
        assert all(
            e["title"] == index.catalogue.titles[index.catalogue.row_of[e["item_id"]]] for e in got
        )
        checked += 1
    assert checked >= 5


def test_explain_must_be_a_boolean(cold_client, dataset):
    response = cold_client.get(
        f"/api/v1/recommend/{dataset.user_ids[0]}", params={"explain": "maybe"}
    )
    assert response.status_code == 422
    assert "explain" in response.text


def test_chroma_down_recommendations_go_on_and_cold_similar_is_503(
    cold_client, catalogue, dataset, infra
):
    item = next(iter(catalogue["fresh"]))
    user = dataset.user_ids[5]  # no taste vector read yet
    with store_down(infra, "chroma"):
        response = cold_client.get(f"/api/v1/recommend/{user}")
        assert response.status_code == 200
        items = response.json()["items"]
        assert len(items) == 10 and all("strategy" not in i for i in items)  # no mixing now
        similar = cold_client.get(f"/api/v1/similar/{item}")
        assert similar.status_code == 503
        assert "Chroma" in similar.json()["error"]["message"]
        assert cold_client.get(f"/api/v1/similar/{dataset.item_ids[0]}").status_code == 200
    mixed = cold_client.get(f"/api/v1/recommend/{user}").json()["items"]
    assert sum(i.get("strategy") == "content" for i in mixed) == fresh_count(10, SHARE, 10)


def test_mixing_places_fresh_items_at_the_end_of_equal_blocks():
    assert [fresh_count(k, 0.1, k) for k in (4, 5, 10, 15, 100)] == [0, 1, 1, 2, 10]
    assert fresh_count(10, 0.5, 3) == 3 and fresh_count(10, 0.0, 10) == 0
    items, flags = mix(list("abcdefgh"), ["X", "Y"], 10)
    assert items == list("abcdXefghY") and sum(flags) == 2
    items, _ = mix(list("ab"), ["X", "Y"], 10)  # a short answer keeps every fresh item
    assert items == ["a", "X", "b", "Y"]
