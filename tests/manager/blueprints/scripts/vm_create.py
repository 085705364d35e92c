# `create` of every Compute node of the tier's blueprints, run by the script plugin on the
# central deployment agent (the manager's mgmtworker), so that a Compute with install_method
# none still gets the runtime properties the provider reads (hostname, ip, external_id), and so
# that a scale-out can be made slow or fail on demand. Evaluated in-process: `ctx` is given.
#
# Fault switches (tests/manager/README.md, "Fault switches"), read on every create, the first
# one found wins:
#   1. a runtime property `fault` on the instance of node `fault_switch` of this deployment
#      (worker-pool-faults.yaml; set through REST, works against any manager);
#   2. the file <fault_dir input>/<deployment id>.json on the manager host;
#   3. the file <fault_dir input>/all.json.
# Each is JSON: {"delay_s": 3, "fail": "quota" | "other" | null, "nodes": ["worker_host"],
# "once": "<token>"}. `nodes` (optional) limits the switch to those node names. `once` makes the
# failure happen a single time per token: the first failing create leaves a marker file in the
# manager's worker directory (AGENT_WORK_DIR), later creates see it and succeed. The marker is needed because a
# rollback of a deployment modification (rollback_if_failed, abort_started) restores the runtime
# properties of EVERY instance of the deployment, the switch's included, to their values at the
# modification's start: a switch cleared meanwhile comes back on.
import hashlib
import json
import os
import time
import uuid

from cloudify import ctx
from cloudify.exceptions import NonRecoverableError
from cloudify.manager import get_rest_client
from cloudify.state import ctx_parameters

FAILURES = {
    "quota": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
    "other": "No valid host was found. There are not enough hosts available (tier fault switch)",
}


def switch_from_runtime_property():
    client = get_rest_client()
    found = client.node_instances.list(deployment_id=ctx.deployment.id, node_id="fault_switch",
                                       _include=["id", "runtime_properties"])
    for inst in found:
        fault = (inst.runtime_properties or {}).get("fault")
        if fault:
            return fault
    return None


def switch_from_file():
    fault_dir = inputs_fault_dir()
    if not fault_dir:
        return None
    for name in (ctx.deployment.id + ".json", "all.json"):
        path = os.path.join(fault_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    return None


def inputs_fault_dir():
    # The operation input fault_dir (the blueprints pass {get_input: fault_dir}).
    return ctx_parameters.get("fault_dir") or ""


def main():
    fault = switch_from_runtime_property() or switch_from_file() or {}
    nodes = fault.get("nodes")
    if nodes and ctx.node.name not in nodes:
        fault = {}
    delay = float(fault.get("delay_s") or 0)
    if delay > 0:
        ctx.logger.info("tier fault switch: create of %s sleeps %.1f s", ctx.instance.id, delay)
        time.sleep(delay)
    kind = fault.get("fail")
    if kind and fault.get("once"):
        # The worker's own directory: the temp directory of an operation may be its own and go.
        marker = os.path.join(os.environ.get("AGENT_WORK_DIR") or "/tmp", "tier-fault-once-%s" % fault["once"])
        if os.path.exists(marker):
            kind = None
        else:
            open(marker, "w").close()
    if kind:
        raise NonRecoverableError(FAILURES.get(kind, str(kind)))

    # Deterministic per instance id, unique enough for a test: 10.<a>.<b>.<c>.
    digest = hashlib.sha256(ctx.instance.id.encode()).digest()
    props = ctx.instance.runtime_properties
    props["external_id"] = str(uuid.uuid4())
    props["ip"] = "10.%d.%d.%d" % (digest[0], digest[1], max(1, digest[2] % 255))
    # A valid Kubernetes node name: <deployment>-<instance id>, lower case, '_' -> '-'.
    props["hostname"] = ("%s-%s" % (ctx.deployment.id, ctx.instance.id)).lower().replace("_", "-")
    ctx.logger.info("created %s as %s (%s)", ctx.instance.id, props["hostname"], props["ip"])


main()
