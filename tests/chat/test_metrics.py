"""The chat service's domain metrics on /metrics after real requests (loopback LLM server)."""

from __future__ import annotations

from tests.utils.chat import talk
from tests.utils.metrics import by_label, sample

KINDS = ("brands", "terms", "filters")


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def test_chat_counts_fallback_answers_and_unmatched_requests(make_client, down_url):
    client = make_client(ollama_host=down_url)  # no LLM: every answer is the template's
    before = client.get("/metrics").text
    replies = talk(
        client,
        "a yoga mat",
        "cheaper ones?",
        "start over",
        "Sony espresso machine under $5",
        "wireless earbuds",
    )
    after = client.get("/metrics").text

    answers = _delta(
        by_label(after, "reco_chat_answers_total", "producer"),
        by_label(before, "reco_chat_answers_total", "producer"),
    )
    assert answers == {"llm": 0, "fallback": len(replies)}
    assert all(r["generated_by"] == "fallback" for r in replies)
    asked_llm = sum(1 for r in replies if r["standalone_query"])  # a bare reset asks nobody
    assert (
        sample(after, "reco_chat_llm_errors_total") - (sample(before, "reco_chat_llm_errors_total"))
        == asked_llm
    )
    assert sample(after, "reco_chat_llm_duration_seconds_count") == (
        sample(before, "reco_chat_llm_duration_seconds_count")
    )

    turns = _delta(
        by_label(after, "reco_chat_turns_total", "kind"),
        by_label(before, "reco_chat_turns_total", "kind"),
    )
    assert turns == {k: sum(r["turn"] == k for r in replies) for k in ("refine", "new", "reset")}
    assert turns["reset"] == 1

    unmatched = _delta(
        by_label(after, "reco_chat_unmatched_total", "kind"),
        by_label(before, "reco_chat_unmatched_total", "kind"),
    )
    expected = {k: sum(bool(r["unmatched"] and r["unmatched"][k]) for r in replies) for k in KINDS}
    assert unmatched == expected and sum(expected.values()) >= 1, [r["unmatched"] for r in replies]


def test_chat_counts_llm_answers_and_their_latency(client, llm):
    before = client.get("/metrics").text
    assert talk(client, "wireless headphones")[0]["generated_by"] == "llm"
    with client.stream("POST", "/api/v1/chat/stream", json={"message": "gaming laptop"}) as r:
        assert r.status_code == 200
        r.read()
    after = client.get("/metrics").text
    assert sample(after, "reco_chat_answers_total", producer="llm") == (
        sample(before, "reco_chat_answers_total", producer="llm") + 2
    )
    assert sample(after, "reco_chat_llm_duration_seconds_count") == (
        sample(before, "reco_chat_llm_duration_seconds_count") + 2
    )
    assert sample(after, "reco_chat_llm_duration_seconds_sum") > 0
    errors = "reco_chat_llm_errors_total"
    assert sample(after, errors) == sample(before, errors)


def test_metrics_show_the_reranker_state(client):
    page = client.get("/metrics").text
    state = client.get("/health").json()["reranker"]["status"]
    states = by_label(page, "reco_chat_reranker_state", "state")
    assert set(states) == {"disabled", "loading", "ready", "unavailable"}
    assert states[state] == 1 and sum(states.values()) == 1
    assert "# TYPE http_requests_total counter" in page  # beside the HTTP metrics
