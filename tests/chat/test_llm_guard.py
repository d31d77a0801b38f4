"""The grounding guard on answers the real small model wrote (recorded in
``fixtures/smollm2_outputs.json``: SmolLM2-135M-Instruct through ``Prod.llm_server``, the chat's
own prompts, each labelled by reading it) and on the template it falls back to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from Prod.chat_reco_engine.filters import ProductFilters, Vocabulary
from Prod.chat_reco_engine.grounding import check_answer
from Prod.chat_reco_engine.llm import ProposedFilters, fallback_answer
from Prod.chat_reco_engine.schemas import Unmatched
from Prod.llm_server.model import json_end

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "smollm2_outputs.json").read_text())
VOCABULARY = Vocabulary(
    brands=("Bose", "Breville", "Dell", "JBL", "Keurig", "Lenovo", "Samsung", "Sony"),
    categories=("Coffee Makers", "Headphones", "Laptops", "Televisions"),
)
HEADPHONES = [
    ("p1", {"title": "Sony wireless headphones Pro", "brand": "Sony", "price": 52.0}, "30 hours."),
    ("p2", {"title": "Bose earbuds Lite", "brand": "Bose", "price": 46.0}, "Sweat resistant."),
]


def _check(answer: str, products=HEADPHONES, message: str = "headphones", **filters):
    return check_answer(
        answer,
        products=products,
        filters=ProductFilters(**filters),
        vocabulary=VOCABULARY,
        message=message,
    )


@pytest.mark.parametrize("case", RECORDED["answers"], ids=lambda c: c["case"])
def test_the_guard_judges_real_small_model_answers_as_a_reader_does(case):
    products = [tuple(p) for p in case["products"]]
    verdict = check_answer(
        case["answer"],
        products=products,
        filters=ProductFilters(**case["filters"]),
        vocabulary=VOCABULARY,
        message=case["message"],
    )
    assert list(verdict.reasons) == case["expected"], (case["why"], verdict.detail)


def test_recorded_answers_include_both_verdicts():
    expected = [c["expected"] for c in RECORDED["answers"]]
    assert [] in expected and sum(bool(e) for e in expected) >= 3


@pytest.mark.parametrize("proposal", RECORDED["proposals"], ids=lambda p: p["message"])
def test_real_small_model_filter_proposals_fail_validation(proposal):
    assert json_end(proposal["output"]) is None  # cut before its object closed
    with pytest.raises(ValidationError):
        ProposedFilters.model_validate_json(proposal["output"])


@pytest.mark.parametrize(
    ("products", "filters", "unmatched", "alternatives"),
    [
        (HEADPHONES, {}, None, False),
        (HEADPHONES[:1], {"brands": ["Sony"], "max_price": 60}, None, False),
        (HEADPHONES, {"brands": ["Samsung"]}, Unmatched(brands=["Samsung"]), True),
        ([], {"max_price": 5}, Unmatched(filters=["max_price"]), False),
    ],
)
def test_the_template_itself_is_always_grounded(products, filters, unmatched, alternatives):
    template = fallback_answer(products, ProductFilters(**filters), unmatched, alternatives)
    verdict = check_answer(
        template,
        products=products,
        filters=ProductFilters(**filters),
        vocabulary=VOCABULARY,
        message="headphones",
        unmatched=unmatched,
    )
    assert verdict.grounded, verdict.detail


def test_titles_positions_and_listed_prices_are_grounded():
    for answer in (
        "The Sony wireless headphones Pro last 30 hours and cost $52.00.",
        "Take the first one; the Bose earbuds Lite ($46) are lighter.",
        "The wireless headphones Pro from Sony are my pick.",  # every title word, one sentence
        "Option 2 is the lightest.",
        "Under $60 you have both: #1 and the second one.",
    ):
        verdict = _check(answer, message="headphones under $60")
        assert verdict.grounded, (answer, verdict.detail)
        assert verdict.named


@pytest.mark.parametrize(
    ("answer", "reason", "filters"),
    [
        ("Get the Sony wireless headphones Pro for $39.", "invented_price", {}),
        ("The Bose earbuds Lite cost $52.00.", "invented_price", {}),  # the Sony's price
        ("The JBL earbuds Plus beat the Bose earbuds Lite.", "unknown_product", {}),
        ("The Sony WH-1000XM4 is like the Sony wireless headphones Pro.", "unknown_product", {}),
        ("I'm sorry for your loss, but as a shopping assistant I can't help.", "no_product", {}),
        (
            "Skip Sony: the Samsung earbuds Pro are better.",
            "contradicts_filters",
            {"brands": ["Sony"]},
        ),
        (
            "Bose earbuds Lite, or a Laptops deal?",
            "contradicts_filters",
            {"categories": ["Headphones"]},
        ),
        (
            "The Bose earbuds Lite, or Sony's.",
            "contradicts_filters",
            {"exclude_brands": ["Sony"], "products": HEADPHONES[1:]},
        ),
    ],
)
def test_each_kind_of_ungrounded_answer_is_named(answer, reason, filters):
    verdict = _check(answer, **filters)
    assert reason in verdict.reasons, verdict
    assert not verdict.grounded


def test_what_the_customer_said_is_not_invented():
    verdict = _check(
        "No JBL, sorry; the Bose earbuds Lite are $46, well under your $80.",
        message="JBL headphones under $80",
    )
    assert verdict.grounded, verdict.detail


def test_no_products_listed_then_naming_none_is_honest():
    verdict = _check("Nothing fits; try relaxing the price.", products=[], max_price=5)
    assert verdict.grounded and verdict.named == ()


def test_json_mode_stops_at_the_end_of_the_first_object():
    text = '{"brands": ["Sony"], "note": "a } in a string \\" and more"} trailing {"x": 1}'
    assert json.loads(text[: json_end(text)]) == {
        "brands": ["Sony"],
        "note": 'a } in a string " and more',
    }
    assert json_end('{"a": {"b": 1}') is None and json_end("no object") is None
