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

# The outage (real manager, local stack): gunicorn's master takes its workers down on SIGTERM
# and lets in-flight requests finish (30 s at most), then the whole process group is killed;
# start.sh starts what is not running (only gunicorn then). The flag file outlives a failed test,
# so `finish` always starts the REST service again.
rest_stop() {
  local pid i
  pid="$(cat "$LB_REST_PID_FILE")" || return 1
  touch "$LB_OUTAGE_FLAG"
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null
  sleep 1
  ! kill -0 "$pid" 2>/dev/null
}
rest_start() {
  local i
  env -u CLOUDIFY_MANAGER_URL MANAGER_STATE_DIR="$LB_MANAGER_STATE" MANAGER_CACHE_DIR="$LB_MANAGER_CACHE" \
    CLOUDIFY_MANAGER_SOURCES="$LB_MANAGER_SOURCES" bash "$REPO/tests/manager/start.sh" >>"$LB_RESTART_LOG" 2>&1 \
    || echo "(start.sh's health-wait failed; REST is what matters here)" >>"$LB_RESTART_LOG"
  # start.sh's health-wait runs a workflow, which a loaded shared manager may not finish in its
  # time: the outage is over once REST answers with auth.
  for i in $(seq 1 120); do
    if curl -fsS -o /dev/null -u "$LB_E2E_CLOUDIFY_USER:$LB_E2E_CLOUDIFY_PASSWORD" -H "Tenant: $LB_E2E_CLOUDIFY_TENANT" \
      "$LB_E2E_CLOUDIFY_URL/api/v3.1/deployments?_size=1" 2>/dev/null; then
      rm -f "$LB_OUTAGE_FLAG"
      return 0
    fi
    sleep 1
  done
  return 1
}

finish() {
  # Never leave the manager's REST service stopped by this tier (the test failed mid-outage).
  if [ -n "${LB_OUTAGE_FLAG:-}" ] && [ -f "$LB_OUTAGE_FLAG" ]; then
    say "starting the manager's REST service again (the test stopped it)"
    rest_start || say "FAILED to start the manager's REST service: see $LB_RESTART_LOG"
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
# The test runs the outage through this script: `lb.sh __rest_stop|__rest_start` (the settings
# come from the LB_* variables the main run exports).
case "${1:-}" in
  __rest_stop) rest_stop; exit $? ;;
  __rest_start) rest_start; exit $? ;;
esac
trap finish EXIT
trap 'exit 130' INT TERM

unset LB_E2E_CLOUDIFY_URL LB_E2E_OUTAGE_STOP LB_E2E_OUTAGE_START LB_OUTAGE_FLAG
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
    export LB_OUTAGE_FLAG="$E2E_DIR/.cache/lb-rest-stopped" LB_REST_PID_FILE="$STATE/run/rest.pid" \
      LB_MANAGER_STATE="$STATE" LB_MANAGER_CACHE="${MANAGER_CACHE_DIR:-$(dirname "$STATE")}" \
      LB_MANAGER_SOURCES="$SOURCES_DIR" LB_RESTART_LOG="$E2E_DIR/.cache/lb-manager-restart.log"
    export LB_E2E_OUTAGE_STOP="bash $E2E_DIR/lb.sh __rest_stop" LB_E2E_OUTAGE_START="bash $E2E_DIR/lb.sh __rest_start"
    if [ -f "$LB_OUTAGE_FLAG" ]; then say "a previous run left the REST service stopped: starting it"; rest_start; fi
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
      RELIABILITY_KEEP="${E2E_KEEP:-0}" cargo test --quiet --test reliability lb_service:: -- --ignored --nocapture); then
  RESULT=0
  say "PASS (total $(($(date +%s) - T0))s)"
else
  say "FAIL"
fi
exit "$RESULT"
