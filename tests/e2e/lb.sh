#!/usr/bin/env bash
# Service-controller e2e tier (issue 23): `autoscaler-cloudify serve` with load_balancers on, a
# real kube-apiserver (etcd + kube-apiserver on 127.0.0.1), and a Cloudify manager: the simulator
# (default) or the real manager (--real). The checks live in tests/reliability/lb_service.rs (see
# its header); this script starts the control plane and runs it with LB_E2E_* set.
#
#   tests/e2e/lb.sh            simulator (about a minute)
#   tests/e2e/lb.sh --real     the real manager of `tests/manager/manager.sh env` (or CLOUDIFY_MANAGER_*):
#                              uploads tests/manager/blueprints/lb.yaml, and for the outage phase
#                              stops the manager's REST service (gunicorn) by its PID file and starts
#                              it again with tests/manager/start.sh (local stack only; an external
#                              manager skips that phase, loudly)
#
# The provider authenticates as the chart's ServiceAccount (a client certificate for
# system:serviceaccount:kube-system:autoscaler-cloudify) with only the chart's ClusterRole for the
# service controller (templates/rbac-services.yaml): the proof that the RBAC is enough.
#
# Env: E2E_KEEP=1 keeps the run directory; LB_E2E_TIME_SCALE=N multiplies every wait.
set -uo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E_DIR/../.." && pwd)"
export E2E_DIR
# shellcheck source=lib/controlplane.sh
source "$E2E_DIR/lib/controlplane.sh"

MODE=sim
[ "${1:-}" = "--real" ] && MODE=real
NAME="e2e-lb"; [ "$MODE" = real ] && NAME="lb"
T0=$(date +%s)
say() { echo "$NAME[$(($(date +%s) - T0))s]: $*"; }
WORK="$E2E_DIR/.cache/lb-run-$MODE"
RESULT=1
OUTAGE_STATE=""

finish() {
  # Never leave the manager's REST service stopped by this tier.
  if [ -n "$OUTAGE_STATE" ] && ! kill -0 "$(cat "$OUTAGE_STATE/run/rest.pid" 2>/dev/null)" 2>/dev/null; then
    say "restarting the manager's REST service left stopped"
    bash -c "$LB_E2E_OUTAGE_START" || true
  fi
  if [ "$RESULT" != 0 ] && [ -d "$WORK/logs" ]; then
    for f in "$WORK"/logs/*.log; do
      [ -f "$f" ] || continue
      echo "================ $(basename "$f" .log) (last 40 lines) ================"
      tail -n 40 "$f"
    done
  fi
  cp_stop
  if [ "$RESULT" = 0 ] && [ "${E2E_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
  echo "$NAME: $([ "$RESULT" = 0 ] && echo 1 || echo 0) passed, $([ "$RESULT" = 0 ] && echo 0 || echo 1) failed"
}
trap finish EXIT
trap 'exit 130' INT TERM

unset LB_E2E_CLOUDIFY_URL LB_E2E_OUTAGE_STOP LB_E2E_OUTAGE_START
if [ "$MODE" = real ]; then
  MANAGER_DIR="$REPO/tests/manager"
  if [ -z "${CLOUDIFY_MANAGER_URL:-}" ]; then
    eval "$(bash "$MANAGER_DIR/manager.sh" env)" || { say "FAIL: no manager (tests/manager/manager.sh env)"; exit 1; }
  fi
  # shellcheck source=../manager/lib.sh
  source "$MANAGER_DIR/lib.sh"
  PY="$(client_python)"
  [ -x "$PY" ] || PY="${MANAGER_CACHE_DIR:-$MANAGER_DIR/.cache}/venv/bin/python"
  say "uploading the LB test blueprint to $CLOUDIFY_MANAGER_URL"
  BLUEPRINT="$(cd "$MANAGER_DIR" && "$PY" - <<'PY'
import tierlib
c = tierlib.env_client()
bp = "tier-lb-" + tierlib.blueprints_digest()
tierlib.ensure_blueprint(c, bp, "lb.yaml")
print(bp)
PY
)" || { say "FAIL: blueprint upload"; exit 1; }
  export LB_E2E_CLOUDIFY_URL="$CLOUDIFY_MANAGER_URL" LB_E2E_CLOUDIFY_USER="${CLOUDIFY_MANAGER_USER:-admin}" \
    LB_E2E_CLOUDIFY_PASSWORD="${CLOUDIFY_MANAGER_PASSWORD:-admin}" \
    LB_E2E_CLOUDIFY_TENANT="${CLOUDIFY_MANAGER_TENANT:-default_tenant}" LB_E2E_BLUEPRINT="$BLUEPRINT"
  # The outage: only a local stack (a state directory with the REST service's PID file) can be
  # stopped. gunicorn's master takes its workers down on SIGTERM; start.sh starts what is not
  # running (only gunicorn here) and waits for the manager to be healthy again.
  STATE="${MANAGER_STATE_DIR:-$STATE_DIR}"
  if [ -f "$STATE/run/rest.pid" ]; then
    OUTAGE_STATE="$STATE"
    export LB_E2E_OUTAGE_STOP="kill -TERM \$(cat $STATE/run/rest.pid); for i in \$(seq 1 100); do kill -0 \$(cat $STATE/run/rest.pid) 2>/dev/null || exit 0; sleep 0.2; done; exit 1"
    export LB_E2E_OUTAGE_START="env -u CLOUDIFY_MANAGER_URL MANAGER_STATE_DIR=$STATE MANAGER_CACHE_DIR=${MANAGER_CACHE_DIR:-$(dirname "$STATE")} CLOUDIFY_MANAGER_SOURCES=${CLOUDIFY_MANAGER_SOURCES:-$REPO/../shared/cloudify-manager} bash $MANAGER_DIR/start.sh >$WORK/logs/manager-restart.log 2>&1"
  else
    say "the manager is not a local stack: the outage phase is SKIPPED"
  fi
fi

say "building etcd and kube-apiserver (cached in $E2E_DIR/.cache/bin)"
e2e_build etcd kube-apiserver kubectl-lite || { say "FAIL: building the control plane"; exit 1; }
say "building the provider and the test"
(cd "$REPO" && cargo test --quiet --no-run --test reliability) || { say "FAIL: cargo build"; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK/logs"
cp_start "$WORK" || { say "FAIL: control plane did not start"; exit 1; }

# The provider's identity: the chart's ServiceAccount, a client certificate signed by the CA.
d="$WORK/pki"
openssl ecparam -name prime256v1 -genkey -noout -out "$d/provider.key" 2>/dev/null &&
  openssl req -new -key "$d/provider.key" -subj "/CN=system:serviceaccount:kube-system:autoscaler-cloudify/O=system:serviceaccounts" \
    -out "$d/provider.csr" 2>/dev/null &&
  printf 'extendedKeyUsage=clientAuth\n' >"$d/provider.ext" &&
  openssl x509 -req -in "$d/provider.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 1 \
    -sha256 -extfile "$d/provider.ext" -out "$d/provider.crt" 2>/dev/null || { say "FAIL: provider certificate"; exit 1; }
sed -e "s|client-certificate-data: .*|client-certificate-data: $(base64 -w0 <"$d/provider.crt")|" \
    -e "s|client-key-data: .*|client-key-data: $(base64 -w0 <"$d/provider.key")|" \
    "$CP_KUBECONFIG" >"$WORK/provider.kubeconfig"
# The chart's ClusterRole and binding for the service controller, rendered from the template
# with the chart's default names (release autoscaler-cloudify in kube-system).
python3 - "$REPO/deploy/helm/autoscaler-cloudify/templates/rbac-services.yaml" >"$WORK/rbac.yaml" <<'PY' || exit 1
import re, sys
text = open(sys.argv[1]).read()
out = []
for line in text.splitlines():
    if re.match(r"\s*\{\{-? (if|end)", line) or "autoscaler-cloudify.labels" in line:
        continue
    if line.strip() == "labels:":
        continue
    line = line.replace('{{ include "autoscaler-cloudify.fullname" . }}', "autoscaler-cloudify")
    line = line.replace('{{ include "autoscaler-cloudify.serviceAccountName" . }}', "autoscaler-cloudify")
    line = line.replace("{{ .Release.Namespace }}", "kube-system")
    assert "{{" not in line, line
    out.append(line)
print("\n".join(out))
PY
"$CP_KUBECTL" --kubeconfig "$CP_KUBECONFIG" apply -f "$WORK/rbac.yaml" >"$WORK/logs/rbac.log" 2>&1 \
  || { say "FAIL: applying the chart's RBAC"; cat "$WORK/logs/rbac.log"; exit 1; }

say "control plane up ($MODE); running tests/reliability/lb_service.rs"
if (cd "$REPO" && LB_E2E_KUBECONFIG="$CP_KUBECONFIG" LB_E2E_PROVIDER_KUBECONFIG="$WORK/provider.kubeconfig" \
      RELIABILITY_KEEP="${E2E_KEEP:-0}" cargo test --quiet --test reliability lb_service:: -- --nocapture); then
  RESULT=0
  say "PASS (total $(($(date +%s) - T0))s)"
else
  say "FAIL"
fi
exit "$RESULT"
