"""A trainer process for the kill test (``python -m tests.trainer._doomed_trainer CONF VER``).

Runs a real forced run and stops when item factors are about to be published (user factors are
already in Redis, the registry row says ``training``), printing ``publishing`` so the test can
kill it there with SIGKILL.
"""

from __future__ import annotations

import sys
import time

from config import Settings
from Prod.als_trainer.service import run_training


def main() -> None:
    settings = Settings.model_validate_json(sys.argv[1])

    def hold(stage: str) -> None:
        if stage == "publish_items":
            print("publishing", flush=True)
            time.sleep(600)

    run_training(settings, force=True, evaluate=False, version_id=sys.argv[2], on_stage=hold)


if __name__ == "__main__":
    main()
