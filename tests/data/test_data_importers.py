"""Importers on small fixture files written in the real public formats (tests/data/fixtures)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from Prod.common.errors import InvalidInput
from Prod.datasets.canonical import write_dataset
from Prod.datasets.importers import (
    clean_brand,
    detect_amazon_format,
    detect_movielens_format,
    import_amazon,
    import_movielens,
    leaf_category,
    parse_price,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _items_by_id(dataset) -> dict[str, dict]:
    return {row["item_id"]: row for row in dataset.items.to_dict("records")}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$12.99", 12.99),
        ("$1,299.00", 1299.0),
        ("$10.00 - $25.00", 10.0),  # a range: its lower bound
        (19.5, 19.5),
        (0, 0.0),
        ("", None),
        (None, None),
        ("None", None),
        ("-1.00", None),
        (".a-box-inner{background-color:#fff}#alohaBuyBoxWidget $5.00 .selected{color:red}", None),
    ],
)
def test_parse_price(raw, expected):
    parsed = parse_price(raw)
    if expected is None:
        assert np.isnan(parsed)
    else:
        assert parsed == pytest.approx(expected)


def test_leaf_category_stops_at_feature_sentences_and_html():
    assert leaf_category(["Beauty & Personal Care", "Skin Care", "Lips"]) == "Lips"
    assert (
        leaf_category(["Gift Cards", "Gift Cards", "No expiration, no fees.", "Designs."])
        == "Gift Cards"
    )
    assert leaf_category(["Gift Cards", "</span></span></span>", "Starbucks"]) == "Gift Cards"
    assert leaf_category(["Clothing, Shoes & Jewelry", "Women"]) == "Women"
    assert leaf_category([]) == ""


def test_clean_brand_strips_page_prefixes():
    assert clean_brand("by\n    \n    Visa") == "Visa"
    assert clean_brand("Visit the Howard Store") == "Howard"
    assert clean_brand("Unknown") == ""
    # regression: every brand ending in "Store" lost the word ("The Container Store" -> "The
    # Container"); only the "Visit the ... Store" wrapper is page furniture
    assert clean_brand("The Container Store") == "The Container Store"


def test_amazon_2018_five_core_with_metadata():
    dataset = import_amazon(FIXTURES / "amazon2018")
    items = _items_by_id(dataset)

    assert dataset.source_format == "amazon-2018"
    assert dataset.report["rows_invalid"] == 1  # the review without a rating
    assert dataset.report["duplicate_ratings_dropped"] == 1
    assert sorted(dataset.users["user_id"]) == ["A1USER", "A2USER", "A3USER"]
    assert (
        dict(zip(dataset.users["user_id"], dataset.users["name"], strict=True))["A1USER"]
        == "Ann Reader"
    )
    # the whole metadata catalogue plus the reviewed item that has no metadata
    assert set(items) == {"B00CARD1", "B00CARD2", "B00CARD3", "B00HOLDER", "B00NOMETA"}
    card = items["B00CARD1"]
    assert card["price"] == pytest.approx(1299.0)
    assert card["description"] == "Gift card for Serendipity 3 & friends. Never expires."
    assert card["image_url"] == "https://images.example.com/large.jpg"
    assert (card["avg_rating"], card["rating_count"]) == (4.5, 2)  # derived from the reviews
    egift = items["B00CARD2"]
    assert egift["category"] == "Gift Cards" and egift["price"] == pytest.approx(10.0)
    assert egift["description"] == "Redeemable storewide. No fees."  # features as sentences
    # the re-rating replaced the earlier one: A3USER's 2 became 5
    assert (egift["avg_rating"], egift["rating_count"]) == (4.0, 2)
    junk = items["B00CARD3"]  # empty title: rebuilt from brand + category
    assert junk["title"] == "Visa Gift Cards" and junk["brand"] == "Visa"
    assert np.isnan(junk["price"]) and junk["rating_count"] == 0
    assert items["B00NOMETA"]["title"] == "Amazon product B00NOMETA"
    events = dataset.interactions
    assert (events["event"] == "rating").all() and (events["weight"] == events["rating"]).all()
    assert events["timestamp"].is_monotonic_increasing


def test_amazon_2018_reviewed_only_drops_unrated_catalogue_items():
    dataset = import_amazon(FIXTURES / "amazon2018", reviewed_only=True)
    assert set(dataset.items["item_id"]) == {"B00CARD1", "B00CARD2", "B00NOMETA"}


def test_amazon_2023_uses_parent_asin_store_and_source_ratings():
    dataset = import_amazon(FIXTURES / "amazon2023")
    items = _items_by_id(dataset)

    assert dataset.source_format == "amazon-2023"
    # two variants of one parent product are one item
    assert set(dataset.interactions["item_id"]) == {"B0PARENT1", "B0PARENT2", "B0ORPHAN"}
    conditioner = items["B0PARENT1"]
    assert conditioner["brand"] == "Howard Products"
    assert conditioner["category"] == "All Beauty"  # no categories: main_category
    assert np.isnan(conditioner["price"])
    # the source's own numbers win over the two reviews in this file
    assert (conditioner["avg_rating"], conditioner["rating_count"]) == (4.8, 10)
    assert conditioner["image_url"] == "https://m.media-amazon.com/l.jpg"
    balm = items["B0PARENT2"]
    assert (balm["brand"], balm["category"], balm["price"]) == ("Balmy", "Lips", 12.5)
    assert balm["description"] == "Three moisturising balms."
    assert (balm["avg_rating"], balm["rating_count"]) == (4.0, 1)  # derived
    assert items["B0UNRATED"]["rating_count"] == 0 and np.isnan(items["B0UNRATED"]["price"])
    assert items["B0ORPHAN"]["title"] == "Amazon product B0ORPHAN"
    stamps = dataset.interactions.set_index("user_id")["timestamp"]
    assert stamps["AGUSER3"] == 1_610_000_000  # milliseconds became seconds


def test_gzipped_amazon_files_are_read(tmp_path):
    for source in (FIXTURES / "amazon2023").iterdir():
        with gzip.open(tmp_path / f"{source.name}.gz", "wb") as target:
            target.write(source.read_bytes())
    dataset = import_amazon(tmp_path)
    assert dataset.source_format == "amazon-2023" and len(dataset.interactions) == 4


def _written_files(dataset, folder: Path) -> dict[str, bytes]:
    write_dataset(folder, dataset.users, dataset.items, dataset.interactions)
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_amazon_2023_reviews_csv_is_imported_like_the_jsonl(tmp_path):
    # the same six reviews as CSV (datetime strings and epoch ms, quoted commas and line breaks,
    # a missing rating, an empty parent_asin) and as JSONL
    from_csv = import_amazon(FIXTURES / "amazon2023-csv")
    from_jsonl = import_amazon(FIXTURES / "amazon2023-csv-as-jsonl")

    assert (from_csv.source_format, from_jsonl.source_format) == ("amazon-2023-csv", "amazon-2023")
    assert from_csv.report == from_jsonl.report
    assert from_csv.report["rows_read"] == 6  # line breaks inside quotes did not split rows
    assert from_csv.report["rows_invalid"] == 1  # the review without a rating
    assert _written_files(from_csv, tmp_path / "csv") == _written_files(
        from_jsonl, tmp_path / "jsonl"
    )


def test_amazon_2023_reviews_csv_timestamps_and_items():
    dataset = import_amazon(FIXTURES / "amazon2023-csv")
    events = dataset.interactions.set_index(["user_id", "item_id"])["timestamp"]

    # "2020-05-05 14:08:48.923" (UTC) and 1588687728923 ms are the same second
    assert events[("AGUSER1", "B0PARENT1")] == 1_588_687_728
    assert events[("AGUSER1", "B0PARENT2")] == 1_600_000_000  # epoch milliseconds
    assert events[("AGUSER5", "B0PARENT2")] == 1_620_000_000  # no parent_asin: the asin
    assert "AGUSER4" not in set(dataset.users["user_id"])  # their only review had no rating
    assert _items_by_id(dataset)["B0PARENT2"]["brand"] == "Balmy"  # meta_*.jsonl as for JSONL


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("1588687728923", 1_588_687_728),
        ("2020-05-05 14:08:48.923", 1_588_687_728),
        ("2020-05-05T14:08:48Z", 1_588_687_728),
        ("2020-05-05 16:08:48+02:00", 1_588_687_728),
        ("2020-05-05 14:08:48", 1_588_687_728),
    ],
)
def test_amazon_2023_csv_timestamp_styles(stamp, seconds, tmp_path):
    header = "user_id,parent_asin,rating,timestamp\n"
    (tmp_path / "Tiny.csv").write_text(f"{header}U1,B0ITEM,4.0,{stamp}\n")
    assert import_amazon(tmp_path).interactions["timestamp"].tolist() == [seconds]


def test_amazon_2023_csv_is_told_apart_by_its_header(tmp_path):
    shutil.copy(FIXTURES / "ml-latest-small" / "ratings.csv", tmp_path)  # userId, movieId, ...
    with pytest.raises(InvalidInput, match="no Amazon review file"):
        import_amazon(tmp_path)
    review_csv = (FIXTURES / "amazon2023-csv" / "All_Beauty.csv").read_bytes()
    with gzip.open(tmp_path / "All_Beauty.csv.gz", "wb") as target:
        target.write(review_csv)
    assert detect_amazon_format(tmp_path) == "amazon-2023-csv"
    assert len(import_amazon(tmp_path).interactions) == 5
    # a folder with JSONL reviews too is read from the JSONL, as before
    shutil.copy(FIXTURES / "amazon2023" / "All_Beauty.jsonl", tmp_path)
    assert detect_amazon_format(tmp_path) == "amazon-2023"


@pytest.mark.parametrize(
    ("bad_row", "where"),
    [
        (
            "4.0,Extra,x,[],B0X,B0X,U9,1600000000000,0,True,surplus\n",
            r"All_Beauty.csv:12: expected",
        ),
        ('4.0,"Unclosed,x,[],B0X,B0X,U9,1600000000000,0,True\n', r"All_Beauty.csv:12: not valid"),
    ],
)
def test_a_malformed_csv_row_is_named_by_its_line(bad_row, where, tmp_path):
    shutil.copy(FIXTURES / "amazon2023-csv" / "meta_All_Beauty.jsonl", tmp_path)
    good = (FIXTURES / "amazon2023-csv" / "All_Beauty.csv").read_text()
    # the header and six rows take 11 lines (their quoted line breaks counted)
    (tmp_path / "All_Beauty.csv").write_text(good + bad_row)
    with pytest.raises(InvalidInput, match=where):
        import_amazon(tmp_path)


def test_movielens_100k():
    dataset = import_movielens(FIXTURES / "ml-100k")
    items = _items_by_id(dataset)

    assert dataset.source_format == "movielens-100k"
    assert len(dataset.interactions) == 5 and len(dataset.users) == 3
    confidential = items["302"]
    assert confidential["title"] == "L.A. Confidential (1997)"
    assert confidential["category"] == "Crime"  # first genre flag set
    assert confidential["brand"] == "" and np.isnan(confidential["price"])
    assert "Film-Noir" in confidential["description"]
    assert (confidential["avg_rating"], confidential["rating_count"]) == (4.0, 2)
    assert items["1000"]["title"] == "Café au lait (1993)"  # latin-1 decoded
    assert items["1000"]["category"] == ""  # only the "unknown" flag


def test_movielens_latest_small():
    dataset = import_movielens(FIXTURES / "ml-latest-small")
    items = _items_by_id(dataset)

    assert dataset.source_format == "movielens-latest"
    assert items["3"]["title"] == "The Grumpier Old Men (1995)"
    assert items["1"]["category"] == "Adventure"
    assert items["200"]["category"] == ""  # "(no genres listed)"
    events = dataset.interactions.set_index(["user_id", "item_id"])
    # half stars are kept; 0.5 is below the canonical 1..5 scale and becomes 1
    assert events.loc[("2", "1"), "rating"] == 3.5
    assert events.loc[("1", "3"), "rating"] == 1.0
    assert dataset.report["ratings_clipped_to_1"] == 1
    assert items["3"]["avg_rating"] == pytest.approx(1.25)  # mean of the source's 0.5 and 2.0


def test_movielens_1m_dat_files(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (tmp_path / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n".encode("latin-1")
    )
    dataset = import_movielens(tmp_path)
    assert dataset.source_format == "movielens-1m"
    assert _items_by_id(dataset)["661"]["category"] == "Animation"


@pytest.mark.parametrize(
    "fixture", ["amazon2018", "amazon2023", "amazon2023-csv", "ml-100k", "ml-latest-small"]
)
def test_imported_datasets_write_valid_canonical_files(fixture, tmp_path):
    importer = import_amazon if fixture.startswith("amazon") else import_movielens
    dataset = importer(FIXTURES / fixture)
    write_dataset(tmp_path, dataset.users, dataset.items, dataset.interactions)

    items = pd.read_csv(tmp_path / "items.csv", dtype={"item_id": str})
    events = pd.read_csv(tmp_path / "interactions.csv", dtype={"user_id": str, "item_id": str})
    rag = json.loads((tmp_path / "ProductsRAG.json").read_text())
    assert items["title"].notna().all() and items["item_id"].is_unique
    assert set(events["item_id"]) <= set(items["item_id"])
    assert events["rating"].between(1, 5).all() and (events["weight"] == events["rating"]).all()
    assert pd.to_datetime(events["timestamp"]).notna().all()
    assert len(rag) == len(items)
    assert all(value is not None and value != "" for r in rag for value in r["metadata"].values())


def test_format_detection_and_clear_errors(tmp_path):
    assert detect_amazon_format(FIXTURES / "amazon2018") == "amazon-2018"
    assert detect_amazon_format(FIXTURES / "amazon2023") == "amazon-2023"
    assert detect_movielens_format(FIXTURES / "ml-100k") == "movielens-100k"
    with pytest.raises(InvalidInput, match="not a folder"):
        import_amazon(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="no Amazon review file"):
        import_amazon(tmp_path)
    with pytest.raises(InvalidInput, match="no MovieLens ratings"):
        import_movielens(tmp_path)
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(InvalidInput, match="u.item"):
        import_movielens(tmp_path)


def test_a_corrupt_json_line_is_named(tmp_path):
    shutil.copy(FIXTURES / "amazon2018" / "meta_Tiny_Gifts.json", tmp_path)
    good = (FIXTURES / "amazon2018" / "Tiny_Gifts_5.json").read_text()
    (tmp_path / "Tiny_Gifts_5.json").write_text(good + '{"overall": 5.0, "asin": \n')
    with pytest.raises(InvalidInput, match=r"Tiny_Gifts_5.json:8"):
        import_amazon(tmp_path)


# --- messy real-format metadata: HTML, entities, markup-only titles, brand variants -------------


def test_amazon_2018_html_and_entities_are_removed_from_every_text_field():
    items = _items_by_id(import_amazon(FIXTURES / "amazon2018-messy"))

    html = items["B01HTML"]
    assert html["title"] == "Starbucks & Friends Gift Card"
    assert html["description"] == "Coffee Good for any drink & snack. Never expires."
    assert html["category"] == "Restaurants"
    entity = items["B01ENTITY"]
    assert entity["title"] == 'Maggiano\'s "Little Italy" Gift Card'
    assert entity["brand"] == "Maggiano's"
    assert entity["description"] == "Dinner for two \u2013 or more."
    double = items["B01DOUBLE"]  # double-escaped in the source
    assert (double["title"], double["brand"]) == ("Dave & Buster's Gift Card", "Dave & Buster's")
    assert items["B01HEART"]["title"] == "I <3 NY Gift Card"  # not markup: kept
    for row in items.values():
        for column in ("title", "brand", "category", "description"):
            assert "<span" not in row[column] and "&#" not in row[column], (column, row)


def test_amazon_2018_markup_only_titles_are_rebuilt_not_dropped():
    dataset = import_amazon(FIXTURES / "amazon2018-messy")
    items = _items_by_id(dataset)

    # the first description sentence, else brand + category, else the fallback title
    assert items["B01SPAN"]["title"] == "Prepaid Visa card accepted everywhere"
    assert items["B01CUT"]["title"] == "No expiration, no fees"  # from the feature bullets
    assert items["B01NOTHING"]["title"] == "Amazon product B01NOTHING"
    assert dataset.report["titles_rebuilt"] == 3
    assert dataset.report["title_cleaned"] == 6


def test_amazon_2018_brands_are_unwrapped_and_case_variants_merged():
    dataset = import_amazon(FIXTURES / "amazon2018-messy")
    items = _items_by_id(dataset)

    assert items["B01SPAN"]["brand"] == "Visa"  # "by\n    Visa"
    assert items["B01CUT"]["brand"] == "Nordstrom"  # "Visit the Nordstrom Store"
    assert items["B01STORE"]["brand"] == "The Container Store"
    assert items["B01HEART"]["brand"] == ""  # "Unknown"
    # "Sony" x2, "SONY ", "Brand: sony": one spelling, the most frequent
    assert {items[f"B01SONY{k}"]["brand"] for k in range(1, 5)} == {"Sony"}
    assert dataset.report["brands_merged"] == 2
    assert dataset.report["values_emptied"] == 1  # the placeholder brand, counted


def test_amazon_2023_messy_metadata_is_cleaned():
    dataset = import_amazon(FIXTURES / "amazon2023-messy")
    items = _items_by_id(dataset)

    balm = items["B0BALM1"]
    assert (balm["title"], balm["brand"], balm["category"]) == (
        "Lip Balm & Scrub Set",
        "Balmy",
        "Lips",
    )
    assert balm["description"] == "Three moisturising balms. Vegan & cruelty-free."
    assert items["B0BALM2"]["title"] == "Soothing night cream for dry skin"  # empty title
    assert items["B0BALM2"]["brand"] == "Balmy"  # "BALMY": the catalogue spells it "Balmy"
    assert items["B0BALM3"]["brand"] == "Balmy"  # details.Brand when there is no store
    glow = items["B0GLOW1"]  # markup-only title, no description: brand + category
    assert (glow["title"], glow["brand"]) == ("Glowco Skin Care", "Glowco")
    assert items["B0GLOW2"]["title"] == "Glow Serum \u2013 30 ml"
    assert items["B0GLOW2"]["description"] == "Vitamin C. Fragrance free."
    assert dataset.report["titles_rebuilt"] == 2 and dataset.report["brands_merged"] == 1


@pytest.mark.parametrize("fixture", ["amazon2018-messy", "amazon2023-messy"])
def test_import_report_counts_cleaning_and_files_carry_no_markup(fixture, tmp_path):
    dataset = import_amazon(FIXTURES / fixture)
    report = dataset.summary()
    per_column = {k: v for k, v in report.items() if k.endswith("_cleaned")}
    assert report["fields_cleaned"] == sum(per_column.values()) - report["fields_cleaned"]
    assert report["fields_cleaned"] >= report["titles_rebuilt"] > 0
    write_dataset(tmp_path, dataset.users, dataset.items, dataset.interactions)

    rag = json.loads((tmp_path / "ProductsRAG.json").read_text())
    assert all("<span" not in r["text"] and "&amp;" not in r["text"] for r in rag)
    assert all(r["metadata"]["title"] for r in rag)


def test_clean_sources_report_nothing_cleaned():
    report = import_movielens(FIXTURES / "ml-latest-small").report
    assert (report["titles_rebuilt"], report["fields_cleaned"], report["brands_merged"]) == (
        0,
        0,
        0,
    )
