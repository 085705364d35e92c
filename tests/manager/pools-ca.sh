#!/usr/bin/env bash
# The real cluster-autoscaler scaling a CloudifyNodePool on the REAL Cloudify Manager (issue 22,
# item 5): tests/e2e/run.sh with E2E_CLOUDIFY=manager E2E_POOLS=1. The CRD is applied to a real
# kube-apiserver, ONE pool (deployment realmgr-e2e-np on the tier's worker-pool.yaml) is created
# through it and becomes Ready, then the e2e harness's phases run against its group
# realmgr-e2e-np/workers: baseline, scale-up (pending pods -> CA IncreaseSize -> VM created on the
# manager -> Node), scale-down (CA DeleteNodes -> exactly those VMs removed), pool-delete (the
# pool deleted -> CA scales its last Node down -> uninstalled -> deployment gone -> no Node left).
# Run by the manager tier (run.sh) after provider-e2e and alone; needs the manager's environment
# (. /work/wt/manager-env.sh or eval "$(tests/manager/manager.sh env)").
#
# AUTOSCALER_CLOUDIFY_BIN: the provider binary (run.sh builds the debug one when unset).
# E2E_TIMEOUT_SCALE (default 3) stretches the harness's step timeouts, as provider.sh e2e does.
# Prints the e2e output and `pools-ca: N passed, N failed` (N: the harness's phases).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
. "$HERE/lib.sh"
DEP=realmgr-e2e-np
result() { echo "pools-ca: $1 passed, $2 failed"; }
: "${CLOUDIFY_MANAGER_URL:?source the manager environment first (tests/manager/README.md)}"

# The blueprint under the id fixtures.py and smoke.py share (tier-worker-pool-<digest>), and no
# deployment left by an interrupted run (its executions killed, then force-deleted: nothing real
# is behind its VMs; a run stopped mid-create can leave one `pending` forever).
if ! BP="$(cd "$HERE" && "$(client_python)" - "$DEP" <<'EOF'
import sys, time
from fixtures import blueprint_id
from tierlib import END_STATES, delete_deployments, ensure_blueprint, env_client
client = env_client()
ensure_blueprint(client, blueprint_id("worker-pool"), "worker-pool.yaml")
dep = sys.argv[1]
live = [e.id for e in client.executions.list(deployment_id=dep, _include_system_workflows=True,
                                             _include=["id", "status"]) if e.status not in END_STATES]
for e in live:
    client.executions.cancel(e, kill=True)
deadline = time.time() + 60
while live and time.time() < deadline:
    time.sleep(1)
    live = [e for e in live if client.executions.get(e, _include=["status"]).status not in END_STATES]
delete_deployments(client, [dep])
print(blueprint_id("worker-pool"))
EOF
)"; then
  echo "pools-ca: uploading the blueprint or removing a leftover $DEP failed"
  result 0 1; exit 1
fi
echo "pools-ca: blueprint $BP; CloudifyNodePool $DEP"

t0=$(date +%s)
out="$(mktemp)"
E2E_WORK="$ROOT/tests/e2e/.cache/run-manager-pools" E2E_CLOUDIFY=manager E2E_POOLS=1 \
  E2E_POOL_BLUEPRINT="$BP" E2E_POOL_DEPLOYMENT="$DEP" E2E_TIMEOUT_SCALE="${E2E_TIMEOUT_SCALE:-3}" \
  bash "$ROOT/tests/e2e/run.sh" 2>&1 | tee "$out"
line="$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' "$out" | tail -n1)"
rm -f "$out"
echo "pools-ca: took $(($(date +%s) - t0)) s"
[ -n "$line" ] || { result 0 1; exit 1; }
p=$(sed -E 's/^e2e: ([0-9]+) passed.*/\1/' <<<"$line"); f=$(sed -E 's/^e2e: [0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
result "$p" "$f"
[ "$f" = 0 ]
