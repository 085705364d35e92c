# `create` and `update` of the tier's LB blueprint (lb.yaml), on the central deployment agent:
# record what a real load balancer would be configured with, and hand out an address.
#
# Runtime properties written:
#   config      the contract's inputs as this operation saw them (node properties)
#   applied     a digest of `config`; lb_drift.py compares it with the current properties
#   ip          <address_prefix>.<1..254>, from the deployment id (stable across updates)
#   hostname    <deployment id>.lb.test (lower case)
#   creates     how many times `create` ran (1 unless the instance was reinstalled)
#   updates     how many times `update` ran
import hashlib
import json
import time

from cloudify import ctx

CONTRACT = ["service", "ports", "backends", "health_check", "source_ranges",
            "load_balancer_ip", "session_affinity", "dns_names"]


def digest(config):
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


props = ctx.node.properties
config = {k: props.get(k) for k in CONTRACT}
delay = int(props.get("operation_delay_s") or 0)
if delay > 0:
    time.sleep(delay)

rp = ctx.instance.runtime_properties
operation = ctx.operation.name.rsplit(".", 1)[-1]
if operation == "create":
    rp["creates"] = int(rp.get("creates") or 0) + 1
    dep = ctx.deployment.id
    host = int(hashlib.sha256(dep.encode()).hexdigest(), 16) % 254 + 1
    rp["ip"] = "%s.%d" % (props.get("address_prefix") or "203.0.113", host)
    rp["hostname"] = (dep.lower().replace("_", "-") + ".lb.test")
else:
    rp["updates"] = int(rp.get("updates") or 0) + 1
rp["config"] = config
rp["applied"] = digest(config)
ctx.logger.info("lb %s: %d port(s), %d backend(s), health check %s",
                operation, len(config["ports"] or []), len(config["backends"] or []),
                json.dumps(config["health_check"]))
