"""Creates the deployments a real-manager test needs, from scenario files (issue 19).

    fixtures.py SCENARIO.yaml [SCENARIO.yaml ...]

A scenario file lists deployments made from the tier's blueprints (tests/manager/blueprints):

    deployments:
      - id: realmgr-conf-pool              # deployment id (each test uses its own prefix)
        blueprint: worker-pool-faults      # blueprints/<name>.yaml
        tenant: default                    # default (CLOUDIFY_MANAGER_TENANT) or second (MANAGER_SECOND_TENANT)
        inputs: {cluster_name: realmgr-conformance, min_workers: 1, max_workers: 6, initial_workers: 2}

The blueprints set the discovery label k8s-cluster=<cluster_name>. A deployment with one of these
ids left by an earlier run is kept when it is as the file says and at rest (same blueprint upload,
same inputs, installed, no execution running, no started modification, its group back at
`initial_workers`); otherwise it is deleted. Then every missing deployment is created and
installed concurrently (the manager runs them side by side). Only the listed ids are touched:
other users of a shared manager are left alone. Prints one line per deployment and
`fixtures: N passed, N failed`; exits non-zero on failure.
"""

import os
import sys
import time

import yaml
from cloudify_rest_client.exceptions import CloudifyClientError

from smoke import create_tenant
from tierlib import (TierError, blueprints_digest, create_deployment, delete_deployments, ensure_blueprint,
                     env_client, wait_deployment_created, wait_execution)

DIGEST = blueprints_digest()


def blueprint_id(name):
    """The id smoke.py uploads the same file under, so uploads are shared."""
    return f"tier-{name}-{DIGEST}"


def load(paths):
    deployments = []
    for path in paths:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        for d in doc.get("deployments") or []:
            if not d.get("id") or not d.get("blueprint"):
                raise TierError(f"{path}: every deployment needs id and blueprint: {d}")
            if d.get("tenant", "default") not in ("default", "second"):
                raise TierError(f"{path}: deployment {d['id']}: tenant must be default or second")
            deployments.append(d)
    return deployments


def reusable(client, dep, blueprint, inputs):
    """True when `dep` exists as the scenario wants it and nothing runs on it."""
    try:
        d = client.deployments.get(dep, _include=["id", "blueprint_id", "inputs", "scaling_groups"])
    except CloudifyClientError as err:
        if err.status_code == 404:
            return False
        raise
    if d.blueprint_id != blueprint_id(blueprint):
        return False
    if any((d.inputs or {}).get(k) != v for k, v in inputs.items()):
        return False
    execs = client.executions.list(deployment_id=dep, _include_system_workflows=True, _size=1000,
                                   _include=["workflow_id", "status"])
    if any(e.status not in ("terminated", "failed", "cancelled") for e in execs):
        return False
    if not any(e.workflow_id == "install" and e.status == "terminated" for e in execs):
        return False
    if client.deployment_modifications.list(deployment_id=dep, status="started"):
        return False
    want = int(inputs.get("initial_workers", 2))
    for g in (d.scaling_groups or {}).values():
        p = g["properties"]
        if p["current_instances"] != want or p["planned_instances"] != want:
            return False
    return True


def main(paths):
    t0 = time.time()
    deployments = load(paths)
    second = os.environ.get("MANAGER_SECOND_TENANT", "tier_tenant_b")
    clients = {"default": env_client()}
    if any(d.get("tenant") == "second" for d in deployments):
        if second not in [t.name for t in clients["default"].tenants.list(_get_all_results=True)]:
            create_tenant(clients["default"], second)
        clients["second"] = env_client(tenant=second)
    fault_dir = os.environ.get("MANAGER_FAULT_DIR", "")
    plan = []
    for d in deployments:
        client = clients[d.get("tenant", "default")]
        inputs = dict(d.get("inputs") or {})
        if fault_dir:
            inputs.setdefault("fault_dir", fault_dir)
        plan.append((client, d["id"], d["blueprint"], inputs))
    kept = [(c, d) for c, d, name, inputs in plan if reusable(c, d, name, inputs)]
    for client, dep in kept:
        print(f"PASS fixtures/{dep} kept (as the scenario says, at rest)", flush=True)
    plan = [p for p in plan if (p[0], p[1]) not in kept]
    for client in clients.values():
        mine = [d for c, d, _, _ in plan if c is client]
        delete_deployments(client, mine)
        for name in sorted({b for c, _, b, _ in plan if c is client}):
            ensure_blueprint(client, blueprint_id(name), name + ".yaml")
    for client, dep, name, inputs in plan:
        create_deployment(client, blueprint_id(name), dep, inputs, wait=False)
    for client, dep, _, _ in plan:
        wait_deployment_created(client, dep)
    installs = [(client, dep, client.executions.start(dep, "install")) for client, dep, _, _ in plan]
    failed = 0
    for client, dep, e in installs:
        e = wait_execution(client, e.id, 300)
        if e.status == "terminated":
            print(f"PASS fixtures/{dep} installed", flush=True)
        else:
            failed += 1
            print(f"FAIL fixtures/{dep}: install ended {e.status}: {e.error}", flush=True)
    print(f"fixtures: {len(plan)} deployments made, {len(kept)} kept, in {time.time() - t0:.0f} s")
    print(f"fixtures: {len(plan) + len(kept) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        sys.exit(main(sys.argv[1:]))
    except TierError as err:
        print(f"FAIL fixtures: {err}")
        print("fixtures: 0 passed, 1 failed")
        sys.exit(1)
