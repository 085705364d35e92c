#!/usr/bin/env bash
# CloudifyNodePools against the REAL Cloudify Manager and a real kube-apiserver (issue 22, item 5):
# etcd + kube-apiserver from tests/e2e/lib/controlplane.sh, the CRD from the chart, the provider
# binary with pools.enabled, and three pools:
#   a  (plain):     applied -> deployment created with the uid label -> installed -> Ready; its
#                   maxSize changed (served at once, no Cloudify call); deleted -> uninstalled,
#                   deployment gone, finalizer gone.
#   f  (failing):   the tier's fault switch fails every VM create -> install fails -> Failed
#                   condition + InstallFailed Warning Event -> switch off -> retried after the
#                   backoff -> Ready.
#   r  (restart):   the fault switch slows VM creation; the provider is killed while install
#                   runs and started again -> it waits for that install (one install execution in
#                   Cloudify, not two) -> Ready.
# Needs a manager in the environment (. /work/wt/manager-env.sh or eval "$(tests/manager/manager.sh
# env)") with MANAGER_FAULT_DIR. The tier's blueprint declares no flavor or site, so these pools
# give only free-form inputs (compute -> inputs is unit-tested and shown on the simulator). Prints PASS/FAIL lines and "pools: N passed, N failed".
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${CLOUDIFY_MANAGER_URL:?source the manager environment first (tests/manager/README.md)}"
: "${MANAGER_FAULT_DIR:?MANAGER_FAULT_DIR (the fault switch directory) is needed}"
TENANT="${CLOUDIFY_MANAGER_TENANT:-default_tenant}"
CUSER="${CLOUDIFY_MANAGER_USER:-admin}"
export CLOUDIFY_PASSWORD="${CLOUDIFY_MANAGER_PASSWORD:-admin}"
PREFIX="pools-e2e"
BLUEPRINT="$PREFIX-worker-pool"
WORK="$(mktemp -d /tmp/pools-e2e.XXXXXX)"
mkdir -p "$MANAGER_FAULT_DIR"
PASS=0
FAIL=0
PROVIDER_PID=""

say() { echo "pools: $*" >&2; }
pass() { PASS=$((PASS + 1)); echo "PASS $1"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL $1: $2"; }

# shellcheck source=../e2e/lib/controlplane.sh
source "$ROOT/tests/e2e/lib/controlplane.sh"

cleanup() {
  [ -n "$PROVIDER_PID" ] && kill "$PROVIDER_PID" 2>/dev/null
  rm -f "$MANAGER_FAULT_DIR/$PREFIX-f.json" "$MANAGER_FAULT_DIR/$PREFIX-r.json"
  cp_stop >/dev/null 2>&1
}
trap cleanup EXIT

cfy() { # METHOD PATH [curl args...]: the manager's REST API
  local m="$1" p="$2"; shift 2
  curl -sS -u "$CUSER:$CLOUDIFY_PASSWORD" -H "Tenant: $TENANT" -X "$m" "$CLOUDIFY_MANAGER_URL/api/v3.1$p" "$@"
}
kapi() { # METHOD PATH [curl args...]: the kube-apiserver as admin
  local m="$1" p="$2"; shift 2
  curl -sS --cacert "$CP_DIR/pki/ca.crt" --cert "$CP_DIR/pki/admin.crt" --key "$CP_DIR/pki/admin.key" \
    -X "$m" "$CP_APISERVER_URL$p" "$@"
}
POOLS=/apis/autoscaler.cloudify.io/v1alpha1/cloudifynodepools
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
pool_field() { kapi GET "$POOLS/$1" | jq_py "$2" 2>/dev/null; }

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 2 s until it succeeds.
wait_for() {
  local secs="$1" what="$2"; shift 2
  local end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 2
  done
  say "timed out ($secs s): $what"
  return 1
}
phase_is() { [ "$(pool_field "$1" "d.get('status',{}).get('phase','')")" = "$2" ]; }
deployment_gone() { [ "$(cfy GET "/deployments/$1?_include=id" -o /dev/null -w '%{http_code}')" = 404 ]; }
pool_gone() { [ "$(kapi GET "$POOLS/$1" -o /dev/null -w '%{http_code}')" = 404 ]; }

start_provider() {
  KUBECONFIG="$CP_KUBECONFIG" "$BIN" serve --config "$WORK/provider.yaml" >>"$WORK/provider.log" 2>&1 &
  PROVIDER_PID=$!
}

apply_pool() { # NAME [extra spec JSON]
  local name="$1" extra="${2:-}"
  [ -n "$extra" ] || extra='{}'
  python3 - "$name" "$extra" "$BLUEPRINT" "$MANAGER_FAULT_DIR" "$PREFIX" >"$WORK/pool-$name.json" <<'EOF'
import json, sys
name, extra, bp, fault_dir, prefix = sys.argv[1:]
spec = {"blueprintId": bp, "deploymentId": f"{prefix}-{name}", "minSize": 0, "maxSize": 3,
        "inputs": {"initial_workers": 1, "cluster_name": prefix, "fault_dir": fault_dir},
        "template": {"capacity": {"cpu": "2", "memory": "4Gi"}}, "pricePerHour": 0.1}
spec.update(json.loads(extra))
print(json.dumps({"apiVersion": "autoscaler.cloudify.io/v1alpha1", "kind": "CloudifyNodePool",
                  "metadata": {"name": f"{prefix}-{name}"}, "spec": spec}))
EOF
  kapi POST "$POOLS" -H 'Content-Type: application/json' --data-binary "@$WORK/pool-$name.json" -o /dev/null -w '%{http_code}\n'
}

main() {
  local t0=$SECONDS
  say "building the provider and the control plane"
  (cd "$ROOT" && cargo build --bin autoscaler-cloudify) >&2 || { fail build "cargo build"; return; }
  BIN="$ROOT/target/debug/autoscaler-cloudify"
  cp_build >&2 || { fail build "control plane binaries"; return; }
  cp_start "$WORK/cp" >&2 || { fail controlplane "did not start"; return; }

  # The blueprint: tests/manager/blueprints as a .tar.gz, uploaded once (legacy raw-body upload).
  if [ "$(cfy GET "/blueprints/$BLUEPRINT?_include=id" -o /dev/null -w '%{http_code}')" != 200 ]; then
    tar -czf "$WORK/bp.tar.gz" -C "$ROOT/tests/manager" blueprints
    cfy PUT "/blueprints/$BLUEPRINT?application_file_name=worker-pool.yaml&async_upload=true" \
      -H 'Content-Type: application/octet-stream' --data-binary "@$WORK/bp.tar.gz" -o /dev/null
    wait_for 180 "blueprint uploaded" sh -c "curl -sS -u '$CUSER:$CLOUDIFY_PASSWORD' -H 'Tenant: $TENANT' \
      '$CLOUDIFY_MANAGER_URL/api/v3.1/blueprints/$BLUEPRINT?_include=state' | grep -q '\"uploaded\"'" ||
      { fail blueprint "not uploaded"; return; }
  fi
  for n in a f r; do # leftovers of an interrupted run
    if ! deployment_gone "$PREFIX-$n"; then
      cfy POST /executions -H 'Content-Type: application/json' \
        -d "{\"deployment_id\":\"$PREFIX-$n\",\"workflow_id\":\"uninstall\",\"queue\":true}" -o /dev/null
      sleep 60; cfy DELETE "/deployments/$PREFIX-$n?force=true" -o /dev/null
      wait_for 120 "leftover $n gone" deployment_gone "$PREFIX-$n"
    fi
  done

  sed 1,2d "$ROOT/deploy/helm/autoscaler-cloudify/crds/cloudifynodepools.autoscaler.cloudify.io.yaml" >"$WORK/crd.json"
  kapi POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions -H 'Content-Type: application/json' \
    --data-binary "@$WORK/crd.json" -o /dev/null
  wait_for 60 "CRD established" sh -c "curl -sS --cacert '$CP_DIR/pki/ca.crt' --cert '$CP_DIR/pki/admin.crt' \
    --key '$CP_DIR/pki/admin.key' '$CP_APISERVER_URL$POOLS' | grep -q '\"items\"'" && pass crd-established ||
    { fail crd-established "the CRD was not served"; return; }

  # The CRD's CEL rules at the real API server.
  code="$(apply_pool bad '{"minSize": 5, "maxSize": 2}')"
  [ "$code" = 422 ] && pass cel-min-above-max-refused || fail cel-min-above-max-refused "HTTP $code"

  cat >"$WORK/provider.yaml" <<EOF
grpc: {listen: "127.0.0.1:0", insecure: true}
http: {listen: "127.0.0.1:0"}
log: {format: text, level: "info,autoscaler_cloudify=debug"}
refresh: {interval: 3s, max_age: 2s}
lease: {enabled: false}
node_controller: {enabled: false}
cloudify:
  - name: main
    url: "$CLOUDIFY_MANAGER_URL"
    tenant: $TENANT
    username: $CUSER
    password_env: CLOUDIFY_PASSWORD
    request_timeout: 30s
node_groups: {}
pools: {enabled: true, cluster_labels: {k8s-cluster: $PREFIX}}
EOF
  start_provider
  echo '{"fail": "quota"}' >"$MANAGER_FAULT_DIR/$PREFIX-f.json"
  echo '{"delay_s": 40}' >"$MANAGER_FAULT_DIR/$PREFIX-r.json"
  for n in a f r; do apply_pool "$n" >/dev/null; done

  # r: restart the provider while its install runs.
  if wait_for 240 "r installing" phase_is "$PREFIX-r" Installing; then
    kill "$PROVIDER_PID"; wait "$PROVIDER_PID" 2>/dev/null
    say "provider killed while r installs; starting it again"
    sleep 3
    start_provider
    pass restart-mid-install-killed
  else
    fail restart-mid-install-killed "r never showed Installing"
  fi

  # f: the failure is a condition and an Event, then a retry succeeds.
  if wait_for 300 "f failed" phase_is "$PREFIX-f" Failed; then
    reason="$(pool_field "$PREFIX-f" "[c['reason'] for c in d['status']['conditions'] if c['type']=='Failed'][0]")"
    [ "$reason" = InstallFailed ] && pass install-failure-condition || fail install-failure-condition "reason $reason"
    events="$(kapi GET "/apis/events.k8s.io/v1/events?fieldSelector=regarding.name=$PREFIX-f")"
    echo "$events" | grep -q InstallFailed && pass install-failure-event || fail install-failure-event "no InstallFailed Event"
    echo "$events" | grep -q 'Quota exceeded' && pass install-failure-event-says-why || fail install-failure-event-says-why "no Cloudify error in the Event"
    rm -f "$MANAGER_FAULT_DIR/$PREFIX-f.json"
    wait_for 400 "f ready after the retry" phase_is "$PREFIX-f" Ready && pass install-retried-after-backoff ||
      fail install-retried-after-backoff "phase $(pool_field "$PREFIX-f" "d['status']['phase']")"
  else
    fail install-failure-condition "f never Failed"
  fi

  for n in a r; do
    wait_for 400 "$n ready" phase_is "$PREFIX-$n" Ready && pass "pool-$n-ready" || fail "pool-$n-ready" \
      "phase $(pool_field "$PREFIX-$n" "d.get('status',{}).get('phase')")"
  done
  installs="$(cfy GET "/executions?deployment_id=$PREFIX-r&workflow_id=install&_include=id" | jq_py "d['metadata']['pagination']['total']")"
  [ "$installs" = 1 ] && pass restart-one-install || fail restart-one-install "$installs install executions: \
    $(cfy GET "/executions?deployment_id=$PREFIX-r&_include=id,workflow_id,status,created_at,error" | tr -d '\n')"
  st="$(cfy GET "/deployments/$PREFIX-a?_include=installation_status,labels")"
  echo "$st" | grep -q '"active"' && pass deployment-a-installed || fail deployment-a-installed "$st"
  echo "$st" | grep -q "k8s-nodepool-uid" && pass deployment-a-uid-label || fail deployment-a-uid-label "$st"
  group="$(pool_field "$PREFIX-a" "d['status']['nodeGroupId']")"
  [ "$group" = "$PREFIX-a/workers" ] && pass node-group-id || fail node-group-id "$group"
  size="$(pool_field "$PREFIX-a" "d['status'].get('currentSize')")"
  [ "$size" = 1 ] && pass current-size || fail current-size "currentSize $size"

  # Delete every pool: uninstall, delete, finalizer removed, nothing left in Cloudify.
  for n in a f r; do kapi DELETE "$POOLS/$PREFIX-$n" -o /dev/null; done
  for n in a f r; do
    wait_for 400 "$n pool gone" pool_gone "$PREFIX-$n" && wait_for 120 "$n deployment gone" deployment_gone "$PREFIX-$n" &&
      pass "pool-$n-deleted-and-deployment-gone" || fail "pool-$n-deleted-and-deployment-gone" \
      "pool $(kapi GET "$POOLS/$PREFIX-$n" -o /dev/null -w '%{http_code}'), deployment $(cfy GET "/deployments/$PREFIX-$n" -o /dev/null -w '%{http_code}')"
  done
  say "took $((SECONDS - t0)) s; provider log: $WORK/provider.log"
}

main
echo "pools: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
