//! Unit tests of each DeleteNodes step, on a snapshot built from hand-written Cloudify answers.

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::inventory::{SourceData, build_snapshot, testkit};

/// The removal of VM `vm` of deployment `d` (its group instance is `g_<vm>`, as testkit names it).
fn removal(vm: &str) -> Removal {
    Removal {
        provider_id: format!("cloudify://t/d/{vm}"),
        vm_instance: vm.to_owned(),
        group_instance: format!("g_{vm}"),
    }
}

fn node(provider_id: &str, name: &str) -> NodeRef {
    NodeRef {
        provider_id: provider_id.into(),
        name: name.into(),
    }
}

/// Deployment `d` with group `g` (3 started VMs, min 1) and deployment `e` with group `g`
/// (1 VM); a recent failed scale-out of `d/g` missing one instance.
fn snapshot() -> Arc<Snapshot> {
    let dep = |id: &str, n: usize| {
        testkit::deployment(
            id,
            serde_json::json!({"g": {"members": ["vm"],
                "properties": {"min_instances": 1, "current_instances": n}}}),
        )
    };
    let vm = |id: &str, dep: &str| {
        let runtime = serde_json::json!({"hostname": format!("node-{id}")});
        testkit::vm(id, dep, "g", "started", runtime)
    };
    let failed = serde_json::from_value(serde_json::json!({"id": "f", "workflow_id": "scale",
        "deployment_id": "d", "status": "failed", "error": "quota",
        "parameters": {"scalable_entity_name": "g", "delta": 1}}))
    .expect("execution");
    let src = SourceData {
        tenant: "t".into(),
        discovered: vec![dep("d", 3), dep("e", 1)],
        nodes: vec![testkit::compute_node("d", "vm")],
        instances: vec![vm("d1", "d"), vm("d2", "d"), vm("d3", "d"), vm("e1", "e")],
        failed: vec![failed],
        ..Default::default()
    };
    let cfg = testkit::node_groups("node_groups: {auto_discovery: [\"cloudify:label=x=y\"]}");
    Arc::new(build_snapshot(
        Instant::now(),
        std::time::SystemTime::now(),
        &[src],
        &cfg,
        false,
    ))
}

fn d_g(snap: &Snapshot) -> &NodeGroup {
    snap.group("d/g").expect("d/g")
}

#[test]
fn nodes_resolve_by_provider_id_or_name_each_instance_once() {
    let snap = snapshot();
    let d = resolve(
        &snap,
        d_g(&snap),
        &[
            node("cloudify://t/d/d1", ""),
            node("", "node-d2"),
            node("cloudify://t/d/d1", "node-d1"),
            node("cloudify-failed://d/g/f/0", ""),
        ],
    )
    .expect("resolves");
    assert_eq!(d.removals, [removal("d1"), removal("d2")]);
    assert_eq!(
        d.synthetic,
        BTreeSet::from(["cloudify-failed://d/g/f/0".to_owned()])
    );
}

#[test]
fn one_foreign_unknown_or_missing_node_refuses_the_call() {
    let snap = snapshot();
    let g = d_g(&snap);
    let refused = |nodes: &[NodeRef]| match resolve(&snap, g, nodes) {
        Err(DomainError::InvalidArgument(m)) => m,
        other => panic!("{other:?}"),
    };
    let foreign = refused(&[
        node("cloudify://t/d/d1", ""),
        node("cloudify://t/e/e1", "x"),
    ]);
    assert!(
        foreign.contains("belongs to node group \"e/g\""),
        "{foreign}"
    );
    let unknown = refused(&[node("cloudify://t/d/nope", "nope")]);
    assert!(
        unknown.contains("is not an instance of node group \"d/g\""),
        "{unknown}"
    );
    assert_eq!(refused(&[]), "no nodes to delete");
}

#[test]
fn a_provider_id_several_instances_render_is_refused() {
    let vm = |id: &str| testkit::vm(id, "d", "g", "started", serde_json::json!({"uid": "same"}));
    let src = SourceData {
        tenant: "t".into(),
        discovered: vec![testkit::deployment(
            "d",
            serde_json::json!({"g": {"members": ["vm"], "properties": {"current_instances": 2}}}),
        )],
        nodes: vec![testkit::compute_node("d", "vm")],
        instances: vec![vm("d1"), vm("d2")],
        ..Default::default()
    };
    let cfg = testkit::node_groups(
        "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], defaults: {provider_id_template: \"x://{runtime.uid}\"}}",
    );
    let snap = build_snapshot(
        Instant::now(),
        std::time::SystemTime::now(),
        &[src],
        &cfg,
        false,
    );
    assert_eq!(snap.ambiguous_provider_ids().len(), 1);
    match resolve(&snap, d_g(&snap), &[node("x://same", "node-d1")]) {
        Err(DomainError::FailedPrecondition(m)) => {
            assert!(m.contains("rendered by 2 instances"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fresh_leaves_out_what_something_already_removes() {
    let snap = snapshot();
    let mut g = d_g(&snap).clone();
    g.instances[0].being_removed = true; // d1: an active execution removes it
    let o = Overlay {
        batch: Some(DeleteBatch {
            removals: vec![removal("d2")],
            waiters: Vec::new(),
        }),
        ..Overlay::default()
    };
    let all: Vec<Removal> = ["d1", "d2", "d3"].into_iter().map(removal).collect();
    assert_eq!(fresh(&o, &g, &all), all[2..]);
}

#[test]
fn the_min_check_counts_only_real_removals() {
    let snap = snapshot();
    let g = d_g(&snap);
    assert!(check_min(g, 3, 2).is_ok(), "3 - 2 = min");
    match check_min(g, 3, 3) {
        Err(DomainError::FailedPrecondition(m)) => {
            assert!(m.contains("would take target 3 below min size 1"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(check_min(g, 0, 0).is_ok(), "nothing to remove never fails");
}

#[test]
fn joining_opens_one_batch_and_a_repeat_waits_for_it() {
    let snap = snapshot();
    let g = d_g(&snap);
    let mut o = Overlay::default();
    let d1 = resolve(&snap, g, &[node("cloudify://t/d/d1", "")]).expect("d1");
    let first = join(&mut o, g, &d1).expect("joins");
    assert!(first.start_flush);
    assert_eq!(first.receivers.len(), 1);
    let again = join(&mut o, g, &d1).expect("repeat joins");
    assert!(!again.start_flush, "the batch is open already");
    assert_eq!(again.receivers.len(), 1, "waits for the same batch");
    let batch = o.batch.as_ref().expect("batch");
    assert_eq!(batch.removals.len(), 1, "d1 is in it once");
    assert_eq!(batch.waiters.len(), 2);
}

#[test]
fn a_call_naming_an_instance_on_its_way_only_waits_for_that_post() {
    // Seed 114: d2 went into the next batch while d1's POST was refused; the call answered the
    // error and d2 was removed anyway.
    let snap = snapshot();
    let g = d_g(&snap);
    let mut o = Overlay {
        inflight: Some(DeleteBatch {
            removals: vec![removal("d1")],
            waiters: Vec::new(),
        }),
        ..Overlay::default()
    };
    let both = resolve(
        &snap,
        g,
        &[node("cloudify://t/d/d1", ""), node("cloudify://t/d/d2", "")],
    )
    .expect("resolves");
    let joined = join(&mut o, g, &both).expect("waits");
    assert_eq!(joined.in_flight, ["cloudify://t/d/d1"]);
    assert_eq!(joined.receivers.len(), 1, "the in-flight POST's outcome");
    assert!(!joined.start_flush);
    assert!(
        o.batch.is_none(),
        "d2 joins nothing before d1's POST is accepted"
    );
}

#[test]
fn joining_past_min_changes_nothing_and_records_only_drop() {
    let snap = snapshot();
    let g = d_g(&snap);
    let mut o = Overlay::default();
    let all = resolve(
        &snap,
        g,
        &[
            node("cloudify://t/d/d1", ""),
            node("cloudify://t/d/d2", ""),
            node("cloudify://t/d/d3", ""),
            node("cloudify-failed://d/g/f/0", ""),
        ],
    )
    .expect("resolves");
    assert!(matches!(
        join(&mut o, g, &all),
        Err(DomainError::FailedPrecondition(_))
    ));
    assert!(
        o.batch.is_none() && o.acked_failed.is_empty(),
        "nothing recorded"
    );
    let records = resolve(&snap, g, &[node("cloudify-failed://d/g/f/0", "")]).expect("ok");
    let joined = join(&mut o, g, &records).expect("records only");
    assert!(joined.receivers.is_empty() && !joined.start_flush);
    assert!(o.acked_failed.contains_key("cloudify-failed://d/g/f/0"));
    assert!(o.batch.is_none(), "no scale-in for records");
}

#[tokio::test]
async fn the_outcome_is_the_batchs_or_unavailable_when_it_was_dropped() {
    let (tx, rx) = oneshot::channel();
    tx.send(Ok(())).expect("send");
    let ok = Joined {
        receivers: vec![rx],
        ..Joined::default()
    };
    assert!(outcome(ok).await.is_ok());
    let (tx, rx) = oneshot::channel::<Result<(), DomainError>>();
    drop(tx);
    let dropped = Joined {
        receivers: vec![rx],
        ..Joined::default()
    };
    assert!(matches!(
        outcome(dropped).await,
        Err(DomainError::Unavailable { .. })
    ));
    assert!(
        outcome(Joined::default()).await.is_ok(),
        "nothing to wait for"
    );
}

/// The tests above rely on this shape of the fixture.
#[test]
fn the_fixture_has_one_failed_instance_and_three_vms() {
    let snap = snapshot();
    let g = d_g(&snap);
    assert_eq!(g.instances.len(), 3);
    assert_eq!(g.min, 1);
    assert_eq!(g.failed[0].synthetic_ids, ["cloudify-failed://d/g/f/0"]);
}

/// Issue 19, seen on the real manager: an operator's scale-out failed without rollback and
/// left VM `d4` half-created (`creating`) under a started modification no execution owns.
/// Every scale the provider sends to `d` carries `abort_started`, and the real `scale`
/// workflow rolls the modification back (uninstalling `d4`) before it scales: a scale-in
/// naming `d4` then removes another, arbitrary VM. Such a node is refused.
#[test]
fn a_vm_a_leftover_scale_out_added_is_refused() {
    let base = snapshot();
    let mut src = SourceData {
        tenant: "t".into(),
        discovered: vec![testkit::deployment(
            "d",
            serde_json::json!({"g": {"members": ["vm"],
                "properties": {"min_instances": 1, "current_instances": 3,
                "planned_instances": 4}}}),
        )],
        nodes: vec![testkit::compute_node("d", "vm")],
        modifications: vec![
            serde_json::from_value(serde_json::json!({"id": "m", "deployment_id": "d",
                "status": "started", "context": {"execution_id": "x"},
                "modified_nodes": {"g": {"instances": 4}}}))
            .expect("modification"),
        ],
        ..Default::default()
    };
    for (id, state) in [
        ("d1", "started"),
        ("d2", "started"),
        ("d3", "started"),
        ("d4", "creating"),
    ] {
        let runtime = serde_json::json!({"hostname": format!("node-{id}")});
        src.instances
            .push(testkit::vm(id, "d", "g", state, runtime));
    }
    let cfg = testkit::node_groups("node_groups: {auto_discovery: [\"cloudify:label=x=y\"]}");
    let snap = build_snapshot(
        Instant::now(),
        std::time::SystemTime::now(),
        &[src],
        &cfg,
        false,
    );
    let g = snap.group("d/g").expect("d/g");
    assert!(
        g.orphan_modification,
        "the modification has no active execution"
    );
    match resolve(&snap, g, &[node("cloudify://t/d/d4", "")]) {
        Err(DomainError::FailedPrecondition(m)) => {
            assert!(m.contains("abort_started"), "{m}")
        }
        other => panic!("a VM the leftover modification added: {other:?}"),
    }
    // Its started VMs may still be deleted (the abort leaves them alone), and so may every
    // VM of a group without a leftover.
    assert!(resolve(&snap, g, &[node("cloudify://t/d/d1", "")]).is_ok());
    assert!(resolve(&base, d_g(&base), &[node("cloudify://t/d/d1", "")]).is_ok());
}
