# conntune's host lock: one converging run at a time on a host, whichever controller runs it.
# A lease in /run/conntune/lease ("holder expires generation last") is changed only under
# flock(1) on /run/conntune/lease.lock; every conntune write command first takes (or renews)
# it, the run's last write releases it and counts one more finished run (generation).
# CONNTUNE_RUN moves the directory (tests).
# conntune.operations.hostlock sends these functions in front of each write command.

# $1 token  $2 generation the run read  $3 lease seconds  $4 a holder known to be dead (its
# controller saw its process gone), or "-". Exit 75: held by another run; 76: another run
# changed the host since this one read it.
lease_try() {
  (
    flock -w 10 9 || exit 75
    now=$(date +%s)
    read -r holder expires generation last 2>/dev/null < "${CONNTUNE_RUN:-/run/conntune}"/lease
    if [ -n "$holder" ] && [ "$holder" != - ] && [ "$holder" != "$1" ] && [ "$holder" != "$4" ] \
       && [ "${expires:-0}" -gt "$now" ]; then
      exit 75
    fi
    if [ "$holder" != "$1" ] && [ "${generation:-0}" != "$2" ] && [ "$last" != "$1" ]; then
      exit 76
    fi
    echo "$1 $((now + $3)) ${generation:-0} ${last:--}" > "${CONNTUNE_RUN:-/run/conntune}"/lease
  ) 9>>"${CONNTUNE_RUN:-/run/conntune}"/lease.lock
}

# $1 token  $2 generation read  $3 lease seconds  $4 seconds to wait for another run
# $5 a dead holder to take over, or "-"
lease_take() {
  mkdir -p "${CONNTUNE_RUN:-/run/conntune}" || return 1
  deadline=$(( $(date +%s) + $4 ))
  while :; do
    lease_try "$1" "$2" "$3" "${5:--}"
    rc=$?
    if [ "$rc" = 76 ]; then
      echo "conntune: another conntune run changed this host since this run read it" \
        "(lease: $(cat "${CONNTUNE_RUN:-/run/conntune}"/lease)); nothing was changed by this run: run it again" >&2
      return 76
    fi
    [ "$rc" = 75 ] || return "$rc"
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "conntune: busy: another conntune run holds this host" \
        "(lease: $(cat "${CONNTUNE_RUN:-/run/conntune}"/lease 2>/dev/null)); waited $4 s" >&2
      return 75
    fi
    sleep 1
  done
}

# $1 token: release the lease this run holds, counting one more finished run
lease_release() {
  (
    flock -w 10 9 || exit 75
    read -r holder expires generation last 2>/dev/null < "${CONNTUNE_RUN:-/run/conntune}"/lease
    if [ "$holder" = "$1" ]; then
      echo "- 0 $(( ${generation:-0} + 1 )) $1" > "${CONNTUNE_RUN:-/run/conntune}"/lease
    fi
  ) 9>>"${CONNTUNE_RUN:-/run/conntune}"/lease.lock
}
