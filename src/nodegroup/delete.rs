//! The steps of NodeGroupDeleteNodes before its scale-in is sent: which instances the nodes are,
//! which of them still need removing, the min-size check, and joining the batch that the flush
//! turns into one `scale` execution (`scale.rs`).

use std::collections::BTreeSet;
use std::time::Instant;

use tokio::sync::oneshot;

use super::DomainError;
use super::overlay::{DeleteBatch, Overlay};
use super::scale::NodeRef;
use crate::inventory::{NodeGroup, Snapshot};

/// Node-instance states of a VM a scale-out is still adding (Cloudify's lifecycle before
/// `started`). Under a left-over started modification, a VM in one of them is that
/// modification's addition.
const ADDED_STATES: [&str; 7] = [
    "uninitialized",
    "initializing",
    "creating",
    "created",
    "configuring",
    "configured",
    "starting",
];

/// The nodes of one DeleteNodes call, resolved against a snapshot.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Deletion {
    /// `(provider id, VM instance id)` of each real instance, once however often CA named it.
    pub real: Vec<(String, String)>,
    /// Synthetic ids of failed scale-outs' missing instances: records to drop, no VM to remove.
    pub synthetic: BTreeSet<String>,
}

/// Resolves every node or refuses the whole call: one foreign or unknown node fails it before
/// any Cloudify call, so CA never gets half a deletion.
pub(super) fn resolve(
    snap: &Snapshot,
    g: &NodeGroup,
    nodes: &[NodeRef],
) -> Result<Deletion, DomainError> {
    if nodes.is_empty() {
        return Err(DomainError::InvalidArgument("no nodes to delete".into()));
    }
    let mut d = Deletion::default();
    for n in nodes {
        if g.failed
            .iter()
            .any(|f| f.synthetic_ids.contains(&n.provider_id))
        {
            d.synthetic.insert(n.provider_id.clone());
            continue;
        }
        // The exact id CA echoes back first (placeholders included), then as a Node.
        let r = snap
            .by_instance_id(&n.provider_id)
            .or_else(|| snap.lookup(&n.provider_id, &n.name));
        let Some((owner, inst)) = r.and_then(|r| snap.instance(r)) else {
            return Err(DomainError::InvalidArgument(format!(
                "node {:?} (provider id {:?}) is not an instance of node group {:?}",
                n.name, n.provider_id, g.id
            )));
        };
        if owner.id != g.id {
            return Err(DomainError::InvalidArgument(format!(
                "node {:?} belongs to node group {:?}, not {:?}",
                n.name, owner.id, g.id
            )));
        }
        if g.orphan_modification && ADDED_STATES.contains(&inst.cloudify_state.as_str()) {
            // Issue 19, seen on the real manager: our scale would carry abort_started, which
            // uninstalls this VM before the workflow scales in; the scale-in naming it then
            // removes another, arbitrary VM.
            return Err(DomainError::FailedPrecondition(format!(
                "node {:?} (instance {}) was added by a scale-out of {:?} that failed without \
                 rollback and is still {}; its deployment modification is still started, and \
                 any scale of the deployment first rolls it back (abort_started), which removes \
                 this VM, so a scale-in naming it would remove another VM: roll it back in \
                 Cloudify (a scale with abort_started=true) instead",
                n.name, inst.vm_instance, g.deployment, inst.cloudify_state
            )));
        }
        if !d.real.iter().any(|(p, _)| *p == inst.provider_id) {
            d.real
                .push((inst.provider_id.clone(), inst.vm_instance.clone()));
        }
    }
    Ok(d)
}

/// The instances nothing removes yet: not named by an active execution, nor by a scale-in of
/// ours (accepted, gathering or on its way). A VM left `stopping`/`stopped`/`deleting` by a
/// failed or cancelled scale-in is fresh again (issue 11: it used to be skipped forever).
pub(super) fn fresh(
    o: &Overlay,
    g: &NodeGroup,
    real: &[(String, String)],
) -> Vec<(String, String)> {
    let being_removed = |p: &str| {
        g.instances
            .iter()
            .any(|i| i.provider_id == p && i.being_removed)
    };
    real.iter()
        .filter(|(p, _)| !being_removed(p) && !o.is_deleting(p) && !o.batched(p) && !o.in_flight(p))
        .cloned()
        .collect()
}

/// Refuses a removal that would take the target below min. `target` is the overlay's lower
/// bound: every removal asked for and not recorded yet is already out of it, and capacity still
/// being added does not count until it is there. Removing nothing never fails: a repeat of
/// nodes already on their way, or failed-instance records (the lower bound leaves them out).
pub(super) fn check_min(g: &NodeGroup, target: i64, removing: usize) -> Result<(), DomainError> {
    let removing = i64::try_from(removing).unwrap_or(i64::MAX);
    if removing > 0 && target.saturating_sub(removing) < i64::from(g.min) {
        return Err(DomainError::FailedPrecondition(format!(
            "node group {:?}: deleting {removing} node(s) would take target {target} below min \
             size {}",
            g.id, g.min
        )));
    }
    Ok(())
}

/// What a call waits for once it joined the overlay.
#[derive(Debug, Default)]
pub(super) struct Joined {
    /// One per batch the call joined: the scale-in's outcome.
    pub receivers: Vec<oneshot::Receiver<Result<(), DomainError>>>,
    /// The call opened the batch: it starts the flush after the batching window.
    pub start_flush: bool,
}

fn wait_for(
    batch: &mut Option<DeleteBatch>,
    receivers: &mut Vec<oneshot::Receiver<Result<(), DomainError>>>,
) {
    if let Some(b) = batch {
        let (tx, rx) = oneshot::channel();
        b.waiters.push(tx);
        receivers.push(rx);
    }
}

/// Records the call in the overlay: drops its failed-instance records, adds its fresh instances
/// to the gathering batch (opening one if none), and waits for the outcome of every batch or
/// POST that carries one of its instances. Runs under the overlay lock, so the min check and
/// the batch see the same removals.
pub(super) fn join(o: &mut Overlay, g: &NodeGroup, d: &Deletion) -> Result<Joined, DomainError> {
    let mut joined = Joined::default();
    // Already on its way: wait for the POST that carries it.
    if d.real.iter().any(|(p, _)| o.in_flight(p)) {
        wait_for(&mut o.inflight, &mut joined.receivers);
    }
    let gathering = d.real.iter().any(|(p, _)| o.batched(p));
    let fresh = fresh(o, g, &d.real);
    check_min(g, o.lower_bound(g), fresh.len())?;
    let now = Instant::now();
    for s in &d.synthetic {
        o.acked_failed.insert(s.clone(), now);
    }
    if !fresh.is_empty() || gathering {
        joined.start_flush = o.batch.is_none();
        o.batch
            .get_or_insert_with(DeleteBatch::default)
            .instances
            .extend(fresh);
        wait_for(&mut o.batch, &mut joined.receivers);
    }
    Ok(joined)
}

/// The call's answer: OK once every scale-in it waits for was accepted by Cloudify.
pub(super) async fn outcome(joined: Joined) -> Result<(), DomainError> {
    for rx in joined.receivers {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(DomainError::Unavailable {
                    message: "delete batch was dropped".into(),
                    source: None,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::inventory::{SourceData, build_snapshot, testkit};

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
        assert_eq!(
            d.real,
            [
                ("cloudify://t/d/d1".to_owned(), "d1".to_owned()),
                ("cloudify://t/d/d2".to_owned(), "d2".to_owned())
            ]
        );
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
    fn fresh_leaves_out_what_something_already_removes() {
        let snap = snapshot();
        let mut g = d_g(&snap).clone();
        g.instances[0].being_removed = true; // d1: an active execution removes it
        let o = Overlay {
            batch: Some(DeleteBatch {
                instances: vec![("cloudify://t/d/d2".into(), "d2".into())],
                waiters: Vec::new(),
            }),
            ..Overlay::default()
        };
        let real: Vec<(String, String)> = ["d1", "d2", "d3"]
            .iter()
            .map(|v| (format!("cloudify://t/d/{v}"), (*v).to_owned()))
            .collect();
        assert_eq!(fresh(&o, &g, &real), real[2..]);
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
        assert_eq!(batch.instances.len(), 1, "d1 is in it once");
        assert_eq!(batch.waiters.len(), 2);
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
            start_flush: false,
        };
        assert!(outcome(ok).await.is_ok());
        let (tx, rx) = oneshot::channel::<Result<(), DomainError>>();
        drop(tx);
        let dropped = Joined {
            receivers: vec![rx],
            start_flush: false,
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

    /// The tests above rely on this shape of the fixture.
    #[test]
    fn the_fixture_has_one_failed_instance_and_three_vms() {
        let snap = snapshot();
        let g = d_g(&snap);
        assert_eq!(g.instances.len(), 3);
        assert_eq!(g.min, 1);
        assert_eq!(g.failed[0].synthetic_ids, ["cloudify-failed://d/g/f/0"]);
    }
}
