#!/usr/bin/env bash
# e2e tier: cluster-autoscaler --cloud-provider=externalgrpc scaling Cloudify (simulated) scaling
# groups by pending-pod pressure, with real etcd, kube-apiserver, kube-scheduler and kwok, all on
# 127.0.0.1. See tests/e2e/README.md.
#
# Env:
#   AUTOSCALER_CLOUDIFY_BIN  provider binary (default: cargo build --bin autoscaler-cloudify in the repo)
#   CA_BIN                   prebuilt cluster-autoscaler 1.36.1 (default: build it from tests/e2e/ca)
#   GO_MODULE_MIRROR         Go module mirror (directory or URL) holding CA's modules; default
#                            ../shared/goproxy next to the checkout when it exists
#   E2E_MODE=no-ca           run the reduced no-CA mode (the harness scales through Cloudify's REST
#                            API). Only when asked for: without it, CA that cannot be obtained is an error.
#   E2E_TIMEOUT_SCALE=N      multiply the scenario's step timeouts (slow machines)
#   E2E_PHASES=a,b,...       run only these phases (names: harness --help; baseline first)
#   E2E_KEEP=1               leave the run directory (logs, configs) in place; it is always kept on failure
#   E2E_POOLS=1              the two priced pools (e2e-cheap, e2e-dear) are CloudifyNodePools on two sites
#                            (issue 22) instead of scenario deployments: the CRD is applied, the provider
#                            runs the pool controller, and the run waits until both are Ready
#   E2E_WORK=DIR             the run directory (default tests/e2e/.cache/run)
#   E2E_CLOUDIFY=manager     a REAL Cloudify Manager instead of the simulator (issue 19): the one the
#                            manager tier's environment names (CLOUDIFY_MANAGER_URL, _USER/_PASSWORD or
#                            _TOKEN, _TENANT), with the deployments of config/manager-scenario.yaml
#                            (tests/manager/fixtures.py makes them; tests/manager/run.sh runs this mode);
#                            phases baseline,scale-up,scale-down,failure,final unless E2E_PHASES says otherwise
#   E2E_CLOUDIFY=manager E2E_POOLS=1 with E2E_POOL_BLUEPRINT=<blueprint id on the manager>: the scaled
#                            group is ONE CloudifyNodePool (issue 22, item 5) instead of realmgr-e2e-pool:
#                            the pool E2E_POOL_DEPLOYMENT (default realmgr-e2e-np) is created through the
#                            API server on that blueprint (the tier's worker-pool.yaml), Ready, scaled up
#                            and down by CA, then deleted (phase pool-delete); phases
#                            baseline,scale-up,scale-down,pool-delete unless E2E_PHASES says otherwise.
#                            tests/manager/pools-ca.sh runs this mode
set -uo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E_DIR/../.." && pwd)"
export E2E_DIR
# shellcheck source=lib/controlplane.sh
source "$E2E_DIR/lib/controlplane.sh"

T0=$(date +%s)
say() { echo "e2e[$(($(date +%s) - T0))s]: $*"; }
WORK="${E2E_WORK:-$E2E_DIR/.cache/run}"
CLOUDIFY="${E2E_CLOUDIFY:-simulator}"
case "$CLOUDIFY" in
  simulator) ;;
  manager)
    [ -n "${CLOUDIFY_MANAGER_URL:-}" ] || { echo "e2e: E2E_CLOUDIFY=manager needs CLOUDIFY_MANAGER_URL (eval \"\$(tests/manager/manager.sh env)\")"; echo "e2e: 0 passed, 1 failed"; exit 1; }
    if [ "${E2E_POOLS:-0}" = 1 ]; then
      [ -n "${E2E_POOL_BLUEPRINT:-}" ] || { echo "e2e: E2E_CLOUDIFY=manager E2E_POOLS=1 needs E2E_POOL_BLUEPRINT"; echo "e2e: 0 passed, 1 failed"; exit 1; }
      NP_DEP="${E2E_POOL_DEPLOYMENT:-realmgr-e2e-np}"
      E2E_PHASES="${E2E_PHASES:-baseline,scale-up,scale-down,pool-delete}"
    else
      E2E_PHASES="${E2E_PHASES:-baseline,scale-up,scale-down,failure,final}"
    fi ;;
  *) echo "e2e: E2E_CLOUDIFY=$CLOUDIFY: want simulator or manager"; echo "e2e: 0 passed, 1 failed"; exit 1 ;;
esac
RESULT=1
SKIPPED=0
SKIP_REASON=""

dump_logs() {
  echo
  echo "################ e2e FAILED: logs of every component (last ${E2E_LOG_LINES:-150} lines each) ################"
  local f
  for f in "$WORK"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "================ $(basename "$f" .log) ($f) ================"
    tail -n "${E2E_LOG_LINES:-150}" "$f"
  done
  echo "################ end of logs; full logs kept in $WORK/logs ################"
}

finish() {
  # Logs first, while every component is still up: their last lines are then about the failure,
  # not about being shut down.
  if [ "$RESULT" != 0 ] && [ -d "$WORK/logs" ]; then dump_logs; fi
  cp_stop
  # A CA restarted by the harness is not among cp_spawn's pids.
  if [ -f "$WORK/logs/cluster-autoscaler.pid" ]; then kill "$(cat "$WORK/logs/cluster-autoscaler.pid")" 2>/dev/null || true; fi
  if [ "$RESULT" = 0 ] && [ "${E2E_KEEP:-0}" != 1 ]; then rm -rf "$WORK/etcd"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

fail() { say "FAIL: $*"; echo "e2e: 0 passed, 1 failed"; exit 1; }

# ---------------------------------------------------------------- build
say "building Kubernetes-side binaries (cached by go.sum hash in $E2E_DIR/.cache/bin)"
TB=$(date +%s)
e2e_build etcd kwok kube-scheduler kube-apiserver kubectl-lite harness || fail "building the Go binaries"
MODE="${E2E_MODE:-ca}"
case "$MODE" in
  ca)
    # CA's decisions are what this tier proves: a CA that cannot be obtained (no mirror, no proxy
    # serving it, no CA_BIN) fails the run; it never silently falls back to the no-CA mode.
    e2e_build_ca || fail "cluster-autoscaler 1.36.1: $E2E_CA_ERROR (set GO_MODULE_MIRROR or CA_BIN; E2E_MODE=no-ca runs without CA)" ;;
  no-ca)
    SKIPPED=1
    SKIP_REASON="E2E_MODE=no-ca was asked for" ;;
  *) fail "E2E_MODE=$MODE: want ca or no-ca" ;;
esac
if [ -n "${AUTOSCALER_CLOUDIFY_BIN:-}" ] && [ ! -x "$AUTOSCALER_CLOUDIFY_BIN" ]; then
  say "AUTOSCALER_CLOUDIFY_BIN=$AUTOSCALER_CLOUDIFY_BIN does not exist; building it"
  unset AUTOSCALER_CLOUDIFY_BIN
fi
if [ -z "${AUTOSCALER_CLOUDIFY_BIN:-}" ]; then
  say "building the provider (cargo build --bin autoscaler-cloudify)"
  (cd "$REPO" && cargo build --quiet --bin autoscaler-cloudify) || fail "cargo build"
  AUTOSCALER_CLOUDIFY_BIN="$REPO/target/debug/autoscaler-cloudify"
fi
PROV="$AUTOSCALER_CLOUDIFY_BIN"
for sub in serve simulator; do
  "$PROV" "$sub" --help >/dev/null 2>&1 || fail "$PROV has no working '$sub' subcommand ($("$PROV" "$sub" --help 2>&1 | head -n 3 | tr '\n' ' '))"
done
say "builds done in $(($(date +%s) - TB))s (mode: $MODE)"

# ---------------------------------------------------------------- control plane
rm -rf "$WORK" && mkdir -p "$WORK/logs"
cp_start "$WORK" || fail "control plane did not start"
K="$CP_KUBECONFIG"
cp_spawn kube-scheduler "$E2E_BIN/kube-scheduler" --kubeconfig="$K" --leader-elect=false --secure-port=0 --v=2

KWOK_DIR="$(cd "$E2E_DIR" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" || fail "locating the kwok module for its stages"
: >"$WORK/kwok-stages.yaml"
for st in node/fast/node-initialize pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  { cat "$KWOK_DIR/kustomize/stage/$st.yaml"; echo "---"; } >>"$WORK/kwok-stages.yaml"
done
cp_spawn kwok "$E2E_BIN/kwok" --kubeconfig="$K" --config="$WORK/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --manage-nodes-with-label-selector= --manage-single-node= \
  --cidr=10.244.0.0/16 --node-ip=10.0.0.1 --node-lease-duration-seconds=0

# ---------------------------------------------------------------- simulator + provider (mTLS)
SIM_PORT=$(cp_free_port); GRPC_PORT=$(cp_free_port); HTTP_PORT=$(cp_free_port); CA_PORT=$(cp_free_port)
PKI="$WORK/grpc-pki"; mkdir -p "$PKI"
(
  set -e; cd "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=e2e-grpc-ca" -out ca.crt
  for who in server client; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$who.key.ec"
    openssl pkcs8 -topk8 -nocrypt -in "$who.key.ec" -out "$who.key"
    openssl req -new -key "$who.key" -subj "/CN=e2e-$who" -out "$who.csr"
  done
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  for who in server client; do
    openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile "$who.ext" -out "$who.crt"
  done
) >"$WORK/logs/pki.out" 2>&1 || fail "gRPC certificates"
if [ "$CLOUDIFY" = manager ]; then
  # The secret reaches the provider and the harness through the environment only.
  if [ -n "${CLOUDIFY_MANAGER_TOKEN:-}" ]; then SECRET="token_env: CLOUDIFY_TOKEN"; else SECRET="password_env: CLOUDIFY_PASSWORD"; fi
  sed -e "s#@GRPC_PORT@#$GRPC_PORT#; s#@HTTP_PORT@#$HTTP_PORT#; s#@PKI@#$PKI#g; s#@CLOUDIFY_URL@#$CLOUDIFY_MANAGER_URL#" \
    -e "s#@CLOUDIFY_TENANT@#${CLOUDIFY_MANAGER_TENANT:-default_tenant}#; s#@CLOUDIFY_USER@#${CLOUDIFY_MANAGER_USER:-admin}#; s#@SECRET@#$SECRET#" \
    "$E2E_DIR/config/provider-config-manager.yaml.in" >"$WORK/provider-config.yaml"
  if [ "${E2E_POOLS:-0}" = 1 ]; then
    # The group comes from the pool alone (no discovery); the groups entry stays, renamed, for
    # the harness's joiner (its template) and its Cloudify lists (the pool's deployment).
    sed -i -e "s#\"realmgr-e2e-pool/workers\"#\"$NP_DEP/workers\"#" \
      -e 's#^  auto_discovery: .*#  auto_discovery: []#' "$WORK/provider-config.yaml"
    printf 'pools:\n  enabled: true\n  cluster_labels: {k8s-cluster: %s}\n' "$NP_DEP" >>"$WORK/provider-config.yaml"
  fi
else
  sed -e "s#@GRPC_PORT@#$GRPC_PORT#; s#@HTTP_PORT@#$HTTP_PORT#; s#@SIM_PORT@#$SIM_PORT#; s#@PKI@#$PKI#g" \
    "$E2E_DIR/config/provider-config.yaml.in" >"$WORK/provider-config.yaml"
fi
cat >"$WORK/cloud-config.yaml" <<CC
address: "127.0.0.1:$GRPC_PORT"
cert: "$PKI/client.crt"
key: "$PKI/client.key"
cacert: "$PKI/ca.crt"
grpc_timeout: 10s
CC

export NO_COLOR=1 # plain provider/simulator logs
if [ "$CLOUDIFY" = manager ]; then
  CFY_URL="$CLOUDIFY_MANAGER_URL"
  CFY_ENV=(CLOUDIFY_PASSWORD="${CLOUDIFY_MANAGER_PASSWORD:-}" CLOUDIFY_TOKEN="${CLOUDIFY_MANAGER_TOKEN:-}")
  if [ "${E2E_POOLS:-0}" = 1 ]; then
    HARNESS_CLOUDIFY=(--manager --cloudify-url="$CFY_URL" --cloudify-password="${CLOUDIFY_MANAGER_PASSWORD:-}"
      --pool="$NP_DEP/workers" --pool-object="$NP_DEP" --zero=)
    GROUPS_RE="^$NP_DEP/workers " GROUPS_N=1
    say "Cloudify: the real manager at $CFY_URL (one CloudifyNodePool $NP_DEP on blueprint $E2E_POOL_BLUEPRINT)"
  else
    HARNESS_CLOUDIFY=(--manager --cloudify-url="$CFY_URL" --cloudify-password="${CLOUDIFY_MANAGER_PASSWORD:-}"
      --pool=realmgr-e2e-pool/workers --zero=)
    GROUPS_RE='^realmgr-e2e-pool/workers ' GROUPS_N=1
    say "Cloudify: the real manager at $CFY_URL (deployments of config/manager-scenario.yaml)"
  fi
else
  SCENARIO="$E2E_DIR/config/simulator-scenario.yaml"
  if [ "${E2E_POOLS:-0}" = 1 ]; then
    # The priced pools come from CloudifyNodePools: the scenario keeps only their blueprint.
    SCENARIO="$WORK/simulator-scenario.yaml"
    sed '/- id: e2e-cheap$/,+3d; /- id: e2e-dear$/,+3d' "$E2E_DIR/config/simulator-scenario.yaml" >"$SCENARIO"
    cat "$E2E_DIR/config/pools-scenario.yaml" >>"$SCENARIO"
    cat "$E2E_DIR/config/pools-provider.yaml" >>"$WORK/provider-config.yaml"
  fi
  cp_spawn simulator "$PROV" simulator --listen "127.0.0.1:$SIM_PORT" --scenario "$SCENARIO"
  cp_wait_http simulator "http://127.0.0.1:$SIM_PORT/api/v3.1/node-instances" 30 -u admin:admin -H "Tenant: default_tenant" \
    || fail "simulator did not answer"
  CFY_ENV=(CLOUDIFY_PASSWORD=admin CLOUDIFY_TOKEN=)
  HARNESS_CLOUDIFY=(--cloudify-password=admin)
  GROUPS_RE='^e2e-' GROUPS_N=5
fi
# KUBECONFIG: the provider's node controller runs against this cluster (issue 15).
cp_spawn provider env KUBECONFIG="$K" "${CFY_ENV[@]}" "$PROV" serve --config "$WORK/provider-config.yaml"
cp_wait_http provider "http://127.0.0.1:$HTTP_PORT/readyz" 60 || fail "provider not ready"
say "provider serving gRPC (mTLS) on 127.0.0.1:$GRPC_PORT"
if [ "${E2E_POOLS:-0}" = 1 ]; then
  kapi() { curl -sS --cacert "$CP_DIR/pki/ca.crt" --cert "$CP_DIR/pki/admin.crt" --key "$CP_DIR/pki/admin.key" "$@"; }
  sed 1,2d "$REPO/deploy/helm/autoscaler-cloudify/crds/cloudifynodepools.autoscaler.cloudify.io.yaml" >"$WORK/crd.json"
  kapi -X POST "$CP_APISERVER_URL/apis/apiextensions.k8s.io/v1/customresourcedefinitions" \
    -H 'Content-Type: application/json' --data-binary "@$WORK/crd.json" >"$WORK/logs/crd.out" || fail "posting the CRD"
  POOLS="$CP_APISERVER_URL/apis/autoscaler.cloudify.io/v1alpha1/cloudifynodepools"
  for _ in $(seq 1 60); do kapi "$POOLS" | grep -q '"items"' && break; sleep 1; done
  if [ "$CLOUDIFY" = manager ]; then
    # One pool on the real manager, with the group settings realmgr-e2e-pool has in the config.
    python3 - "$NP_DEP" "$E2E_POOL_BLUEPRINT" "${MANAGER_FAULT_DIR:-}" >"$WORK/pool-manager.json" <<'EOF'
import json, sys
dep, bp, fault_dir = sys.argv[1:]
inputs = {"cluster_name": dep, "min_workers": 0, "max_workers": 5, "initial_workers": 1}
if fault_dir:
    inputs["fault_dir"] = fault_dir
print(json.dumps({"apiVersion": "autoscaler.cloudify.io/v1alpha1", "kind": "CloudifyNodePool",
    "metadata": {"name": dep},
    "spec": {"blueprintId": bp, "deploymentId": dep, "scalingGroup": "workers", "inputs": inputs,
             "minSize": 1, "maxSize": 5, "pricePerHour": 0.10,
             "template": {"labels": {"e2e.autoscaler-cloudify/pool": "small", "node.kubernetes.io/instance-type": "e2e.small"},
                          "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"}},
             "autoscalingOptions": {"scaleDownUtilizationThreshold": 0.5, "scaleDownGpuUtilizationThreshold": 0.5,
                                    "scaleDownUnneededTime": "20s", "scaleDownUnreadyTime": "20s",
                                    "maxNodeProvisionTime": "60s", "zeroOrMaxNodeScaling": False,
                                    "ignoreDaemonsetsUtilization": True}}}))
EOF
    POOL_FILES=("$WORK/pool-manager.json") POOLS_N=1 SERVED="$NP_DEP/workers" POOLS_WAIT=600
  else
    POOL_FILES=("$E2E_DIR"/config/pool-*.json) POOLS_N=2 SERVED=e2e-dear/workers POOLS_WAIT=120
  fi
  for f in "${POOL_FILES[@]}"; do
    kapi -X POST "$POOLS" -H 'Content-Type: application/json' --data-binary "@$f" -o /dev/null -w "pool $(basename "$f"): HTTP %{http_code}\n"
  done
  TP=$(date +%s) ready=0
  for _ in $(seq 1 "$POOLS_WAIT"); do
    ready="$(kapi "$POOLS" | grep -c '"phase": *"Ready"')"
    [ "$ready" = "$POOLS_N" ] && break
    sleep 1
  done
  [ "$ready" = "$POOLS_N" ] || { kapi "$POOLS" >"$WORK/logs/pools.json"; fail "$POOLS_N CloudifyNodePool(s) did not become Ready ($WORK/logs/pools.json)"; }
  for _ in $(seq 1 30); do # the next refresh serves them
    "$PROV" inspect --cloud-config "$WORK/cloud-config.yaml" groups 2>/dev/null | grep -q "$SERVED" && break
    sleep 1
  done
  if [ "$CLOUDIFY" = manager ]; then
    say "CloudifyNodePool $NP_DEP installed on the real manager and served in $(($(date +%s) - TP))s"
  else
    say "CloudifyNodePools e2e-cheap (zone-a, 0.05/h) and e2e-dear (zone-b, 0.20/h) installed and served"
  fi
fi
# The provider answers over mTLS with exactly the cloud-config CA gets, and discovery found the
# groups (and not the control-plane deployment).
if ! "$PROV" inspect --cloud-config "$WORK/cloud-config.yaml" groups >"$WORK/logs/inspect.log" 2>&1 \
  || [ "$(grep -cE "$GROUPS_RE" "$WORK/logs/inspect.log")" != "$GROUPS_N" ]; then
  cat "$WORK/logs/inspect.log"; fail "inspect over mTLS with CA's cloud-config did not list the $GROUPS_N groups (and not the control plane)"
fi
sed 's/^/  inspect groups: /' "$WORK/logs/inspect.log"

# ---------------------------------------------------------------- cluster-autoscaler
if [ "$MODE" = ca ]; then
  # --startup-taint: Nodes join like kubelet --cloud-provider=external (issue 15); until the node
  # controller initializes them CA must count them as starting, not as Ready-but-full.
  CA_ARGS=(--cloud-provider=externalgrpc --cloud-config="$WORK/cloud-config.yaml"
    --kubeconfig="$K" --leader-elect=false --namespace=kube-system --address="127.0.0.1:$CA_PORT"
    --scan-interval=2s
    --scale-down-delay-after-add=0s --scale-down-delay-after-delete=0s --scale-down-delay-after-failure=5s
    --scale-down-unneeded-time=20s --scale-down-unready-time=20s --unremovable-node-recheck-timeout=5s
    --node-delete-delay-after-taint=0s --max-node-provision-time=30s
    --initial-node-group-backoff-duration=10s --max-node-group-backoff-duration=30s --node-group-backoff-reset-timeout=1m
    --skip-nodes-with-local-storage=false --skip-nodes-with-system-pods=false
    --max-graceful-termination-sec=5 --max-pod-eviction-time=30s
    --expander=price --v=4
    --startup-taint=node.cloudprovider.kubernetes.io/uninitialized)
  cp_spawn cluster-autoscaler "$CA_BIN" "${CA_ARGS[@]}"
  cp_wait_http cluster-autoscaler "http://127.0.0.1:$CA_PORT/health-check" 60 || fail "cluster-autoscaler not healthy"
  # The CA-restart phase runs this: stop CA (SIGTERM, then SIGKILL), start it again with the same
  # flags appending to the same log, wait until it is healthy. finish() stops whichever CA is current.
  {
    echo '#!/usr/bin/env bash'
    echo 'set -u'
    printf 'log=%q; pidf=%q; health=%q\n' "$WORK/logs/cluster-autoscaler.log" "$WORK/logs/cluster-autoscaler.pid" "http://127.0.0.1:$CA_PORT/health-check"
    echo 'pid=$(cat "$pidf"); kill "$pid" 2>/dev/null'
    echo 'for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done; kill -9 "$pid" 2>/dev/null'
    echo 'echo "==== e2e harness: cluster-autoscaler restarted at $(date -u +%FT%T.%NZ) ====" >>"$log"'
    printf '%q ' "$CA_BIN" "${CA_ARGS[@]}"; echo '>>"$log" 2>&1 </dev/null &'
    echo 'echo $! >"$pidf"; disown'
    echo 'for _ in $(seq 1 240); do curl -fsS -o /dev/null --max-time 2 "$health" 2>/dev/null && { echo "pid $(cat "$pidf") healthy"; exit 0; }; sleep 0.25; done'
    echo 'echo "restarted cluster-autoscaler not healthy within 60s" >&2; exit 1'
  } >"$WORK/restart-ca.sh"
  chmod +x "$WORK/restart-ca.sh"
  say "cluster-autoscaler running"
else
  say "SKIP cluster-autoscaler: $SKIP_REASON"
  say "running the no-CA mode: the harness scales through Cloudify's REST API; every other component is real"
fi

# ---------------------------------------------------------------- scenario
say "scenario starting (stack up in $(($(date +%s) - T0))s)"
TS=$(date +%s)
env "${CFY_ENV[@]}" "$E2E_BIN/harness" --kubeconfig="$K" --provider-config="$WORK/provider-config.yaml" --mode="$MODE" \
  "${HARNESS_CLOUDIFY[@]}" --summary="$WORK/summary.tsv" \
  --timeline="$WORK/timeline.txt" --timeout-scale="${E2E_TIMEOUT_SCALE:-1}" \
  --join-mode=external --inspect="$PROV inspect --cloud-config $WORK/cloud-config.yaml" \
  ${E2E_PHASES:+--phases="$E2E_PHASES"} --ca-log="$WORK/logs/cluster-autoscaler.log" --provider-metrics="http://127.0.0.1:$HTTP_PORT/metrics" \
  ${CA_ARGS:+--ca-restart="$WORK/restart-ca.sh"} 2>&1 | tee "$WORK/logs/harness.log"
HRC=${PIPESTATUS[0]}
counts="$(grep -Eo 'phases passed=[0-9]+ failed=[0-9]+' "$WORK/logs/harness.log" | tail -n 1)"
P=$(sed -E 's/.*passed=([0-9]+).*/\1/' <<<"$counts"); F=$(sed -E 's/.*failed=([0-9]+).*/\1/' <<<"$counts")
P=${P:-0}; F=${F:-1}
[ "$HRC" = 0 ] || [ "$F" != 0 ] || F=1
say "scenario took $(($(date +%s) - TS))s; whole run $(($(date +%s) - T0))s"
if [ "$MODE" = no-ca ]; then
  say "SKIPPED: the cluster-autoscaler-driven scenario. $SKIP_REASON"
fi
if [ "$F" = 0 ]; then RESULT=0; fi
echo "e2e: $P passed, $F failed, $SKIPPED skipped"
exit "$RESULT"
