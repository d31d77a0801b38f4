"""The canonical writer: exact headers, unknown values, RAG text and metadata, timestamps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from Prod.common.canonical_format import (
    DEFAULT_WEIGHTS,
    DISLIKE_EVENT,
    EVENT_WEIGHTS,
    EVENTS,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    USER_COLUMNS,
)
from Prod.common.errors import InvalidInput
from Prod.common.items import product_text, products_rag
from Prod.datasets.canonical import format_timestamps, write_dataset


def _frames():
    users = pd.DataFrame({"user_id": ["u1", "u2"], "name": ["Ann", None]})
    items = pd.DataFrame(
        {
            "item_id": ["p1", "p2"],
            "title": ["Voltix Pro Earbuds", "Plain Mug"],
            "brand": ["Voltix", None],
            "category": ["Electronics", "Home & Kitchen"],
            "price": [59.99, np.nan],
            "avg_rating": [4.25, np.nan],
            "rating_count": [12, None],
            "description": ["Small and loud.", ""],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["p1", "p1", "p2"],
            "event": ["view", "purchase", "rating"],
            "rating": [np.nan, np.nan, 3.5],
            "weight": [EVENT_WEIGHTS["view"], EVENT_WEIGHTS["purchase"], 3.5],
            "timestamp": pd.to_datetime(
                ["2025-01-02 03:04:05", "2025-01-02 03:10:00", "2025-01-03 00:00:00"]
            ),
        }
    )
    return users, items, interactions


def test_event_weights_follow_the_contract():
    assert EVENT_WEIGHTS == {"view": 1, "click": 2, "add_to_cart": 4, "purchase": 8}
    # dislike: negative feedback, stored with weight 1 that is never read as confidence
    assert EVENTS == ("view", "click", "add_to_cart", "purchase", "rating", "dislike")
    assert DEFAULT_WEIGHTS == {**EVENT_WEIGHTS, DISLIKE_EVENT: 1.0}


def test_dislike_events_are_written_and_read_back(tmp_path):
    from Prod.datasets.ingest.validate import read_tables

    users, items, interactions = _frames()
    dislike = pd.DataFrame(
        {
            "user_id": ["u2"],
            "item_id": ["p1"],
            "event": [DISLIKE_EVENT],
            "rating": [np.nan],
            "weight": [np.nan],
            "timestamp": pd.to_datetime(["2025-01-04"]),
        }
    )
    write_dataset(tmp_path, users, items, pd.concat([interactions, dislike], ignore_index=True))
    assert "u2,p1,dislike,,,2025-01-04T00:00:00" in (tmp_path / "interactions.csv").read_text()
    tables = read_tables(tmp_path)
    assert not tables.bad_rows
    events = tables.interactions
    row = events[events["event"] == DISLIKE_EVENT]
    assert len(row) == 1 and row["weight"].iloc[0] == 1.0  # the default weight


def test_write_dataset_writes_the_documented_files(tmp_path):
    summary = write_dataset(tmp_path, *_frames())

    assert (summary["users"], summary["items"], summary["interactions"]) == (2, 2, 3)
    lines = {
        name: (tmp_path / name).read_text().splitlines()
        for name in ("users.csv", "items.csv", "interactions.csv")
    }
    assert lines["users.csv"][0] == ",".join(USER_COLUMNS)
    assert lines["items.csv"][0] == ",".join(ITEM_COLUMNS)
    assert lines["interactions.csv"][0] == ",".join(INTERACTION_COLUMNS)
    # unknown values are empty fields, rating_count defaults to 0, numbers are compact
    assert lines["users.csv"][2] == "u2,"
    assert lines["items.csv"][1] == (
        "p1,Voltix Pro Earbuds,Voltix,Electronics,59.99,4.25,12,Small and loud.,"
    )
    assert lines["items.csv"][2] == "p2,Plain Mug,,Home & Kitchen,,,0,,"
    assert lines["interactions.csv"][1:] == [
        "u1,p1,view,,1,2025-01-02T03:04:05",
        "u1,p1,purchase,,8,2025-01-02T03:10:00",
        "u2,p2,rating,3.5,3.5,2025-01-03T00:00:00",
    ]


def test_written_csvs_read_back_with_pandas(tmp_path):
    users, items, interactions = _frames()
    write_dataset(tmp_path, users, items, interactions)

    back = pd.read_csv(tmp_path / "items.csv", dtype={"item_id": str})
    assert back["price"].tolist()[0] == pytest.approx(59.99)
    assert back["price"].isna().tolist() == [False, True]
    events = pd.read_csv(tmp_path / "interactions.csv")
    stamps = pd.to_datetime(events["timestamp"], utc=True)
    assert stamps.tolist()[0] == pd.Timestamp("2025-01-02T03:04:05Z")


def test_products_rag_text_and_metadata_omit_unknowns(tmp_path):
    write_dataset(tmp_path, *_frames())
    records = json.loads((tmp_path / "ProductsRAG.json").read_text())

    assert [r["item_id"] for r in records] == ["p1", "p2"]
    first, second = records
    assert first["metadata"] == {
        "title": "Voltix Pro Earbuds",
        "brand": "Voltix",
        "category": "Electronics",
        "price": 59.99,
        "avg_rating": 4.25,
        "rating_count": 12,
    }
    for fact in (
        "Voltix Pro Earbuds",
        "Brand: Voltix",
        "Electronics",
        "$59.99",
        "4.2 out of 5",
        "12 ratings",
        "Small and loud.",
    ):
        assert fact in first["text"]
    # no brand, price or rating: keys left out (Chroma metadata cannot hold null)
    assert second["metadata"] == {
        "title": "Plain Mug",
        "category": "Home & Kitchen",
        "rating_count": 0,
    }
    assert "$" not in second["text"] and "Rated" not in second["text"]
    assert all(v is not None for r in records for v in r["metadata"].values())


def test_product_text_reads_as_sentences():
    text = product_text(
        {
            "title": "Trail Shoes",
            "brand": "Pacefield",
            "category": "Sports",
            "price": 1234.5,
            "avg_rating": 4.0,
            "rating_count": 1,
        }
    )
    assert text == (
        "Trail Shoes. Brand: Pacefield. Category: Sports. Price: $1,234.50. "
        "Rated 4.0 out of 5 from 1 rating."
    )


def test_products_rag_of_an_empty_catalogue_is_an_empty_list(tmp_path):
    users, _, _ = _frames()
    empty_items = pd.DataFrame(columns=["item_id", "title"])
    empty_events = pd.DataFrame(columns=INTERACTION_COLUMNS)
    write_dataset(tmp_path, users, empty_items, empty_events)
    assert json.loads((tmp_path / "ProductsRAG.json").read_text()) == []
    assert products_rag(empty_items) == []


def test_unknown_event_is_refused(tmp_path):
    users, items, interactions = _frames()
    interactions.loc[0, "event"] = "wishlist"
    with pytest.raises(InvalidInput, match="wishlist"):
        write_dataset(tmp_path, users, items, interactions)


def test_missing_required_column_is_refused(tmp_path):
    users, items, interactions = _frames()
    with pytest.raises(InvalidInput, match="title"):
        write_dataset(tmp_path, users, items.drop(columns=["title"]), interactions)


def test_timestamps_from_unix_seconds_and_aware_datetimes_are_utc():
    seconds = pd.Series([0, 1_700_000_000])
    aware = pd.Series(pd.to_datetime(["2025-01-01 01:00:00"]).tz_localize("Europe/Paris"))
    assert format_timestamps(seconds).tolist() == ["1970-01-01T00:00:00", "2023-11-14T22:13:20"]
    assert format_timestamps(aware).tolist() == ["2025-01-01T00:00:00"]


def test_ids_with_commas_or_quotes_are_quoted_and_read_back(tmp_path):
    users, items, interactions = _frames()
    odd_user = 'user, "the first"'
    users.loc[0, "user_id"] = odd_user
    interactions.loc[[0, 1], "user_id"] = odd_user
    write_dataset(tmp_path, users, items, interactions)

    events = pd.read_csv(tmp_path / "interactions.csv", dtype=str, keep_default_na=False)
    assert events["user_id"].tolist() == [odd_user, odd_user, "u2"]
    assert events["weight"].tolist() == ["1", "8", "3.5"]


def test_categorical_ids_are_written_as_their_labels(tmp_path):
    users, items, interactions = _frames()
    interactions["user_id"] = interactions["user_id"].astype("category")
    write_dataset(tmp_path, users, items, interactions)
    events = pd.read_csv(tmp_path / "interactions.csv", dtype=str)
    assert events["user_id"].tolist() == ["u1", "u1", "u2"]
