#!/usr/bin/env bash
# Run the recommendation platform: `bash start_services.sh [--local|--docker] [up|down|status|logs [service]]`
#
#   up (default)   start everything (safe to re-run), wait for health, print the URLs
#   down           stop exactly what `up` started (pid files / compose project)
#   status         each service: up/down, port, model version
#   logs [name]    recent log lines (-f to follow)
#
# Mode: Docker when `docker compose` works and an engine answers, else local (real Postgres, Redis
# and Chroma from PyPI wheels, services as background processes). --local / --docker force one.
# Local mode creates .venv (reused; reinstalls only when pyproject.toml changes).
# START_SERVICES_NO_VENV=1 uses the current interpreter ($PYTHON, default python3) instead (CI).
# The logic lives in Prod/orchestrate/ (`python -m Prod.orchestrate --help`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
SYSTEM_PYTHON="${PYTHON:-python3}"
VENV_DIR="${VENV_DIR:-$ROOT/.venv}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

die() { echo "error: $*" >&2; exit 1; }

"$SYSTEM_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || die "Python >= 3.10 is needed (set PYTHON=/path/to/python3.x)"

forced=""
args=()
for arg in "$@"; do
  case "$arg" in
    --local) forced="--local" ;;
    --docker) forced="--docker" ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

# Creates or reuses the venv; installs the project only when pyproject.toml changed (stamp).
ensure_venv() {
  if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    echo "==> creating virtual environment $VENV_DIR" >&2
    # system site-packages: a machine that already has the heavy deps (torch) reuses them
    "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV_DIR"
  fi
  local py="$VENV_DIR/bin/python" stamp_file="$VENV_DIR/.reco-install-stamp" stamp
  stamp="$("$py" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' pyproject.toml)"
  if [[ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]]; then
    echo "==> installing the project into $VENV_DIR (first run takes a few minutes)" >&2
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    if ! "$py" -c 'import torch' 2>/dev/null && [[ "$(uname -s)" == Linux ]]; then
      # the CPU build of torch: a tenth of the default CUDA download
      local torch_pin
      torch_pin="$(grep -oE '"torch[=<>!~][^"]*"' pyproject.toml | tr -d '"' || echo torch)"
      "$py" -m pip install -q "$torch_pin" --index-url "$TORCH_INDEX_URL" >&2
    fi
    "$py" -m pip install -q -e "$ROOT" >&2
    echo "$stamp" > "$stamp_file"
  fi
  echo "$py"
}

mode="$("$SYSTEM_PYTHON" -m Prod.orchestrate ${forced:+"$forced"} mode)"
if [[ "$mode" == docker ]]; then
  exec "$SYSTEM_PYTHON" -m Prod.orchestrate --docker ${args[@]+"${args[@]}"}
fi

if [[ "${START_SERVICES_NO_VENV:-0}" == 1 ]]; then
  py="$SYSTEM_PYTHON"
else
  py="$(ensure_venv)"
fi
exec "$py" -m Prod.orchestrate --local ${args[@]+"${args[@]}"}
