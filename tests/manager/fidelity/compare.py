"""Compares the observations of the real manager and of the simulator (observe.py output).

    compare.py real.json sim.json

Each aspect (a path into the observations) is normalized the same way on both sides, then
compared. Equal: PASS. Different: FAIL, printing both values, unless the path is in ALLOWED
with the reason it stays (each reason is also in docs/simulator.md, "Where the simulator
differs from a manager"). Prints `fidelity: N passed, N failed`; exits non-zero on a failure.
"""

import json
import re
import sys

# Differences that stay, with why. A path here that no longer differs is reported, so the list
# cannot silently outlive the difference.
ALLOWED = {
    "hint_kinds.contained_software":
        "real only: the simulator models no software contained in a VM; on a manager a hint naming "
        "such an instance (a kubelet) fails the scale (it is no member of the group)",
}

INSTALL_MILESTONES = ("uninitialized", "creating", "started", "absent")
REMOVAL_STATES = ("stopping", "stopped", "deleting", "deleted")


def install_seq(seq):
    """A new instance's polled states projected onto what every poller sees on both sides:
    the short no-operation states (initializing, created, configuring, ...) go."""
    out = []
    for s in seq:
        if s in INSTALL_MILESTONES and (not out or out[-1] != s):
            out.append(s)
    return out


def removal_seq(seq):
    """A removed instance's polled states: first and last, and whether every state between is a
    removal state (a poller may see any of them, or none)."""
    if not seq:
        return seq
    middle = seq[1:-1]
    return [seq[0], "removal states" if all(s in REMOVAL_STATES for s in middle) else middle, seq[-1]]


def per_node(value, fn):
    if not isinstance(value, dict):
        return value
    return {node: sorted({json.dumps(fn(s)) for s in seqs}) for node, seqs in value.items()}


def error_text(value):
    """An error's first line with the task name, file path and line number masked; its last line
    as it is (ids were masked by observe.py)."""
    if not isinstance(value, dict):
        return value
    first = value.get("first") or ""
    first = re.sub(r"^Task failed: \S+ \(", "Task failed: <task> (", first)
    first = re.sub(r'^File "[^"]*/cloudify/plugins/workflows\.py", line \d+, in (\w+)',
                   r'File ".../cloudify/plugins/workflows.py", line <n>, in \1', first)
    return {"first": first, "last": value.get("last")}


def exec_seq(seq):
    return seq


def covers(real, sim):
    """A polled sequence of the real manager fits the simulator's: same first and last value,
    and every value the real poller saw appears in the simulator's sequence, in order. A
    poller may miss a short window on the real manager (it saw `planned` dip during an
    `abort_started` in one run and not in the next); it must never see one the simulator
    lacks, a different value or another order."""
    if not (isinstance(real, list) and isinstance(sim, list)) or not real or not sim:
        return real == sim
    if real[0] != sim[0] or real[-1] != sim[-1]:
        return False
    it = iter(sim)
    return all(any(x == y for y in it) for x in real)


def covers_per_node(real, sim):
    """covers() for {node: [sequence, ...]}: every real sequence fits one of the node's
    simulator sequences."""
    if not (isinstance(real, dict) and isinstance(sim, dict)) or set(real) != set(sim):
        return real == sim
    return all(any(covers(json.loads(r), json.loads(s_)) for s_ in sim[n]) for n in real for r in real[n])


def covers_each(real, sim):
    """covers() pairwise for lists of sequences (the queued executions)."""
    if not (isinstance(real, list) and isinstance(sim, list)) or len(real) != len(sim):
        return real == sim
    return all(covers(r, s_) for r, s_ in zip(real, sim))


def covers_abort(real, sim):
    """The abort_started observation: its sequences by covers(), the rest equal."""
    if not (isinstance(real, dict) and isinstance(sim, dict)) or set(real) != set(sim):
        return real == sim
    return all(covers(real[k], sim[k]) if k in ("exec", "pc") else real[k] == sim[k] for k in real)


# (path, normalizer[, comparator]). A path names a key of the observations; "a.b" is
# obs["a"]["b"]. The comparator is equality unless given (polled sequences use covers()).
ASPECTS = [
    ("long_request_line", None),
    ("id_shapes.instances", None), ("id_shapes.group_instance", None), ("id_shapes.host_id_is_self", None),
    ("id_shapes.execution_id", None), ("id_shapes.group_props", None), ("id_shapes.delta_0", None),
    ("id_shapes.parameters_keys", None),
    ("scale_out.exec", exec_seq, covers), ("scale_out.mod", None, covers), ("scale_out.pc", None, covers),
    ("scale_out.new_instances", lambda v: per_node(v, install_seq), covers_per_node),
    ("scale_out.port_states_while_vm_creating", None), ("scale_out.at_end", None),
    ("scale_out.modification_id", None), ("scale_out.modified_nodes", None), ("scale_out.context_keys", None),
    ("scale_in_with_hint.exec", exec_seq, covers), ("scale_in_with_hint.mod", None, covers), ("scale_in_with_hint.pc", None, covers),
    ("scale_in_with_hint.at_end", None), ("scale_in_with_hint.removed_nodes", None),
    ("scale_in_with_hint.victim_removed", None), ("scale_in_with_hint.modified_nodes", None),
    ("scale_in_with_hint.removed_instances", lambda v: per_node(v, removal_seq), covers_per_node),
    ("validation_errors", None),
    ("workflow_failures.hint_on_scale_out", None), ("workflow_failures.below_zero", None),
    ("workflow_failures.unknown_entity", None), ("workflow_failures.hint_names_nothing", None),
    ("workflow_failures.exclude_too_many", None),
    ("hint_kinds.vm", None), ("hint_kinds.port", None), ("hint_kinds.group_instance", None),
    ("hint_kinds.contained_software", None),
    ("failed_out_rollback.exec", exec_seq, covers), ("failed_out_rollback.mod", None, covers), ("failed_out_rollback.pc", None, covers),
    ("failed_out_rollback.new_instances", lambda v: per_node(v, install_seq), covers_per_node),
    ("failed_out_rollback.left_behind", None), ("failed_out_rollback.at_end", None),
    ("failed_out_rollback.error", error_text),
    ("failed_out_no_rollback.exec", exec_seq, covers), ("failed_out_no_rollback.mod", None, covers),
    ("failed_out_no_rollback.pc", None, covers),
    ("failed_out_no_rollback.new_instances", lambda v: per_node(v, install_seq), covers_per_node),
    ("failed_out_no_rollback.left_behind", None), ("failed_out_no_rollback.at_end", None),
    ("failed_out_no_rollback.error", error_text),
    ("failed_out_no_rollback.next_scale", None), ("failed_out_no_rollback.abort_started", None, covers_abort),
    ("queued.sequences", None, covers_each), ("queued.final_pc", None),
]


def get(obs, path):
    cur = obs
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return "<missing>"
        cur = cur[part]
    return cur


def normalize_errors(value):
    """Every {"first", "last"} error inside a value goes through error_text."""
    if isinstance(value, dict):
        if set(value) == {"first", "last"}:
            return error_text(value)
        return {k: normalize_errors(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_errors(v) for v in value]
    return value


def main(real_path, sim_path):
    real = json.load(open(real_path))
    sim = json.load(open(sim_path))
    passed = failed = 0
    # A step that broke on either side is a failure of its own, whatever it compared.
    for step in sorted(set(real) | set(sim)):
        for side, obs in (("real", real), ("sim", sim)):
            if isinstance(obs.get(step), dict) and "error" in obs[step] and len(obs[step]) == 1:
                failed += 1
                print(f"FAIL fidelity/{step}: the {side} run broke: {obs[step]['error']}")
    for aspect in ASPECTS:
        path, fn = aspect[0], aspect[1]
        same = aspect[2] if len(aspect) > 2 else (lambda a, b: a == b)
        r, s = get(real, path), get(sim, path)
        if fn:
            r, s = fn(r), fn(s)
        r, s = normalize_errors(r), normalize_errors(s)
        if same(r, s):
            if path in ALLOWED:
                failed += 1
                print(f"FAIL fidelity/{path}: listed in ALLOWED but no longer differs: remove it")
            else:
                passed += 1
                print(f"PASS fidelity/{path}")
            continue
        if path in ALLOWED:
            passed += 1
            print(f"PASS fidelity/{path} (allowed difference: {ALLOWED[path]})")
            continue
        failed += 1
        print(f"FAIL fidelity/{path}\n  real: {json.dumps(r, sort_keys=True)}\n  sim:  {json.dumps(s, sort_keys=True)}")
    print(f"fidelity: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: compare.py REAL.json SIM.json")
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
