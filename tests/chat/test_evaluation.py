"""`reco eval chat`: generated query sets, batched retrieval, metrics on the test catalogue."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import config
from Prod.bench.chat import (
    BI_ENCODER,
    CROSS_ENCODER,
    FILTERED,
    FREE_TEXT,
    RANDOM_ORDER,
    RANKERS,
    evaluate_set,
    query_sets,
    retrieve_all,
)
from Prod.chat_reco_engine.filters import Vocabulary, parse_text, satisfies
from Prod.chat_reco_engine.service import ChatEngine
from Prod.cli.main import app
from Prod.common.stores import chroma_for
from Prod.datasets.ingest.validate import read_products
from tests.chat.conftest import chat_settings


@pytest.fixture(scope="module")
def products(catalogue):
    return read_products(catalogue["folder"]).products


@pytest.fixture(scope="module")
def sets(products):
    return query_sets(products, 30, seed=3)


def test_filtered_queries_name_exactly_their_filters(products, sets):
    vocabulary = Vocabulary.from_metadatas(p.metadata for p in products)
    by_id = {p.item_id: p for p in products}
    assert len(sets[FILTERED]) == 30
    for query in sets[FILTERED]:
        assert query.intended.brands and query.intended.categories and query.intended.max_price
        assert parse_text(query.text, vocabulary).filters == query.intended.set_fields()
        assert satisfies(query.intended, by_id[query.target].metadata), query


def test_free_text_queries_carry_no_structured_constraint(products, sets):
    vocabulary = Vocabulary.from_metadatas(p.metadata for p in products)
    by_id = {p.item_id: p for p in products}
    assert len(sets[FREE_TEXT]) == 30
    assert len({q.target for q in sets[FREE_TEXT]}) == 30
    for query in sets[FREE_TEXT]:
        assert query.intended.is_empty()
        assert parse_text(query.text, vocabulary).filters == {}, query.text
        assert not re.search(r"\d|\$", query.text)
        words = query.text.split()
        assert 2 <= len(words) <= 5
        # every word comes from the target's own text, none from its brand or category
        target_text = by_id[query.target].text.lower()
        assert all(word in target_text for word in words), query
        assert not any(vocabulary.could_name(word) for word in words)


def test_batched_retrieval_matches_the_request_path(settings, catalogue, sets):
    engine = ChatEngine(chat_settings(settings, catalogue))
    queries = sets[FILTERED][:3] + sets[FREE_TEXT][:3]
    for item in retrieve_all(engine, queries):
        single = engine.rank(item.query.text, item.parsed, 50, None, rerank=False)
        assert [c.item_id for c in item.candidates] == [c.item_id for c in single.candidates]


def test_free_text_set_tells_rankers_apart_and_filters_hold(
    settings, catalogue, sets, tiny_cross_encoder
):
    engine = ChatEngine(chat_settings(settings, catalogue, reranker_model=str(tiny_cross_encoder)))
    assert engine.reranker.wait(120) and engine.reranker.ready
    filtered = evaluate_set(engine, sets[FILTERED], RANKERS)
    free_text = evaluate_set(engine, sets[FREE_TEXT], RANKERS)

    assert filtered["filter_parse_accuracy"] == 1.0 and filtered["target_retrieved"] == 1.0
    for ranker in RANKERS:
        assert filtered["rankings"][ranker]["filter_correctness"] == 1.0
        assert filtered["rankings"][ranker]["products_checked"] > 0
    # free text: nothing narrows the candidates, so ranking quality shows
    assert free_text["filter_parse_accuracy"] == 1.0
    assert free_text["mean_candidates"] == 50.0
    rankings = free_text["rankings"]
    assert rankings[BI_ENCODER]["filter_correctness"] is None  # no filter to check
    assert rankings[BI_ENCODER]["mrr"] > rankings[RANDOM_ORDER]["mrr"] + 0.2
    assert rankings[BI_ENCODER]["hit_at_5"] > rankings[RANDOM_ORDER]["hit_at_5"]
    for ranker in RANKERS:
        hit, mrr = rankings[ranker]["hit_at_5"], rankings[ranker]["mrr"]
        # a hit in the top 5 is worth 1/5..1 of RR; a target below rank 5 at most 1/6
        assert hit / 5 - 1e-4 <= mrr <= hit + (1 - hit) / 6 + 1e-4, (ranker, hit, mrr)
    # a random cross-encoder is a poor ranker: the metric must see it
    assert rankings[CROSS_ENCODER]["mrr"] < rankings[BI_ENCODER]["mrr"]


def _eval_collections(settings) -> set[str]:
    names = [getattr(c, "name", c) for c in chroma_for(settings).list_collections()]
    return {n for n in names if n.startswith("eval-chat-")}


def test_reco_eval_chat_json_reports_both_sets_and_cleans_up(settings, catalogue, monkeypatch):
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    before = _eval_collections(settings)
    result = CliRunner().invoke(
        app, ["eval", "chat", str(catalogue["folder"]), "--queries", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["products"] == len(catalogue["items"])
    assert set(report["query_sets"]) == {FILTERED, FREE_TEXT}
    for query_set in report["query_sets"].values():
        assert query_set["queries"] == 8
        assert query_set["rankings"][CROSS_ENCODER] is None  # no reranker configured in tests
        assert set(query_set["rankings"][BI_ENCODER]) >= {"hit_at_5", "mrr"}
    assert report["query_sets"][FILTERED]["rankings"][BI_ENCODER]["filter_correctness"] == 1.0
    assert _eval_collections(settings) == before  # the temporary collection is gone
