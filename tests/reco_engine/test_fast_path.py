"""The /recommend fast path: which queries it answers itself, and that its responses are the
documented route's, byte for byte."""

from __future__ import annotations

import pytest

from Prod.als_reco_engine.fast_path import PARAMS, api_key_ok, parse_recommend_query
from Prod.als_reco_engine.index import ItemFilters
from Prod.als_reco_engine.routes import RECOMMEND_ROUTE_NAME, router
from Prod.common.api import query_param_names


def test_canonical_queries_are_parsed():
    assert parse_recommend_query(b"") is not None
    default = parse_recommend_query(b"")
    assert (default.k, default.exclude_seen, default.filters) == (10, True, ItemFilters())
    query = parse_recommend_query(
        b"k=25&exclude_seen=false&category=Home%20%26%20Garden&brand=Acme&max_price=30.5"
        b"&min_rating=4&min_price=7"
    )
    assert query.k == 25 and query.exclude_seen is False
    assert query.filters == ItemFilters(("Home & Garden",), ("Acme",), 30.5, 4.0, 7.0)


def test_the_fast_path_parses_exactly_the_routes_parameters():
    """Issue 14.1: the route is found by name and its declared parameters are the fast path's
    (an unknown one goes to the route, which names it in a 422; issue 15.1)."""
    (route,) = [r for r in router.routes if r.name == RECOMMEND_ROUTE_NAME]
    assert route.path == "/api/v1/recommend/{user_id}"
    assert set(query_param_names(route)) == PARAMS


def test_repeated_category_and_brand_are_any_of_on_the_fast_path():
    """Issue 15.2: ``brand=A&brand=B`` means A or B, as on the chat's /search."""
    query = parse_recommend_query(b"brand=A&category=x&brand=B&brand=A&category=Y")
    assert query.filters == ItemFilters(categories=("x", "Y"), brands=("A", "B"))
    assert query.filters.as_dict() == {"category": ["x", "Y"], "brand": ["A", "B"]}


@pytest.mark.parametrize(
    "raw",
    [
        b"k=0",
        b"k=101",
        b"k=010",
        b"k=ten",
        b"k=5&k=6",  # repeated
        b"category=",  # empty
        b"exclude_seen=True",  # valid for FastAPI, not canonical here
        b"max_price=3e1",
        b"max_price=-1",
        b"max_price=nan",
        b"max_price=1000000.5",  # above the shared price limit
        b"min_price=30&max_price=10",  # an empty range
        b"min_rating=5.5",
        b"k=5&utm_source=x",  # unknown: the route names it in a 422
        b"strategy=popular",
        b"brand=" + b"x" * 201,
        b"brand=a&brand=" + b"x" * 201,  # one value too long
        b"&".join([b"category=c"] * 21),  # more values than the route allows
    ],
)
def test_anything_unusual_is_left_to_the_documented_route(raw):
    assert parse_recommend_query(raw) is None


def test_api_key_rule_on_raw_headers():
    assert api_key_ok([], None)
    assert api_key_ok([(b"x-api-key", b"k1")], "k1")
    assert not api_key_ok([(b"x-api-key", b"k2")], "k1")
    assert not api_key_ok([(b"host", b"x")], "k1")
    assert not api_key_ok([(b"x-api-key", "k\u00e9".encode())], "k1")  # non-ASCII: no TypeError
    assert api_key_ok([(b"x-api-key", "k\u00e9".encode())], "k\u00e9")


@pytest.mark.parametrize(
    ("fast", "standard"),
    [
        ({"k": 7}, {"k": 7, "exclude_seen": "True"}),
        ({"k": 30, "exclude_seen": "false"}, {"k": 30, "exclude_seen": "off"}),
        (
            {"k": 50, "category": "GARDEN", "max_price": "30", "min_rating": "2"},
            {"k": 50, "category": "GARDEN", "max_price": "3e1", "min_rating": "2"},
        ),
        (
            {"k": 100, "min_price": "12", "max_price": "25.5"},
            {"k": 100, "min_price": "1.2e1", "max_price": "25.5"},
        ),
    ],
)
def test_fast_and_documented_route_answer_the_same(client, dataset, fast, standard):
    user = dataset.user_ids[5]
    assert parse_recommend_query(_query(fast)) is not None
    assert parse_recommend_query(_query(standard)) is None
    a = client.get(f"/api/v1/recommend/{user}", params=fast)
    b = client.get(f"/api/v1/recommend/{user}", params=standard)
    assert a.status_code == b.status_code == 200
    assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
    assert a.json()["items"] and a.content == b.content


def test_repeated_brand_parameters_mean_any_of_on_recommend_and_fast_path(client, dataset):
    """Issue 15.2: ``/recommend?brand=A&brand=B`` kept only B; now A or B on both paths."""
    user = dataset.user_ids[5]
    fast = [("k", "100"), ("brand", "brand1"), ("brand", "BRAND2")]
    standard = [*fast, ("exclude_seen", "True")]  # not canonical: FastAPI's route answers
    assert parse_recommend_query(_query(fast)) is not None
    assert parse_recommend_query(_query(standard)) is None
    a = client.get(f"/api/v1/recommend/{user}", params=fast)
    b = client.get(f"/api/v1/recommend/{user}", params=standard)
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert {i["brand"] for i in a.json()["items"]} == {"brand1", "brand2"}

    categories = [("k", "100"), ("category", "books"), ("category", "garden")]
    c = client.get(f"/api/v1/recommend/{user}", params=categories)
    d = client.get(f"/api/v1/recommend/{user}", params=[*categories, ("exclude_seen", "on")])
    assert c.content == d.content
    assert {i["category"] for i in c.json()["items"]} == {"books", "garden"}
    # any of, combined with the other filters by "and"
    both = [*categories, ("brand", "brand1"), ("brand", "brand3")]
    items = client.get(f"/api/v1/recommend/{user}", params=both).json()["items"]
    assert items and all(
        i["category"] in {"books", "garden"} and i["brand"] in {"brand1", "brand3"} for i in items
    )
    # the route's limits on a repeated filter: 20 values, 200 characters each
    too_many = [("brand", f"b{n}") for n in range(21)]
    too_long = [("brand", "brand1"), ("brand", "x" * 201)]
    for params in (too_many, too_long):
        response = client.get(f"/api/v1/recommend/{user}", params=params)
        assert response.status_code == 422 and "error" in response.json()


def test_repeated_filters_mean_any_of_on_similar(client, dataset):
    item = dataset.item_ids[3]
    params = [("k", "100"), ("brand", "brand1"), ("brand", "brand2"), ("category", "BOOKS")]
    params += [("category", "garden"), ("category", "audio")]
    items = client.get(f"/api/v1/similar/{item}", params=params).json()["items"]
    assert {i["brand"] for i in items} == {"brand1", "brand2"}
    assert {i["category"] for i in items} <= {"books", "garden", "audio"}
    assert len({i["category"] for i in items}) > 1


def test_fast_responses_are_counted_in_metrics(client, dataset):
    def served() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("http_requests_total{") and 'route="/api/v1/recommend/' in line:
                if 'status="200"' in line:
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = served()
    for _ in range(3):
        client.get(f"/api/v1/recommend/{dataset.user_ids[6]}", params={"k": 3})
    assert served() == before + 3


def _query(params: dict | list[tuple[str, str]]) -> bytes:
    pairs = params.items() if isinstance(params, dict) else params
    return "&".join(f"{k}={v}" for k, v in pairs).encode()


def test_unknown_parameters_and_empty_price_ranges_get_the_routes_422(client, dataset):
    """Issue 15.1: ``/recommend?strategy=popular`` was answered as if it were not there."""
    user = dataset.user_ids[5]
    for params, fields in (
        ({"k": 5, "strategy": "popular"}, ["query.strategy"]),
        ({"utm_source": "x", "min_price": 1}, ["query.utm_source"]),
        ({"min_price": 30, "max_price": 10}, ["query.min_price", "query.max_price"]),
    ):
        assert parse_recommend_query(_query(params)) is None
        response = client.get(f"/api/v1/recommend/{user}", params=params)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_input" and error["request_id"]
        assert [f["field"] for f in error["fields"]] == fields
        assert all(f.removeprefix("query.") in error["message"] for f in fields)
