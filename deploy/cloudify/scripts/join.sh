#!/bin/bash
# Joins this VM to the Kubernetes cluster as a worker (kubeadm). Runs as the poststart operation of
# the compute node (worker_host) through the script plugin, so `ctx instance id` is the VM
# node-instance id. Operation inputs arrive as environment variables.
#
# Contract with autoscaler-cloudify (docs/configuration.md):
#   kubelet --provider-id = cloudify://<tenant>/<deployment>/<VM node-instance id>
#     = the provider's default provider_id_template "cloudify://{tenant}/{deployment}/{vm_instance}"
#   runtime property `hostname` on the VM instance = the Node name (node_name_property: hostname)
#   node labels cloudify.co/deployment and cloudify.co/scaling-group = those of the provider's templates
# KUBELET_MODE=external: kubelet --cloud-provider=external, no --provider-id: the Node registers with
#   the node.cloudprovider.kubernetes.io/uninitialized taint and the provider's node controller
#   initializes it from the `hostname` runtime property (= Node name) and the provider-id template.
set -euo pipefail

: "${PROVIDER_ID_PREFIX:?}" "${DEPLOYMENT_ID:?}" "${SCALING_GROUP:?}" "${CONTROL_PLANE_ENDPOINT:?}"
: "${JOIN_TOKEN:?}" "${CA_CERT_HASH:?}"

VM_INSTANCE_ID="$(ctx instance id)"
PROVIDER_ID="${PROVIDER_ID_PREFIX}${VM_INSTANCE_ID}"

# A valid, unique Node name: <deployment>-<vm instance id>, lower case, '_' -> '-'.
NODE_NAME="$(printf '%s-%s' "$DEPLOYMENT_ID" "$VM_INSTANCE_ID" | tr '[:upper:]_' '[:lower:]-')"

for bin in kubeadm kubelet; do
  command -v "$bin" >/dev/null || { ctx logger error "$bin not found: use an image with kubeadm and kubelet"; exit 1; }
done

if [ -f /etc/kubernetes/kubelet.conf ]; then
  ctx logger info "already joined as ${NODE_NAME}; nothing to do"
else
  sudo hostnamectl set-hostname "$NODE_NAME"
  LABELS="cloudify.co/deployment=${DEPLOYMENT_ID},cloudify.co/scaling-group=${SCALING_GROUP}"
  if [ -n "${NODE_LABELS:-}" ]; then LABELS="${LABELS},${NODE_LABELS}"; fi
  # kubeadm writes its own flags to /var/lib/kubelet/kubeadm-flags.env; extra ones go here.
  if [ "${KUBELET_MODE:-provider-id}" = external ]; then
    # The node controller matches the Node by name; it retries on every refresh until the
    # `hostname` runtime property below is stored (at the end of this operation).
    KUBELET_ARGS="--cloud-provider=external --node-labels=${LABELS}"
  else
    KUBELET_ARGS="--provider-id=${PROVIDER_ID} --node-labels=${LABELS}"
  fi
  echo "KUBELET_EXTRA_ARGS=${KUBELET_ARGS}" | sudo tee /etc/default/kubelet >/dev/null
  ctx logger info "joining ${CONTROL_PLANE_ENDPOINT} as ${NODE_NAME} (provider id ${PROVIDER_ID})"
  sudo kubeadm join "$CONTROL_PLANE_ENDPOINT" \
    --token "$JOIN_TOKEN" \
    --discovery-token-ca-cert-hash "$CA_CERT_HASH" \
    --node-name "$NODE_NAME"
fi

ctx instance runtime-properties hostname "$NODE_NAME"
ctx instance runtime-properties provider_id "$PROVIDER_ID"
