"""The LangChain chat-model client and the grounding guard through the chat API, with the loopback
Ollama-protocol stand-in answering what each test sets (real Postgres, Chroma and MiniLM)."""

from __future__ import annotations

import json

import pytest
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from config import Settings
from Prod.chat_reco_engine.chat_models import LLMEndpoint, make_chat_model
from tests.utils.metrics import by_label


def _chat(client, **body) -> dict:
    response = client.post("/api/v1/chat", json={"k": 5, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _events(response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def _count(text: str, name: str, label: str, value: str) -> float:
    return by_label(text, name, label).get(value, 0.0)


def test_provider_and_endpoint_come_from_the_llm_settings():
    local = Settings(_env_file=None, ollama_host="http://10.0.0.5:11434", ollama_timeout_s=7)
    endpoint = LLMEndpoint.from_settings(local)
    assert (endpoint.provider, endpoint.model, endpoint.base_url) == (
        "ollama",
        "mistral:7b",
        "http://10.0.0.5:11434",
    )
    model = make_chat_model(endpoint, temperature=0.2)
    assert isinstance(model, ChatOllama) and model.model == "mistral:7b"
    assert model.client_kwargs == {"timeout": 7.0} and model.num_predict == local.llm_max_tokens

    vllm = Settings(
        _env_file=None,
        llm_provider="OpenAI",
        llm_model="Qwen/Qwen2.5-7B-Instruct",
        llm_base_url="http://127.0.0.1:8000/v1",
        llm_max_tokens=99,
    )
    endpoint = LLMEndpoint.from_settings(vllm)
    model = make_chat_model(endpoint, temperature=0.0)
    assert isinstance(model, ChatOpenAI) and endpoint.label == "openai/Qwen/Qwen2.5-7B-Instruct"
    assert str(model.openai_api_base) == "http://127.0.0.1:8000/v1" and model.max_retries == 0
    assert model.max_tokens == 99  # max_completion_tokens is its alias
    assert LLMEndpoint.parse("ollama/llama3:8b", endpoint).label == "ollama/llama3:8b"
    with pytest.raises(ValueError, match="provider/model"):
        LLMEndpoint.parse("smollm2", endpoint)


def test_a_provider_without_its_package_is_named_in_the_error():
    endpoint = LLMEndpoint("mistralai", "mistral-small", None, None, 5.0, 100)
    with pytest.raises(Exception, match="mistral"):
        make_chat_model(endpoint, temperature=0.2)


def test_an_unreachable_openai_endpoint_falls_back_and_shows_in_health(make_client):
    client = make_client(llm_provider="openai", llm_base_url="http://127.0.0.1:9/v1")
    payload = _chat(client, message="wireless headphones")
    assert payload["generated_by"] == "fallback" and payload["products"]
    health = client.get("/health").json()
    assert health["llm"]["status"] == "unreachable" and health["llm"]["provider"] == "openai"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("The Sony wireless headphones Pro are only $19.99 this week!", "invented_price"),
        ("I'm sorry for your loss, but as a shopping assistant I can't help.", "no_product"),
        ("Try the Sony WH-1000XM4, the best headphones ever made.", "unknown_product"),
    ],
)
def test_ungrounded_llm_answers_are_replaced_by_the_template(client, llm, answer, reason):
    llm.behaviour.answer = answer
    before = client.get("/metrics").text
    payload = _chat(client, message="Sony wireless headphones")
    assert payload["generated_by"] == "guard" and payload["answer"] != answer
    titles = [p["title"] for p in payload["products"]]
    assert titles and all(title in payload["answer"] for title in titles)  # the template
    after = client.get("/metrics").text
    name = "reco_chat_llm_ungrounded_total"
    assert _count(after, name, "reason", reason) == _count(before, name, "reason", reason) + 1
    answers = "reco_chat_answers_total"
    assert _count(after, answers, "producer", "guard") == (
        _count(before, answers, "producer", "guard") + 1
    )
    stored = client.get(f"/api/v1/chat/{payload['session_id']}/history").json()["messages"]
    assert stored[-1]["content"] == payload["answer"] and stored[-1]["generated_by"] == "guard"


def test_an_answer_naming_a_brand_outside_the_filter_contradicts_it(client, llm):
    llm.behaviour.answer = "Samsung makes the best earbuds; get the Samsung earbuds Pro instead."
    payload = _chat(client, message="headphones", filters={"brands": ["Sony"]})
    assert payload["filters"]["brands"] == ["Sony"]
    assert payload["generated_by"] == "guard"


def test_grounded_llm_answers_pass_unchanged(client, llm):
    first = _chat(client, message="wireless headphones")
    title, price = first["products"][0]["title"], first["products"][0]["price"]
    llm.behaviour.answer = f"I'd pick the {title} at ${price:.2f}, or the second one."
    again = _chat(client, message="wireless headphones")
    assert again["products"][0]["title"] == title  # same request, same products
    assert again["generated_by"] == "llm" and again["answer"] == llm.behaviour.answer


def test_stream_replaces_an_ungrounded_answer_before_done(client, llm):
    llm.behaviour.answer = "Buy the Acme SuperPhone X9 for $5."
    with client.stream("POST", "/api/v1/chat/stream", json={"message": "espresso machine"}) as r:
        assert r.status_code == 200
        events = _events(r)
    names = [name for name, _ in events]
    assert names[0] == "products" and "token" in names and names[-2:] == ["replace", "done"]
    streamed = "".join(data["text"] for name, data in events if name == "token")
    assert streamed.strip() == llm.behaviour.answer  # what the model said, as it said it
    replace, done = events[-2][1], events[-1][1]
    assert replace["text"] == done["answer"] and done["generated_by"] == "guard"
    assert "Acme" not in done["answer"] and done["products"]


def test_invalid_structured_output_is_dropped_counted_and_never_applied(client, llm):
    # min_rating 9 fails the schema (0-5): the whole proposal is dropped, Bose included
    llm.behaviour.filters_json = {"brands": ["Bose"], "min_rating": 9}
    before = client.get("/metrics").text
    payload = _chat(client, message="Bose headphones please")
    assert any(r.get("format") for r in llm.requests)  # it was asked
    after = client.get("/metrics").text
    name = "reco_chat_llm_filter_proposals_total"
    assert (
        _count(after, name, "outcome", "invalid") == _count(before, name, "outcome", "invalid") + 1
    )
    assert "min_rating" not in payload["filters"]
    assert payload["filters"].get("brands") == ["Bose"]  # from the deterministic parser only

    llm.behaviour.filters_json = {"brands": ["Sony"], "max_price": 40}  # valid, not in message
    payload = _chat(client, message="wireless headphones")
    assert "brands" not in payload["filters"] and "max_price" not in payload["filters"]
    final = client.get("/metrics").text
    assert (
        _count(final, name, "outcome", "dropped") == _count(after, name, "outcome", "dropped") + 1
    )


def test_kept_filter_proposals_are_counted(client, llm):
    llm.behaviour.filters_json = {"categories": ["Headphones"], "max_price": 80}
    before = client.get("/metrics").text
    payload = _chat(client, message="something to listen to music for at most 80 dollars")
    assert payload["filters"].get("max_price") == 80.0
    after = client.get("/metrics").text
    name = "reco_chat_llm_filter_proposals_total"
    assert _count(after, name, "outcome", "kept") == _count(before, name, "outcome", "kept") + 1
