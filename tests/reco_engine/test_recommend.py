"""Recommendations, similar items, filters, seen-item removal and the error cases."""

from __future__ import annotations

from tests.reco_engine.conftest import new_user_id


def test_trained_user_gets_als_recommendations_without_seen_items(client, dataset, active):
    user = dataset.user_ids[0]
    body = client.get(f"/api/v1/recommend/{user}", params={"k": 10}).json()
    assert body["strategy"] == "als"
    assert body["model_version"] == active
    ids = [i["item_id"] for i in body["items"]]
    seen = {item for (u, item) in dataset.pairs if u == user}
    assert ids and not set(ids) & seen
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert {"title", "brand", "category", "price", "avg_rating"} <= set(body["items"][0])


def test_keeping_seen_items_returns_them_too(client, dataset):
    user = dataset.user_ids[1]
    seen = {item for (u, item) in dataset.pairs if u == user}
    body = client.get(
        f"/api/v1/recommend/{user}", params={"k": 100, "exclude_seen": "false"}
    ).json()
    assert seen <= {i["item_id"] for i in body["items"]}


def test_als_recommendations_follow_the_users_taste(client, dataset):
    """Users were generated with a favourite category: their top-5 (seen included, so the few
    unseen items of a 30-item catalogue do not decide it) should mostly be in it."""
    hits = total = 0
    for user in dataset.user_ids[:12]:
        params = {"k": 5, "exclude_seen": "false"}
        items = client.get(f"/api/v1/recommend/{user}", params=params).json()["items"]
        ours = [i for i in items if i["item_id"] in dataset.item_category]
        hits += sum(dataset.item_category[i["item_id"]] == dataset.taste[user] for i in ours)
        total += len(ours)
    assert total and hits / total > 0.6


def test_filters_apply_to_every_returned_item(client, dataset):
    user = dataset.user_ids[2]
    params = {"k": 100, "category": "GARDEN", "max_price": 30, "min_rating": 2}
    items = client.get(f"/api/v1/recommend/{user}", params=params).json()["items"]
    assert items
    for item in items:
        assert item["category"] == "garden"  # case-insensitive match
        assert item["price"] is not None and item["price"] <= 30
        assert item["avg_rating"] is not None and item["avg_rating"] >= 2
    brand_items = client.get(
        f"/api/v1/recommend/{user}", params={"k": 100, "brand": "brand1"}
    ).json()["items"]
    assert brand_items and {i["brand"] for i in brand_items} == {"brand1"}


def test_filter_matching_nothing_returns_an_empty_list(client, dataset):
    body = client.get(
        f"/api/v1/recommend/{dataset.user_ids[0]}", params={"category": "no-such-category"}
    ).json()
    assert body["items"] == []


def test_user_with_nothing_gets_popular_items_with_filters(client, dataset):
    user = new_user_id("cold")
    body = client.get(f"/api/v1/recommend/{user}", params={"k": 20}).json()
    assert body["strategy"] == "popular"
    scores = [i["score"] for i in body["items"]]
    assert len(scores) == 20 and scores == sorted(scores, reverse=True)
    filtered = client.get(f"/api/v1/recommend/{user}", params={"k": 50, "category": "books"}).json()
    assert filtered["strategy"] == "popular"
    assert filtered["items"] and {i["category"] for i in filtered["items"]} == {"books"}


def test_similar_items_are_closest_by_item_vector(client, dataset, active):
    item = dataset.item_ids[3]
    body = client.get(f"/api/v1/similar/{item}", params={"k": 5}).json()
    assert body["model_version"] == active
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 5 and item not in ids
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)


def test_similar_unknown_item_is_404_naming_it(client):
    response = client.get("/api/v1/similar/no-such-item")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["item_id"] == "no-such-item" and "no-such-item" in error["message"]


def test_k_outside_range_is_422_with_clear_message(client, dataset):
    for k in (0, 101, "ten"):
        response = client.get(f"/api/v1/recommend/{dataset.user_ids[0]}", params={"k": k})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["type"] == "invalid_input" and "k" in error["message"]


def test_malformed_user_id_is_422(client):
    response = client.get("/api/v1/recommend/bad%20id%21")
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"].endswith("user_id")


def test_status_reports_model_and_index(client, active):
    body = client.get("/api/v1/status").json()
    assert body["model_version"] == active == body["active_version"]
    assert body["item_count"] > 0 and body["factors"] > 0
    assert body["strategies"] == {"als": True, "fold_in": True, "popular": True}
    assert body["status"] == "ok" and body["loaded_at"] and body["index_age_s"] >= 0


def test_health_and_metrics(client, dataset):
    assert client.get("/health").json() == {"status": "ok"}
    client.get(f"/api/v1/recommend/{dataset.user_ids[0]}")
    metrics = client.get("/metrics").text
    assert 'route="/api/v1/recommend/{user_id}"' in metrics
    assert "http_request_duration_seconds_bucket" in metrics


def _in_range(item: dict, low: float, high: float) -> bool:
    return item["price"] is not None and low <= item["price"] <= high


def test_price_range_on_recommend_keeps_exactly_the_items_in_range(client, dataset):
    """Issue 15.1: ``min_price`` (as on the chat's /search) was silently ignored here."""
    user = dataset.user_ids[4]
    base = {"k": 100, "exclude_seen": "false"}
    everything = client.get(f"/api/v1/recommend/{user}", params=base).json()["items"]
    assert everything  # the top 100 of the catalogue (all of it when it has fewer items)
    for low, high, fast in ((12, 25.5, True), (20, 1e6, True), (15, 15, False)):
        params = {**base, "min_price": low, "max_price": high}
        if not fast:
            params["exclude_seen"] = "off"  # same meaning, not canonical: the route answers
        body = client.get(f"/api/v1/recommend/{user}", params=params).json()
        _assert_filtered_ranking(
            body["items"], everything, lambda i, lo=low, hi=high: _in_range(i, lo, hi)
        )
    only_min = client.get(f"/api/v1/recommend/{user}", params={**base, "min_price": 30}).json()
    _assert_filtered_ranking(only_min["items"], everything, lambda i: _in_range(i, 30, 1e9))


def _assert_filtered_ranking(filtered: list, everything: list, keep) -> None:
    """The filtered answer is the unfiltered ranking restricted to what the filter keeps: its
    head equals the kept items of the unfiltered top 100, and every item it has is kept."""
    expected = [i for i in everything if keep(i)]
    assert expected and filtered[: len(expected)] == expected
    assert all(keep(i) for i in filtered)


def test_price_range_on_similar_keeps_exactly_the_items_in_range(client, dataset):
    item = dataset.item_ids[3]
    everything = client.get(f"/api/v1/similar/{item}", params={"k": 100}).json()["items"]
    params = {"k": 100, "min_price": 10, "max_price": 22, "category": ["books", "garden"]}
    items = client.get(f"/api/v1/similar/{item}", params=params).json()["items"]
    _assert_filtered_ranking(
        items, everything, lambda i: _in_range(i, 10, 22) and i["category"] in {"books", "garden"}
    )


def test_bad_price_ranges_and_unknown_parameters_on_similar_are_422(client, dataset):
    item = dataset.item_ids[3]
    for params, fields in (
        ({"min_price": 30, "max_price": 10}, ["query.min_price", "query.max_price"]),
        ({"min_price": -1}, ["query.min_price"]),
        ({"max_price": 2e6}, ["query.max_price"]),
        ({"category": ""}, ["query.category[0]"]),
        ({"strategy": "popular"}, ["query.strategy"]),
    ):
        response = client.get(f"/api/v1/similar/{item}", params=params)
        assert response.status_code == 422, (params, response.text)
        error = response.json()["error"]
        assert [f["field"] for f in error["fields"]] == fields, error
