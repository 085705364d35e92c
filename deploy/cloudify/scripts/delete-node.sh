#!/bin/bash
# Removes this VM's Node object from Kubernetes before the VM is stopped (prestop of worker_host):
# on a scale-in chosen by Cluster Autoscaler (already drained: drain is then a no-op), on a manual
# scale-in or on uninstall. Best effort: a failure is logged and never blocks the scale-in, because
# the provider reports the VM gone anyway and a leftover Node only turns NotReady.
#
# Needs kubectl on the VM (kubeadm images ship it). KUBECONFIG_CONTENT: a kubeconfig (Cloudify secret k8s_node_cleanup_kubeconfig) whose user may
# get/patch/delete nodes, evict pods and list pods (a small ClusterRole is enough).
set -uo pipefail

NODE_NAME="$(ctx instance runtime-properties hostname 2>/dev/null || true)"
if [ -z "$NODE_NAME" ]; then
  ctx logger info "no hostname runtime property: the VM never joined; nothing to delete"
  exit 0
fi

KCFG="$(mktemp)"
trap 'rm -f "$KCFG"' EXIT
chmod 600 "$KCFG"
printf '%s\n' "${KUBECONFIG_CONTENT:?}" >"$KCFG"
KUBECTL="kubectl --kubeconfig=$KCFG"

# Drain while kubelet still runs (it is what terminates the evicted pods), then stop kubelet so the
# Node object is not re-created by a last status update, then delete it.
$KUBECTL drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data --force \
  --timeout="${DRAIN_TIMEOUT:-120s}" || ctx logger warning "drain of ${NODE_NAME} did not finish"
sudo systemctl stop kubelet 2>/dev/null || true
if $KUBECTL delete node "$NODE_NAME" --ignore-not-found --wait=false; then
  ctx logger info "deleted Node ${NODE_NAME}"
else
  ctx logger warning "could not delete Node ${NODE_NAME}; delete it by hand"
fi
exit 0
