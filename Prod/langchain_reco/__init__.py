"""LangChain components over the platform, for users who build their own chains or agents:

- :class:`PlatformRetriever` - a ``BaseRetriever`` over the chat service's product search
  (filters, cross-encoder reranking, ALS personalisation for a ``user_id``), returning
  ``Document``s with the product's metadata and scores;
- :class:`PlatformChatHistory` - a ``BaseChatMessageHistory`` over the chat service's own tables,
  so ``RunnableWithMessageHistory`` keeps a platform session;
- :func:`platform_tools` - ``recommend_for_user``, ``similar_items``, ``search_products`` and
  ``record_interaction`` as LangChain tools calling the REST APIs.

Only ``langchain-core`` is needed (installed with the platform). See
``Prod/examples/main_example_langchain.py``.
"""

from Prod.langchain_reco.history import PlatformChatHistory
from Prod.langchain_reco.retriever import PlatformRetriever
from Prod.langchain_reco.tools import platform_tools

__all__ = ["PlatformChatHistory", "PlatformRetriever", "platform_tools"]
