"""The two ways a refresh can read the nodes and VM instances of many deployments, timed against
a real Cloudify Manager in one run (BENCHMARKS.md section 12): by id, ten `deployment_id=` per
request and two requests in flight (what the provider does for up to 20 deployments), or the
tenant's in one request (instances filtered by node name only), which it does above that.

    . /work/wt/manager-env.sh
    /work/manager-shared/venv/bin/python scripts/bench/refresh_requests.py --deployments 200

Reads the deployments `refresh-bench-0000`... that scripts/bench/refresh_deployments.py creates.
Needs only `requests`.
"""

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import requests

INSTANCE_FIELDS = "id,node_id,deployment_id,host_id,state,runtime_properties,scaling_groups"
NODE_FIELDS = "id,deployment_id,type_hierarchy,host_id"
VM_NODES = [("node_id", "worker_host"), ("node_id", "control_plane_host")]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deployments", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    url = os.environ.get("CLOUDIFY_MANAGER_URL")
    if not url:
        raise SystemExit("CLOUDIFY_MANAGER_URL is not set (. /work/wt/manager-env.sh)")
    s = requests.Session()
    s.auth = (os.environ.get("CLOUDIFY_MANAGER_USER", "admin"),
              os.environ.get("CLOUDIFY_MANAGER_PASSWORD", ""))
    s.headers["Tenant"] = os.environ.get("CLOUDIFY_MANAGER_TENANT", "default_tenant")
    deps = [f"refresh-bench-{i:04d}" for i in range(args.deployments)]

    def get(path, params):
        items = []
        while True:  # every page, as the provider reads them
            r = s.get(url + "/api/v3.1" + path,
                      params=params + [("_size", 1000), ("_offset", len(items))])
            r.raise_for_status()
            body = r.json()
            items += body["items"]
            if not body["items"] or len(items) >= body["metadata"]["pagination"]["total"]:
                return items

    def by_id(path, fields, extra):
        chunks = [deps[i:i + 10] for i in range(0, len(deps), 10)]
        with ThreadPoolExecutor(2) as pool:
            parts = pool.map(lambda c: get(path, [("deployment_id", d) for d in c] + extra
                                           + [("_include", fields)]), chunks)
            return [i for part in parts for i in part]

    def tenant(path, fields, extra):
        wanted = set(deps)
        return [i for i in get(path, extra + [("_include", fields)]) if i["deployment_id"] in wanted]

    ways = {
        "instances by id": lambda: by_id("/node-instances", INSTANCE_FIELDS, VM_NODES),
        "instances of the tenant": lambda: tenant("/node-instances", INSTANCE_FIELDS, VM_NODES),
        "nodes by id": lambda: by_id("/nodes", NODE_FIELDS, []),
        "nodes of the tenant": lambda: tenant("/nodes", NODE_FIELDS, []),
    }
    times = {k: [] for k in ways}
    counts = {}
    for _ in range(args.rounds):
        for name, read in ways.items():  # interleaved, so both see the same load
            started = time.time()
            counts[name] = len(read())
            times[name].append(time.time() - started)
    print(f"| {args.deployments} deployments | mean | min | max | items |")
    print("|---|---:|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {statistics.mean(t):.2f} s | {min(t):.2f} s | {max(t):.2f} s "
              f"| {counts[name]} |")


if __name__ == "__main__":
    main()
