"""Creates (and deletes) the deployments `cargo bench --features manager-bench --bench refresh -- --url …` reads on a real
Cloudify Manager (BENCHMARKS.md section 12).

    . /work/wt/manager-env.sh     # or: eval "$(tests/manager/manager.sh env)"
    $VENV/bin/python scripts/bench/refresh_deployments.py create --count 200 \
        --blueprint tests/manager/blueprints/worker-pool.yaml
    $VENV/bin/python scripts/bench/refresh_deployments.py delete

Deployment `refresh-bench-NNNN` (N from 0) of the manager tier's worker-pool blueprint (a
control-plane VM and a scaling group `workers` of two VMs with their ports and floating IPs),
installed, carries the label `refresh-bench` with the value `d<S>` for every size S in `--sizes`
it belongs to (N < S), so one set of 200 serves the sizes 10, 100 and 200. Runs in a Python
with `cloudify-common` (the tier's venv). Idempotent: existing deployments are kept, missing
installs are run.
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import requests
from cloudify_rest_client import CloudifyClient
from cloudify_rest_client.exceptions import CloudifyClientError

PREFIX = "refresh-bench-"
BLUEPRINT_ID = "refresh-bench-worker-pool"
END = ("terminated", "failed", "cancelled")


def client():
    url = os.environ.get("CLOUDIFY_MANAGER_URL")
    if not url:
        sys.exit("CLOUDIFY_MANAGER_URL is not set (source the manager tier's environment)")
    u = urlparse(url)
    kw = dict(host=u.hostname, port=u.port or (443 if u.scheme == "https" else 80),
              protocol=u.scheme, tenant=os.environ.get("CLOUDIFY_MANAGER_TENANT", "default_tenant"),
              username=os.environ.get("CLOUDIFY_MANAGER_USER", "admin"),
              password=os.environ.get("CLOUDIFY_MANAGER_PASSWORD", ""))
    if u.scheme == "https" and os.environ.get("CLOUDIFY_MANAGER_CA_CERT"):
        kw["cert"] = os.environ["CLOUDIFY_MANAGER_CA_CERT"]
    return CloudifyClient(**kw)


def wait(c, execution_id, timeout=900):
    end = time.time() + timeout
    while True:
        e = c.executions.get(execution_id, _include=["id", "status", "error"])
        if e.status in END:
            return e
        if time.time() > end:
            raise RuntimeError(f"execution {execution_id} still {e.status} after {timeout} s")
        time.sleep(1)


def ensure_blueprint(c, path):
    try:
        bp = c.blueprints.get(BLUEPRINT_ID, _include=["id", "state"])
        if bp.get("state") in (None, "uploaded"):
            return
    except CloudifyClientError as e:
        if e.status_code != 404:
            raise
    c.blueprints.upload(path, BLUEPRINT_ID)
    end = time.time() + 300
    while c.blueprints.get(BLUEPRINT_ID, _include=["id", "state"]).get("state") not in (None, "uploaded"):
        if time.time() > end:
            raise RuntimeError("blueprint upload did not finish")
        time.sleep(1)


def existing(c):
    found = {}
    offset = 0
    while True:
        page = c.deployments.list(_include=["id", "latest_execution_status", "installation_status"],
                                  _search=PREFIX, _offset=offset, _size=1000)
        for d in page:
            if d.id.startswith(PREFIX):
                found[d.id] = d
        offset += len(page)
        if offset >= page.metadata.pagination.total or not page:
            return found


def create_one(c, i, sizes, fault_dir):
    dep = f"{PREFIX}{i:04d}"
    labels = [{"refresh-bench": f"d{s}"} for s in sizes if i < s]
    try:
        c.deployments.create(BLUEPRINT_ID, dep, inputs={"cluster_name": "refresh-bench",
                                                        "initial_workers": 2,
                                                        "fault_dir": fault_dir},
                             labels=labels)
    except CloudifyClientError as e:
        # A busy manager answers 500 when its own wait for the environment workflow runs out;
        # the deployment exists and the wait below goes on.
        if "already exists" not in str(e) and e.status_code != 500:
            raise
    # The environment is created by a workflow of its own; install waits for it.
    for _ in range(600):
        envs = c.executions.list(deployment_id=dep, workflow_id="create_deployment_environment",
                                 _include=["id", "status"])
        if envs and all(e.status in END for e in envs):
            break
        time.sleep(1)
    installs = c.executions.list(deployment_id=dep, workflow_id="install", _include=["id", "status"])
    if any(e.status == "terminated" for e in installs):
        return dep, "kept"
    e = wait(c, c.executions.start(dep, "install").id)
    return dep, e.status


def create_retrying(i, sizes, fault_dir, attempts=30):
    """create_one, again after a dropped connection or a 5xx (a manager restarted or busy)."""
    for attempt in range(1, attempts + 1):
        try:
            return create_one(client(), i, sizes, fault_dir)
        except (requests.exceptions.ConnectionError, CloudifyClientError) as e:
            if attempt == attempts or getattr(e, "status_code", 500) < 500:
                raise
            print(f"{PREFIX}{i:04d}: {type(e).__name__}, again in 10 s", flush=True)
            time.sleep(10)


def create(args):
    c = client()
    ensure_blueprint(c, args.blueprint)
    sizes = sorted(args.sizes)
    fault_dir = os.environ.get("MANAGER_FAULT_DIR", "/var/tmp/autoscaler-cloudify-tier-faults")
    started = time.time()
    with ThreadPoolExecutor(args.parallel) as pool:
        for dep, status in pool.map(lambda i: create_retrying(i, sizes, fault_dir),
                                    range(args.count)):
            print(f"{dep}: {status} ({time.time() - started:.0f} s)", flush=True)
            if status not in ("terminated", "kept"):
                sys.exit(f"{dep}: install {status}")


def delete(args):
    c = client()
    deps = sorted(existing(c))
    for d in deps:
        try:
            c.deployments.delete(d, force=True)
        except CloudifyClientError as e:
            print(f"{d}: {e}", file=sys.stderr)
    end = time.time() + 900
    while existing(c):
        if time.time() > end:
            sys.exit(f"deployments still there: {sorted(existing(c))[:5]}...")
        time.sleep(2)
    try:
        c.blueprints.delete(BLUEPRINT_ID, force=True)
    except CloudifyClientError as e:
        print(f"blueprint: {e}", file=sys.stderr)
    print(f"deleted {len(deps)} deployments")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    cr = sub.add_parser("create")
    cr.add_argument("--count", type=int, default=200)
    cr.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 200])
    cr.add_argument("--blueprint", default="tests/manager/blueprints/worker-pool.yaml")
    cr.add_argument("--parallel", type=int, default=3)
    cr.set_defaults(run=create)
    de = sub.add_parser("delete")
    de.set_defaults(run=delete)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
