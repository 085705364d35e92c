//! Snapshot building from hand-written Cloudify answers.

use std::time::{Instant, SystemTime};

use serde_json::json;

use super::*;

use super::testkit::{compute_node, node_groups as cfg, vm};

fn source() -> SourceData {
    let dep = |id: &str, max: i64| {
        super::testkit::deployment(
            id,
            json!({"g": {"members": ["vm", "port"], "properties": {"min_instances": 0,
                "max_instances": max, "current_instances": 3, "planned_instances": 3}}}),
        )
    };
    let inst =
        |id: &str, dep: &str, state: &str, rt: serde_json::Value| vm(id, dep, "g", state, rt);
    let node = |dep: &str| compute_node(dep, "vm");
    let exec = |id: &str,
                status: &str,
                delta: i64,
                include: Vec<&str>,
                ended: &str|
     -> crate::cloudify::Execution {
        serde_json::from_value(json!({"id": id, "workflow_id": "scale", "deployment_id": "a", "status": status,
            "error": "boom", "ended_at": ended,
            "parameters": {"scalable_entity_name": "g", "delta": delta, "include_instances": include}}))
        .expect("execution")
    };
    SourceData {
        source: 0,
        name: "main".into(),
        tenant: "t".into(),
        discovered: vec![dep("a", -1)],
        static_deployments: vec![dep("b", 7)],
        nodes: vec![node("a"), node("b")],
        instances: vec![
            inst(
                "vm_1",
                "a",
                "started",
                json!({"hostname": "same", "uuid": "u1"}),
            ),
            inst("vm_2", "a", "creating", json!({"hostname": "same"})),
            inst("vm_3", "a", "stopping", json!({})),
            inst("vm_4", "a", "started", json!({})),
            inst("vm_9", "b", "started", json!({})),
        ],
        active: vec![
            exec("q", "queued", 2, vec![], ""),
            exec("s", "started", -1, vec!["vm_4"], ""),
        ],
        failed: vec![
            exec(
                "f_new",
                "failed",
                1,
                vec![],
                &chrono::Utc::now().to_rfc3339(),
            ),
            exec("f_old", "failed", 5, vec![], "2020-01-01T00:00:00.000Z"),
        ],
        ended: Vec::new(),
        // The started scale-in `s` has begun its modification: it is in `planned`.
        modifications: vec![
            serde_json::from_value(json!({"id": "m", "deployment_id": "a", "status": "started",
                "context": {"execution_id": "s"}, "modified_nodes": {"g": {"instances": 3}}}))
            .expect("modification"),
        ],
    }
}

/// A configuration that discovers every deployment of [`source`].
const DISCOVER_ALL: &str = "node_groups: {auto_discovery: [\"cloudify:label=x=y\"]}";

fn build_from(src: SourceData, yaml: &str) -> Snapshot {
    build_snapshot(Instant::now(), SystemTime::now(), &[src], &cfg(yaml), false)
}

fn build(yaml: &str) -> Snapshot {
    build_from(source(), yaml)
}

#[test]
fn groups_bounds_and_target() {
    let s = build(
        "node_groups: {static: [\"2:5:b/g\"], unbounded_max: 42, auto_discovery: [\"cloudify:label=x=y\"]}",
    );
    let ids: Vec<&str> = s.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["a/g", "b/g"]);
    let a = s.group("a/g").expect("a");
    assert_eq!((a.min, a.max), (0, 42), "unbounded max -> configured cap");
    let b = s.group("b/g").expect("b");
    assert_eq!((b.min, b.max), (2, 5), "static bounds override Cloudify's");
    // planned 3 + queued 2 + one recent failed instance (the old failure is ignored).
    assert_eq!(a.cloudify_target(), 6);
    assert_eq!(a.failed.len(), 1);
    assert_eq!(s.instance_count(), 5);
}

#[test]
fn instance_states_and_indexes() {
    let s = build(DISCOVER_ALL);
    let a = s.group("a/g").expect("a");
    let state = |vm: &str| {
        a.instances
            .iter()
            .find(|i| i.vm_instance == vm)
            .map(|i| i.state)
    };
    assert_eq!(state("vm_1"), Some(InstanceState::Running));
    assert_eq!(state("vm_2"), Some(InstanceState::Creating));
    assert_eq!(state("vm_3"), Some(InstanceState::Deleting));
    assert_eq!(
        state("vm_4"),
        Some(InstanceState::Deleting),
        "named by a started scale-in"
    );
    assert!(s.lookup("cloudify://t/a/vm_1", "").is_some());
    assert!(s.lookup("x:///vm_1", "").is_some(), "normalized id");
    assert_eq!(
        s.lookup("", "same"),
        None,
        "a name two instances claim matches nothing"
    );
    assert_eq!(s.lookup("", "nope"), None);
}

#[test]
fn runtime_placeholders_and_pending_ids() {
    let s = build(
        "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], defaults: {provider_id_template: \"uuid://{runtime.uuid}\"}}",
    );
    let a = s.group("a/g").expect("a");
    let by_vm = |vm: &str| {
        a.instances
            .iter()
            .find(|i| i.vm_instance == vm)
            .expect("instance")
    };
    assert_eq!(by_vm("vm_1").provider_id, "uuid://u1");
    assert_eq!(by_vm("vm_2").provider_id, "cloudify-pending://t/a/vm_2");
    let pending = by_vm("vm_2");
    assert_eq!(pending.state, InstanceState::Creating);
    assert!(s.by_instance_id("cloudify-pending://t/a/vm_2").is_some());
    // A started VM whose id is not known yet is not reported running.
    assert_eq!(by_vm("vm_4").state, InstanceState::Deleting);
}

#[test]
fn a_started_scale_counts_as_waiting_until_its_modification_exists() {
    let mut src = source();
    src.modifications.clear();
    let snap = build_from(src, DISCOVER_ALL);
    let a = snap.group("a/g").expect("a");
    // planned 3 + queued 2 + started-but-not-modifying -1 + one failed instance.
    assert_eq!(a.cloudify_target(), 5);
    let s = a
        .waiting
        .iter()
        .find(|w| w.id == "s")
        .expect("s is waiting");
    assert!(!s.cancellable, "a started scale is past cancelling whole");
}

#[test]
fn an_orphan_modification_is_void_and_its_stuck_instances_deletable() {
    let mut src = source();
    // The modification belongs to an execution that is no longer active (cancelled, killed).
    src.active.retain(|e| e.id != "s");
    src.modifications[0].context =
        serde_json::from_value(json!({"execution_id": "gone"})).expect("context");
    src.discovered[0]
        .scaling_groups
        .get_mut("g")
        .expect("g")
        .properties
        .planned_instances = Some(2);
    let snap = build_from(src, DISCOVER_ALL);
    let a = snap.group("a/g").expect("a");
    assert!(a.orphan_modification);
    assert_eq!(
        a.planned, 3,
        "the orphan's half-applied planned counts as current"
    );
    let vm3 = a
        .instances
        .iter()
        .find(|i| i.vm_instance == "vm_3")
        .expect("vm_3");
    assert_eq!(vm3.state, InstanceState::Deleting);
    assert!(
        !vm3.being_removed,
        "nothing removes the stopping VM any more"
    );
}

#[test]
fn huge_cloudify_deltas_saturate_instead_of_overflowing() {
    let mut src = source();
    let exec = |id: &str, delta: i64| -> crate::cloudify::Execution {
        serde_json::from_value(
            json!({"id": id, "workflow_id": "scale", "deployment_id": "a",
            "status": "queued", "parameters": {"scalable_entity_name": "g", "delta": delta}}),
        )
        .expect("execution")
    };
    src.active = vec![
        exec("x", i64::from(i32::MAX)),
        exec("y", i64::from(i32::MAX)),
    ];
    let snap = build_from(src, DISCOVER_ALL);
    assert_eq!(snap.group("a/g").expect("a").cloudify_target(), i32::MAX);
}
