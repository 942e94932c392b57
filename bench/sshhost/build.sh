#!/usr/bin/env bash
# Build (or reuse) local/conntune-benchhost, the sshd-only bench host (Dockerfile here).
# Like tests/docker/build-images.sh: no registry, rebuilt only when the recipe hash (this
# directory's files, the test keys, the base image id) differs from the image's label
# org.conntune.recipe-hash. Needs local/conntune-base (scripts/test-env.sh builds it).
# Env: FORCE=1 rebuild.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KEYS=$(cd "$HERE/../../tests/docker/keys" && pwd)
TAG=local/conntune-benchhost:latest
BASE=local/conntune-base:latest
LABEL=org.conntune.recipe-hash
base_id=$(docker image inspect -f '{{.Id}}' "$BASE" 2>/dev/null) \
  || { echo "build.sh: no $BASE image: run scripts/test-env.sh first" >&2; exit 1; }
files=(Dockerfile sshd-bench.conf bench-count benchhost-init build.sh)
keys=(id_ed25519.pub ssh_host_ed25519_key ssh_host_ed25519_key.pub)
hash=$({ (cd "$HERE" && sha256sum -- "${files[@]}"); (cd "$KEYS" && sha256sum -- "${keys[@]}")
         echo "$base_id"; } | sha256sum | cut -c1-16)
have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$TAG" 2>/dev/null || true)
old_id=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$hash" ]; then
  echo "  [benchhost] $TAG up to date (recipe $hash), reused"
  exit 0
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp -- "${files[@]/#/$HERE/}" "$context/"
cp -- "${keys[@]/#/$KEYS/}" "$context/"
echo "  [benchhost] $TAG: building (recipe $hash)"
if ! DOCKER_BUILDKIT=0 docker build --network=none --pull=false --force-rm -q \
      --label "$LABEL=$hash" -t "$TAG" "$context" >"$context/build.log" 2>&1; then
  tail -n 40 "$context/build.log" >&2
  echo "build.sh: docker build of $TAG failed" >&2
  exit 1
fi
# drop the build this one supersedes (only ours: other images are left alone)
[ -z "$old_id" ] || docker image rm "$old_id" >/dev/null 2>&1 || true
echo "  [benchhost] $TAG built"
