# `check_drift` of the haproxy node (lb-haproxy.yaml): has the configuration HAProxy runs (the
# runtime property `applied` that configure.py stores) fallen behind the node's properties? A
# deployment update runs this first and `update` only where it says yes; it also makes a repeated
# update (after one that failed) apply the configuration again.
import hashlib
import json

from cloudify import ctx

CONTRACT = ["service", "ports", "backends", "health_check", "source_ranges", "session_affinity"]

props = ctx.node.properties
config = {k: props.get(k) for k in CONTRACT}
current = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
ctx.returns(current != ctx.instance.runtime_properties.get("applied"))
