"""A trainer process killed at a chosen publish stage (``python -m tests.trainer._publish_crash
CONF VERSION STAGE``): a real forced run that prints ``reached`` when ``STAGE`` starts and waits
there to be SIGKILLed."""

from __future__ import annotations

import sys
import time

from config import Settings
from Prod.als_trainer.service import run_training


def main() -> None:
    settings = Settings.model_validate_json(sys.argv[1])

    def hold(stage: str) -> None:
        if stage == sys.argv[3]:
            print("reached", flush=True)
            time.sleep(600)

    result = run_training(
        settings, force=True, evaluate=False, version_id=sys.argv[2], on_stage=hold
    )
    print(f"finished: {result.status}", flush=True)  # only when the stage was never reached


if __name__ == "__main__":
    main()
