"""Smoke test of the manager tier against a running manager (tests/manager/README.md).

Uploads the tier's blueprints, creates labelled deployments (one in a second tenant), installs
them, scales out by 2, scales in naming exactly one VM, makes a scale-out fail through the fault
switches (with rollback and with rollback_if_failed=false, printing what is left behind), and
scales a group instance that holds two VMs. Prints one PASS/FAIL line per check and
`smoke: N passed, N failed`; exits non-zero on any failure.

Deployments of a previous run (ids smoke-*) are deleted first, so a kept manager can be reused;
the ones of this run are left in place for inspection.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

from cloudify_rest_client.exceptions import CloudifyClientError

from tierlib import (Checks, TierError, all_instances, blueprints_digest, create_deployment, delete_deployments, ensure_blueprint,
                     env_client, expect, group_members, group_props, run_workflow, set_fault_property,
                     wait_deployment_created, wait_execution, write_fault_file)

DIGEST = blueprints_digest()
WORKER_POOL, FAULTS, TWO_VM = (f"tier-{n}-{DIGEST}" for n in ("worker-pool", "worker-pool-faults", "two-vm"))
BLUEPRINTS = {WORKER_POOL: "worker-pool.yaml", FAULTS: "worker-pool-faults.yaml", TWO_VM: "two-vm.yaml"}
QUOTA = "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"


def create_tenant(client, name):
    """POST /tenants; on the open-source manager (premium-only 404) the local stack's add_tenant.py."""
    try:
        client.tenants.create(name)
        return
    except CloudifyClientError as err:
        if err.status_code == 409:
            return  # created meanwhile by a driver running beside this one
        if err.status_code != 404 or "premium" not in str(err) or os.environ.get("MANAGER_TIER_LOCAL") != "1":
            raise
    here = os.path.dirname(os.path.abspath(__file__))
    state = os.environ["MANAGER_STATE_DIR"]
    env = dict(os.environ, MANAGER_REST_CONFIG_PATH=f"{state}/etc/cloudify-rest.conf",
               MANAGER_REST_SECURITY_CONFIG_PATH=f"{state}/etc/rest-security.conf")
    out = subprocess.run([sys.executable, os.path.join(here, "add_tenant.py"), name], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise TierError(f"add_tenant.py {name} failed: {out.stderr.strip().splitlines()[-1:]}")


class Smoke:
    def __init__(self, args):
        self.args = args
        self.c = env_client()
        self.tenant_b = args.second_tenant
        self.cluster = args.cluster
        self.fault_dir = args.fault_dir
        self.inputs = {"cluster_name": self.cluster}
        if self.fault_dir:
            self.inputs["fault_dir"] = self.fault_dir
        self.record = {}

    # --- setup ---------------------------------------------------------------------------------
    def setup(self):
        # GET /tenants/<unknown> answers 403 "invalid tenant name", not 404: look in the list.
        if self.tenant_b not in [t.name for t in self.c.tenants.list(_get_all_results=True)]:
            create_tenant(self.c, self.tenant_b)
        self.cb = env_client(tenant=self.tenant_b)
        delete_deployments(self.c, ["smoke-pool", "smoke-faults", "smoke-two"])
        delete_deployments(self.cb, ["smoke-pool-b"])
        for bp, f in BLUEPRINTS.items():
            ensure_blueprint(self.c, bp, f)
        ensure_blueprint(self.cb, WORKER_POOL, "worker-pool.yaml")
        labels = [{"k8s-cluster": self.cluster}, {"tier-run": "smoke"}]
        # Everything concurrently: the manager runs the environment creations and installs side by side.
        plan = [(self.c, WORKER_POOL, "smoke-pool", self.inputs),
                (self.c, FAULTS, "smoke-faults", dict(self.inputs, initial_workers=1)),
                (self.c, TWO_VM, "smoke-two", self.inputs),
                (self.cb, WORKER_POOL, "smoke-pool-b", dict(self.inputs, initial_workers=1))]
        for client, bp, d, inputs in plan:
            create_deployment(client, bp, d, inputs, labels, wait=False)
        for client, _, d, _ in plan:
            wait_deployment_created(client, d)
        installs = [(client, client.executions.start(d, "install")) for client, _, d, _ in plan]
        for client, e in installs:
            e = wait_execution(client, e.id, 180)
            if e.status != "terminated":
                raise TierError(f"install of {e.deployment_id} ended {e.status}: {e.error}")

    # --- checks --------------------------------------------------------------------------------
    def label_discovery(self):
        rule = {"key": "k8s-cluster", "values": [self.cluster], "operator": "any_of", "type": "label"}
        found = sorted(d.id for d in self.c.deployments.list(filter_rules=[rule], _include=["id"]))
        expect(found == ["smoke-faults", "smoke-pool", "smoke-two"], found)
        found_b = [d.id for d in self.cb.deployments.list(filter_rules=[rule], _include=["id"])]
        expect(found_b == ["smoke-pool-b"], found_b)
        labels = {(l["key"], l["value"]) for l in self.c.deployments.get("smoke-pool").labels}
        expect(("k8s-cluster", self.cluster) in labels and ("k8s-role", "worker") in labels, labels)

    def installed_topology(self):
        inst = all_instances(self.c, "smoke-pool")
        by_node = {}
        for i in inst:
            by_node.setdefault(i.node_id, []).append(i)
        counts = {k: len(v) for k, v in by_node.items()}
        expect(counts == {"control_plane_host": 1, "worker_host": 2, "worker_port": 2, "worker_floating_ip": 2,
                          "kubelet": 2}, counts)
        expect(all(i.state == "started" for i in inst), [(i.id, i.state) for i in inst])
        for vm in by_node["worker_host"] + by_node["control_plane_host"]:
            rp = vm.runtime_properties
            expect(rp.get("hostname") == f"smoke-pool-{vm.id}".replace("_", "-") and rp.get("ip")
                   and rp.get("external_id"), (vm.id, rp))
            expect(vm.host_id == vm.id, (vm.id, vm.host_id))
        groups = group_members(inst)
        expect(len(groups) == 2, groups.keys())
        for gid, members in groups.items():
            nodes = sorted(m.node_id for m in members)
            self.record.setdefault("group_instance_members", nodes)
            # Only the group's declared members carry the group in scaling_groups.
            expect(nodes == ["worker_floating_ip", "worker_host", "worker_port"], (gid, nodes))
        # Software contained in a VM scales with it but names no group: only host_id ties it.
        vm_ids = {v.id for v in by_node["worker_host"]}
        for k in by_node["kubelet"]:
            expect(k.scaling_groups == [] and k.host_id in vm_ids, (k.id, k.scaling_groups, k.host_id))
        self.record["contained_kubelet_scaling_groups"] = by_node["kubelet"][0].scaling_groups
        props = group_props(self.c, "smoke-pool")
        expect(props["current_instances"] == props["planned_instances"] == 2, props)
        expect(props["min_instances"] == 0 and props["max_instances"] == 10, props)

    def scale_out_by_two(self):
        before = {i.id for i in all_instances(self.c, "smoke-pool") if i.node_id == "worker_host"}
        t0 = time.time()
        run_workflow(self.c, "smoke-pool", "scale", {"scalable_entity_name": "workers", "delta": 2}, queue=True)
        self.record["scale_out_2_seconds"] = round(time.time() - t0, 1)
        vms = [i for i in all_instances(self.c, "smoke-pool") if i.node_id == "worker_host"]
        expect(len(vms) == 4 and before < {v.id for v in vms}, [v.id for v in vms])
        expect(all(v.state == "started" and v.runtime_properties.get("hostname") for v in vms), vms)
        props = group_props(self.c, "smoke-pool")
        expect(props["current_instances"] == props["planned_instances"] == 4, props)

    def scale_in_naming_one_vm(self):
        inst = all_instances(self.c, "smoke-pool")
        vms = sorted((i for i in inst if i.node_id == "worker_host"), key=lambda i: i.id)
        victim = vms[1]
        gid = victim.scaling_groups[0]["id"]
        # The group instance's members plus what is contained in its VM (kubelet: host_id).
        victim_group = {i.id for i in inst if any(g["id"] == gid for g in i.scaling_groups or [])
                        or i.host_id == victim.id}
        run_workflow(self.c, "smoke-pool", "scale", {"scalable_entity_name": "workers", "delta": -1,
                                                     "include_instances": [victim.id]}, queue=True)
        after = {i.id for i in all_instances(self.c, "smoke-pool")}
        expect(not (victim_group & after), f"left of the named group instance: {victim_group & after}")
        expect({v.id for v in vms if v.id != victim.id} <= after, "another VM went")
        expect(len(after) == len(inst) - len(victim_group), (len(inst), len(after)))
        props = group_props(self.c, "smoke-pool")
        expect(props["current_instances"] == props["planned_instances"] == 3, props)

    def _failed_scale_out(self, rollback):
        dep = "smoke-faults"
        before_ids = {i.id for i in all_instances(self.c, dep)}
        before = group_props(self.c, dep)
        # once: a rollback restores the switch's runtime property (vm_create.py), so a cleared
        # switch could come back; a once-token fails exactly one create whatever happens to it.
        set_fault_property(self.c, dep, {"fail": "quota", "once": uuid.uuid4().hex})
        try:
            e = self.c.executions.start(dep, "scale", parameters={"scalable_entity_name": "workers", "delta": 1,
                                                                  "rollback_if_failed": rollback}, queue=True)
            e = wait_execution(self.c, e.id, 120)
        finally:
            set_fault_property(self.c, dep, None)
        expect(e.status == "failed", (e.status, e.error))
        expect(QUOTA in (e.error or ""), e.error)
        inst = all_instances(self.c, dep)
        left = sorted((i.node_id, i.state) for i in inst if i.id not in before_ids)
        mods = self.c.deployment_modifications.list(deployment_id=dep)
        mine = [m for m in mods if m.context.get("execution_id") == e.id]
        props = group_props(self.c, dep)
        key = "failed_scale_out_rollback" if rollback else "failed_scale_out_no_rollback"
        self.record[key] = {"left_instances": left, "modification": [m.status for m in mine],
                            "planned": props["planned_instances"], "current": props["current_instances"],
                            "error_last_line": (e.error or "").strip().splitlines()[-1:]}
        return before, props, left, mine

    def failed_scale_out_with_rollback(self):
        before, props, left, mine = self._failed_scale_out(True)
        expect(left == [], f"rollback left instances behind: {left}")
        expect(props["planned_instances"] == props["current_instances"] == before["current_instances"], props)
        expect([m.status for m in mine] == ["rolledback"], [m.status for m in mine])

    def failed_scale_out_without_rollback(self):
        before, props, left, mine = self._failed_scale_out(False)
        expect(left, "rollback_if_failed=false left nothing behind")
        expect([m.status for m in mine] == ["started"], [m.status for m in mine])
        expect(props["planned_instances"] == before["current_instances"] + 1, props)
        # The left-over started modification blocks the next scale unless it aborts it.
        blocked = run_workflow(self.c, "smoke-faults", "scale", {"scalable_entity_name": "workers", "delta": 1},
                               expect="failed", queue=True)
        self.record["scale_on_leftover_modification"] = (blocked.error or "").strip().splitlines()[-1:]
        ok = run_workflow(self.c, "smoke-faults", "scale", {"scalable_entity_name": "workers", "delta": 1,
                                                            "abort_started": True}, queue=True)
        self.record["abort_started"] = ok.status
        after = group_props(self.c, "smoke-faults")
        expect(after["planned_instances"] == after["current_instances"] == before["current_instances"] + 1, after)
        leftovers = self.c.deployment_modifications.list(deployment_id="smoke-faults", status="started")
        expect(len(leftovers) == 0, leftovers)

    def slow_create_by_file(self):
        if not self.fault_dir:
            raise TierError("no --fault-dir (an existing manager's host is not reachable): skipped as failed")
        write_fault_file(self.fault_dir, "smoke-pool", {"delay_s": 3, "nodes": ["worker_host"]})
        try:
            t0 = time.time()
            e = self.c.executions.start("smoke-pool", "scale", parameters={"scalable_entity_name": "workers",
                                                                           "delta": 1}, queue=True)
            seen = set()
            while True:
                x = self.c.executions.get(e.id)
                for i in self.c.node_instances.list(deployment_id="smoke-pool", node_id="worker_host",
                                                    _include=["id", "state"]):
                    seen.add(i.state)
                if x.status in ("terminated", "failed", "cancelled"):
                    break
                expect(time.time() - t0 < 90, "slow scale never ended")
                time.sleep(0.2)
            took = time.time() - t0
        finally:
            write_fault_file(self.fault_dir, "smoke-pool", None)
        self.record["slow_scale_out_seconds"] = round(took, 1)
        self.record["states_seen_during_slow_create"] = sorted(seen)
        expect(x.status == "terminated", (x.status, x.error))
        expect(took >= 3, took)
        expect("creating" in seen, seen)

    def two_vm_group(self):
        run_workflow(self.c, "smoke-two", "scale", {"scalable_entity_name": "workers", "delta": 1}, queue=True)
        inst = all_instances(self.c, "smoke-two")
        groups = group_members(inst)
        expect(len(groups) == 2, groups.keys())
        for gid, members in groups.items():
            expect(sorted(m.node_id for m in members) == ["storage_host", "storage_port", "worker_host",
                                                          "worker_port"], (gid, [m.node_id for m in members]))
            expect(sum(1 for m in members if m.host_id == m.id) == 2, gid)
        # Naming the storage VM removes its whole group instance, worker VM included.
        gid, members = sorted(groups.items())[0]
        storage = [m for m in members if m.node_id == "storage_host"][0]
        run_workflow(self.c, "smoke-two", "scale", {"scalable_entity_name": "workers", "delta": -1,
                                                    "include_instances": [storage.id]}, queue=True)
        left = {i.id for i in all_instances(self.c, "smoke-two")}
        expect(not ({m.id for m in members} & left), "part of the named group instance stayed")
        expect(len(left) == 4, left)

    def second_tenant(self):
        run_workflow(self.cb, "smoke-pool-b", "scale", {"scalable_entity_name": "workers", "delta": 1}, queue=True)
        props = group_props(self.cb, "smoke-pool-b")
        expect(props["current_instances"] == 2, props)
        err = None
        try:
            self.c.deployments.get("smoke-pool-b")
        except CloudifyClientError as e:
            err = e
        expect(err is not None and err.status_code == 404, "tenant b's deployment is visible in default_tenant")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cluster", default="tier-smoke", help="value of the k8s-cluster label")
    p.add_argument("--second-tenant", default=os.environ.get("MANAGER_SECOND_TENANT", "tier_tenant_b"))
    p.add_argument("--fault-dir", default=os.environ.get("MANAGER_FAULT_DIR", ""),
                   help="fault-switch directory on the manager host (local stack: $STATE/faults)")
    p.add_argument("--record", help="write what the failure modes left behind to this JSON file")
    args = p.parse_args()
    s = Smoke(args)
    checks = Checks("smoke")
    if checks.run("setup", s.setup):
        for name in ("label_discovery", "installed_topology", "scale_out_by_two", "scale_in_naming_one_vm",
                     "failed_scale_out_with_rollback", "failed_scale_out_without_rollback", "slow_create_by_file",
                     "two_vm_group", "second_tenant"):
            checks.run(name, getattr(s, name))
    print("smoke record: " + json.dumps(s.record, sort_keys=True))
    if args.record:
        with open(args.record, "w") as f:
            json.dump(s.record, f, indent=1, sort_keys=True)
    print(f"smoke: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
