# `check_drift` of the tier's LB blueprint (lb.yaml): the recorded configuration (runtime property
# `applied`, written by lb_configure.py) against the node's current properties. A deployment
# update runs it first; drift -> the `update` operation runs on this instance (no reinstall).
import hashlib
import json

from cloudify import ctx

CONTRACT = ["service", "ports", "backends", "health_check", "source_ranges",
            "load_balancer_ip", "session_affinity", "dns_names"]

props = ctx.node.properties
config = {k: props.get(k) for k in CONTRACT}
current = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
drift = current != ctx.instance.runtime_properties.get("applied")
ctx.logger.info("lb check_drift: %s", "drifted" if drift else "in sync")
ctx.returns(drift)
