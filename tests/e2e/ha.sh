#!/usr/bin/env bash
# HA e2e tier (issue #13): two `autoscaler-cloudify serve` processes electing a leader on a
# coordination.k8s.io/v1 Lease in a real kube-apiserver (with etcd, on 127.0.0.1), against the
# simulator. The checks live in tests/reliability/ha_lease.rs (see its header); this script starts the
# control plane and runs it with HA_E2E_KUBECONFIG / HA_E2E_APISERVER_PID set.
#
# The replicas authenticate as the chart's ServiceAccount (a client certificate for
# system:serviceaccount:kube-system:autoscaler-cloudify) with only the chart's Role and RoleBinding,
# taken from deploy/manifests/autoscaler-cloudify.yaml: the proof that the RBAC is enough. A third
# identity with no RBAC at all shows the "forbidden" path.
#
# Env: E2E_KEEP=1 keeps the run directory (logs) even on success.
set -uo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E_DIR/../.." && pwd)"
export E2E_DIR
# shellcheck source=lib/controlplane.sh
source "$E2E_DIR/lib/controlplane.sh"

T0=$(date +%s)
say() { echo "e2e-ha[$(($(date +%s) - T0))s]: $*"; }
WORK="$E2E_DIR/.cache/ha-run"
APISERVER_PID=""
RESULT=1

finish() {
  # The test stops the API server with SIGSTOP; never leave it stopped.
  [ -n "$APISERVER_PID" ] && kill -CONT "$APISERVER_PID" 2>/dev/null
  if [ "$RESULT" != 0 ] && [ -d "$WORK/logs" ]; then
    for f in "$WORK"/logs/*.log; do
      [ -f "$f" ] || continue
      echo "================ $(basename "$f" .log) (last 40 lines) ================"
      tail -n 40 "$f"
    done
  fi
  cp_stop
  if [ "$RESULT" = 0 ] && [ "${E2E_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

say "building etcd and kube-apiserver (cached in $E2E_DIR/.cache/bin)"
e2e_build etcd kube-apiserver kubectl-lite || { say "FAIL: building the control plane"; exit 1; }
# The real cluster-autoscaler for the last phase, when it can be had (CA_BIN, or built and cached
# by lib/build.sh as the e2e tier does); otherwise that phase is skipped, loudly.
HA_CA_BIN=""
if e2e_build_ca; then HA_CA_BIN="$CA_BIN"; else say "cluster-autoscaler unavailable: the real-CA phase is skipped"; fi
say "building the provider and the HA test"
(cd "$REPO" && cargo test --quiet --no-run --test reliability) || { say "FAIL: cargo build"; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK/logs"
cp_start "$WORK" || { say "FAIL: control plane did not start"; exit 1; }
APISERVER_PID="$(cat "$WORK/logs/kube-apiserver.pid")"

# user_kubeconfig NAME CN [O]: a client certificate signed by the control plane's CA, as a kubeconfig.
user_kubeconfig() {
  local name=$1 cn=$2 org=${3:-} d="$WORK/pki" subj
  subj="/CN=$cn"; [ -n "$org" ] && subj="$subj/O=$org"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/$name.key" 2>/dev/null &&
    openssl req -new -key "$d/$name.key" -subj "$subj" -out "$d/$name.csr" 2>/dev/null &&
    printf 'extendedKeyUsage=clientAuth\n' >"$d/$name.ext" &&
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 1 \
      -sha256 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null || return 1
  sed -e "s|client-certificate-data: .*|client-certificate-data: $(base64 -w0 <"$d/$name.crt")|" \
      -e "s|client-key-data: .*|client-key-data: $(base64 -w0 <"$d/$name.key")|" \
      "$CP_KUBECONFIG" >"$WORK/$name.kubeconfig"
}
user_kubeconfig provider "system:serviceaccount:kube-system:autoscaler-cloudify" system:serviceaccounts \
  || { say "FAIL: provider certificate"; exit 1; }
user_kubeconfig nobody "e2e-nobody" || { say "FAIL: certificate"; exit 1; }
# The chart's Role and RoleBinding exactly as rendered (deploy/manifests), nothing else.
python3 - "$REPO/deploy/manifests/autoscaler-cloudify.yaml" >"$WORK/rbac.yaml" <<'PY' || exit 1
import sys
docs = open(sys.argv[1]).read().split("\n---\n")
keep = [d for d in docs if "\nkind: Role\n" in d or "\nkind: RoleBinding\n" in d]
assert len(keep) == 2, "expected the chart's Role and RoleBinding"
print("\n---\n".join(keep))
PY
"$CP_KUBECTL" --kubeconfig "$CP_KUBECONFIG" apply -f "$WORK/rbac.yaml" >"$WORK/logs/rbac.log" 2>&1 \
  || { say "FAIL: applying the chart's RBAC"; cat "$WORK/logs/rbac.log"; exit 1; }

say "control plane up; running tests/reliability/ha_lease.rs"
if (cd "$REPO" && HA_E2E_KUBECONFIG="$CP_KUBECONFIG" HA_E2E_APISERVER_PID="$APISERVER_PID" \
      HA_E2E_PROVIDER_KUBECONFIG="$WORK/provider.kubeconfig" \
      HA_E2E_FORBIDDEN_KUBECONFIG="$WORK/nobody.kubeconfig" HA_E2E_CA_BIN="$HA_CA_BIN" \
      RELIABILITY_KEEP="${E2E_KEEP:-0}" cargo test --quiet --test reliability ha_lease:: -- --ignored --nocapture); then
  RESULT=0
  say "PASS (total $(($(date +%s) - T0))s)"
  echo "e2e-ha: 1 passed, 0 failed"
else
  say "FAIL"
  echo "e2e-ha: 0 passed, 1 failed"
fi
exit "$RESULT"
