#!/usr/bin/env bash
# The `manager` tier (scripts/test-all.sh): the real Cloudify Manager, installed and started on
# this machine (or an existing one given by CLOUDIFY_MANAGER_URL), then the smoke test and the
# simulator fidelity check against it. install -> start (with health-wait) -> tests -> stop; the
# stop runs from a trap, so a failure stops the stack too. KEEP_MANAGER=1 leaves it running.
# A stack that was already running when the tier started is left running either way. Warm
# re-runs reuse the venv and the state dir. Prints `manager: N passed, N failed` last.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
T0=$(date +%s)
passed=0; failed=0
step() { # name command...: one counted step; its output goes through
  local name=$1; shift
  local t=$(date +%s)
  if "$@"; then passed=$((passed + 1)); echo "manager: step $name ok ($(( $(date +%s) - t )) s)"; return 0; fi
  failed=$((failed + 1)); echo "manager: step $name FAILED ($(( $(date +%s) - t )) s)"; return 1
}
# A driver prints `<name>: N passed, N failed`; add its counts (a driver that died counts 1 failed).
driver() {
  local name=$1; shift
  local out; out="$(mktemp)"
  local t=$(date +%s)
  "$@" 2>&1 | tee "$out"
  local line; line="$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$out" | tail -n1)"
  rm -f "$out"
  if [ -z "$line" ]; then failed=$((failed + 1)); echo "manager: $name printed no result"; return; fi
  passed=$((passed + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
  failed=$((failed + $(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')))
  echo "manager: $name took $(( $(date +%s) - t )) s"
}
finish() {
  if [ "${started_here:-0}" = 1 ] && [ "${KEEP_MANAGER:-0}" != 1 ]; then
    bash "$HERE/stop.sh" || true
  elif [ "${started_here:-0}" = 1 ]; then
    echo "manager: KEEP_MANAGER=1: left running; reach it with: eval \"\$(bash $HERE/manager.sh env)\""
  fi
  echo "manager: tier took $(( $(date +%s) - T0 )) s"
  echo "manager: $passed passed, $failed failed"
}
trap finish EXIT

if ! external_manager; then
  # Refuse early and in one line when nothing says where a manager comes from.
  ( require_sources ) || { failed=$((failed + 1)); exit 1; }
fi
step install bash "$HERE/install.sh" || exit 1
started_here=0
if ! external_manager && ! bash "$HERE/status.sh" >/dev/null 2>&1; then started_here=1; fi
step start bash "$HERE/start.sh" || exit 1
eval "$(manager_exports)"
PY="$(client_python)"
cd "$HERE"
driver smoke "$PY" smoke.py --record "${MANAGER_RECORD_DIR:-$CACHE_DIR}/smoke-record.json"
# The service controller against this manager and a real kube-apiserver (issue 23): LB Services
# created, updated, through a REST outage, deleted (tests/e2e/lb.sh --real).
driver lb bash "$HERE/../e2e/lb.sh" --real
if [ -d "$HERE/fidelity" ] && [ -f "$HERE/fidelity/run.sh" ]; then
  driver fidelity bash "$HERE/fidelity/run.sh"
fi
[ "$failed" -eq 0 ]
