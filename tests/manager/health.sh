#!/usr/bin/env bash
# Health-wait: REST answers with auth AND a tiny install workflow runs to `terminated`, within
# MANAGER_HEALTH_TIMEOUT seconds (default 180). On failure prints the tail of every local
# component's log, since any of them can be the one that hangs a workflow.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
eval "$(manager_exports)"
py="$(client_python)"
if (cd "$MANAGER_HERE" && "$py" health.py --timeout "${MANAGER_HEALTH_TIMEOUT:-180}"); then exit 0; fi
if ! external_manager; then
  for c in rest mgmtworker amqp-postgres nginx rabbitmq postgres; do
    f="$STATE_DIR/log/$c.log"; [ -s "$f" ] || continue
    echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2
  done
  f="$STATE_DIR/log/rest/cloudify-rest-service.log"; [ -s "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
fi
exit 1
