#!/usr/bin/env bash
# Helm tier: lint and render deploy/helm/autoscaler-cloudify with two values sets, check the
# rendered objects and the committed plain manifests, then validate every rendered object against
# a real kube-apiserver with a server-side dry-run (offline: CRDs for cert-manager and the
# Prometheus Operator come from tests/helm/crds/, applied for real first).
#
#   bash tests/helm/run.sh                    the tier (prints "N passed, N failed", exit 1 on failure)
#   bash tests/helm/run.sh --update-manifests re-render deploy/manifests/ from the chart and exit
#
# Environment:
#   HELM_TIER_SKIP_DRYRUN=1   skip the dry-run, loudly, but ONLY when the control-plane binaries
#                             (etcd, kube-apiserver) are not already built; by default they are
#                             built with tests/e2e/lib/build.sh (cached under tests/e2e/.cache).
#   HELM_CP_BIN=<dir>         use etcd and kube-apiserver from this directory.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CHART=$ROOT/deploy/helm/autoscaler-cloudify
CACHE=$HERE/.cache
BIN=$CACHE/bin
OUT=$CACHE/out
# helm is built from the Go module proxy (no other download is reachable). v3.19.0's module has no
# replace directives, so `go install …@v3.19.0` works.
HELM_VERSION=v3.19.0
# A `go install`ed helm has no version stamps and would default to Kubernetes v1.20; render for
# the version the e2e control plane runs.
KUBE_VERSION=1.36.2
NAMESPACE=kube-system
RELEASE=autoscaler-cloudify
MANIFEST=$ROOT/deploy/manifests/autoscaler-cloudify.yaml

mkdir -p "$BIN" "$OUT"
HELM=$BIN/helm
passed=0
failed=0
skipped=0

ok() { passed=$((passed + 1)); echo "PASS  $*"; }
ko() { failed=$((failed + 1)); echo "FAIL  $*"; }

# check NAME CMD...: run CMD, count it, show the end of its output on failure.
check() {
  local name=$1 log
  shift
  log="$OUT/$(echo "$name" | tr -c 'A-Za-z0-9._-' '_').log"
  if "$@" >"$log" 2>&1; then ok "$name"; else ko "$name"; tail -n 25 "$log" | sed 's/^/      /'; fi
}

install_helm() {
  if [ -x "$HELM" ] && [ "$(cat "$BIN/helm.version" 2>/dev/null)" = "$HELM_VERSION" ]; then
    return 0
  fi
  command -v go >/dev/null || { echo "helm tier: go toolchain not found (needed to build helm)" >&2; return 1; }
  echo "helm tier: building helm $HELM_VERSION with go install (a few minutes, once)"
  local t0
  t0=$(date +%s)
  GOBIN=$BIN GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || return 1
  echo "$HELM_VERSION" >"$BIN/helm.version"
  echo "helm tier: helm built in $(($(date +%s) - t0)) s"
}

render() { # render OUTFILE [helm template args...]
  local out=$1
  shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@" >"$out"
}

# The chart's defaults plus the one value it has no default for (which node groups to manage).
MIN_VALUES=$HERE/values-min.yaml

render_manifests() {
  {
    echo "# Plain manifests for kubectl users, rendered from deploy/helm/autoscaler-cloudify with"
    echo "# default values (namespace $NAMESPACE, release $RELEASE). Do not edit: regenerate with"
    echo "#   bash tests/helm/run.sh --update-manifests"
    echo "# Requires cert-manager. Before applying, put the Cloudify password into the Secret"
    echo "# autoscaler-cloudify-cloudify (key: password) and edit the ConfigMap autoscaler-cloudify"
    echo "# (config.yaml: cloudify url/tenant/username, node_groups). See docs/configuration.md."
    echo "# The node groups below (config.yaml: node_groups.auto_discovery) are a placeholder: the chart"
    echo "# has no default for them (tests/helm/values-min.yaml)."
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" --skip-tests -f "$MIN_VALUES"
  }
}

# --- structural checks on rendered output (plain text: no YAML tool needed) -------------------

# doc_of FILE KIND NAME: print the rendered document of that kind and name.
doc_of() {
  awk -v kind="$2" -v name="$3" '
    /^---/ { if (k == kind && n == name) printf "%s", buf; buf = ""; k = ""; n = ""; inmeta = 0; next }
    { buf = buf $0 "\n" }
    /^kind: / { k = $2 }
    /^metadata:/ { inmeta = 1; next }
    inmeta && /^  name: / && n == "" { n = $2 }
    /^[a-z]/ && !/^metadata:/ { inmeta = 0 }
    END { if (k == kind && n == name) printf "%s", buf }
  ' "$1"
}

count_kind() { grep -c "^kind: $2\$" "$1" || true; }

expect_kinds() { # FILE "Kind=N ..."
  local f=$1 spec k n got rc=0
  for spec in $2; do
    k=${spec%=*}
    n=${spec#*=}
    got=$(count_kind "$f" "$k")
    if [ "$got" != "$n" ]; then echo "kind $k: want $n, got $got"; rc=1; fi
  done
  return $rc
}

expect_in() { # TEXT PATTERN... (fixed strings)
  local text=$1 p rc=0
  shift
  for p in "$@"; do
    if ! grep -qF -- "$p" <<<"$text"; then echo "missing: $p"; rc=1; fi
  done
  return $rc
}

check_default_render() {
  local f=$OUT/default.yaml dep cc cert host
  expect_kinds "$f" "Deployment=1 Service=2 ServiceAccount=1 ConfigMap=2 Secret=1 Certificate=3 Issuer=2 NetworkPolicy=1 PodDisruptionBudget=1 ServiceMonitor=0 PrometheusRule=0 Pod=1 Role=1 RoleBinding=1 ClusterRole=1 ClusterRoleBinding=1" || return 1
  # The node controller's RBAC (issue 15): nodes, nodes/status, events; the token is mounted for it.
  expect_in "$(doc_of "$f" ClusterRole autoscaler-cloudify-nodes)" '"watch", "patch", "delete"' 'resources: ["nodes/status"]' \
    'resources: ["events"]' || return 1
  expect_in "$(doc_of "$f" ClusterRoleBinding autoscaler-cloudify-nodes)" "name: autoscaler-cloudify" "namespace: kube-system" || return 1
  dep=$(doc_of "$f" Deployment autoscaler-cloudify)
  expect_in "$dep" "runAsNonRoot: true" "readOnlyRootFilesystem: true" "allowPrivilegeEscalation: false" \
    "- ALL" "path: /healthz" "path: /readyz" "port: http" "containerPort: 8086" "containerPort: 8087" \
    "- --config=/etc/autoscaler-cloudify/config/config.yaml" "secretName: autoscaler-cloudify-server-tls" \
    "- --node-controller=true" "automountServiceAccountToken: true" || return 1
  cc=$(doc_of "$f" ConfigMap autoscaler-cloudify-cloud-config)
  expect_in "$cc" 'address: "autoscaler-cloudify.kube-system.svc:8086"' \
    'cert: "/etc/autoscaler-cloudify/client-tls/tls.crt"' 'key: "/etc/autoscaler-cloudify/client-tls/tls.key"' \
    'cacert: "/etc/autoscaler-cloudify/client-tls/ca.crt"' 'grpc_timeout: "10s"' || return 1
  # CA sets the TLS ServerName to the address host: it must be a SAN of the server certificate.
  host=$(sed -n 's/.*address: "\([^:]*\):.*/\1/p' <<<"$cc")
  cert=$(doc_of "$f" Certificate autoscaler-cloudify-server)
  expect_in "$cert" "- $host" "server auth" "name: autoscaler-cloudify-ca" || return 1
  expect_in "$(doc_of "$f" Certificate autoscaler-cloudify-client)" "client auth" "secretName: autoscaler-cloudify-client-tls" || return 1
  expect_in "$(doc_of "$f" Certificate autoscaler-cloudify-ca)" "isCA: true" "name: autoscaler-cloudify-selfsigned" || return 1
  expect_in "$(doc_of "$f" ConfigMap autoscaler-cloudify)" 'listen: "[::]:8086"' 'listen: "[::]:8087"' \
    "client_ca_file: /etc/autoscaler-cloudify/tls/ca.crt" "cloudify:label=k8s-cluster=my-cluster" \
    "provider_id_template: cloudify://{tenant}/{deployment}/{vm_instance}" || return 1
  # gRPC to the leader only (issue 21); metrics from every provider pod.
  expect_in "$(doc_of "$f" Service autoscaler-cloudify)" "port: 8086" "name: grpc" 'autoscaler-cloudify.io/leader: "true"' \
    "app.kubernetes.io/component: provider" || return 1
  ! grep -q "8087" <<<"$(doc_of "$f" Service autoscaler-cloudify)" || { echo "gRPC Service has the metrics port"; return 1; }
  expect_in "$(doc_of "$f" Service autoscaler-cloudify-metrics)" "port: 8087" "name: http-metrics" \
    "app.kubernetes.io/component: provider" || return 1
  ! grep -q "leader" <<<"$(doc_of "$f" Service autoscaler-cloudify-metrics)" || { echo "metrics Service selects the leader only"; return 1; }
  expect_in "$(doc_of "$f" NetworkPolicy autoscaler-cloudify)" 'autoscaler-cloudify.io/client: "true"' \
    "port: grpc" "port: http" "kubernetes.io/metadata.name: monitoring" || return 1
  # High availability (issue #13): two replicas on a Lease, spread over nodes, one always up.
  expect_in "$dep" "replicas: 2" "automountServiceAccountToken: true" "podAntiAffinity:" \
    "topologyKey: kubernetes.io/hostname" "fieldPath: metadata.name" "name: POD_NAME" \
    "name: POD_NAMESPACE" "maxSurge: 1" "maxUnavailable: 0" || return 1
  # As the upstream cluster-autoscaler chart: one pod at a time may be evicted.
  expect_in "$(doc_of "$f" PodDisruptionBudget autoscaler-cloudify)" "maxUnavailable: 1" || return 1
  expect_in "$(doc_of "$f" ConfigMap autoscaler-cloudify)" "enabled: true" "name: autoscaler-cloudify" \
    "namespace: kube-system" "duration: 15s" "renew_deadline: 10s" "renew_period: 4s" \
    'leader_label: "autoscaler-cloudify.io/leader"' || return 1
  expect_in "$(doc_of "$f" Role autoscaler-cloudify-lease)" "coordination.k8s.io" "leases" \
    'resourceNames: ["autoscaler-cloudify"]' 'verbs: ["create"]' '"watch", "update", "patch"' \
    'resources: ["pods"]' 'verbs: ["patch"]' || return 1
  expect_in "$(doc_of "$f" RoleBinding autoscaler-cloudify-lease)" "kind: ServiceAccount" \
    "name: autoscaler-cloudify-lease" || return 1
}

check_ci_render() {
  local f=$OUT/ci.yaml dep
  # existingSecret → no Secret; external ClusterIssuer → no chart Issuers/CA certificate.
  expect_kinds "$f" "Deployment=1 Secret=0 Certificate=2 Issuer=0 ServiceMonitor=1 PodDisruptionBudget=1 PrometheusRule=1" || return 1
  dep=$(doc_of "$f" Deployment cloudify-provider)
  expect_in "$dep" "replicas: 2" "name: cloudify-credentials" "key: edge-token" "name: CLOUDIFY_EDGE_TOKEN" \
    "secretName: cloudify-manager-ca" "mountPath: /etc/autoscaler-cloudify/cloudify-ca" '- "--log-format=json"' \
    "priorityClassName: system-cluster-critical" || return 1
  expect_in "$(doc_of "$f" Certificate cloudify-provider-server)" "kind: ClusterIssuer" "name: corporate-ca" \
    "- cloudify-provider.kube-system.svc" "- autoscaler-provider.example.internal" || return 1
  expect_in "$(doc_of "$f" ServiceMonitor cloudify-provider)" "port: http-metrics" "release: kube-prometheus-stack" "interval: 15s" || return 1
  expect_in "$(doc_of "$f" PodDisruptionBudget cloudify-provider)" "minAvailable: 1" || return 1
  expect_in "$(doc_of "$f" PrometheusRule cloudify-provider)" "AutoscalerCloudifyNoLeader" "release: kube-prometheus-stack" \
    'namespace="kube-system", job="autoscaler-cloudify"' || return 1
  expect_in "$(doc_of "$f" ConfigMap cloudify-provider-dashboard)" 'grafana_dashboard: "1"' "autoscaler-cloudify.json" || return 1
  expect_in "$(doc_of "$f" ConfigMap cloudify-provider-cloud-config)" 'address: "cloudify-provider.kube-system.svc:8086"' 'grpc_timeout: "15s"' || return 1
  expect_in "$(doc_of "$f" ConfigMap cloudify-provider)" "main:k8s-pool-a/workers" "token_env: CLOUDIFY_EDGE_TOKEN" \
    "scale_down_unneeded_time: 20s" "effect: NoSchedule" || return 1
}

check_bad_values_rejected() {
  local out
  # The chart owns grpc/http/lease: a user value there must fail the render, not be silently ignored.
  out=$("$HELM" template x "$CHART" --kube-version "$KUBE_VERSION" -f "$MIN_VALUES" --set config.grpc.listen=0.0.0.0:1 2>&1) && return 1
  grep -q "config.grpc is written by the chart" <<<"$out" || { echo "$out"; return 1; }
  out=$("$HELM" template x "$CHART" --kube-version "$KUBE_VERSION" -f "$MIN_VALUES" --set config.lease.enabled=false 2>&1) && return 1
  grep -q "config.lease" <<<"$out" || { echo "$out"; return 1; }
  # Two replicas without a leader could together scale past max (issue #13).
  out=$("$HELM" template x "$CHART" --kube-version "$KUBE_VERSION" -f "$MIN_VALUES" --set leaderElection.enabled=false 2>&1) && return 1
  grep -q "replicaCount > 1 needs leaderElection.enabled" <<<"$out" || { echo "$out"; return 1; }
  # One replica without the election renders (and its gRPC Service then selects the one pod).
  out=$("$HELM" template x "$CHART" --kube-version "$KUBE_VERSION" -f "$MIN_VALUES" --set leaderElection.enabled=false \
    --set replicaCount=1) || return 1
  ! grep -q "autoscaler-cloudify.io/leader" <<<"$(doc_of /dev/stdin Service x-autoscaler-cloudify <<<"$out")"
}

tpl() { "$HELM" template x "$CHART" --kube-version "$KUBE_VERSION" "$@"; }

check_schema_rejects_typos() {
  local out spec
  # key=value of a typo → the word the error must contain
  for spec in "replicaCont=3|replicaCont" "podDisruptionBudget.minAvailble=1|minAvailble" \
    "leaderElection.duraton=15s|duraton" "config.node_group.static[0]=1:2:d/g|node_group" \
    "networkPolicy.grpc.podSelectr.app=ca|podSelectr"; do
    if out=$(tpl -f "$MIN_VALUES" --set "${spec%%|*}" 2>&1); then echo "accepted: ${spec%%|*}"; return 1; fi
    grep -q "values don't meet the specifications of the schema" <<<"$out" && grep -q "${spec##*|}" <<<"$out" \
      || { echo "${spec%%|*}: $out"; return 1; }
  done
  for spec in "replicaCount=two" "leaderElection.duration=15 seconds" "podAntiAffinity=strict" "image.pullPolicy=always"; do
    if out=$(tpl -f "$MIN_VALUES" --set "$spec" 2>&1); then echo "accepted: $spec"; return 1; fi
    grep -q "schema" <<<"$out" || { echo "$spec: $out"; return 1; }
  done
}

# helm install against the local kube-apiserver (server-side dry run): a typo fails on the schema
# there too, and the chart installs with valid values, NOTES included.
check_helm_install() {
  local out
  out=$("$HELM" install x "$CHART" --kubeconfig "$CP_KUBECONFIG" -n "$NAMESPACE" --dry-run=server \
    -f "$MIN_VALUES" --set replicaCont=3 2>&1) && { echo "installed with a typo"; return 1; }
  grep -q "additional properties 'replicaCont' not allowed" <<<"$out" || { echo "$out"; return 1; }
  out=$("$HELM" install x "$CHART" --kubeconfig "$CP_KUBECONFIG" -n "$NAMESPACE" --dry-run=server \
    -f "$MIN_VALUES" 2>&1) || { echo "$out" | tail -n 20; return 1; }
  expect_in "$(sed -n '/^NOTES:/,$p' <<<"$out")" "x-autoscaler-cloudify-metrics.$NAMESPACE.svc:8087" \
    "autoscaler-cloudify.io/leader=true" 'autoscaler-cloudify.io/client":"true"'
}

check_groups_required() {
  local out
  out=$(tpl 2>&1) && { echo "rendered without node groups"; return 1; }
  grep -q "config.node_groups.static" <<<"$out" && grep -q "config.node_groups.auto_discovery" <<<"$out" || { echo "$out"; return 1; }
}

check_static_groups_alone() {
  local f=$OUT/static.yaml cfg
  tpl --set 'config.node_groups.static[0]=1:5:k8s-pool-a/workers' >"$f" || return 1
  cfg=$(doc_of "$f" ConfigMap x-autoscaler-cloudify)
  expect_in "$cfg" "1:5:k8s-pool-a/workers" "auto_discovery: []" || return 1
  ! grep -q "k8s-cluster" <<<"$cfg" || { echo "a discovery rule nobody asked for: $cfg"; return 1; }
}

check_netpol_selector_replaces() {
  local f=$OUT/netpol.yaml np
  tpl -f "$MIN_VALUES" --set 'networkPolicy.grpc.podSelector.matchLabels.app\.kubernetes\.io/name=my-ca' >"$f" || return 1
  np=$(doc_of "$f" NetworkPolicy x-autoscaler-cloudify)
  expect_in "$np" "app.kubernetes.io/name: my-ca" || return 1
  ! grep -q "autoscaler-cloudify.io/client" <<<"$np" || { echo "the default selector is still ANDed: $np"; return 1; }
  # The helm test pod carries the custom client label, so the policy admits it.
  expect_in "$(doc_of "$f" Pod x-autoscaler-cloudify-test-connection)" "app.kubernetes.io/name: my-ca"
}

check_pdb_and_strategy() {
  local f=$OUT/pdb.yaml out
  tpl -f "$MIN_VALUES" --set replicaCount=1 >"$f" || return 1
  expect_in "$(doc_of "$f" PodDisruptionBudget x-autoscaler-cloudify)" "maxUnavailable: 1" || return 1
  expect_in "$(doc_of "$f" Deployment x-autoscaler-cloudify)" "replicas: 1" "maxSurge: 1" "maxUnavailable: 0" || return 1
  tpl -f "$MIN_VALUES" --set replicaCount=4 >"$f" || return 1
  expect_in "$(doc_of "$f" Deployment x-autoscaler-cloudify)" "replicas: 4" "maxUnavailable: 1" || return 1
  # A budget that refuses every eviction hangs `kubectl drain` (issue 21): refused with the reason.
  out=$(tpl -f "$MIN_VALUES" --set podDisruptionBudget.minAvailable=2 2>&1) && { echo "minAvailable 2 of 2 rendered"; return 1; }
  grep -q "must be below replicaCount" <<<"$out" || { echo "$out"; return 1; }
  tpl -f "$MIN_VALUES" --set-string podDisruptionBudget.minAvailable=100% >/dev/null 2>&1 && { echo "minAvailable 100% rendered"; return 1; }
  tpl -f "$MIN_VALUES" --set replicaCount=3 --set podDisruptionBudget.minAvailable=2 >"$f" || return 1
  expect_in "$(doc_of "$f" PodDisruptionBudget x-autoscaler-cloudify)" "minAvailable: 2"
}

check_test_pod_unselected() {
  python3 - "$OUT/default.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pod = next(d for d in docs if d["kind"] == "Pod")
labels = pod["metadata"]["labels"]
def selects(sel):
    return sel and all(labels.get(k) == v for k, v in sel.items())
bad = []
for d in docs:
    k, n = d["kind"], d["metadata"]["name"]
    if k == "Service" and selects(d["spec"]["selector"]): bad.append(f"{k}/{n}")
    if k == "PodDisruptionBudget" and selects(d["spec"]["selector"]["matchLabels"]): bad.append(f"{k}/{n}")
    if k == "NetworkPolicy" and selects(d["spec"]["podSelector"]["matchLabels"]): bad.append(f"{k}/{n}")
    if k == "Deployment" and selects(d["spec"]["selector"]["matchLabels"]): bad.append(f"{k}/{n}")
print("test pod labels:", labels)
if bad:
    print("selected by:", bad); sys.exit(1)
PY
}

check_listen_addresses() {
  local a want
  for a in "0.0.0.0|0.0.0.0:8086" "::|[::]:8086" "[::]|[::]:8086"; do
    want=${a##*|}
    tpl -f "$MIN_VALUES" --set "listenAddress=${a%%|*}" | grep -qF "listen: \"$want\"" || { echo "listenAddress=${a%%|*}: no $want"; return 1; }
  done
}

check_queries_use_exported_metrics() {
  # Every autoscaler_cloudify_* series the rule and the dashboard query is registered in
  # metrics.rs (counters get _total, histograms _bucket/_sum/_count).
  local used registered m base missing=0
  used=$( { doc_of "$OUT/ci.yaml" PrometheusRule cloudify-provider; cat "$CHART/dashboards/autoscaler-cloudify.json"; } |
    grep -oE 'autoscaler_cloudify_[a-z_]+' | sort -u)
  registered=$(grep -oE '^ *"[a-z_]+",' "$ROOT/src/observability/metrics.rs" | tr -d ' ",')
  [ -n "$used" ] || { echo "no query found"; return 1; }
  for m in $used; do
    base=${m#autoscaler_cloudify_}
    base=$(sed -E 's/_(total|bucket|sum|count)$//' <<<"$base")
    grep -qx "$base" <<<"$registered" || { echo "not exported: $m"; missing=1; }
  done
  echo "$(wc -w <<<"$used") metric names checked"
  return $missing
}

check_ca_values_wiring() {
  # deploy/cluster-autoscaler-values.yaml must mount exactly what the chart renders by default.
  local v
  v=$(cat "$ROOT/deploy/cluster-autoscaler-values.yaml") || return 1
  expect_in "$v" "cloudProvider: externalgrpc" "cloud-config: /etc/autoscaler-cloudify/cloud-config/cloud-config" \
    "name: autoscaler-cloudify-cloud-config" "secretName: autoscaler-cloudify-client-tls" \
    "mountPath: /etc/autoscaler-cloudify/cloud-config" "mountPath: /etc/autoscaler-cloudify/client-tls" \
    'autoscaler-cloudify.io/client: "true"'
}

check_manifests_current() {
  render_manifests >"$OUT/manifests.yaml" || return 1
  diff -u "$MANIFEST" "$OUT/manifests.yaml"
}

# --- server-side dry-run against a local kube-apiserver ---------------------------------------
# The control plane (etcd + kube-apiserver v1.36.2, admin client certificate) comes from the e2e
# tier's library, tests/e2e/lib/controlplane.sh (cp_build / cp_start / cp_stop), whose binaries are
# built from the Go module proxy by tests/e2e/lib/build.sh and cached under tests/e2e/.cache.
# Every object is POSTed with dryRun=All and fieldValidation=Strict, one counted result each, so
# kube-apiserver's own validation (and admission) judges the chart. If the library's kubectl-lite is
# built, the whole rendered file also goes through `kubectl-lite apply --dry-run=server`.

CP_LIB=$ROOT/tests/e2e/lib/controlplane.sh
CP_READY=0
CP_WORK=""

cleanup() {
  local pids=("${CP_PIDS[@]:-}") p
  if declare -F cp_stop >/dev/null; then
    # Reap the processes here, quietly: bash would otherwise report a force-killed job as "Killed".
    { cp_stop; for p in "${pids[@]}"; do [ -n "$p" ] && wait "$p"; done; } >/dev/null 2>&1
  fi
  [ -n "$CP_WORK" ] && rm -rf "$CP_WORK"
}
trap cleanup EXIT

# find_cp_bins: 0 = binaries ready (E2E_BIN), 1 = error, 2 = skip (allowed by HELM_TIER_SKIP_DRYRUN=1).
find_cp_bins() {
  if [ ! -f "$CP_LIB" ]; then
    [ "${HELM_TIER_SKIP_DRYRUN:-}" = "1" ] && return 2
    echo "helm tier: $CP_LIB not found (it starts the control plane)" >&2
    return 1
  fi
  # shellcheck source=/dev/null
  source "$CP_LIB" || return 1
  set +e # the library's build.sh sets -e for its own direct runs; this tier counts failures itself
  if [ -n "${HELM_CP_BIN:-}" ]; then
    E2E_BIN=$HELM_CP_BIN
  else
    E2E_BIN="$ROOT/tests/e2e/.cache/bin/$(e2e_bin_key)"
  fi
  export E2E_BIN
  if [ -x "$E2E_BIN/etcd" ] && [ -x "$E2E_BIN/kube-apiserver" ]; then return 0; fi
  [ "${HELM_TIER_SKIP_DRYRUN:-}" = "1" ] && return 2
  echo "helm tier: building etcd and kube-apiserver with tests/e2e/lib/build.sh (cached afterwards)"
  e2e_build etcd kube-apiserver || return 1
  set +e
  [ -x "$E2E_BIN/etcd" ] && [ -x "$E2E_BIN/kube-apiserver" ]
}

start_control_plane() {
  CP_WORK=$(mktemp -d "${TMPDIR:-/tmp}/helm-tier-cp.XXXXXX")
  cp_start "$CP_WORK" || return 1
  set +e
  API=$CP_APISERVER_URL
  CP_READY=1
  echo "helm tier: kube-apiserver ready at $API"
}

kcurl() {
  curl -s --max-time 30 --cacert "$CP_DIR/pki/ca.crt" --cert "$CP_DIR/pki/admin.crt" --key "$CP_DIR/pki/admin.key" "$@"
}

# api_path APIVERSION KIND NAMESPACE: the collection URL path for a kind we render.
api_path() {
  local av=$1 kind=$2 ns=$3 plural base
  case $kind in
    ServiceAccount) plural=serviceaccounts ;;
    Secret) plural=secrets ;;
    ConfigMap) plural=configmaps ;;
    Service) plural=services ;;
    Pod) plural=pods ;;
    Deployment) plural=deployments ;;
    NetworkPolicy) plural=networkpolicies ;;
    PodDisruptionBudget) plural=poddisruptionbudgets ;;
    Certificate) plural=certificates ;;
    Issuer) plural=issuers ;;
    ClusterIssuer) plural=clusterissuers ;;
    ServiceMonitor) plural=servicemonitors ;;
    PrometheusRule) plural=prometheusrules ;;
    Role) plural=roles ;;
    RoleBinding) plural=rolebindings ;;
    ClusterRole) plural=clusterroles ;;
    ClusterRoleBinding) plural=clusterrolebindings ;;
    CustomResourceDefinition) plural=customresourcedefinitions ;;
    ClusterRole) plural=clusterroles ;;
    ClusterRoleBinding) plural=clusterrolebindings ;;
    *) return 1 ;;
  esac
  if [ "$av" = v1 ]; then base=/api/v1; else base=/apis/$av; fi
  case $kind in
    CustomResourceDefinition | ClusterIssuer | ClusterRole | ClusterRoleBinding) echo "$base/$plural" ;;
    *) echo "$base/namespaces/$ns/$plural" ;;
  esac
}

# split_docs FILE DIR: one file per YAML document that has a kind.
split_docs() {
  rm -rf "$2"
  mkdir -p "$2"
  awk -v dir="$2" '
    function flush() { if (buf ~ /\nkind: / || buf ~ /^kind: /) { n++; f = sprintf("%s/%03d.yaml", dir, n); printf "%s", buf > f; close(f) } buf = "" }
    /^---/ { flush(); next }
    { buf = buf $0 "\n" }
    END { flush() }
  ' "$1"
}

doc_label() { # FILE: Kind/name
  echo "$(sed -n 's/^kind: *//p' "$1" | head -n1)/$(awk '/^metadata:/{m=1;next} m&&/^  name: /{print $2; exit} /^[a-z]/{m=0}' "$1")"
}

# post_doc FILE QUERY: POST one document (YAML body) and print the HTTP code; body to FILE.out.
post_doc() {
  local f=$1 query=$2 av kind ns path
  av=$(sed -n 's/^apiVersion: *//p' "$f" | head -n1)
  kind=$(sed -n 's/^kind: *//p' "$f" | head -n1)
  ns=$(awk '/^metadata:/{m=1;next} m&&/^  namespace: /{print $2; exit} /^[a-z]/{m=0}' "$f")
  path=$(api_path "$av" "$kind" "${ns:-$NAMESPACE}") || { echo "unmapped kind $kind" >"$f.out"; echo 000; return; }
  kcurl -o "$f.out" -w '%{http_code}' -X POST -H 'Content-Type: application/yaml' \
    -H 'Accept: application/json' --data-binary "@$f" "$API$path$query"
}

apply_crds() {
  local f code crd rc=0 i
  for f in "$HERE"/crds/*.yaml; do
    split_docs "$f" "$OUT/crds.$(basename "$f" .yaml)"
    for crd in "$OUT/crds.$(basename "$f" .yaml)"/*.yaml; do
      code=$(post_doc "$crd" "?fieldValidation=Strict")
      if [ "$code" = 201 ] || [ "$code" = 409 ]; then
        echo "crd $(doc_label "$crd"): $code"
      else
        echo "crd $(doc_label "$crd"): HTTP $code"
        cat "$crd.out"
        rc=1
      fi
    done
  done
  [ $rc = 0 ] || return 1
  # Wait until every CRD is Established, or the dry-runs race the new REST endpoints.
  for crd in certificates.cert-manager.io issuers.cert-manager.io clusterissuers.cert-manager.io \
    servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com; do
    for i in $(seq 1 60); do
      if kcurl "$API/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$crd" |
        tr -d ' \n' | grep -q '"type":"Established","status":"True"'; then
        break
      fi
      [ "$i" = 60 ] && { echo "crd $crd not Established"; return 1; }
      sleep 1
    done
  done
}

dry_run_file() { # LABEL FILE: one counted result per rendered object
  local label=$1 file=$2 doc code dir
  dir="$OUT/docs.$label"
  split_docs "$file" "$dir"
  for doc in "$dir"/*.yaml; do
    code=$(post_doc "$doc" "?dryRun=All&fieldValidation=Strict")
    if [ "$code" = 201 ] || [ "$code" = 200 ]; then
      ok "dry-run [$label] $(doc_label "$doc")"
    else
      ko "dry-run [$label] $(doc_label "$doc") (HTTP $code)"
      sed 's/^/      /' "$doc.out" | head -n 15
      echo
    fi
  done
}

dry_run_tier() {
  local rc before
  find_cp_bins
  rc=$?
  if [ $rc = 2 ]; then
    skipped=$((skipped + 1))
    echo
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! SKIPPED: server-side dry-run of the rendered chart (HELM_TIER_SKIP_DRYRUN=1 and no"
    echo "!!! etcd/kube-apiserver built). The rendered objects were NOT validated by kube-apiserver."
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo
    return 0
  fi
  if [ $rc != 0 ]; then ko "control plane binaries (etcd, kube-apiserver via tests/e2e/lib/build.sh)"; return 0; fi
  check "control plane start (tests/e2e/lib/controlplane.sh, $E2E_BIN)" start_control_plane
  [ "$CP_READY" = 1 ] || return 0
  before=$failed
  check "register CRDs from tests/helm/crds (cert-manager, ServiceMonitor)" apply_crds
  [ "$failed" = "$before" ] || return 0
  dry_run_file default "$OUT/default.yaml"
  dry_run_file ci "$OUT/ci.yaml"
  check "helm install --dry-run=server: a typo fails on the schema; valid values install with their NOTES" check_helm_install
  # The validation must be able to fail: a misspelled field has to be rejected.
  check "dry-run rejects an unknown field (strict validation works)" dry_run_rejects_typo
  # The same files through the e2e tier's kubectl-lite (server-side apply, --dry-run=server).
  if check "build kubectl-lite (tests/e2e/lib/build.sh)" e2e_build kubectl-lite; then :; fi
  set +e
  if [ -x "$E2E_BIN/kubectl-lite" ]; then
    check "kubectl-lite apply --dry-run=server (default values)" \
      "$E2E_BIN/kubectl-lite" --kubeconfig "$CP_KUBECONFIG" apply --dry-run=server -f "$OUT/default.yaml"
    check "kubectl-lite apply --dry-run=server (values-ci)" \
      "$E2E_BIN/kubectl-lite" --kubeconfig "$CP_KUBECONFIG" apply --dry-run=server -f "$OUT/ci.yaml"
  fi
}

dry_run_rejects_typo() {
  local d=$OUT/typo
  mkdir -p "$d"
  doc_of "$OUT/default.yaml" Certificate autoscaler-cloudify-server | sed 's/^  dnsNames:/  dnsName:/' >"$d/cert.yaml"
  [ "$(post_doc "$d/cert.yaml" "?dryRun=All&fieldValidation=Strict")" = 400 ] && grep -q 'unknown field' "$d/cert.yaml.out"
}

# --- main ---------------------------------------------------------------------------------------

if ! install_helm; then
  ko "install helm $HELM_VERSION"
  echo "$passed passed, $failed failed"
  exit 1
fi

if [ "${1:-}" = "--install-helm" ]; then
  echo "helm: $HELM"
  exit 0
fi

if [ "${1:-}" = "--update-manifests" ]; then
  render_manifests >"$MANIFEST" && echo "wrote $MANIFEST"
  exit $?
fi

echo "helm tier: $("$HELM" version --short 2>/dev/null) (pinned $HELM_VERSION), rendering for Kubernetes $KUBE_VERSION"
check "helm lint --strict (default values + tests/helm/values-min.yaml)" "$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" -f "$MIN_VALUES"
check "helm lint --strict (tests/helm/values-ci.yaml)" "$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" -f "$HERE/values-ci.yaml"
check "helm template (default values + values-min)" render "$OUT/default.yaml" -f "$MIN_VALUES"
check "helm template (tests/helm/values-ci.yaml)" render "$OUT/ci.yaml" -f "$HERE/values-ci.yaml"
check "rendered objects (default values)" check_default_render
check "rendered objects (values-ci)" check_ci_render
check "config.grpc/config.lease and 2 replicas without leader election are refused" check_bad_values_rejected
check "values.schema.json: a typo or a wrong type fails helm template, naming the key" check_schema_rejects_typos
check "no node groups named: refused with the two ways to name them (no default discovery rule)" check_groups_required
check "static groups alone render no discovery rule (no default k8s-cluster=demo)" check_static_groups_alone
check "a custom gRPC NetworkPolicy podSelector replaces the default one (not ANDed with it)" check_netpol_selector_replaces
check "PodDisruptionBudget and strategy follow replicaCount; minAvailable >= replicaCount refused" check_pdb_and_strategy
check "the helm test pod is selected by no Service, PodDisruptionBudget or NetworkPolicy" check_test_pod_unselected
check "listen addresses: [::] by default (dual-stack), 0.0.0.0 and :: accepted" check_listen_addresses
check "PrometheusRule and dashboard query only metrics the provider exports (src/observability/metrics.rs)" check_queries_use_exported_metrics
check "deploy/manifests/autoscaler-cloudify.yaml is up to date (else: run.sh --update-manifests)" check_manifests_current
check "deploy/cluster-autoscaler-values.yaml mounts what the chart renders" check_ca_values_wiring
dry_run_tier

echo
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
