"""A real training run that stops when item factors are about to be published, so the fault
bench can SIGKILL it mid-publish (``python -m Prod.bench._killable_trainer VERSION``).

Settings come from the environment, like every service. At the ``publish_items`` stage user
factors are already in Redis and the registry row says ``training``; it prints ``publishing``
and waits to be killed.
"""

from __future__ import annotations

import sys
import time

from config import Settings
from Prod.als_trainer.service import run_training

READY_LINE = "publishing"


def main() -> None:
    def hold(stage: str) -> None:
        if stage == "publish_items":
            print(READY_LINE, flush=True)
            time.sleep(600)

    result = run_training(
        Settings(), force=True, evaluate=False, version_id=sys.argv[1], on_stage=hold
    )
    print(f"finished: {result.status}", flush=True)  # only when the hook was never reached


if __name__ == "__main__":
    main()
