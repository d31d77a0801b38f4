"""Reading and validating the canonical format: typed rows, exact line numbers, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from Prod.common.errors import IngestError
from Prod.datasets.ingest.validate import read_products, read_tables
from tests.ingest.conftest import edit


def _us(iso: str) -> int:
    return int(pd.Timestamp(iso).tz_convert("UTC").value // 1_000)


def test_fixture_rows_are_typed_and_normalised(dataset: Path, prefix: str) -> None:
    tables = read_tables(dataset)
    assert tables.bad_rows == []
    assert tables.rows_read == {"users.csv": 3, "items.csv": 3, "interactions.csv": 7}
    assert tables.duplicate_interactions == 1
    assert list(tables.users["user_id"]) == [f"{prefix}u1", f"{prefix}u2", f"{prefix}u3"]
    assert tables.users["name"].iloc[2] is None  # empty = unknown

    items = tables.items.set_index("item_id")
    assert items.loc[f"{prefix}i1", "description"] == "Waterproof boots\nfor long hikes"
    assert np.isnan(items.loc[f"{prefix}i3", "price"])
    assert items.loc[f"{prefix}i3", "rating_count"] == 0

    events = tables.interactions.set_index(["item_id", "event"])
    at = events["occurred_us"]
    assert at[(f"{prefix}i1", "view")].iloc[0] == _us("2024-05-01T10:00:00Z")  # naive = UTC
    assert at[(f"{prefix}i2", "purchase")] == 1714557600 * 1_000_000  # unix seconds
    assert at[(f"{prefix}i2", "rating")] == _us("2024-05-02T07:30:00Z")  # offset honoured
    assert events.loc[(f"{prefix}i3", "add_to_cart"), "weight"] == 4.0  # default weight by event
    assert events.loc[(f"{prefix}i2", "rating"), "rating"] == 4.0
    assert np.isnan(events.loc[(f"{prefix}i2", "purchase"), "rating"])


def test_every_bad_row_is_reported_with_its_line(dataset: Path, prefix: str) -> None:
    interactions = dataset / "interactions.csv"
    edit(interactions, "click,,2", "clack,,2")  # line 3
    edit(interactions, "rating,4,4", "rating,,4")  # line 5
    with interactions.open("a") as handle:
        handle.write(f"nobody,{prefix}i1,view,,1,2024-05-05T00:00:00\n")  # line 9
        handle.write(f"{prefix}u1,{prefix}i1,view,,-1,1e3\n")  # line 10
        handle.write(f"{prefix}u1,{prefix}i1,view,,1,1714557600000\n")  # line 11: milliseconds
    edit(dataset / "items.csv", "149,4.1,33", "-149,7,3.5")  # line 4 (after a 2-line record)

    tables = read_tables(dataset)
    found = {(bad.file, bad.line): bad.reason for bad in tables.bad_rows}
    assert set(found) == {
        ("items.csv", 4),
        ("interactions.csv", 3),
        ("interactions.csv", 4),  # its item (items.csv line 4) was rejected
        ("interactions.csv", 5),
        ("interactions.csv", 9),
        ("interactions.csv", 10),
        ("interactions.csv", 11),
    }
    assert "price -149 must be >= 0" in found[("items.csv", 4)]
    assert "avg_rating 7 must be >= 0 and <= 5" in found[("items.csv", 4)]
    assert "rating_count 3.5 is not a whole number" in found[("items.csv", 4)]
    assert "event 'clack' is not one of" in found[("interactions.csv", 3)]
    assert "rating is required when event=rating" in found[("interactions.csv", 5)]
    assert "unknown user_id 'nobody'" in found[("interactions.csv", 9)]
    assert "weight -1 must be > 0" in found[("interactions.csv", 10)]
    assert "timestamp '1e3' is neither ISO-8601" in found[("interactions.csv", 10)]
    assert "milliseconds?" in found[("interactions.csv", 11)]
    assert str(tables.bad_rows[0]).startswith("items.csv:4: price -149")
    assert list(tables.interactions["line"]) == [2, 6, 7]  # line 8 repeats line 7


def test_interaction_on_rejected_item_names_the_cause(dataset: Path, prefix: str) -> None:
    edit(dataset / "items.csv", "149,4.1,33", "-149,4.1,33")
    found = {(b.file, b.line): b.reason for b in read_tables(dataset).bad_rows}
    assert found[("interactions.csv", 4)] == f"item_id '{prefix}i2' was rejected in items.csv"
    assert ("items.csv", 4) in found


def test_duplicate_ids_and_ragged_rows(dataset: Path, prefix: str) -> None:
    with (dataset / "users.csv").open("a") as handle:
        handle.write(f"{prefix}u1,Ada again\n\n{prefix}u9,Too,Many\n")
    found = {(b.file, b.line): b.reason for b in read_tables(dataset).bad_rows}
    assert found[("users.csv", 5)] == f"duplicate user_id '{prefix}u1' (first on line 2)"
    assert found[("users.csv", 7)] == "expected 2 fields, found 3"  # blank line 6 is skipped


def test_many_unknown_events_do_not_make_distinct_events_look_duplicated(
    dataset: Path, prefix: str
) -> None:
    """Regression: the duplicate key folded event codes as if there were at most 6, but codes
    count every spelling seen; 11 unknown ones pushed 'purchase' to code 12, so (i1, purchase)
    and (i3, view) at the same time shared a key and one was dropped as a duplicate."""
    at = "2024-05-01T10:00:00"
    lines = [f"{prefix}u1,{prefix}i1,view,,,{at}"]
    lines += [f"{prefix}u1,{prefix}i2,bad{k},,,{at}" for k in range(11)]
    lines += [f"{prefix}u1,{prefix}i3,view,,,{at}", f"{prefix}u1,{prefix}i1,purchase,,,{at}"]
    (dataset / "interactions.csv").write_text(
        "user_id,item_id,event,rating,weight,timestamp\n" + "\n".join(lines) + "\n"
    )
    tables = read_tables(dataset)
    assert len(tables.bad_rows) == 11
    assert tables.duplicate_interactions == 0
    stored = tables.interactions[["item_id", "event"]].astype(str)
    assert sorted(map(tuple, stored.to_numpy())) == [
        (f"{prefix}i1", "purchase"),
        (f"{prefix}i1", "view"),
        (f"{prefix}i3", "view"),
    ]


def test_interactions_may_refer_to_ids_known_to_the_database(dataset: Path, prefix: str) -> None:
    (dataset / "users.csv").write_text("user_id,name\n")
    known = {f"{prefix}u1", f"{prefix}u2", f"{prefix}u3"}
    tables = read_tables(dataset, known_ids=lambda table, ids: known & set(ids))
    assert tables.bad_rows == []
    assert len(tables.interactions) == 6


@pytest.mark.parametrize("missing", ["users.csv", "interactions.csv"])
def test_missing_file_is_one_clear_error(dataset: Path, missing: str) -> None:
    (dataset / missing).unlink()
    with pytest.raises(IngestError, match=f"is missing {missing}"):
        read_tables(dataset)


def test_missing_column_is_one_clear_error(dataset: Path) -> None:
    edit(
        dataset / "interactions.csv",
        "user_id,item_id,event,rating,weight,timestamp",
        "user_id,item_id,kind,rating,weight",
    )
    with pytest.raises(IngestError) as caught:
        read_tables(dataset)
    assert "interactions.csv is missing required columns event, timestamp" in caught.value.message


def test_products_json_reports_entry_lines(dataset: Path, prefix: str) -> None:
    path = dataset / "ProductsRAG.json"
    edit(path, '"text": "Puzzle Cube by Clever Fox, in Toys & Games."', '"text": ""')
    catalogue = read_products(dataset)
    assert [p.item_id for p in catalogue.products] == [f"{prefix}i1", f"{prefix}i2"]
    assert [(b.file, b.line) for b in catalogue.bad_rows] == [("ProductsRAG.json", 6)]
    assert "text is missing or empty" in catalogue.bad_rows[0].reason


def test_invalid_json_names_the_line(dataset: Path) -> None:
    edit(dataset / "ProductsRAG.json", '"rating_count": 33}}', '"rating_count": 33}')
    with pytest.raises(IngestError, match=r"ProductsRAG.json:\d+: invalid JSON"):
        read_products(dataset)


# --- text cleaning at ingest (the shared rules of Prod/common/item_cleaning.py) ---------------


def test_clean_fixture_passes_ingest_unchanged(dataset: Path) -> None:
    tables = read_tables(dataset)
    assert tables.cleaning == {
        "titles_rebuilt": 0,
        "fields_cleaned": 0,
        "brands_merged": 0,
        "values_emptied": 0,
    }
    raw = json.loads((dataset / "ProductsRAG.json").read_text())
    catalogue = read_products(dataset)
    assert [p.text for p in catalogue.products] == [entry["text"] for entry in raw]
    assert catalogue.cleaning["fields_cleaned"] == 0


def test_item_text_is_cleaned_and_markup_titles_rebuilt_at_ingest(
    dataset: Path, prefix: str
) -> None:
    (dataset / "items.csv").write_text(
        "item_id,title,brand,category,price,avg_rating,rating_count,description,image_url\n"
        f'{prefix}i1,Trail Boots &amp; Laces,TRAILFORGE,Sports &amp; Outdoors,89.99,4.5,120,"Dry'
        ' boots\nfor long hikes",\n'
        f'{prefix}i2,"<span class=""a-size-medium a-color-secondary""",Visit the Kitchara Store,'
        "Home & Kitchen,149,4.1,33,<p>Makes espresso at home.</p> Fast.,\n"
        f"{prefix}i3,Puzzle Cube,Trailforge,Toys & Games,,,,,\n"
        f"{prefix}i4,</span>,Trailforge,,,,,,\n"
        f"{prefix}i5,&nbsp;,Unknown,,,,,,\n"
    )
    tables = read_tables(dataset)
    assert tables.bad_rows == []  # only-markup titles are rebuilt, never rejected or dropped
    items = tables.items.set_index("item_id")

    assert items.loc[f"{prefix}i1", "title"] == "Trail Boots & Laces"
    assert items.loc[f"{prefix}i1", "category"] == "Sports & Outdoors"
    assert items.loc[f"{prefix}i1", "description"] == "Dry boots\nfor long hikes"  # kept as is
    assert items.loc[f"{prefix}i2", "title"] == "Makes espresso at home"
    assert items.loc[f"{prefix}i2", "brand"] == "Kitchara"
    assert items.loc[f"{prefix}i2", "description"] == "Makes espresso at home. Fast."
    assert items.loc[f"{prefix}i4", "title"] == "Trailforge"  # brand, no category
    assert items.loc[f"{prefix}i5", "title"] == f"Product {prefix}i5"
    assert items.loc[f"{prefix}i5", "brand"] is None  # placeholder -> unknown, counted below
    assert set(items["brand"].dropna()) == {"Trailforge", "Kitchara"}  # "TRAILFORGE" merged
    assert tables.cleaning == {
        "titles_rebuilt": 3,
        "fields_cleaned": 8,
        "brands_merged": 1,
        "values_emptied": 4,  # the three markup-only titles (rebuilt) and the placeholder brand
        "brand_cleaned": 2,
        "category_cleaned": 1,
        "description_cleaned": 1,
        "title_cleaned": 4,
    }


def test_an_empty_title_is_still_a_bad_row(dataset: Path, prefix: str) -> None:
    edit(dataset / "items.csv", f"{prefix}i3,Puzzle Cube", f"{prefix}i3,")
    found = {(b.file, b.line): b.reason for b in read_tables(dataset).bad_rows}
    assert found[("items.csv", 5)] == "title is empty"


def test_product_text_and_metadata_are_cleaned_at_ingest(dataset: Path, prefix: str) -> None:
    markup = '<span class="a-size-medium a-color-secondary"'
    entries = [
        {
            "item_id": f"{prefix}i1",
            "text": f"{markup}. Brand: TRAILFORGE. Category: Sports &amp; Outdoors. "
            "Price: $89.99. <b>Waterproof</b> boots for long hikes. Light.",
            "metadata": {"title": markup, "brand": "TRAILFORGE", "price": 89.99},
        },
        {
            "item_id": f"{prefix}i2",
            "text": "Espresso Maker. Brand: Trailforge.",
            "metadata": {"title": "Espresso Maker", "brand": "Trailforge"},
        },
        {
            "item_id": f"{prefix}i3",
            "text": "Puzzle Cube. Brand: Trailforge.",
            "metadata": {"title": "Puzzle Cube", "brand": "Trailforge", "category": "&nbsp;"},
        },
    ]
    (dataset / "ProductsRAG.json").write_text(json.dumps(entries))
    catalogue = read_products(dataset)
    assert catalogue.bad_rows == []
    products = {p.item_id: p for p in catalogue.products}

    boots = products[f"{prefix}i1"]
    assert boots.metadata == {
        "title": "Waterproof boots for long hikes",
        "brand": "Trailforge",
        "price": 89.99,
    }
    assert boots.text == (
        "Waterproof boots for long hikes. Brand: TRAILFORGE. Category: Sports & Outdoors. "
        "Price: $89.99. Waterproof boots for long hikes. Light."
    )
    assert products[f"{prefix}i3"].metadata == {"title": "Puzzle Cube", "brand": "Trailforge"}
    assert products[f"{prefix}i2"].text == "Espresso Maker. Brand: Trailforge."
    assert catalogue.cleaning["titles_rebuilt"] == 1
    assert catalogue.cleaning["brands_merged"] == 1
    assert catalogue.cleaning["text_cleaned"] == 1


def test_csv_ingest_and_post_interactions_share_one_timestamp_rule(dataset: Path, prefix) -> None:
    """Issue 13 item 13: the API read 32503680000 as milliseconds (1971), the CSV refused it."""
    from pydantic import ValidationError

    from Prod.als_reco_engine.schemas import InteractionIn

    stamps = [
        "32503680000",
        "1735689600000",
        "1735689600²",
        "631151999",
        "1e9",
        "2999-01-01",
        "1735689600",
        "2025-01-01T01:00:00+01:00",
        "1990-01-01T00:00:00",
    ]
    with (dataset / "interactions.csv").open("a") as handle:
        for stamp in stamps:  # lines 9..17
            handle.write(f"{prefix}u1,{prefix}i3,view,,,{stamp}\n")
    csv_says = {b.line: b.reason for b in read_tables(dataset).bad_rows}
    for line, stamp in enumerate(stamps, start=9):
        try:
            event = InteractionIn(user_id="u", item_id="i", event="view", timestamp=stamp)
        except ValidationError as exc:
            api_says = exc.errors()[0]["msg"].removeprefix("Value error, ")
        else:
            api_says = None
            assert event.timestamp.tzinfo is not None
        assert csv_says.get(line) == api_says, stamp
    assert set(csv_says) == set(range(9, 15))  # the first six are bad in both
