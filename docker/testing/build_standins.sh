#!/usr/bin/env bash
# Builds local stand-ins for the official images docker-compose.yaml and docker/Dockerfile use,
# tagged with exactly those names, on a machine that cannot pull from Docker Hub. Existing tags
# are kept (REBUILD=1 rebuilds). Needs root (debootstrap), a Docker engine and Debian's mirror.
#   PYPI_INDEX_URL / PYPI_TRUSTED_HOST: package index for pip inside builds (see pypi_proxy.py)
#   STANDIN_WORK: scratch folder for the debootstrap root filesystem (/var/tmp/reco-standins)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${STANDIN_WORK:-/var/tmp/reco-standins}"
mkdir -p "$WORK"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export DOCKER_BUILDKIT=0 # the legacy builder: BuildKit's frontend would come from Docker Hub

have() { [[ "${REBUILD:-0}" != 1 ]] && docker image inspect "$1" >/dev/null 2>&1; }
say() { echo "==> $*" >&2; }

# image names as compose resolves them (defaults of ${OLLAMA_IMAGE_TAG} etc. applied)
images="$(cd "$ROOT" && API_KEY=x POSTGRES_PASSWORD=x REDIS_PASSWORD=x \
  docker compose --profile loadbalancer config --images 2>/dev/null || true)"
image_for() { grep -E "^$1[:@]" <<<"$images" | head -1 || true; }
python_image="$(sed -nE 's/^FROM (python:[^ ]+) AS base$/\1/p' "$ROOT/docker/Dockerfile" \
  | sed "s/\${PYTHON_VERSION}/3.11/")"

if ! have reco-standin/debian:bookworm; then
  if [[ ! -x "$WORK/rootfs/bin/sh" ]]; then
    say "debootstrap bookworm into $WORK/rootfs"
    rm -rf "$WORK/rootfs" && mkdir -p "$WORK"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log"
  fi
  say "docker import reco-standin/debian:bookworm"
  tar -C "$WORK/rootfs" -c . | docker import - reco-standin/debian:bookworm >/dev/null
fi

build() { # tag folder [extra docker build args...]
  local tag="$1" dir="$2"
  shift 2
  if [[ -z "$tag" ]]; then echo "error: no image name for $dir in docker-compose.yaml" >&2; exit 1; fi
  if have "$tag"; then return; fi
  say "build stand-in $tag"
  docker build -q -t "$tag" "$@" "$dir" >/dev/null
}

build "$python_image" "$HERE/standins/python"
build "$(image_for postgres)" "$HERE/standins/postgres"
build "$(image_for redis)" "$HERE/standins/redis"
build "$(image_for chromadb/chroma)" "$HERE/standins/chroma" \
  --build-arg "PYPI_INDEX_URL=${PYPI_INDEX_URL:-}" --build-arg "PYPI_TRUSTED_HOST=${PYPI_TRUSTED_HOST:-}"
# the Ollama stand-in serves the project's own protocol stub
ollama_ctx="$WORK/ollama-context"
rm -rf "$ollama_ctx" && cp -r "$HERE/standins/ollama" "$ollama_ctx"
for stub in Prod/bench/ollama_stub.py Prod/chat_reco_engine/ollama_stub.py; do
  if [[ -f "$ROOT/$stub" ]]; then cp "$ROOT/$stub" "$ollama_ctx/ollama_stub.py" && break; fi
done
build "$(image_for ollama/ollama)" "$ollama_ctx"
lb="$(image_for nginx)"
if [[ -n "$lb" ]]; then build "$lb" "$HERE/standins/nginx"; fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E "^(reco-standin|python|postgres|redis|chromadb|ollama|nginx)" >&2
