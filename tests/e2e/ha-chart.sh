#!/usr/bin/env bash
# HA chart tier (issue 21): the Helm chart with its default availability settings (2 replicas,
# PodDisruptionBudget, rolling-update strategy, probes, the leader-label gRPC Service, RBAC),
# rendered with helm and applied with the real kubectl to a real control plane: etcd,
# kube-apiserver, kube-scheduler and kube-controller-manager v1.36.2 (deployment, replicaset,
# disruption and endpointslice controllers), kwok playing the kubelets of three Nodes. Checked:
#
#   1. install: `kubectl rollout status` completes (every healthy replica is Ready), exactly one
#      Pod carries the leader label, the PDB allows one disruption;
#   2. upgrade (a changed pod template) while cluster-autoscaler scales: rollout status completes;
#   3. `kubectl drain` of the leader's Node: the eviction is allowed (no 429 loop), the drain
#      completes, another replica leads;
#   4. through 2 and 3 the real cluster-autoscaler 1.36.1 (externalgrpc, mTLS, through the
#      Service) scales one node per wave of pending pods: every wave reaches Cloudify once, and
#      CA's log shows no failed scale-up.
#
# What is a stand-in (no container runtime here), in cmd/hachart: the provider pods' kubelet and
# runtime (the podlet runs `autoscaler-cloudify serve` per Pod on the host, from the Pod's args,
# env, ConfigMap and Secret volumes, and mirrors its readinessProbe into the Pod's status) and
# kube-proxy for the gRPC Service (connections go to the ready addresses of the EndpointSlices
# kube-controller-manager computes). The Nodes are kwok's; cert-manager is replaced by Secrets
# the script makes.
#
#   tests/e2e/ha-chart.sh        (E2E_KEEP=1 keeps .cache/ha-chart-run; CA_BIN=... a prebuilt CA)
# The last line is "ha-chart: N passed, N failed".
set -uo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E_DIR/../.." && pwd)"
export E2E_DIR
# shellcheck source=lib/controlplane.sh
source "$E2E_DIR/lib/controlplane.sh"

T0=$(date +%s)
say() { echo "ha-chart[$(($(date +%s) - T0))s]: $*"; }
WORK="$E2E_DIR/.cache/ha-chart-run"
NS=kube-system
REL=autoscaler-cloudify
# HA_CHART_DIR: another chart (e.g. an older release, to see this tier fail on it).
CHART="${HA_CHART_DIR:-$REPO/deploy/helm/autoscaler-cloudify}"
HELM="$REPO/tests/helm/.cache/bin/helm"
PROV="${AUTOSCALER_CLOUDIFY_BIN:-$REPO/target/debug/autoscaler-cloudify}"
passed=0; failed=0; RESULT=1
ok() { passed=$((passed + 1)); say "PASS  $*"; }
ko() { failed=$((failed + 1)); say "FAIL  $*"; }

finish() {
  if [ "$RESULT" != 0 ] && [ -d "$WORK/logs" ]; then
    for f in "$WORK"/logs/*.log; do
      [ -f "$f" ] || continue
      echo "================ $(basename "$f" .log) (last 30 lines) ================"
      tail -n 30 "$f"
    done
  fi
  cp_stop
  if [ "$RESULT" = 0 ] && [ "${E2E_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM
end() { echo "ha-chart: $passed passed, $failed failed"; [ "$failed" = 0 ] && RESULT=0; exit "$RESULT"; }
die() { ko "$*"; end; }

# ---------------------------------------------------------------- builds (cached)
TB=$(date +%s)
e2e_build etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl hachart || die "building the Kubernetes binaries"
set +e
# HA_CHART_SKIP_CA=1 (a debugging aid, never in CI) runs the rollout and drain phases without CA.
if [ "${HA_CHART_SKIP_CA:-0}" = 1 ]; then
  say "!!! HA_CHART_SKIP_CA=1: cluster-autoscaler and its waves are NOT run"
else
  e2e_build_ca || die "cluster-autoscaler: ${E2E_CA_ERROR:-unavailable}"
fi
set +e
if [ ! -x "$HELM" ]; then
  say "building helm (tests/helm/run.sh's pinned version)"
  bash "$REPO/tests/helm/run.sh" --install-helm >/dev/null || die "building helm"
fi
if [ -z "${AUTOSCALER_CLOUDIFY_BIN:-}" ]; then
  (cd "$REPO" && cargo build --quiet --bin autoscaler-cloudify) || die "cargo build"
fi
say "builds done in $(($(date +%s) - TB))s"
K="$E2E_BIN/kubectl"

# ---------------------------------------------------------------- control plane
rm -rf "$WORK" && mkdir -p "$WORK/logs"
cp_start "$WORK" || die "control plane did not start"
set +e
KC="$CP_KUBECONFIG"
kc() { "$K" --kubeconfig "$KC" "$@"; }
cp_spawn kube-controller-manager "$E2E_BIN/kube-controller-manager" --kubeconfig="$KC" \
  --controllers=deployment-controller,replicaset-controller,disruption-controller,endpointslice-controller \
  --leader-elect=false --secure-port=0 --use-service-account-credentials=false \
  --concurrent-deployment-syncs=2 --concurrent-replicaset-syncs=2 --v=2
cp_spawn kube-scheduler "$E2E_BIN/kube-scheduler" --kubeconfig="$KC" --leader-elect=false --secure-port=0 --v=1
KWOK_DIR="$(cd "$E2E_DIR" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" || die "locating the kwok module"
# Node stages only: kwok reports the three Nodes Ready; their pods are the podlet's.
cp "$KWOK_DIR/kustomize/stage/node/fast/node-initialize.yaml" "$WORK/kwok-stages.yaml"
cp_spawn kwok "$E2E_BIN/kwok" --kubeconfig="$KC" --config="$WORK/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=ha-chart \
  --manage-nodes-with-label-selector= --manage-single-node= --node-ip=10.0.0.1 --node-lease-duration-seconds=0
for i in 1 2 3; do
  cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: system-$i
  labels: {ha-chart.autoscaler-cloudify/role: system, kubernetes.io/hostname: system-$i, kubernetes.io/os: linux}
  annotations: {kwok.x-k8s.io/node: ha-chart}
status:
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}
---
NODE
done >"$WORK/nodes.yaml"
kc create -f "$WORK/nodes.yaml" >/dev/null || die "creating the Nodes"
kc wait --for=condition=Ready node -l ha-chart.autoscaler-cloudify/role=system --timeout=60s >/dev/null \
  || die "kwok did not make the Nodes Ready"

# ---------------------------------------------------------------- identities, certificates, simulator
user_kubeconfig() { # NAME CN ORG: a client certificate signed by the control plane's CA
  local name=$1 d="$WORK/pki"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/$name.key" 2>/dev/null &&
    openssl req -new -key "$d/$name.key" -subj "/CN=$2/O=$3" -out "$d/$name.csr" 2>/dev/null &&
    printf 'extendedKeyUsage=clientAuth\n' >"$d/$name.ext" &&
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 1 \
      -sha256 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null || return 1
  sed -e "s|client-certificate-data: .*|client-certificate-data: $(base64 -w0 <"$d/$name.crt")|" \
    -e "s|client-key-data: .*|client-key-data: $(base64 -w0 <"$d/$name.key")|" "$KC" >"$WORK/$name.kubeconfig"
}
# The chart's ServiceAccount: the provider pods get only what the chart's RBAC grants it.
user_kubeconfig provider "system:serviceaccount:$NS:$REL" system:serviceaccounts || die "provider identity"
GP="$WORK/grpc-pki"; mkdir -p "$GP"
(
  set -e; cd "$GP"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=ha-chart-grpc-ca" -out ca.crt
  for who in server client; do
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$who.key"
    openssl req -new -key "$who.key" -subj "/CN=ha-chart-$who" -out "$who.csr"
  done
  # CA dials the Service stand-in on 127.0.0.1; the chart's SAN (the Service name) is there too.
  printf 'subjectAltName=DNS:%s.%s.svc,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$REL" "$NS" >server.ext
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  for who in server client; do
    openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile "$who.ext" -out "$who.crt"
  done
) >"$WORK/logs/pki.log" 2>&1 || die "gRPC certificates"
for who in server client; do
  kc -n "$NS" create secret generic "ha-chart-$who-tls" --from-file=tls.crt="$GP/$who.crt" \
    --from-file=tls.key="$GP/$who.key" --from-file=ca.crt="$GP/ca.crt" >/dev/null || die "Secret ha-chart-$who-tls"
done
SIM_PORT=$(cp_free_port); FRONT=$(cp_free_port); CA_PORT=$(cp_free_port)
SIM="http://127.0.0.1:$SIM_PORT"
cp_spawn simulator "$PROV" simulator --listen "127.0.0.1:$SIM_PORT" --scenario "$E2E_DIR/config/ha-chart-scenario.yaml"
cp_wait_http simulator "$SIM/api/v3.1/deployments" 30 -u admin:admin -H "Tenant: default_tenant" || die "simulator"
sed "s#@SIM_URL@#$SIM#" "$E2E_DIR/config/ha-chart-values.yaml" >"$WORK/values.yaml"

# ---------------------------------------------------------------- the podlet and the Service stand-in
cp_spawn podlet "$E2E_BIN/hachart" podlet --kubeconfig "$KC" --sa-kubeconfig "$WORK/provider.kubeconfig" \
  --provider "$PROV" --workdir "$WORK" --front "127.0.0.1:$FRONT" --service "$REL"

render() { # OUT [helm args]: the chart as `helm install` would apply it (tests are helm's, not applied)
  local out=$1; shift
  "$HELM" template "$REL" "$CHART" --namespace "$NS" --kube-version 1.36.2 --skip-tests -f "$WORK/values.yaml" "$@" >"$out"
}
apply() { kc apply --server-side --field-manager=helm -f "$1" >>"$WORK/logs/apply.log" 2>&1; }
# The labelled pods that are not terminating (a terminating pod leaves the Service's ready
# endpoints whatever its labels; its process removes the label while it stops): "pod node".
leaders() {
  kc -n "$NS" get pods -l "autoscaler-cloudify.io/leader=true" \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.nodeName}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' |
    awk 'NF == 2'
}
wait_one_leader() { # SECONDS [NOT_PREFIX]: exactly one leader, whose name does not start with NOT_PREFIX
  local i l
  for ((i = 0; i < $1 * 4; i++)); do
    l=$(leaders)
    if [ "$(grep -c . <<<"$l")" = 1 ] && { [ -z "${2:-}" ] || [[ "$l" != "$2"* ]]; }; then echo "$l"; return 0; fi
    sleep 0.25
  done
  echo "leader-labelled pods: [$l]" >&2
  return 1
}
timed() { # NAME SECONDS CMD...: run, print its time
  local name=$1 limit=$2 t0 rc; shift 2
  t0=$(date +%s.%N)
  timeout "$limit" "$@" >"$WORK/logs/$name.log" 2>&1; rc=$?
  LAST_TIME=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
  sed "s/^/    $name: /" "$WORK/logs/$name.log" | tail -n 8
  return $rc
}

# ---------------------------------------------------------------- 1. install
render "$WORK/v1.yaml" || die "helm template"
apply "$WORK/v1.yaml" || { cat "$WORK/logs/apply.log"; die "kubectl apply of the rendered chart"; }
if timed rollout-install 120 "$K" --kubeconfig "$KC" -n "$NS" rollout status "deploy/$REL" --timeout=110s; then
  ok "install: kubectl rollout status completed in ${LAST_TIME}s (both replicas Ready, Deployment Available)"
else
  ko "install: kubectl rollout status did not complete"; end
fi
L=$(wait_one_leader 30) && ok "install: exactly one Pod carries the leader label ($L)" || ko "install: no single leader label"
PDB_OK=0
for _ in $(seq 1 40); do
  [ "$(kc -n "$NS" get pdb "$REL" -o jsonpath='{.status.disruptionsAllowed}')" = 1 ] && { PDB_OK=1; break; }
  sleep 0.25
done
[ $PDB_OK = 1 ] && ok "install: the PodDisruptionBudget allows 1 disruption ($(kc -n "$NS" get pdb "$REL" -o jsonpath='{.spec}'))" \
  || ko "install: PodDisruptionBudget status $(kc -n "$NS" get pdb "$REL" -o jsonpath='{.status}')"

# ---------------------------------------------------------------- cluster-autoscaler + waves
cat >"$WORK/cloud-config.yaml" <<CC
address: "127.0.0.1:$FRONT"
cert: "$GP/client.crt"
key: "$GP/client.key"
cacert: "$GP/ca.crt"
grpc_timeout: 10s
CC
WAVES_PID=""
if [ "${HA_CHART_SKIP_CA:-0}" != 1 ]; then
cp_spawn cluster-autoscaler "$CA_BIN" --cloud-provider=externalgrpc --cloud-config="$WORK/cloud-config.yaml" \
  --kubeconfig="$KC" --leader-elect=false --namespace="$NS" --address="127.0.0.1:$CA_PORT" \
  --scan-interval=2s --scale-down-enabled=false --max-node-provision-time=15m \
  --skip-nodes-with-system-pods=false --v=4
cp_wait_http cluster-autoscaler "http://127.0.0.1:$CA_PORT/health-check" 60 || die "cluster-autoscaler not healthy"
WAVES=${HA_CHART_WAVES:-9}
cp_spawn waves "$E2E_BIN/hachart" waves --kubeconfig "$KC" --cloudify-url "$SIM" --deployment ha-pool --group workers \
  --node-selector ha-chart.autoscaler-cloudify/pool=workers --count "$WAVES" --every 6s --timeout 90s
WAVES_PID=$(cat "$WORK/logs/waves.pid")
sleep 4
fi

# ---------------------------------------------------------------- 2. upgrade while CA scales
render "$WORK/v2.yaml" --set-string "podAnnotations.ha-chart/revision=2" || die "helm template (upgrade)"
OLD_RS=$(kc -n "$NS" get rs -l app.kubernetes.io/name=autoscaler-cloudify -o jsonpath='{.items[*].metadata.name}')
apply "$WORK/v2.yaml" || { cat "$WORK/logs/apply.log"; die "kubectl apply of the upgrade"; }
if timed rollout-upgrade 150 "$K" --kubeconfig "$KC" -n "$NS" rollout status "deploy/$REL" --timeout=140s; then
  ok "upgrade: kubectl rollout status completed in ${LAST_TIME}s"
else
  ko "upgrade: kubectl rollout status did not complete (pods: $(kc -n "$NS" get pods -o wide 2>&1 | tr '\n' ';'))"
fi
L=$(wait_one_leader 30 "$OLD_RS-") \
  && ok "upgrade: one leader again, a pod of the new ReplicaSet ($L; old ReplicaSet: $OLD_RS)" \
  || ko "upgrade: no single leader of the new ReplicaSet ($L; old ReplicaSet: $OLD_RS)"

# ---------------------------------------------------------------- 3. drain the leader's Node
LNODE=$(awk '{print $2}' <<<"$L")
LPOD=$(awk '{print $1}' <<<"$L")
if timed drain 150 "$K" --kubeconfig "$KC" drain "$LNODE" --ignore-daemonsets --delete-emptydir-data --timeout=140s; then
  ok "drain of the leader's Node $LNODE completed in ${LAST_TIME}s"
else
  ko "drain of the leader's Node $LNODE did not complete"
fi
if grep -q "Cannot evict pod as it would violate the pod's disruption budget" "$WORK/logs/drain.log"; then
  ko "drain: the eviction of the leader was refused (429) at least once"
else
  ok "drain: the leader's eviction was allowed at once (no 429)"
fi
L2=$(wait_one_leader 30 "$LPOD") \
  && ok "drain: another replica leads ($L2)" || ko "drain: no new leader (was $LPOD)"
kc uncordon "$LNODE" >/dev/null
timed rollout-after-drain 90 "$K" --kubeconfig "$KC" -n "$NS" rollout status "deploy/$REL" --timeout=80s \
  && ok "after the drain: the Deployment is Available again in ${LAST_TIME}s" || ko "after the drain: rollout status"

# ---------------------------------------------------------------- 4. CA kept scaling
[ -n "$WAVES_PID" ] || end
while kill -0 "$WAVES_PID" 2>/dev/null; do sleep 1; done
if [ -f "$WORK/logs/waves.log" ] && grep -q '^FIGURE ha-chart' "$WORK/logs/waves.log"; then
  sed 's/^/    waves: /' "$WORK/logs/waves.log" | grep -E 'wave [0-9]+:|FIGURE'
  ok "cluster-autoscaler scaled every wave through the rollout and the drain ($(grep '^FIGURE' "$WORK/logs/waves.log" | cut -d: -f2-))"
else
  sed 's/^/    waves: /' "$WORK/logs/waves.log" | tail -n 15
  ko "cluster-autoscaler did not scale every wave"
fi
CALOG="$WORK/logs/cluster-autoscaler.log"
grep -E '^E[0-9]{4}' "$CALOG" | grep -Ei 'externalgrpc|rpc error|node ?group|increase' >"$WORK/ca-errors.txt"
FAILED_UP=$(grep -ciE 'failed to increase|ScaleUp.*failed|backoff' "$WORK/ca-errors.txt")
say "cluster-autoscaler: $(grep -c 'Starting main loop' "$CALOG") loops, $(grep -c . "$WORK/ca-errors.txt") error lines naming the provider"
sed 's/^/    CA: /' "$WORK/ca-errors.txt" | head -n 10
[ "$FAILED_UP" = 0 ] && ok "cluster-autoscaler: no failed scale-up and no backoff" || ko "cluster-autoscaler: $FAILED_UP failed scale-up lines"

# ---------------------------------------------------------------- 5. Events an operator sees
# A scale-out Cloudify fails: the leader records a Warning ScaleOutFailed on the Lease, where
# `kubectl describe lease` shows it (src/kube/events.rs).
curl -fsS -u admin:admin -H "Tenant: default_tenant" -H 'Content-Type: application/json' \
  -X POST -d '{"fail_next_executions": 1}' "$SIM/_sim/faults" >/dev/null || ko "simulator fault"
"$E2E_BIN/hachart" waves --kubeconfig "$KC" --cloudify-url "$SIM" --deployment ha-pool --group workers \
  --node-selector ha-chart.autoscaler-cloudify/pool=workers --count 1 --first "$((WAVES + 1))" --timeout 1s \
  >"$WORK/logs/wave-fail.log" 2>&1
EV=""
for _ in $(seq 1 120); do
  EV=$(kc describe lease -n "$NS" "$REL" 2>/dev/null | sed -n '/^Events:/,$p')
  grep -q "ScaleOutFailed" <<<"$EV" && break
  sleep 0.5
done
sed 's/^/    /' <<<"$EV"
grep -q "ScaleOutFailed" <<<"$EV" && ok "events: kubectl describe lease shows the failed scale-out (Warning ScaleOutFailed)" \
  || ko "events: no ScaleOutFailed Event on the Lease"
end
