//! NodeGroupDeleteNodes, start to end, in the order a call goes through it:
//!
//! 1. [`NodeGroupService::delete_nodes`], the entry: [`resolve`] every node CA names to a group
//!    instance of this group (or refuse the whole call), then [`join`] the group's batch under
//!    the overlay lock: [`fresh`] leaves out what something already removes, [`check_min`]
//!    refuses to go below min, and the call waits for the outcome ([`outcome`]). A call naming
//!    an instance of the scale-in being sent first waits for that one alone, then joins with
//!    the rest, so an error it answers never leaves one of its nodes to go anyway.
//! 2. The flush, one batching window later: an earlier scale whose answer was lost is settled
//!    first (`settle.rs`), then the batch becomes one `scale` execution naming exactly its group
//!    instances ([`scale_in_request`]), recorded in the overlay once Cloudify accepted it, and
//!    every waiting call gets the answer.
//! 3. Verification of what the execution removed, once it ended: `verify.rs`.
//!
//! This is the code that must never delete the wrong VM: a node that is not an instance of the
//! group is refused before any Cloudify call, and a scale-in always names its instances with
//! `delta = -len(include_instances)`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::overlay::{DeleteBatch, GroupRuntime, LocalChange, Overlay, Removal, ScaleExecution};
use super::{DomainError, NodeGroupService};
use crate::cloudify::ScaleRequest;
use crate::inventory::{NodeGroup, Snapshot};
use crate::observability::metrics::{ScaleDirection, ScaleResult};

#[cfg(test)]
mod tests;

/// A node CA asks to delete.
#[derive(Debug, Clone, Default)]
pub struct NodeRef {
    /// `spec.providerID` (for fake nodes: the instance id we reported).
    pub provider_id: String,
    /// `metadata.name`: finds the instance when the provider id does not.
    pub name: String,
}

impl NodeGroupService {
    /// NodeGroupDeleteNodes: remove exactly these nodes. Concurrent calls on one group within the
    /// batching window become one `scale` execution with `include_instances`. Answers OK only
    /// once the scale-in naming every node was accepted by Cloudify (a repeat of a node already
    /// on its way waits for that outcome), never while doing nothing; an error leaves none of
    /// its nodes queued.
    pub async fn delete_nodes(
        self: &Arc<Self>,
        id: &str,
        nodes: &[NodeRef],
    ) -> Result<(), DomainError> {
        // A follower refuses before batching (the flush asks again before its POST).
        self.leader_term()?;
        let mut deletion = {
            let snap = self.inventory.snapshot();
            resolve(&snap, Self::group(&snap, id)?, nodes)?
        };
        loop {
            let mut joined = self.runtime(id).with_overlay(&self.inventory, |o, snap| {
                join(o, Self::group(snap, id)?, &deletion)
            })?;
            if joined.start_flush {
                let this = Arc::clone(self);
                let gid = id.to_owned();
                let window = self.settings.delete_batch_window;
                tokio::spawn(async move {
                    tokio::time::sleep(window).await;
                    this.flush_deletes(&gid).await;
                });
            }
            let in_flight = std::mem::take(&mut joined.in_flight);
            outcome(joined).await?;
            if in_flight.is_empty() {
                break;
            }
            // Cloudify accepted the scale-in carrying these: the call's other nodes join a
            // batch only now, so a refused one never leaves them to be removed behind an
            // error (seed 114).
            deletion
                .removals
                .retain(|r| !in_flight.contains(&r.provider_id));
        }
        if !deletion.synthetic.is_empty() {
            tracing::info!(group = id, ids = ?deletion.synthetic, "failed-instance records dropped at CA's request");
        }
        Ok(())
    }

    /// Sends one scale-in for the group's batch and answers every waiting call.
    async fn flush_deletes(self: &Arc<Self>, id: &str) {
        let rt = self.runtime(id);
        let _mutation = rt.mutation.lock().await;
        // The batch becomes the in-flight removal in the same critical section, so no reader
        // ever sees it in neither place.
        let Some((removals, before)) = rt.with_overlay(&self.inventory, |o, snap| {
            let batch = o.batch.take()?;
            let removals = batch.removals.clone();
            o.inflight = Some(batch);
            Some((removals, snap.group(id).cloned()))
        }) else {
            return;
        };
        let result = match &before {
            Some(g) => self.send_scale_in(&rt, g, removals).await,
            None => Err(DomainError::GroupNotFound(id.to_owned())),
        };
        let waiters = rt.with_overlay(&self.inventory, |o, _| {
            if let Ok(Some((execution, sent))) = &result {
                record_scale_in(o, execution, sent);
            }
            o.inflight.take().map(|b| b.waiters).unwrap_or_default()
        });
        match (&result, before) {
            (Ok(Some((execution, sent))), Some(before)) => {
                self.metrics
                    .scale(ScaleDirection::Down, ScaleResult::Accepted);
                self.inventory.trigger_refresh();
                let named: Vec<&str> = sent.iter().map(|r| r.vm_instance.as_str()).collect();
                tracing::info!(group = id, execution = %execution, instances = ?named, "scale-in queued in Cloudify");
                let this = Arc::clone(self);
                let (gid, execution, sent) = (id.to_owned(), execution.clone(), sent.clone());
                tokio::spawn(
                    async move { this.verify_scale_in(&gid, &execution, before, sent).await },
                );
            }
            (Err(e), _) => {
                self.metrics.scale(ScaleDirection::Down, ScaleResult::Error);
                tracing::warn!(group = id, error = %e, "scale-in refused by Cloudify");
            }
            (Ok(_), _) => {}
        }
        for w in waiters {
            // A waiter that went away (RPC cancelled) needs no answer.
            let _ = w.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
        }
    }

    /// POSTs the scale-in naming `removals`: the execution id and what it removes once Cloudify
    /// accepted it, `None` when an earlier scale-in (whose answer was lost) removes them all.
    async fn send_scale_in(
        &self,
        rt: &GroupRuntime,
        g: &NodeGroup,
        removals: Vec<Removal>,
    ) -> Result<Option<(String, Vec<Removal>)>, DomainError> {
        // A new leader catches up first: its predecessor may have queued a scale-in already.
        self.leader_snapshot().await?;
        let cloudify = self.source(g)?;
        self.settle(rt, g, cloudify.as_ref()).await?;
        // What a settled scale-in turned out to remove is not named again (issue 20 item 12).
        let removals: Vec<Removal> = rt.with_overlay(&self.inventory, |o, _| {
            removals
                .into_iter()
                .filter(|r| !o.is_deleting(&r.provider_id))
                .collect()
        });
        if removals.is_empty() {
            return Ok(None);
        }
        let request = scale_in_request(g, &removals);
        let deleting = removals.iter().map(|r| r.provider_id.clone()).collect();
        let execution = self
            .post_scale(rt, g, cloudify.as_ref(), &request, deleting)
            .await?;
        Ok(Some((execution.id, removals)))
    }
}

/// The scale-in that removes exactly `removals`: one hint per group instance (its VM), so that
/// `delta` counts group instances as Cloudify does.
pub(super) fn scale_in_request(g: &NodeGroup, removals: &[Removal]) -> ScaleRequest {
    let hints = removals.iter().map(|r| r.vm_instance.clone()).collect();
    ScaleRequest::scale_in(&g.deployment, &g.group, hints, g.orphan_modification)
}

/// Records an accepted scale-in: the target drops by its size at once, and its instances are
/// `Deleting` until the snapshot shows the execution.
fn record_scale_in(o: &mut Overlay, execution: &str, removals: &[Removal]) {
    let started = ScaleExecution {
        id: execution.to_owned(),
        delta: -i32::try_from(removals.len()).unwrap_or(i32::MAX),
    };
    let deleting = removals.iter().map(|r| r.provider_id.clone()).collect();
    o.changes.push(LocalChange::started(started, deleting));
}

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
    /// The group instances to remove, each once however often CA named it.
    pub removals: Vec<Removal>,
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
        if let Some(a) = snap.ambiguity(&n.provider_id) {
            // Never act on an id several VMs render: the index cannot tell which one CA means.
            return Err(DomainError::FailedPrecondition(format!(
                "node {:?}: provider id {:?} is rendered by {} instances ({:?}): refusing to \
                 delete any of them; make provider_id_template name one instance",
                n.name,
                n.provider_id,
                a.instances.len(),
                a.instances
            )));
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
        if !d.removals.iter().any(|r| r.provider_id == inst.provider_id) {
            d.removals.push(Removal {
                provider_id: inst.provider_id.clone(),
                vm_instance: inst.vm_instance.clone(),
                group_instance: inst.group_instance.clone(),
            });
        }
    }
    Ok(d)
}

/// The removals nothing removes yet: not named by an active execution, nor by a scale-in of
/// ours (accepted, gathering or on its way). A VM left `stopping`/`stopped`/`deleting` by a
/// failed or cancelled scale-in is fresh again (issue 11: it used to be skipped forever).
pub(super) fn fresh(o: &Overlay, g: &NodeGroup, removals: &[Removal]) -> Vec<Removal> {
    let being_removed = |p: &str| {
        g.instances
            .iter()
            .any(|i| i.provider_id == p && i.being_removed)
    };
    removals
        .iter()
        .filter(|r| {
            let p = r.provider_id.as_str();
            !being_removed(p) && !o.is_deleting(p) && !o.batched(p) && !o.in_flight(p)
        })
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
    /// The call's provider ids already on their way in the scale-in being sent: it waits for
    /// that outcome alone, and joins again with its other nodes only once it was accepted.
    pub in_flight: Vec<String>,
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

/// Records the call in the overlay: drops its failed-instance records, adds its fresh removals
/// to the gathering batch (opening one if none), and waits for the outcome of the batch that
/// carries its instances. Runs under the overlay lock, so the min check and the batch see the
/// same removals.
///
/// A call naming an instance of the scale-in being sent only waits for that POST
/// ([`Joined::in_flight`]) and changes nothing else: had its other instances gone into the next
/// batch meanwhile, a refused POST would answer the call an error while the next scale-in still
/// removed them (seed 114 of the interleaving checker: CA un-taints a node whose deletion
/// failed, and its VM went anyway).
pub(super) fn join(o: &mut Overlay, g: &NodeGroup, d: &Deletion) -> Result<Joined, DomainError> {
    let mut joined = Joined::default();
    let in_flight: Vec<String> = d
        .removals
        .iter()
        .filter(|r| o.in_flight(&r.provider_id))
        .map(|r| r.provider_id.clone())
        .collect();
    if !in_flight.is_empty() {
        wait_for(&mut o.inflight, &mut joined.receivers);
        joined.in_flight = in_flight;
        return Ok(joined);
    }
    let gathering = d.removals.iter().any(|r| o.batched(&r.provider_id));
    let fresh = fresh(o, g, &d.removals);
    // A scale-in whose answer was lost may have been stored: its removals count against min,
    // except the ones this call names again (issue 20 item 12).
    let maybe_removed = o
        .ambiguous
        .iter()
        .flat_map(|a| a.deleting.iter())
        .filter(|p| !fresh.iter().any(|r| r.provider_id == **p))
        .count();
    let lower = o
        .lower_bound(g)
        .saturating_sub(i64::try_from(maybe_removed).unwrap_or(i64::MAX));
    check_min(g, lower, fresh.len())?;
    let now = Instant::now();
    for s in &d.synthetic {
        o.acked_failed.insert(s.clone(), now);
    }
    if !fresh.is_empty() || gathering {
        joined.start_flush = o.batch.is_none();
        o.batch
            .get_or_insert_with(DeleteBatch::default)
            .removals
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
