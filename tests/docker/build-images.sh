#!/usr/bin/env bash
# Build (or reuse) the integration-test images. Needs a running Docker engine, no registry.
#   local/conntune-base      debootstrap | docker import    recipe: base/build-base.sh
#   local/conntune-testhost  FROM local/conntune-base        recipe: this script, testhost/*,
#                                                            keys/*, the base image id
# Every image carries the label org.conntune.recipe-hash (hash of its recipe files) and is
# rebuilt only when that hash changes or the image is missing.
# Env: FORCE=1 rebuild both; MIRROR, WORKDIR: see base/build-base.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE_TAG=local/conntune-base:latest
HOST_TAG=local/conntune-testhost:latest
LABEL=org.conntune.recipe-hash
FORCE=${FORCE:-0}
WORKDIR=${WORKDIR:-/var/cache/conntune}
export WORKDIR
mkdir -p "$WORKDIR"

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }
log() { printf '  [build-images] %s\n' "$*"; }

# Test-only keys (committed, see keys/README.txt); generated only if missing.
ensure_keys() {
  local k
  for k in id_ed25519:conntune-test-client ssh_host_ed25519_key:conntune-testhost; do
    local f="$HERE/keys/${k%%:*}"
    if [ ! -f "$f" ]; then
      mkdir -p "$HERE/keys"
      ssh-keygen -q -t ed25519 -N '' -C "${k#*:}" -f "$f"
      log "generated $f"
    elif [ ! -f "$f.pub" ]; then
      ssh-keygen -y -f "$f" >"$f.pub"
    fi
  done
}

# hash of file names + contents (paths relative to tests/docker), plus extra strings
recipe_hash() {
  local extra=$1; shift
  { (cd "$HERE" && sha256sum -- "$@"); printf '%s\n' "$extra"; } | sha256sum | cut -c1-16
}
image_label() {
  docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}

ensure_keys

# --- local/conntune-base -------------------------------------------------------------
t=$EPOCHREALTIME
base_hash=$(recipe_hash "" base/build-base.sh)
if [ "$FORCE" != 1 ] && [ "$(image_label "$BASE_TAG")" = "$base_hash" ]; then
  log "$BASE_TAG up to date (recipe $base_hash), reused"
else
  log "$BASE_TAG: building (recipe $base_hash), debootstrap takes 1-3 min"
  if ! bash "$HERE/base/build-base.sh" "$BASE_TAG" "$base_hash" 2>&1 | sed -u 's/^/  [build-base] /'
  then
    echo "build-images.sh: building $BASE_TAG failed" >&2
    exit 1
  fi
  log "$BASE_TAG built in $(elapsed "$t")"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$BASE_TAG")

# --- local/conntune-testhost ---------------------------------------------------------
t=$EPOCHREALTIME
mapfile -t host_files < <(cd "$HERE" && { echo build-images.sh; echo .dockerignore
  find testhost -type f; ls keys/id_ed25519.pub keys/ssh_host_ed25519_key keys/ssh_host_ed25519_key.pub; } | LC_ALL=C sort)
host_hash=$(recipe_hash "$base_id" "${host_files[@]}")
if [ "$FORCE" != 1 ] && [ "$(image_label "$HOST_TAG")" = "$host_hash" ]; then
  log "$HOST_TAG up to date (recipe $host_hash), reused"
else
  log "$HOST_TAG: building (recipe $host_hash)"
  blog="$WORKDIR/build-conntune-testhost.log"
  # legacy builder: works offline with docker.io 20.10 and newer CLIs without buildx
  if ! DOCKER_BUILDKIT=0 docker build --network=none --pull=false --force-rm \
        --label "$LABEL=$host_hash" -t "$HOST_TAG" \
        -f "$HERE/testhost/Dockerfile" "$HERE" >"$blog" 2>&1; then
    tail -n 40 "$blog" >&2
    echo "build-images.sh: docker build of $HOST_TAG failed (full log: $blog)" >&2
    exit 1
  fi
  log "$HOST_TAG built in $(elapsed "$t")"
fi
# drop superseded (now untagged) builds of our images
docker image prune -f --filter "label=$LABEL" >/dev/null 2>&1 || true
