"""The shared catalogue-cleaning rules (Prod/common/item_cleaning.py), value by value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from Prod.common.item_cleaning import (
    brand_spellings,
    clean_brand,
    clean_catalogue,
    clean_products,
    clean_text,
    clip,
    first_sentence,
    has_markup,
    is_junk_title,
    rebuild_title,
    strip_markup,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Maggiano&#39;s Gift Card", "Maggiano's Gift Card"),
        ("Tom &amp; Jerry &quot;Classic&quot;", 'Tom & Jerry "Classic"'),
        ("Dave &amp;amp; Buster&amp;#39;s", "Dave & Buster's"),  # double-escaped
        ("&lt;b&gt;Bold&lt;/b&gt; text", "Bold text"),  # escaped markup
        ('<span class="a-size-large">Trail Boots</span>', "Trail Boots"),
        ("Good for any drink.<br/>Never expires.", "Good for any drink. Never expires."),
        ('<div class="aplus"><h4>Hi</h4><img alt="a > b" src="x.jpg"></div>', "Hi"),
        ("<script>var a = 1;</script>Real text", "Real text"),
        ("Lamp <!-- sku 12 --> shade", "Lamp shade"),
        ('<span class="a-size-medium a-color-secondary"', ""),  # cut-off tag, the 2018 title
        ('Trail Boots <span class="a-size-base', "Trail Boots"),
        ("</span></span></span>", ""),
        ("Serum&nbsp;30&#8203;ml\u200b", "Serum 30ml"),
        # text that merely looks like markup stays
        ("I <3 NY", "I <3 NY"),
        ("AT&T Prepaid", "AT&T Prepaid"),
        ("Fish&notes", "Fish&notes"),  # no ";": not an entity
        ("<Untitled>", "<Untitled>"),  # not an HTML element
        ("Size < 5 > 3", "Size < 5 > 3"),
        ("Save <a lot of money", "Save <a lot of money"),  # "<a" without name=value: text
        (None, ""),
        (float("nan"), ""),
        (["<p>One.</p>", "Two &amp; three."], "One. Two & three."),
    ],
)
def test_strip_markup(raw, expected):
    assert strip_markup(raw) == expected


def test_has_markup_sees_tags_entities_and_cut_tags_only():
    assert has_markup("a &amp; b") and has_markup("<b>x</b>") and has_markup("<span class='x'")
    assert has_markup(["plain", "<br>"])
    assert not has_markup("AT&T <3") and not has_markup(None) and not has_markup("<Untitled>")


def test_clean_text_clips_at_a_word_boundary():
    assert clean_text("<b>one two three four</b>", limit=12) == "one two..."
    assert clean_text("short", limit=12) == "short"
    # regression: the importer clipped a description, then the catalogue pass clipped the
    # "..."-lengthened text again and lost a word
    once = clip("word " * 300, 1000)
    assert len(once) <= 1000 and clip(once, 1000) == once


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("by\n    \n    Visa", "Visa"),
        ("by Nike", "Nike"),
        ("Visit the Howard Store", "Howard"),
        ("Visit Amazon's Sony Page", "Sony"),
        ("Brand: Acme", "Acme"),
        ("Brand Name: Acme Tools", "Acme Tools"),
        ("  Acme   Tools ", "Acme Tools"),
        ("Dave &amp; Buster&#39;s", "Dave & Buster's"),
        ("The Container Store", "The Container Store"),  # a real brand ending in "Store"
        ("Jo-Ann Stores", "Jo-Ann Stores"),
        ("Unknown", ""),
        ("GENERIC", ""),
        ("N/A", ""),
        ("<br>", ""),
        (None, ""),
    ],
)
def test_clean_brand(raw, expected):
    assert clean_brand(raw) == expected


def test_brand_case_variants_collapse_to_the_most_frequent_spelling():
    brands = ["Sony", "Sony", "SONY", "sony", "Nike", "Acme", "ACME", "acme", "acme"]
    assert brand_spellings(brands) == {
        "SONY": "Sony",
        "sony": "Sony",
        "Acme": "acme",  # the most frequent wins, even lower-case
        "ACME": "acme",
    }


def test_brand_spelling_ties_prefer_mixed_case_and_quote_styles_match():
    assert brand_spellings(["LEGO", "Lego"]) == {"LEGO": "Lego"}
    assert brand_spellings(["Levi\u2019s", "Levi's", "Levi's"]) == {"Levi\u2019s": "Levi's"}
    assert brand_spellings(["P.F. Changs", "PF Changs"]) == {}  # punctuation differs: kept apart


@pytest.mark.parametrize(
    ("title", "junk"),
    [
        ("", True),
        ("  ", True),
        ("...", True),
        ("null", True),
        ("var aPageStart = (new Date()).getTime();", True),
        (".a-box-inner{background-color:#fff}", True),
        ("a-size-medium a-color-secondary", True),
        ("1917", False),  # numbers are real titles
        ("300", False),
        ("Trail Boots", False),
    ],
)
def test_is_junk_title(title, junk):
    assert is_junk_title(title) is junk


def test_rebuild_title_prefers_the_description_then_brand_and_category():
    assert first_sentence("Soothing cream. Apply nightly.") == "Soothing cream"
    long = "one two three four five six seven eight nine ten eleven twelve thirteen. Next."
    assert (
        first_sentence(long) == "one two three four five six seven eight nine ten eleven twelve..."
    )
    assert (
        rebuild_title(description="<p>Prepaid card, accepted everywhere.</p> Fast.", brand="Visa")
        == "Prepaid card, accepted everywhere"
    )
    assert rebuild_title(brand="Visa", category="Gift Cards") == "Visa Gift Cards"
    assert rebuild_title(brand="Amazon", category="Amazon Gift Cards") == "Amazon Gift Cards"
    assert rebuild_title(category="Skin Care") == "Skin Care"
    assert rebuild_title(description="<br>") == ""


def _catalogue(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], **columns}, dtype=object)


def test_clean_catalogue_rebuilds_markup_titles_and_counts_everything():
    items = _catalogue(
        title=['<span class="a-size-medium a-color-secondary"', "Mug &amp; Cup", "Plain", "&nbsp;"],
        brand=["Visa", "by SONY", "Sony", "Unknown"],
        category=["Gift Cards", "Kitchen", "Kitchen", None],
        description=["", "<b>Big</b> mug.", "Line one\nline two", None],
    )
    cleaned, report = clean_catalogue(items, fallback_title="Product {}".format, unknown=None)

    assert list(cleaned["title"]) == ["Visa Gift Cards", "Mug & Cup", "Plain", "Product i3"]
    assert list(cleaned["brand"]) == ["Visa", "Sony", "Sony", None]
    assert list(cleaned["description"]) == ["", "Big mug.", "Line one\nline two", None]
    assert report.titles_rebuilt == 2
    assert report.as_dict() == {
        "titles_rebuilt": 2,
        "fields_cleaned": 6,  # 3 titles, 2 brands ("by SONY", "Unknown"), 1 description
        "brands_merged": 1,  # "by SONY" -> "SONY" -> "Sony" (a tie: the mixed-case spelling)
        "values_emptied": 3,  # 2 titles (rebuilt) and the placeholder brand
        "brand_cleaned": 2,
        "description_cleaned": 1,
        "title_cleaned": 3,
    }


def test_clean_catalogue_merges_brand_spellings_across_rows():
    items = _catalogue(title=["a", "b", "c", "d"], brand=["Nike", "NIKE", "nike ", "Nike"])
    cleaned, report = clean_catalogue(items, fallback_title="Product {}".format)
    assert list(cleaned["brand"]) == ["Nike"] * 4
    assert report.brands_merged == 2  # "nike " was trimmed first (cleaned), then merged


def test_clean_catalogue_leaves_a_clean_catalogue_untouched():
    items = _catalogue(
        title=["Trail Boots", "1917", "I <3 NY mug"],
        brand=["Trailforge", None, "AT&T"],
        category=["Sports & Outdoors", "Drama", ""],
        description=["Waterproof boots\nfor long hikes", None, "Say it & mean it."],
    )
    cleaned, report = clean_catalogue(items, fallback_title="Product {}".format, unknown=None)
    pd.testing.assert_frame_equal(cleaned, items)
    assert report.as_dict() == {
        "titles_rebuilt": 0,
        "fields_cleaned": 0,
        "brands_merged": 0,
        "values_emptied": 0,
    }


def test_clean_catalogue_never_empties_a_title_and_keeps_other_columns():
    items = _catalogue(title=["</span>", None], price=[1.5, np.nan])
    cleaned, report = clean_catalogue(items, fallback_title="Item {}".format)
    assert list(cleaned["title"]) == ["Item i0", "Item i1"]
    assert cleaned["price"].iloc[0] == 1.5 and report.titles_rebuilt == 2


def test_clean_products_rebuilds_titles_and_cleans_text_and_metadata():
    records = [
        (
            "p1",
            '<span class="a-size-medium a-color-secondary". Brand: Visa. Category: Gift Cards. '
            "Price: $10.00. Prepaid card &amp; more. Works anywhere.",
            {
                "title": '<span class="a-size-medium a-color-secondary"',
                "brand": "Visa",
                "price": 10.0,
            },
        ),
        ("p2", "Music Card. Brand: SONY.", {"title": "Music Card", "brand": "SONY"}),
        ("p3", "Film Card. Brand: Sony.", {"title": "Film Card", "brand": "Sony"}),
        ("p4", "TV Card. Brand: Sony.", {"title": "TV Card", "brand": "Sony", "category": "<br>"}),
    ]
    cleaned, report = clean_products(records, fallback_title="Product {}".format)
    by_id = {item_id: (text, metadata) for item_id, text, metadata in cleaned}

    text, metadata = by_id["p1"]
    assert metadata == {"title": "Prepaid card & more", "brand": "Visa", "price": 10.0}
    assert text.startswith("Prepaid card & more. Brand: Visa.") and "<" not in text
    assert by_id["p2"] == ("Music Card. Brand: SONY.", {"title": "Music Card", "brand": "Sony"})
    assert by_id["p4"][1] == {"title": "TV Card", "brand": "Sony"}  # markup-only category dropped
    assert report.titles_rebuilt == 1 and report.brands_merged == 1
    assert report.as_dict()["text_cleaned"] == 1
    assert report.values_emptied["category"] == 1
