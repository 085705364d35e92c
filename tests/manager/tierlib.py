"""Helpers shared by the manager tier's drivers (health, smoke, fidelity).

A manager is reached through the environment that `tests/manager/manager.sh env` prints
(CLOUDIFY_MANAGER_URL, CLOUDIFY_MANAGER_USER/PASSWORD or CLOUDIFY_MANAGER_TOKEN,
CLOUDIFY_MANAGER_TENANT, optionally CLOUDIFY_MANAGER_CA_CERT), with Cloudify's own client.
"""

import hashlib
import json
import os
import sys
import time
from urllib.parse import urlparse

from cloudify_rest_client import CloudifyClient
from cloudify_rest_client.exceptions import CloudifyClientError

HERE = os.path.dirname(os.path.abspath(__file__))
BLUEPRINTS = os.path.join(HERE, "blueprints")
END_STATES = ("terminated", "failed", "cancelled")


class TierError(Exception):
    """A step of the tier failed; the message says which and why."""


def env_client(tenant=None):
    """A CloudifyClient for the manager the environment names."""
    url = os.environ.get("CLOUDIFY_MANAGER_URL")
    if not url:
        raise TierError("CLOUDIFY_MANAGER_URL is not set (eval \"$(tests/manager/manager.sh env)\")")
    u = urlparse(url)
    kw = dict(host=u.hostname, port=u.port or (443 if u.scheme == "https" else 80),
              protocol=u.scheme, tenant=tenant or os.environ.get("CLOUDIFY_MANAGER_TENANT", "default_tenant"))
    if os.environ.get("CLOUDIFY_MANAGER_TOKEN"):
        kw["token"] = os.environ["CLOUDIFY_MANAGER_TOKEN"]
    else:
        kw["username"] = os.environ.get("CLOUDIFY_MANAGER_USER")
        kw["password"] = os.environ.get("CLOUDIFY_MANAGER_PASSWORD")
    if u.scheme == "https" and os.environ.get("CLOUDIFY_MANAGER_CA_CERT"):
        kw["cert"] = os.environ["CLOUDIFY_MANAGER_CA_CERT"]
    return CloudifyClient(**kw)


def wait_execution(client, execution_id, timeout=120, poll=0.2):
    """Polls an execution to an end state; returns it. TierError on timeout."""
    deadline = time.time() + timeout
    while True:
        e = client.executions.get(execution_id)
        if e.status in END_STATES:
            return e
        if time.time() > deadline:
            raise TierError(f"execution {execution_id} ({e.workflow_id}) still {e.status} after {timeout} s")
        time.sleep(poll)


def run_workflow(client, deployment_id, workflow_id, parameters=None, timeout=180, expect="terminated",
                 **kw):
    """Starts a workflow, waits for its end, checks the end state."""
    e = client.executions.start(deployment_id, workflow_id, parameters=parameters, **kw)
    e = wait_execution(client, e.id, timeout)
    if expect and e.status != expect:
        raise TierError(f"{workflow_id} on {deployment_id} ended {e.status}, expected {expect}: {e.error}")
    return e


def blueprints_digest():
    """8 hex chars of the blueprints directory's content: part of every blueprint id, so that an
    edited blueprint or script is uploaded anew instead of reusing the stale upload."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(BLUEPRINTS)):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            h.update(os.path.relpath(path, BLUEPRINTS).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:8]


def ensure_blueprint(client, blueprint_id, filename, timeout=120):
    """Uploads blueprints/<filename> as blueprint_id unless it is already uploaded, and waits until
    it is. Drivers run side by side and can ensure the same blueprint at once (smoke and the
    fixtures both put worker-pool on the second tenant): a 409 on the upload means another one got
    there between our GET and our PUT (so can a 500, when the two PUTs meet in the database), and
    its upload is waited for like ours."""
    try:
        bp = client.blueprints.get(blueprint_id)
    except CloudifyClientError as err:
        if err.status_code != 404:
            raise
        bp = None
    if bp is not None and bp.get("state") in (None, "uploaded"):
        return bp
    if bp is not None and bp.get("state") not in ("pending", "uploading", "extracting", "parsing"):
        client.blueprints.delete(blueprint_id, force=True)  # a failed upload of an earlier run
        bp = None
    if bp is None:
        try:
            client.blueprints.upload(os.path.join(BLUEPRINTS, filename), blueprint_id)
        except CloudifyClientError as refused:
            try:
                client.blueprints.get(blueprint_id)  # another driver's upload: wait for it
            except CloudifyClientError:
                raise refused from None
    deadline = time.time() + timeout
    while True:
        bp = client.blueprints.get(blueprint_id)
        state = bp.get("state")
        if state in (None, "uploaded"):
            return bp
        if "fail" in (state or "") or "invalid" in (state or ""):
            raise TierError(f"blueprint {blueprint_id} upload ended {state}: {bp.get('error')}")
        if time.time() > deadline:
            raise TierError(f"blueprint {blueprint_id} still {state} after {timeout} s")
        time.sleep(0.3)


def create_deployment(client, blueprint_id, deployment_id, inputs=None, labels=None, timeout=120, wait=True):
    """Creates a deployment; with wait, waits for its create_deployment_environment to terminate."""
    client.deployments.create(blueprint_id, deployment_id, inputs=inputs or {}, labels=labels)
    if wait:
        return wait_deployment_created(client, deployment_id, timeout)
    return None


def wait_deployment_created(client, deployment_id, timeout=120):
    """Waits for the create_deployment_environment execution of a deployment to terminate."""
    deadline = time.time() + timeout
    while True:
        execs = client.executions.list(deployment_id=deployment_id,
                                       workflow_id="create_deployment_environment",
                                       _include_system_workflows=True)
        if execs:
            e = wait_execution(client, execs[0].id, max(1, deadline - time.time()))
            if e.status != "terminated":
                raise TierError(f"creating {deployment_id} ended {e.status}: {e.error}")
            return client.deployments.get(deployment_id)
        if time.time() > deadline:
            raise TierError(f"no create_deployment_environment for {deployment_id} after {timeout} s")
        time.sleep(0.2)


def delete_deployments(client, deployment_ids, timeout=120):
    """Force-deletes deployments (no uninstall: nothing real is behind them) and waits until
    every one is gone. Deletes run concurrently on the manager."""
    pending = []
    for d in deployment_ids:
        try:
            client.deployments.delete(d, force=True)
            pending.append(d)
        except CloudifyClientError as err:
            if err.status_code != 404:
                raise
    deadline = time.time() + timeout
    while pending:
        for d in list(pending):
            try:
                client.deployments.get(d, _include=["id"])
            except CloudifyClientError as err:
                if err.status_code != 404:
                    raise
                pending.remove(d)
        if pending and time.time() > deadline:
            raise TierError(f"deployments {pending} not deleted after {timeout} s")
        time.sleep(0.3)


def delete_deployment(client, deployment_id, timeout=120):
    """Force-deletes one deployment and waits until it is gone."""
    delete_deployments(client, [deployment_id], timeout)


def all_instances(client, deployment_id):
    """Every node instance of a deployment, paged by a stable sort."""
    items, offset = [], 0
    while True:
        page = client.node_instances.list(deployment_id=deployment_id, _offset=offset, _size=1000,
                                          sort="id")
        items.extend(page.items)
        offset += len(page.items)
        if not page.items or offset >= page.metadata.pagination.total:
            return items


def group_props(client, deployment_id, group="workers"):
    d = client.deployments.get(deployment_id, _include=["id", "scaling_groups"])
    return d.scaling_groups[group]["properties"]


def group_members(instances, group="workers"):
    """{group-instance id: [node instances]} of one scaling group."""
    out = {}
    for i in instances:
        for g in i.get("scaling_groups") or []:
            if g["name"] == group:
                out.setdefault(g["id"], []).append(i)
    return out


def write_fault_file(fault_dir, name, fault):
    """Sets (fault dict) or clears (None) the file switch <fault_dir>/<name>.json."""
    path = os.path.join(fault_dir, name + ".json")
    if fault is None:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(fault_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(fault, f)
    os.replace(tmp, path)


def set_fault_property(client, deployment_id, fault):
    """Sets (dict) or clears (None) the runtime-property switch of worker-pool-faults.yaml."""
    inst = client.node_instances.list(deployment_id=deployment_id, node_id="fault_switch")
    if not inst:
        raise TierError(f"{deployment_id} has no fault_switch node (use worker-pool-faults.yaml)")
    i = client.node_instances.get(inst[0].id)
    props = dict(i.runtime_properties or {})
    # An empty dict, not a removed key: the client leaves runtime_properties alone when they are
    # empty, so popping the last key would change nothing.
    props["fault"] = fault or {}
    client.node_instances.update(i.id, runtime_properties=props, version=i.version)


class Checks:
    """Named checks run in order; each failure is reported and the rest still run."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.passed = 0
        self.failed = 0

    def run(self, name, fn, *args):
        t0 = time.time()
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - report every failure, keep going
            self.failed += 1
            print(f"FAIL {self.prefix}/{name} ({time.time() - t0:.1f} s): {type(err).__name__}: {err}", flush=True)
            if not isinstance(err, (AssertionError, TierError)):
                import traceback
                traceback.print_exc(file=sys.stdout)
            return False
        self.passed += 1
        print(f"PASS {self.prefix}/{name} ({time.time() - t0:.1f} s)", flush=True)
        return True


def expect(cond, message):
    if not cond:
        raise AssertionError(message)
