"""Fidelity test: Cloudify's own Python REST client (cloudify-common 7.0.5) against the simulator.

Every check uses the official client classes and exception types, so anything the simulator
shapes differently from a manager (status codes, list envelopes, field names, error codes)
shows up as a failure here. Run through tests/python/run.sh, which starts the simulator.
Prints `N passed, N failed` and exits non-zero on any failure.
"""

import argparse
import sys
import time
import traceback

import requests
from cloudify_rest_client import CloudifyClient
from cloudify_rest_client.exceptions import (
    CloudifyClientError,
    ForbiddenError,
    IllegalExecutionParametersError,
    InvalidFilterRule,
    MaintenanceModeActiveError,
    NoSuchIncludeFieldError,
    UserUnauthorizedError,
)

END_STATES = ("terminated", "failed", "cancelled")
RESULTS = []


def check(fn):
    """Registers a check; checks run in definition order."""
    RESULTS.append(fn)
    return fn


def expect(cond, message):
    if not cond:
        raise AssertionError(message)


def raises(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError(f"expected {exc_type.__name__}")


class Ctx:
    def __init__(self, url):
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.url = url
        self.host = host
        self.port = int(port)

    def client(self, **kw):
        args = dict(host=self.host, port=self.port, protocol="http",
                    username="admin", password="admin", tenant="default_tenant")
        args.update(kw)
        return CloudifyClient(**args)

    def faults(self, **faults):
        r = requests.post(f"{self.url}/_sim/faults", json=faults, timeout=10)
        r.raise_for_status()

    def clear_faults(self):
        requests.delete(f"{self.url}/_sim/faults", timeout=10).raise_for_status()

    def wait(self, client, execution_id, timeout=30):
        deadline = time.time() + timeout
        while True:
            e = client.executions.get(execution_id)
            if e.status in END_STATES:
                return e
            expect(time.time() < deadline, f"execution {execution_id} stuck in {e.status}")
            time.sleep(0.02)

    def group(self, client, deployment="k8s-pool-a", group="workers"):
        d = client.deployments.get(deployment, _include=["id", "scaling_groups"])
        return d.scaling_groups[group]["properties"]

    def all_instances(self, client, deployment="k8s-pool-a", size=7):
        items, offset = [], 0
        while True:
            page = client.node_instances.list(deployment_id=deployment, _offset=offset, _size=size)
            items.extend(page.items)
            offset += len(page.items)
            if not page.items or offset >= page.metadata.pagination.total:
                return items


@check
def list_deployments_with_scaling_groups(ctx):
    c = ctx.client()
    version = c.manager.get_version()
    expect(version["version"].startswith("7."), version)
    deps = c.deployments.list(_include=["id", "scaling_groups", "labels"])
    ids = [d.id for d in deps]
    expect(ids == ["k8s-pool-a", "k8s-pool-b", "k8s-control-plane"], ids)
    expect(deps.metadata.pagination.total == 3, deps.metadata)
    props = deps[0].scaling_groups["workers"]["properties"]
    expect(props["min_instances"] == 1 and props["max_instances"] == 50, props)
    expect(props["current_instances"] == 23 == props["planned_instances"], props)
    expect(deps[0].scaling_groups["workers"]["members"] == ["workers_host", "workers_port"], deps[0])
    unbounded = deps[1].scaling_groups["gpu-workers"]["properties"]["max_instances"]
    expect(unbounded == -1, unbounded)
    labels = {(l["key"], l["value"]) for l in deps[0].labels}
    expect(("k8s-cluster", "demo") in labels and ("tier", "general") in labels, labels)
    one = c.deployments.get("k8s-pool-a")
    expect(one.id == "k8s-pool-a" and "workers" in one.scaling_groups, one)
    expect(any(w["name"] == "scale" for w in one.workflows), one.workflows)


@check
def page_through_node_instances(ctx):
    c = ctx.client()
    items = ctx.all_instances(c)
    ids = [i.id for i in items]
    expect(len(ids) == 46 and len(set(ids)) == 46, len(ids))
    vms = [i for i in items if i.host_id == i.id]
    expect(len(vms) == 23, len(vms))
    vm = vms[0]
    expect(vm.node_id == "workers_host" and vm.state == "started", vm)
    expect(vm.runtime_properties["hostname"].startswith("k8s-pool-a-workers-host-"), vm.runtime_properties)
    expect(vm.scaling_groups[0]["name"] == "workers", vm.scaling_groups)
    gid = vm.scaling_groups[0]["id"]
    port = [i for i in items if i.host_id is None and i.scaling_groups[0]["id"] == gid]
    expect(len(port) == 1 and port[0].node_id == "workers_port", port)
    got = c.node_instances.get(vm.id)
    expect(got.id == vm.id and got.deployment_id == "k8s-pool-a", got)
    expect(isinstance(got.version, int) and isinstance(got.index, int), got)
    missing = raises(CloudifyClientError, c.node_instances.get, "workers_host_zzzzzz")
    expect(missing.status_code == 404 and missing.error_code == "not_found_error", missing)


@check
def nodes_carry_type_hierarchy(ctx):
    c = ctx.client()
    host = c.nodes.get("k8s-pool-a", "workers_host")
    expect("cloudify.nodes.Compute" in host.type_hierarchy, host.type_hierarchy)
    expect(host.host_id == "workers_host", host.host_id)
    expect(host["actual_number_of_instances"] == 23, host)
    nodes = c.nodes.list(deployment_id="k8s-pool-a")
    expect(sorted(n.id for n in nodes) == ["workers_host", "workers_port"], [n.id for n in nodes])


@check
def search_deployments_by_label(ctx):
    c = ctx.client()
    rule = {"key": "k8s-cluster", "values": ["demo"], "operator": "any_of", "type": "label"}
    found = c.deployments.list(filter_rules=[rule], _include=["id"])
    expect([d.id for d in found] == ["k8s-pool-a", "k8s-pool-b", "k8s-control-plane"], found)
    rule2 = {"key": "tier", "values": ["workers"], "operator": "any_of", "type": "label"}
    found = c.deployments.list(filter_rules=[rule, rule2])
    expect([d.id for d in found] == ["k8s-pool-a"], found)
    none = c.deployments.list(filter_rules=[dict(rule, values=["prod"])])
    expect(len(none) == 0, none)
    bad = raises(InvalidFilterRule, c.deployments.list,
                 filter_rules=[dict(rule, operator="equals")])
    expect(bad.status_code == 400 and bad.err_reason, bad)
    # Another tenant sees only its own deployments.
    other = ctx.client(tenant="other_tenant").deployments.list()
    expect([d.id for d in other] == ["elsewhere"], other)


@check
def scale_out_with_queue_and_poll(ctx):
    c = ctx.client()
    first = c.executions.start("k8s-pool-a", "scale",
                               parameters={"scalable_entity_name": "workers", "delta": 2},
                               queue=True)
    expect(first.status in ("pending", "started"), first.status)
    second = c.executions.start("k8s-pool-a", "scale",
                                parameters={"scalable_entity_name": "workers", "delta": 1},
                                queue=True)
    expect(second.status == "queued", second.status)
    done1, done2 = ctx.wait(c, first.id), ctx.wait(c, second.id)
    expect(done1.status == "terminated" and done2.status == "terminated", (done1, done2))
    expect(done2.started_at >= done1.ended_at, (done1.ended_at, done2.started_at))
    expect(done1.parameters["delta"] == 2 and done1.parameters["rollback_if_failed"] is True,
           done1.parameters)
    props = ctx.group(c)
    expect(props["current_instances"] == 26 == props["planned_instances"], props)
    listed = c.executions.list(deployment_id="k8s-pool-a", sort="created_at", is_descending=True)
    expect(listed[0].id == second.id, [e.id for e in listed])


@check
def scale_in_with_include_instances(ctx):
    c = ctx.client()
    vms = [i for i in ctx.all_instances(c) if i.host_id == i.id]
    victims = [vms[3].id, vms[10].id]
    keep = [v.id for v in vms if v.id not in victims]
    e = c.executions.start("k8s-pool-a", "scale",
                           parameters={"scalable_entity_name": "workers",
                                       "delta": -len(victims),
                                       "include_instances": victims},
                           queue=True)
    e = ctx.wait(c, e.id)
    expect(e.status == "terminated", e)
    for v in victims:
        err = raises(CloudifyClientError, c.node_instances.get, v)
        expect(err.status_code == 404, err)
    left = {i.id for i in ctx.all_instances(c) if i.host_id == i.id}
    expect(left == set(keep), (left, keep))


@check
def busy_deployment_without_queue(ctx):
    c = ctx.client()
    ctx.faults(hold_executions=True)
    try:
        held = c.executions.start("k8s-pool-a", "scale",
                                  parameters={"scalable_entity_name": "workers", "delta": 0})
        err = raises(CloudifyClientError, c.executions.start, "k8s-pool-a", "scale",
                     parameters={"scalable_entity_name": "workers"})
        expect(err.status_code == 400, err.status_code)
        expect(err.error_code == "existing_running_execution_error", err.error_code)
        queued = c.executions.start("k8s-pool-a", "scale",
                                    parameters={"scalable_entity_name": "workers"}, queue=True)
        expect(queued.status == "queued", queued.status)
        cancelled = c.executions.cancel(queued.id)
        expect(cancelled.status == "cancelled", cancelled.status)
    finally:
        ctx.faults(hold_executions=False)
    expect(ctx.wait(c, held.id).status == "terminated", held)


@check
def failed_scale_out_rolls_back(ctx):
    c = ctx.client()
    before = ctx.group(c)
    ctx.faults(fail_next_executions=1, fail_reason="Quota exceeded for instances")
    e = c.executions.start("k8s-pool-a", "scale",
                           parameters={"scalable_entity_name": "workers", "delta": 3}, queue=True)
    e = ctx.wait(c, e.id)
    expect(e.status == "failed" and "Quota exceeded for instances" in e.error, e.error)
    # A failed operation as the real manager words it (tests/manager/FINDINGS.md): the task
    # summary first, the plugin's exception last; no "Traceback (most recent call last)" header.
    lines = e.error.strip().splitlines()
    expect(lines[0].startswith("Task failed: ") and "cloudify.interfaces.lifecycle.create" in lines[0], lines[0])
    expect(lines[-1].startswith("cloudify.exceptions.NonRecoverableError: Quota exceeded"), lines[-1])
    after = ctx.group(c)
    expect(after["planned_instances"] == after["current_instances"] == before["current_instances"],
           (before, after))


@check
def started_scale_before_its_deployment_modification(ctx):
    # A manager's scale is `started` before the workflow validates its parameters and starts
    # the deployment modification; only then does planned_instances move.
    c = ctx.client()
    before = ctx.group(c)
    ctx.faults(started_window_ms=1500)
    try:
        e = c.executions.start("k8s-pool-a", "scale",
                               parameters={"scalable_entity_name": "workers", "delta": 1},
                               queue=True)
        deadline = time.time() + 10
        while c.executions.get(e.id).status != "started":
            expect(time.time() < deadline, "never started")
            time.sleep(0.02)
        mods = c.deployment_modifications.list(deployment_id="k8s-pool-a", status="started")
        expect(len(mods) == 0, mods)
        expect(ctx.group(c)["planned_instances"] == before["planned_instances"], ctx.group(c))
        while True:
            mods = c.deployment_modifications.list(deployment_id="k8s-pool-a", status="started")
            if mods:
                break
            expect(time.time() < deadline, "no modification started")
            time.sleep(0.02)
        m = mods[0]
        expect(m.context["execution_id"] == e.id and m.status == "started", m)
        expect(m.modified_nodes["workers"]["instances"] == before["planned_instances"] + 1, m)
        expect(ctx.group(c)["planned_instances"] == before["planned_instances"] + 1, "planned moved")
    finally:
        ctx.faults(started_window_ms=0)
    expect(ctx.wait(c, e.id).status == "terminated", e)
    expect(c.deployment_modifications.get(m.id).status == "finished", "finished")
    expect(len(c.deployment_modifications.list(deployment_id="k8s-pool-a", status="started")) == 0,
           "none left started")


@check
def failed_scale_in_without_rollback_leaves_stopped_vms(ctx):
    c = ctx.client()
    vms = [i for i in ctx.all_instances(c) if i.host_id == i.id and i.state == "started"]
    victim = vms[0].id
    ctx.faults(fail_next_executions=1)
    e = c.executions.start("k8s-pool-a", "scale",
                           parameters={"scalable_entity_name": "workers", "delta": -1,
                                       "include_instances": [victim],
                                       "rollback_if_failed": False},
                           queue=True)
    expect(ctx.wait(c, e.id).status == "failed", e)
    expect(c.node_instances.get(victim).state == "stopped", c.node_instances.get(victim).state)
    left = c.deployment_modifications.list(deployment_id="k8s-pool-a", status="started")
    expect(len(left) == 1 and left[0].context["execution_id"] == e.id, left)
    # The next scale fails on the leftover modification unless it aborts it first.
    blocked = c.executions.start("k8s-pool-a", "scale",
                                 parameters={"scalable_entity_name": "workers", "delta": -1,
                                             "include_instances": [victim]}, queue=True)
    blocked = ctx.wait(c, blocked.id)
    expect(blocked.status == "failed" and "existing started deployment" in blocked.error, blocked)
    # The manager names the started modification in the workflow's last line.
    expect(f"Currently started deployment modifications: ['{left[0].id}']" in blocked.error, blocked.error)
    retry = c.executions.start("k8s-pool-a", "scale",
                               parameters={"scalable_entity_name": "workers", "delta": -1,
                                           "include_instances": [victim], "abort_started": True},
                               queue=True)
    expect(ctx.wait(c, retry.id).status == "terminated", retry)
    err = raises(CloudifyClientError, c.node_instances.get, victim)
    expect(err.status_code == 404, err)
    expect(c.deployment_modifications.get(left[0].id).status == "rolledback", "rolled back")
    props = ctx.group(c)
    expect(props["planned_instances"] == props["current_instances"], props)


@check
def rejected_execution_post_stores_nothing(ctx):
    c = ctx.client()
    before = len(c.executions.list(deployment_id="k8s-pool-a", _get_all_results=True))
    ctx.faults(reject_next_execution_posts=1)
    err = raises(CloudifyClientError, c.executions.start, "k8s-pool-a", "scale",
                 parameters={"scalable_entity_name": "workers", "delta": 0}, queue=True)
    expect(err.status_code == 500, err.status_code)
    after = len(c.executions.list(deployment_id="k8s-pool-a", _get_all_results=True))
    expect(after == before, (before, after))
    ok = c.executions.start("k8s-pool-a", "scale",
                            parameters={"scalable_entity_name": "workers", "delta": 0}, queue=True)
    expect(ctx.wait(c, ok.id).status == "terminated", ok)


@check
def instance_set_changing_between_pages(ctx):
    c = ctx.client()
    clean = c.node_instances.list(deployment_id="k8s-pool-a", _offset=0, _size=20)
    total = clean.metadata.pagination.total
    ctx.faults(churn_next_pages=1)
    first = c.node_instances.list(deployment_id="k8s-pool-a", _offset=0, _size=10)
    second = c.node_instances.list(deployment_id="k8s-pool-a", _offset=10, _size=10)
    expect(first.metadata.pagination.total == total, first.metadata.pagination)
    expect(second.metadata.pagination.total == total + 1, second.metadata.pagination)
    # The row that moved onto the first page is skipped by offset paging.
    expect([i.id for i in second][0] == [i.id for i in clean][11], "one row skipped")
    again = c.node_instances.list(deployment_id="k8s-pool-a", _offset=10, _size=10)
    expect([i.id for i in again] == [i.id for i in clean][10:20], "once only")


@check
def parameter_and_include_errors(ctx):
    c = ctx.client()
    raises(IllegalExecutionParametersError, c.executions.start, "k8s-pool-a", "scale",
           parameters={"delta": 1})
    raises(IllegalExecutionParametersError, c.executions.start, "k8s-pool-a", "scale",
           parameters={"scalable_entity_name": "workers", "bogus": True})
    # Only the simulator lacks `install` (it runs `scale` alone); a manager would start it.
    err = raises(CloudifyClientError, c.executions.start, "k8s-pool-a", "install")
    expect(err.error_code == "nonexistent_workflow_error", err.error_code)
    raises(NoSuchIncludeFieldError, c.deployments.list, _include=["id", "no_such_field"])
    err = raises(CloudifyClientError, c.deployments.get, "no-such-deployment")
    expect(err.status_code == 404, err)


@check
def bad_password_and_tenant(ctx):
    # A throw-away user: five failures lock it, which must not affect `admin`.
    probe = ctx.client(username="lockout-probe", password="wrong")
    err = raises(UserUnauthorizedError, probe.deployments.list)
    expect(err.status_code == 401, err.status_code)
    ok = ctx.client(username="lockout-probe", password="right-password").deployments.list()
    expect(len(ok) == 3, ok)
    # A non-admin user outside a tenant is forbidden there; an unknown tenant is forbidden.
    raises(ForbiddenError, ctx.client(username="lockout-probe", password="right-password",
                                      tenant="other_tenant").deployments.list)
    raises(ForbiddenError, ctx.client(tenant="no-such-tenant").deployments.list)
    for _ in range(5):
        raises(UserUnauthorizedError, probe.deployments.list)
    locked = ctx.client(username="lockout-probe", password="right-password")
    raises(UserUnauthorizedError, locked.deployments.list)
    # admin is unaffected by the probe's lock.
    expect(len(ctx.client().deployments.list()) == 3, "admin still works")


@check
def token_authentication(ctx):
    c = ctx.client()
    token = c.tokens.create(description="fidelity", expiration="+1h")
    expect(token.value.startswith("ctok-"), token.value)
    by_token = ctx.client(username=None, password=None, token=token.value)
    expect(len(by_token.deployments.list()) == 3, "token works")
    listed = c.tokens.list()
    expect(any(t.id == token.id for t in listed), listed)
    bad = ctx.client(username=None, password=None, token="ctok-nope-nope")
    raises(UserUnauthorizedError, bad.deployments.list)


@check
def maintenance_mode(ctx):
    c = ctx.client()
    ctx.faults(down=True)
    try:
        raises(MaintenanceModeActiveError, c.deployments.list)
    finally:
        ctx.clear_faults()
    expect(len(c.deployments.list()) == 3, "back up")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    ctx = Ctx(parser.parse_args().url)
    passed = failed = 0
    for fn in RESULTS:
        try:
            fn(ctx)
            passed += 1
            print(f"PASS {fn.__name__}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
