#!/usr/bin/env bash
# Stops the local stack by the PIDs start.sh recorded, each with its process group (every
# component was started as a session leader), newest first. Idempotent: a component that is
# not running is skipped. With CLOUDIFY_MANAGER_URL (an existing manager) it does nothing.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if external_manager; then log "existing manager at $CLOUDIFY_MANAGER_URL: not ours to stop"; exit 0; fi
RUN="$STATE_DIR/run"

stop_one() { # name signal
  local name=$1 sig=$2 pid
  pid="$(cat "$RUN/$name.pid" 2>/dev/null)" || return 0
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name ($pid) ignored SIG$sig for 10 s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
  fi
  # Children that outlived their leader in the same group (gunicorn workers, erl's helpers).
  kill -KILL -- "-$pid" 2>/dev/null
  rm -f "$RUN/$name.pid"
}

# Workers first (they hold AMQP and DB connections), the stores last. PostgreSQL's SIGINT is its
# "fast" shutdown (SIGTERM would wait for clients).
stop_one mgmtworker TERM
stop_one amqp-postgres TERM
stop_one nginx QUIT
stop_one rest TERM
stop_one rabbitmq TERM
stop_one epmd TERM
stop_one postgres INT
log "stopped (state kept in $STATE_DIR)"
