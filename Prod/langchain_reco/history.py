"""A LangChain ``BaseChatMessageHistory`` over the chat service's own tables (``chat_session``,
``chat_message``), in process: a chain run with ``RunnableWithMessageHistory`` and a platform
session id reads that session's turns and stores its own exchanges there, visible to
``GET /api/v1/chat/{session_id}/history``."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from Prod.chat_reco_engine import conversation
from Prod.chat_reco_engine.filters import ProductFilters
from Prod.common.errors import NotFound

GENERATED_BY = "llm"  # an exchange a LangChain chain wrote
MAX_TURNS = 500


class PlatformChatHistory(BaseChatMessageHistory):
    """The messages of platform session ``session_id`` (a UUID; created on its first exchange)."""

    def __init__(self, database_url: str, session_id: str, user_id: str | None = None) -> None:
        self.database_url, self.session_id, self.user_id = database_url, session_id, user_id

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        try:
            _, turns = conversation.read_history(self.database_url, self.session_id, MAX_TURNS)
        except NotFound:
            return []
        kinds = {"user": HumanMessage, "assistant": AIMessage}
        return [kinds[t.role](content=t.content) for t in turns if t.role in kinds]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store (human, AI) pairs as exchanges, as the chat does (the session keeps its
        filters; the exchange names no products). A message without its pair is refused."""
        if len(messages) % 2 or any(
            not isinstance(h, HumanMessage) or not isinstance(a, AIMessage)
            for h, a in zip(messages[::2], messages[1::2], strict=True)
        ):
            raise ValueError("the platform stores exchanges: (human, AI) message pairs")
        for human, ai in zip(messages[::2], messages[1::2], strict=True):
            state = self._state()
            conversation.save_exchange(
                self.database_url,
                state=state,
                user_text=str(human.content),
                standalone_query=str(human.content),
                filters=state.filters,
                answer=str(ai.content),
                item_ids=list(ai.additional_kwargs.get("item_ids", [])),
                generated_by=GENERATED_BY,
            )

    def _state(self) -> conversation.SessionState:
        try:
            return conversation.load_state(
                self.database_url, session_id=self.session_id, user_id=self.user_id, turns=1
            )
        except NotFound:  # its first exchange creates it
            return conversation.SessionState(
                self.session_id, self.user_id, ProductFilters(), [], exists=False
            )

    def clear(self) -> None:
        try:
            conversation.delete_session(self.database_url, self.session_id)
        except NotFound:
            pass
