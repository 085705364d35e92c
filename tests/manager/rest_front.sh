#!/usr/bin/env bash
# A second REST service of the LOCAL stack (gunicorn with manager_rest.wsgi:app, same database,
# broker and config as the first), on a port of its own, for tests that restart "the REST
# service" under the provider (the conformance suite's real-manager mode): the workflow engine
# (mgmtworker, through nginx) and everybody else keep using the first one, so nothing else sees
# the restart. The REST service keeps no state of its own (PostgreSQL holds it), which is what
# lets two of them serve one manager.
#
#   rest_front.sh start PORT    start (idempotent) and wait until it answers with auth
#   rest_front.sh stop PORT     stop it by PID with its process group (idempotent)
#
# PID in $MANAGER_STATE_DIR/run/rest-front-PORT.pid, log in $MANAGER_STATE_DIR/log/rest-front-PORT.log.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

action=${1:-}; port=${2:-}
[[ "$action" =~ ^(start|stop)$ && "$port" =~ ^[0-9]+$ ]] || die "usage: rest_front.sh start|stop PORT"
if external_manager; then die "rest_front.sh: an existing manager at $CLOUDIFY_MANAGER_URL has no local REST service to add a front to"; fi
ETC="$STATE_DIR/etc"; RUN="$STATE_DIR/run"; LOGS="$STATE_DIR/log"
pidf="$RUN/rest-front-$port.pid"
alive() { local p; p="$(cat "$pidf" 2>/dev/null)" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

case $action in
  start)
    [ -f "$ETC/cloudify-rest.conf" ] || die "no local stack in $STATE_DIR (tests/manager/manager.sh start)"
    if ! alive; then
      t0=$(date +%s.%N)
      setsid env MANAGER_REST_CONFIG_PATH="$ETC/cloudify-rest.conf" MANAGER_REST_SECURITY_CONFIG_PATH="$ETC/rest-security.conf" \
        "$VENV/bin/gunicorn" --workers 1 --timeout 300 --chdir / --bind "127.0.0.1:$port" manager_rest.wsgi:app \
        >>"$LOGS/rest-front-$port.log" 2>&1 </dev/null &
      echo $! >"$pidf"
    fi
    for _ in $(seq 1 300); do
      if curl -sf -o /dev/null -u "$ADMIN_USER:$ADMIN_PASSWORD" "http://127.0.0.1:$port/api/v3.1/version"; then
        echo "REST front on 127.0.0.1:$port (pid $(cat "$pidf")) answers${t0:+ after $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-4) s}"
        exit 0
      fi
      alive || { tail -n 20 "$LOGS/rest-front-$port.log" >&2; die "REST front on $port exited"; }
      sleep 0.2
    done
    die "REST front on $port does not answer after 60 s" ;;
  stop)
    if alive; then
      pid=$(cat "$pidf")
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      echo "REST front on 127.0.0.1:$port stopped"
    fi
    rm -f "$pidf" ;;
esac
