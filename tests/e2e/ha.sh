#!/usr/bin/env bash
# HA e2e tier (issue #13): two `autoscaler-cloudify serve` processes electing a leader on a
# coordination.k8s.io/v1 Lease in a real kube-apiserver (with etcd, on 127.0.0.1), against the
# simulator. The checks live in tests/ha_lease.rs (see its header); this script starts the
# control plane and runs it with HA_E2E_KUBECONFIG / HA_E2E_APISERVER_PID set.
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
e2e_build etcd kube-apiserver || { say "FAIL: building the control plane"; exit 1; }
say "building the provider and the HA test"
(cd "$REPO" && cargo test --quiet --no-run --test ha_lease) || { say "FAIL: cargo build"; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK/logs"
cp_start "$WORK" || { say "FAIL: control plane did not start"; exit 1; }
APISERVER_PID="$(cat "$WORK/logs/kube-apiserver.pid")"
say "control plane up; running tests/ha_lease.rs"
if (cd "$REPO" && HA_E2E_KUBECONFIG="$CP_KUBECONFIG" HA_E2E_APISERVER_PID="$APISERVER_PID" \
      RELIABILITY_KEEP="${E2E_KEEP:-0}" cargo test --quiet --test ha_lease -- --nocapture); then
  RESULT=0
  say "PASS (total $(($(date +%s) - T0))s)"
  echo "e2e-ha: 1 passed, 0 failed"
else
  say "FAIL"
  echo "e2e-ha: 0 passed, 1 failed"
fi
exit "$RESULT"
