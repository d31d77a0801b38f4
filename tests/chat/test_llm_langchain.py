"""The LangChain components (Prod.langchain_reco) against the real chat and ALS apps: the retriever
over search, the message history over the chat tables in a ``RunnableWithMessageHistory`` chain,
and the agent tools."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from Prod.chat_reco_engine.filters import ProductFilters
from Prod.chat_reco_engine.llm import fallback_answer
from Prod.langchain_reco import PlatformChatHistory, PlatformRetriever, platform_tools
from tests.utils.publish import insert_dataset, train_and_publish


def test_retriever_returns_the_searched_products_as_documents(client, catalogue):
    retriever = PlatformRetriever(
        client=client, k=4, filters={"brands": ["Sony"], "max_price": 100.0}
    )
    documents = retriever.invoke("wireless headphones")
    search = client.get(
        "/api/v1/search",
        params={"q": "wireless headphones", "k": 4, "brand": "Sony", "max_price": 100},
    ).json()
    assert [d.id for d in documents] == [p["item_id"] for p in search["products"]]
    assert documents, "Sony makes headphones under $100 in the test catalogue"
    for document in documents:
        item = catalogue["items"][document.id]
        assert item["brand"] == "Sony" and item["price"] <= 100
        assert document.page_content.startswith(item["title"])
        assert document.metadata["price"] == item["price"]
        assert 0 <= document.metadata["relevance"] <= 1 and "score" in document.metadata


def _answer_chain(retriever):
    """retriever -> the grounded template (an LCEL chain with no LLM in it)."""

    def answer(inputs: dict) -> AIMessage:
        documents = retriever.invoke(inputs["question"])
        listing = [(d.id, d.metadata, "") for d in documents]
        text = fallback_answer(listing, ProductFilters())
        return AIMessage(content=text, additional_kwargs={"item_ids": [d.id for d in documents]})

    return RunnableLambda(answer)


def test_message_history_keeps_a_platform_session_across_chain_runs(settings, client):
    session_id = str(uuid.uuid4())
    seen: list[int] = []

    def history(sid: str) -> PlatformChatHistory:
        store = PlatformChatHistory(settings.database_url, sid)
        seen.append(len(store.messages))
        return store

    chain = RunnableWithMessageHistory(
        _answer_chain(PlatformRetriever(client=client, k=2)),
        history,
        input_messages_key="question",
    )
    config = {"configurable": {"session_id": session_id}}
    first = chain.invoke({"question": "espresso machine"}, config=config)
    chain.invoke({"question": "wireless earbuds"}, config=config)
    assert seen == [0, 2]  # the second run read the first exchange
    stored = client.get(f"/api/v1/chat/{session_id}/history").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"] * 2
    assert stored[0]["content"] == "espresso machine" and stored[1]["content"] == first.content
    assert stored[1]["product_ids"] == first.additional_kwargs["item_ids"]
    # the platform's own chat continues the session the chain started
    follow = client.post(
        "/api/v1/chat", json={"message": "cheaper ones?", "session_id": session_id}
    )
    assert follow.status_code == 200 and follow.json()["session_id"] == session_id
    assert len(PlatformChatHistory(settings.database_url, session_id).messages) == 6

    store = PlatformChatHistory(settings.database_url, session_id)
    with pytest.raises(ValueError, match="pairs"):
        store.add_messages([HumanMessage(content="a lone question")])
    store.clear()
    assert store.messages == []
    assert client.get(f"/api/v1/chat/{session_id}/history").status_code == 404


@pytest.fixture(scope="module")
def als_client(settings):
    from Prod.als_reco_engine.main import create_app

    insert_dataset(settings, n_users=40, n_items=30, events_per_user=8, seed=11)
    train_and_publish(settings)
    with TestClient(create_app(settings, poll_interval_s=0.2)) as test_client:
        yield test_client


def test_agent_tools_call_the_platform(client, als_client, catalogue):
    tools = {t.name: t for t in platform_tools(clients={"reco": als_client, "chat": client})}
    assert set(tools) == {
        "recommend_for_user",
        "similar_items",
        "search_products",
        "record_interaction",
    }
    assert "price" in tools["search_products"].description  # the agent reads what it does
    found = tools["search_products"].invoke({"query": "espresso machine", "max_price": 80})
    assert found["products"] and all(p["price"] <= 80 for p in found["products"])
    assert all(p["item_id"] in catalogue["items"] for p in found["products"])

    user = als_client.get("/api/v1/recommend/u-unknown-tool", params={"k": 3}).json()
    recs = tools["recommend_for_user"].invoke({"user_id": "u-unknown-tool", "k": 3})
    assert [i["item_id"] for i in recs["items"]] == [i["item_id"] for i in user["items"]]
    item_id = recs["items"][0]["item_id"]
    similar = tools["similar_items"].invoke({"item_id": item_id, "k": 3})
    assert similar["items"] and item_id not in [i["item_id"] for i in similar["items"]]
    user_id = f"tool-{uuid.uuid4().hex[:8]}"
    recorded = tools["record_interaction"].invoke(
        {"user_id": user_id, "item_id": item_id, "event": "purchase"}
    )
    assert "error" not in recorded, recorded
    bad = tools["record_interaction"].invoke(
        {"user_id": user_id, "item_id": item_id, "event": "rating"}  # a rating needs its value
    )
    assert "error" in bad
