"""LangChain chat models for the chat engine: which provider, model and endpoint the settings
name, and how to ask that endpoint whether the model is there.

``ollama`` (``ChatOllama``, the default, ``mistral:7b``) and ``openai`` (``ChatOpenAI``: OpenAI
itself or any OpenAI-compatible server - vLLM, llama.cpp's server, LM Studio, ``Prod.llm_server``)
are built here from ``langchain-ollama`` / ``langchain-openai``, both installed with the platform.
Any other provider goes through LangChain's ``init_chat_model``, which needs ``langchain`` and
that provider's ``langchain-<provider>`` package (not installed by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from langchain_core.language_models.chat_models import BaseChatModel

    from config import Settings

OLLAMA = "ollama"
OPENAI = "openai"
# an OpenAI-compatible server on loopback needs no key, but the client refuses to start without one
NO_KEY = "not-needed"


@dataclass(frozen=True)
class LLMEndpoint:
    """Provider, model and endpoint of the chat model (from the LLM_* and OLLAMA_* settings)."""

    provider: str
    model: str
    base_url: str | None
    api_key: str | None
    timeout_s: float
    max_tokens: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMEndpoint:
        provider = settings.llm_provider.strip().lower()
        base_url = settings.llm_base_url or (settings.ollama_host if provider == OLLAMA else None)
        return cls(
            provider=provider,
            model=settings.llm_model or settings.ollama_model,
            base_url=base_url,
            api_key=settings.llm_api_key,
            timeout_s=settings.ollama_timeout_s,
            max_tokens=settings.llm_max_tokens,
        )

    @classmethod
    def parse(cls, spec: str, base: LLMEndpoint) -> LLMEndpoint:
        """``provider/model`` (``openai/smollm2``, ``ollama/mistral:7b``) over ``base``."""
        provider, sep, model = spec.partition("/")
        if not sep or not provider or not model:
            raise ValueError(f"expected provider/model, got {spec!r}")
        return cls(
            provider=provider.lower(),
            model=model,
            base_url=base.base_url,
            api_key=base.api_key,
            timeout_s=base.timeout_s,
            max_tokens=base.max_tokens,
        )

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


def make_chat_model(endpoint: LLMEndpoint, *, temperature: float) -> BaseChatModel:
    """A LangChain chat model for ``endpoint``: no retries (the outage breaker decides), the
    endpoint's timeout on every call, at most ``max_tokens`` generated."""
    if endpoint.provider == OLLAMA:
        from langchain_ollama import ChatOllama

        return ChatOllama(
            model=endpoint.model,
            base_url=endpoint.base_url,
            temperature=temperature,
            num_predict=endpoint.max_tokens,
            client_kwargs={"timeout": endpoint.timeout_s},
        )
    if endpoint.provider == OPENAI:
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=endpoint.model,
            base_url=endpoint.base_url,
            api_key=endpoint.api_key or (NO_KEY if endpoint.base_url else None),
            temperature=temperature,
            max_completion_tokens=endpoint.max_tokens,
            timeout=endpoint.timeout_s,
            max_retries=0,
        )
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:
        raise RuntimeError(
            f"LLM_PROVIDER={endpoint.provider} needs `pip install langchain "
            f"langchain-{endpoint.provider}` (built in: {OLLAMA}, {OPENAI})"
        ) from exc
    extra: dict[str, Any] = {}
    if endpoint.base_url:
        extra["base_url"] = endpoint.base_url
    if endpoint.api_key:
        extra["api_key"] = endpoint.api_key
    return init_chat_model(
        endpoint.model,
        model_provider=endpoint.provider,
        temperature=temperature,
        timeout=endpoint.timeout_s,
        max_tokens=endpoint.max_tokens,
        max_retries=0,
        **extra,
    )


def probe(endpoint: LLMEndpoint, timeout_s: float = 2.0) -> dict[str, Any]:
    """{"status": ready | model_missing | unreachable | unprobed, ...} from the endpoint's model
    list (Ollama's /api/tags, OpenAI's /models); other providers are not probed."""
    info: dict[str, Any] = {
        "provider": endpoint.provider,
        "model": endpoint.model,
        "host": endpoint.base_url,
    }
    if endpoint.provider == OLLAMA:
        url, wanted = f"{endpoint.base_url.rstrip('/')}/api/tags", "models"
    elif endpoint.provider == OPENAI:
        base = (endpoint.base_url or "https://api.openai.com/v1").rstrip("/")
        url, wanted = f"{base}/models", "data"
    else:
        return {**info, "status": "unprobed"}
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
        response.raise_for_status()
        listed = response.json().get(wanted) or []
    except Exception as exc:
        return {**info, "status": "unreachable", "error": f"{type(exc).__name__}: {exc}"[:300]}
    names = {str(m.get("model") or m.get("name") or m.get("id") or "") for m in listed}
    if endpoint.model in names or f"{endpoint.model}:latest" in names:
        return {**info, "status": "ready"}
    hint = f" (ollama pull {endpoint.model})" if endpoint.provider == OLLAMA else ""
    return {**info, "status": "model_missing", "error": f"model {endpoint.model} not served{hint}"}
