#!/usr/bin/env bash
# The `manager` tier (scripts/test-all.sh): the real Cloudify Manager, installed and started on
# this machine (or an existing one given by CLOUDIFY_MANAGER_URL), then the smoke test, the
# simulator fidelity check and the provider against it (provider.sh: the Cloudify client's
# contract tests, CA's client through the conformance suite, the real CA through the e2e
# phases). install -> start (with health-wait) -> tests -> stop; the
# stop runs from a trap, so a failure stops the stack too. KEEP_MANAGER=1 leaves it running.
# MANAGER_CHECKS="smoke fidelity pools lifecycle contract conformance e2e pools-ca lb" (the default) picks the checks.
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
# Drivers run side by side (each on its own deployments: the manager runs their workflows
# concurrently), their output kept in a file each and printed whole when all have ended.
declare -A driver_pid driver_out driver_t0
driver_start() {
  local name=$1; shift
  driver_out[$name]="$(mktemp)"; driver_t0[$name]=$(date +%s)
  "$@" >"${driver_out[$name]}" 2>&1 &
  driver_pid[$name]=$!
}
driver_collect() {
  local name=$1
  wait "${driver_pid[$name]}"
  cat "${driver_out[$name]}"
  local line; line="$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "${driver_out[$name]}" | tail -n1)"
  rm -f "${driver_out[$name]}"
  echo "manager: $name took $(( $(date +%s) - ${driver_t0[$name]} )) s"
  if [ -z "$line" ]; then failed=$((failed + 1)); echo "manager: $name printed no result"; return; fi
  passed=$((passed + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
  failed=$((failed + $(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')))
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
CHECKS=" ${MANAGER_CHECKS:-smoke fidelity pools lifecycle contract conformance e2e pools-ca lb} "
want() { [[ "$CHECKS" == *" $1 "* ]]; }
want smoke && driver_start smoke "$PY" smoke.py --record "$CACHE_DIR/smoke-record.json"
want fidelity && driver_start fidelity bash "$HERE/fidelity/run.sh"
# CloudifyNodePools on this manager with a real kube-apiserver, and the deployment-lifecycle
# contract of the client (issue 22).
want pools && driver_start pools bash "$HERE/pools.sh"
want lifecycle && driver_start lifecycle bash -c 'cd "$1/../.." && if MANAGER_CONTRACT_REQUIRED=1 cargo test --locked --quiet --test manager_lifecycle; then echo "lifecycle: 1 passed, 0 failed"; else echo "lifecycle: 0 passed, 1 failed"; fi' _ "$HERE"

# The provider against the real manager (issue 19, items 3-5), side by side with smoke and
# fidelity (each part has its own deployments and discovery label). Their deployments first, all
# at once, from each part's scenario file; the e2e part last and alone, so that its timeline,
# compared with the simulator's, is not skewed by the other parts' load on the two cores.
scenarios=()
want contract && scenarios+=("$HERE/scenarios/contract.yaml")
want conformance && scenarios+=("$MANAGER_ROOT/tests/ca-conformance-suite/testdata/realmanager-scenario.yaml")
want e2e && scenarios+=("$MANAGER_ROOT/tests/e2e/config/manager-scenario.yaml")
provider_ready=0
provider_bin() { # builds the provider once, unless AUTOSCALER_CLOUDIFY_BIN names one
  [ -n "${AUTOSCALER_CLOUDIFY_BIN:-}" ] && return 0
  step provider-build bash -c "cd '$MANAGER_ROOT' && cargo build --locked --bin autoscaler-cloudify" || return 1
  export AUTOSCALER_CLOUDIFY_BIN="$MANAGER_ROOT/target/debug/autoscaler-cloudify"
}
if [ ${#scenarios[@]} -gt 0 ]; then
  if provider_bin; then
    before=$failed
    driver_start fixtures "$PY" fixtures.py "${scenarios[@]}"
    driver_collect fixtures
    [ "$failed" = "$before" ] && provider_ready=1
  fi
fi
if [ "$provider_ready" = 1 ]; then
  want contract && driver_start provider-contract bash "$HERE/provider.sh" contract
  want conformance && driver_start provider-conformance bash "$HERE/provider.sh" conformance
fi
for name in smoke fidelity pools lifecycle provider-contract provider-conformance; do
  [ -n "${driver_pid[$name]:-}" ] && driver_collect "$name"
done
if [ "$provider_ready" = 1 ] && want e2e; then
  driver_start provider-e2e bash "$HERE/provider.sh" e2e
  driver_collect provider-e2e
fi
# The real CA scaling a CloudifyNodePool on this manager (issue 22, item 5): applied, installed,
# scaled up and down by CA, deleted (pools-ca.sh). Alone, after provider-e2e, for the same reason.
if want pools-ca && provider_bin; then
  driver_start pools-ca bash "$HERE/pools-ca.sh"
  driver_collect pools-ca
fi
# The service controller against this manager and a real kube-apiserver (issue 23): LB Services
# created, updated, through a REST outage, deleted (tests/e2e/lb.sh --real). Last and alone: its
# outage stops the manager's REST service, which every other driver talks to.
if want lb; then
  driver_start lb bash "$HERE/../e2e/lb.sh" --real
  driver_collect lb
fi
[ "$failed" -eq 0 ]
