"""Plays the fidelity scenario against one manager (the real one or the simulator) and writes
normalized observations as JSON (tests/manager/README.md, "The fidelity check").

    observe.py --target real --out real.json      # the manager of CLOUDIFY_MANAGER_URL
    observe.py --target sim --url URL --out sim.json

Both targets get the same REST calls through Cloudify's own client; only the set-up differs:
the real manager gets blueprints/fidelity.yaml deployed, and fails a VM `create` through the
runtime-property fault switch; the simulator has the deployment in fidelity/scenario.yaml and
fails through POST /_sim/faults. Every observation is normalized so that a run on either side
gives the same value when the two behave alike: ids become shapes, polled state sequences lose
repeats, error texts become their first line with ids and numbers masked.
"""

import argparse
import json
import os
import re
import sys
import time
import uuid

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cloudify_rest_client.exceptions import CloudifyClientError  # noqa: E402

from tierlib import (TierError, create_deployment, delete_deployment, blueprints_digest,  # noqa: E402
                     ensure_blueprint, env_client, set_fault_property, wait_execution)

DEP = "fid-pool"
GROUP = "workers"
END = ("terminated", "failed", "cancelled")
SIM_STARTED_WINDOW_MS = 150
# Every VM create on the real manager lasts at least this long, so that a poller sees `creating`
# however fast the machine is.
REAL_BASELINE = {"delay_s": 0.5, "nodes": ["workers_host"]}
# Nodes the simulator does not model; kept out of the compared instance sets.
REAL_ONLY_NODES = ("workers_kubelet", "fault_switch")


def shape(value):
    """An id's shape: letters/digits runs replaced by their class and length."""
    if value is None:
        return None
    s = str(value)
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", s):
        return "uuid4"
    m = re.fullmatch(r"(.+)_([a-z0-9]{6})", s)
    if m:
        return f"{m.group(1)}_<6 [a-z0-9]>"
    return "other:" + re.sub(r"[0-9]", "9", s)


ID_RE = re.compile(r"\b(workers(?:_host|_port|_kubelet)?|fault_switch)_[a-z0-9]{6}\b")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def mask_line(line):
    """Instance, group-instance and execution ids masked, so that two runs compare equal."""
    return UUID_RE.sub("<uuid>", ID_RE.sub(r"<\1 id>", line))


def mask(text):
    """An error text made comparable: its first and last non-empty lines, ids masked. A task
    failure names the task on its first line; a workflow failure is a traceback whose last line
    is the exception."""
    if text is None:
        return None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return {"first": "", "last": ""}
    return {"first": mask_line(lines[0]), "last": mask_line(lines[-1])}


def dedup(seq):
    out = []
    for x in seq:
        if not out or out[-1] != x:
            out.append(x)
    return out


class Target:
    """One manager under observation: a client plus the target-specific set-up and faults."""

    def __init__(self, kind, url=None):
        self.kind = kind
        if kind == "sim":
            os.environ.update(CLOUDIFY_MANAGER_URL=url, CLOUDIFY_MANAGER_USER="admin",
                              CLOUDIFY_MANAGER_PASSWORD="admin", CLOUDIFY_MANAGER_TENANT="default_tenant")
            os.environ.pop("CLOUDIFY_MANAGER_TOKEN", None)
        self.url = os.environ["CLOUDIFY_MANAGER_URL"]
        self.c = env_client()

    def fresh(self, initial=2):
        """DEP with `initial` group instances and nothing running on it: the real manager gets a
        new deployment of blueprints/fidelity.yaml; the simulator's scenario deployment is
        scaled back (it cannot create deployments)."""
        if self.kind == "sim":
            self.clear_faults()
            self.resize(initial)
            return
        bp = f"tier-fidelity-{blueprints_digest()}"
        ensure_blueprint(self.c, bp, "fidelity.yaml")
        delete_deployment(self.c, DEP)
        create_deployment(self.c, bp, DEP, {"initial_workers": initial})
        e = self.c.executions.start(DEP, "install")
        e = wait_execution(self.c, e.id, 180)
        if e.status != "terminated":
            raise TierError(f"install of {DEP} ended {e.status}: {e.error}")
        self.clear_faults()

    def resize(self, n):
        """Scales DEP to n group instances (after whatever runs has ended)."""
        self.settle()
        cur = self.group()["current_instances"]
        if cur != n:
            e = self.c.executions.start(DEP, "scale", parameters={"scalable_entity_name": GROUP,
                                                                   "delta": n - cur}, queue=True)
            e = wait_execution(self.c, e.id, 120, poll=0.05)
            if e.status != "terminated":
                raise TierError(f"resizing {DEP} to {n} ended {e.status}: {e.error}")

    def settle(self):
        """Waits until no execution of DEP runs and no modification is left started."""
        deadline = time.time() + 120
        while time.time() < deadline:
            running = [e for e in self.c.executions.list(deployment_id=DEP) if e.status not in END]
            if not running:
                return
            time.sleep(0.2)
        raise TierError(f"{DEP} still busy after 120 s")

    def fail_next_create(self):
        """The next VM create of DEP fails with the quota text."""
        if self.kind == "sim":
            requests.post(f"{self.url}/_sim/faults", json={
                "fail_next_executions": 1,
                "fail_reason": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"},
                timeout=10).raise_for_status()
        else:
            set_fault_property(self.c, DEP, dict(REAL_BASELINE, fail="quota", once=uuid.uuid4().hex))

    def clear_faults(self):
        if self.kind == "sim":
            requests.delete(f"{self.url}/_sim/faults", timeout=10).raise_for_status()
            # A manager's workflow is `started` a moment before it does anything (even a zero
            # delta shows `started`); the simulator's window for that is this knob.
            requests.post(f"{self.url}/_sim/faults", json={"started_window_ms": SIM_STARTED_WINDOW_MS},
                          timeout=10).raise_for_status()
        else:
            set_fault_property(self.c, DEP, REAL_BASELINE)

    def group(self):
        d = self.c.deployments.get(DEP, _include=["id", "scaling_groups"])
        return d.scaling_groups[GROUP]["properties"]

    def instances(self):
        items = self.c.node_instances.list(deployment_id=DEP, _get_all_results=True,
                                           _include=["id", "node_id", "state", "host_id", "scaling_groups"])
        return [i for i in items if i.node_id not in REAL_ONLY_NODES]


class Timeline:
    """Fast polls of one execution and everything a client sees of its effect."""

    def __init__(self, target, execution_id, before, poll=0.05, tail=1.0, timeout=300):
        self.t = target
        self.samples = []
        c = target.c
        t0 = time.time()
        ended_at = None
        while True:
            e = c.executions.get(execution_id, _include=["id", "status", "error"])
            mods = [m for m in c.deployment_modifications.list(deployment_id=DEP)
                    if (m.context or {}).get("execution_id") == execution_id]
            g = target.group()
            inst = {i.id: i.state for i in target.instances()}
            self.samples.append({"exec": e.status, "mod": mods[0].status if mods else None,
                                 "pc": (g["planned_instances"], g["current_instances"]), "inst": inst})
            if e.status in END and ended_at is None:
                ended_at = time.time()
                self.execution = e
                self.end_index = len(self.samples) - 1
            if ended_at is not None and time.time() - ended_at > tail:
                break
            if time.time() - t0 > timeout:
                raise TierError(f"execution {execution_id} did not end in {timeout} s")
            time.sleep(poll)
        self.before = set(before)
        self.after = set(self.samples[-1]["inst"])

    def exec_seq(self):
        return dedup(s["exec"] for s in self.samples)

    def mod_seq(self):
        return dedup(s["mod"] for s in self.samples)

    def pc_seq(self):
        return dedup(list(s["pc"]) for s in self.samples)

    def instance_seqs(self, ids):
        """{instance id: deduplicated states, 'gone' when its row disappeared}."""
        out = {}
        for i in ids:
            out[i] = dedup(s["inst"].get(i, "absent" if i not in self.before else "gone")
                           for s in self.samples)
            if out[i] and out[i][0] == "absent":
                out[i] = out[i][1:]
        return out

    def at_end(self, ids):
        """What a client saw in the first poll that showed the execution ended."""
        s = self.samples[self.end_index]
        return {"mod": s["mod"], "pc": list(s["pc"]),
                "instances": sorted((node_of(i), s["inst"].get(i, "absent")) for i in ids)}

    def sibling_state_while(self, node, state, sibling):
        """States of `sibling` instances seen in polls where some `node` instance was in `state`."""
        seen = set()
        for s in self.samples:
            if any(node_of(i) == node and st == state for i, st in s["inst"].items()):
                seen |= {st for i, st in s["inst"].items() if node_of(i) == sibling and i not in self.before}
        return sorted(seen)

    def new_ids(self):
        seen = set()
        for s in self.samples:
            seen |= set(s["inst"])
        return sorted(seen - self.before)


def node_of(instance_id):
    return re.sub(r"_[a-z0-9]{6}$", "", instance_id)


def per_node(seqs):
    """Instance sequences grouped by node; equal sequences of one node collapse into one."""
    out = {}
    for i, seq in sorted(seqs.items()):
        out.setdefault(node_of(i), [])
        if seq not in out[node_of(i)]:
            out[node_of(i)].append(seq)
    return out


class Scenario:
    """The steps; each returns a JSON-able observation."""

    def __init__(self, target):
        self.t = target
        self.c = target.c
        self.obs = {}

    def start(self, **params):
        params.setdefault("scalable_entity_name", GROUP)
        return self.c.executions.start(DEP, "scale", parameters=params, queue=True)

    def run(self):
        steps = ["long_request_line", "id_shapes", "scale_out", "scale_in_with_hint", "validation_errors", "workflow_failures",
                 "hint_kinds", "failed_out_rollback", "failed_out_no_rollback", "queued"]
        for s in steps:
            t0 = time.time()
            try:
                self.obs[s] = getattr(self, s)()
            except Exception as err:  # noqa: BLE001 - a step that breaks is an observation too
                self.obs[s] = {"error": f"{type(err).__name__}: {err}"}
            print(f"observe[{self.t.kind}] {s} ({time.time() - t0:.1f} s)", flush=True)
        return self.obs

    # --- steps ---------------------------------------------------------------------------------
    def long_request_line(self):
        """GET /deployments with many id filters (what a client listing every configured
        deployment sends), with a request line of exactly 4094 and 4095 bytes. Not
        /node-instances: there each deployment_id filter costs the manager a nested subquery
        and ~160 of them take minutes (FINDINGS.md), which would time this probe out."""
        out = {}
        auth = (os.environ["CLOUDIFY_MANAGER_USER"], os.environ["CLOUDIFY_MANAGER_PASSWORD"])
        for name, length in (("at_4094", 4094), ("at_4095", 4095)):
            path = "/api/v3.1/deployments?_include=id"
            i = 0
            while len(f"GET {path} HTTP/1.1") < length - 80:
                path += f"&id=k8s-pool-{i:05d}"
                i += 1
            pad = length - len(f"GET {path}&id= HTTP/1.1")
            path += "&id=" + "x" * pad
            assert len(f"GET {path} HTTP/1.1") == length
            r = requests.get(self.t.url + path, auth=auth, headers={"Tenant": "default_tenant"}, timeout=120)
            out[name] = {"status": r.status_code, "content_type": r.headers.get("Content-Type", "").split(";")[0],
                         "body": re.sub(r"\s+", " ", r.text.strip())[:200] if r.status_code != 200 else "json"}
        return out

    def id_shapes(self):
        self.t.fresh(2)
        inst = self.t.instances()
        g = self.t.group()
        e = self.start(delta=0)
        e = wait_execution(self.c, e.id, 60, poll=0.05)
        return {
            "instances": sorted({(i.node_id, shape(i.id)) for i in inst}),
            "group_instance": sorted({shape(sg["id"]) for i in inst for sg in i.scaling_groups or []}),
            "host_id_is_self": sorted({(i.node_id, i.host_id == i.id) for i in inst}),
            "execution_id": shape(e.id),
            "group_props": {k: g[k] for k in ("min_instances", "max_instances", "current_instances",
                                              "planned_instances", "default_instances")},
            "delta_0": e.status,
            "parameters_keys": sorted(e.parameters),
        }

    def scale_out(self):
        before = [i.id for i in self.t.instances()]
        e = self.start(delta=2)
        tl = Timeline(self.t, e.id, before)
        mods = self.c.deployment_modifications.list(deployment_id=DEP, _sort="-created_at")
        m = [x for x in mods if (x.context or {}).get("execution_id") == e.id]
        return {"exec": tl.exec_seq(), "mod": tl.mod_seq(), "pc": tl.pc_seq(),
                "new_instances": per_node(tl.instance_seqs(tl.new_ids())),
                "at_end": tl.at_end(tl.new_ids()),
                "port_states_while_vm_creating": tl.sibling_state_while("workers_host", "creating", "workers_port"),
                "modification_id": shape(m[0].id) if m else None,
                "modified_nodes": m[0].modified_nodes if m else None,
                "context_keys": sorted((m[0].context or {}).keys()) if m else None}

    def scale_in_with_hint(self):
        inst = self.t.instances()
        vms = sorted(i.id for i in inst if i.node_id == "workers_host")
        victim = vms[0]
        e = self.start(delta=-1, include_instances=[victim])
        tl = Timeline(self.t, e.id, [i.id for i in inst])
        removed = sorted(set(i.id for i in inst) - tl.after)
        mods = [x for x in self.c.deployment_modifications.list(deployment_id=DEP)
                if (x.context or {}).get("execution_id") == e.id]
        return {"exec": tl.exec_seq(), "mod": tl.mod_seq(), "pc": tl.pc_seq(),
                "at_end": tl.at_end(removed),
                "removed_nodes": sorted(node_of(r) for r in removed),
                "victim_removed": victim in removed,
                "removed_instances": per_node(tl.instance_seqs(removed)),
                "modified_nodes": {k: {kk: (len(vv) if isinstance(vv, list) else vv) for kk, vv in v.items()}
                                   for k, v in (mods[0].modified_nodes if mods else {}).items()}}

    def validation_errors(self):
        self.t.settle()
        cases = {
            "undeclared_parameter": dict(parameters={"scalable_entity_name": GROUP, "bogus": 1}),
            "delta_not_integer": dict(parameters={"scalable_entity_name": GROUP, "delta": "abc"}),
            "missing_entity": dict(parameters={"delta": 1}),
            "unknown_workflow": dict(workflow="no_such_workflow", parameters={}),
            "unknown_deployment": dict(deployment="no-such-deployment"),
        }
        out = {}
        for name, case in cases.items():
            try:
                e = self.c.executions.start(case.get("deployment", DEP), case.get("workflow", "scale"),
                                            parameters=case.get("parameters"))
                out[name] = {"status": 201, "execution": e.status}
                wait_execution(self.c, e.id, 60, poll=0.05)
            except CloudifyClientError as err:
                out[name] = {"status": err.status_code, "error_code": err.error_code, "message": mask_line(str(err))}
        # A second scale while one runs, without and with queue.
        first = self.start(delta=0)
        try:
            self.c.executions.start(DEP, "scale", parameters={"scalable_entity_name": GROUP, "delta": 0})
            out["busy_without_queue"] = {"status": 201}
        except CloudifyClientError as err:
            out["busy_without_queue"] = {"status": err.status_code, "error_code": err.error_code,
                                         "message": mask_line(str(err))}
        second = self.start(delta=0)
        out["busy_with_queue"] = {"status": 201, "execution": second.status}
        for x in (first, second):
            wait_execution(self.c, x.id, 60, poll=0.05)
        return out

    def workflow_failures(self):
        """HTTP 201, then the workflow fails: each case's end state and normalized error line."""
        self.t.settle()
        vm = sorted(i.id for i in self.t.instances() if i.node_id == "workers_host")[0]
        cur = self.t.group()["current_instances"]
        cases = {
            "hint_on_scale_out": dict(delta=1, include_instances=[vm]),
            "below_zero": dict(delta=-(cur + 1)),
            "unknown_entity": dict(scalable_entity_name="no_such_group", delta=1),
            "hint_names_nothing": dict(delta=-1, include_instances=["workers_host_zzzzzz"]),
            "exclude_too_many": dict(delta=-cur, exclude_instances=[vm]),
        }
        out = {}
        for name, params in cases.items():
            e = self.start(**params)
            e = wait_execution(self.c, e.id, 60, poll=0.05)
            g = self.t.group()
            out[name] = {"status": e.status, "error": mask(e.error),
                         "unchanged": g["planned_instances"] == g["current_instances"] == cur}
        return out

    def hint_kinds(self):
        """delta -1 naming one node instance of each kind (each time another group instance):
        which group instance goes. Needs 3 group instances; ends with 0."""
        self.t.resize(3)
        out = {}
        kinds = (["contained_software"] if self.t.kind == "real" else []) + ["vm", "port", "group_instance"]
        for kind in kinds:
            all_inst = self.c.node_instances.list(deployment_id=DEP, _get_all_results=True)
            vm = sorted((i for i in all_inst if i.node_id == "workers_host"), key=lambda i: i.id)[0]
            gid = vm.scaling_groups[0]["id"]
            port = [i for i in all_inst if i.node_id == "workers_port"
                    and any(s["id"] == gid for s in i.scaling_groups or [])][0]
            kubelet = [i for i in all_inst if i.node_id == "workers_kubelet" and i.host_id == vm.id]
            hint = {"vm": vm.id, "port": port.id, "group_instance": gid,
                    "contained_software": kubelet[0].id if kubelet else None}[kind]
            n_before = self.t.group()["current_instances"]
            e = self.start(delta=-1, include_instances=[hint])
            e = wait_execution(self.c, e.id, 60, poll=0.05)
            left = {i.id for i in self.t.instances()}
            out[kind] = {"status": e.status, "error": mask(e.error),
                         "named_group_instance_removed": vm.id not in left and port.id not in left,
                         "group_instances_removed": n_before - self.t.group()["current_instances"]}
        return out

    def _failed_out(self, rollback):
        self.t.resize(0)
        before = [i.id for i in self.t.instances()]
        self.t.fail_next_create()
        e = self.start(delta=1, rollback_if_failed=rollback)
        tl = Timeline(self.t, e.id, before)
        self.t.clear_faults()
        left = {i: s for i, s in tl.samples[-1]["inst"].items() if i not in tl.before}
        return tl, {"exec": tl.exec_seq(), "mod": tl.mod_seq(), "pc": tl.pc_seq(),
                    "new_instances": per_node(tl.instance_seqs(tl.new_ids())),
                    "left_behind": sorted((node_of(i), s) for i, s in left.items()),
                    "at_end": tl.at_end(tl.new_ids()),
                    "error": mask(tl.execution.error)}

    def failed_out_rollback(self):
        return self._failed_out(True)[1]

    def failed_out_no_rollback(self):
        tl, out = self._failed_out(False)
        left_ids = set(tl.new_ids()) & set(tl.samples[-1]["inst"])
        # The started modification blocks the next scale...
        e = self.start(delta=1)
        e = wait_execution(self.c, e.id, 60, poll=0.05)
        out["next_scale"] = {"status": e.status, "error": mask(e.error)}
        # ...unless it aborts it first.
        before = [i.id for i in self.t.instances()]
        e = self.start(delta=1, abort_started=True)
        tl2 = Timeline(self.t, e.id, before)
        mods = self.c.deployment_modifications.list(deployment_id=DEP)
        g = self.t.group()
        out["abort_started"] = {"exec": tl2.exec_seq(), "pc": tl2.pc_seq(),
                                "statuses_of_all_modifications": sorted(m.status for m in mods
                                                                        if m.status != "finished"),
                                "final_pc": [g["planned_instances"], g["current_instances"]],
                                "left_over_instances_gone": not (left_ids & tl2.after)}
        return out

    def queued(self):
        """A scale-out, then two zero-delta scales posted with queue=true while it runs."""
        self.t.resize(1)
        ids = [self.start(delta=1).id, self.start(delta=0).id, self.start(delta=0).id]
        seqs = {i: [] for i in ids}
        t0 = time.time()
        while True:
            sts = {i: self.c.executions.get(i, _include=["id", "status"]).status for i in ids}
            for i in ids:
                seqs[i].append(sts[i])
            if all(s in END for s in sts.values()) or time.time() - t0 > 120:
                break
            time.sleep(0.05)
        g = self.t.group()
        return {"sequences": [dedup(seqs[i]) for i in ids], "final_pc": [g["planned_instances"],
                                                                        g["current_instances"]]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", choices=("real", "sim"), required=True)
    p.add_argument("--url", help="the simulator's URL (sim)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    target = Target(args.target, args.url)
    obs = Scenario(target).run()
    with open(args.out, "w") as f:
        json.dump(obs, f, indent=1, sort_keys=True)
    print(f"observe[{args.target}] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
