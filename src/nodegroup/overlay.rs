//! Per-group runtime state: the mutation lock and the overlay of local changes.
//!
//! Concurrency: `mutation` is a tokio `Mutex` held across the Cloudify POST, so IncreaseSize,
//! DecreaseTargetSize and DeleteNodes flushes on one group run one at a time and each sees the
//! target the previous one left (no double scale-up). `overlay` is a std `Mutex` held only for
//! short, non-async bookkeeping, so readers (TargetSize, NodeGroupNodes) never wait on Cloudify.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::{DomainError, ErrorClass, InstanceError, InstanceView};
use crate::cloudify::ScaleRequest;
use crate::inventory::{InstanceState, Inventory, NodeGroup, Snapshot};

/// How long we remember that CA deleted a synthetic failed instance (longer than the inventory
/// reports failed scale-outs, so a deleted record never comes back).
const ACK_RETENTION: Duration = Duration::from_secs(30 * 60);

/// A `scale` execution this process started: its id and delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScaleExecution {
    /// The execution id Cloudify answered with.
    pub id: String,
    /// Its `delta`: positive for a scale-out, negative for a scale-in.
    pub delta: i32,
}

/// A change this process made that the snapshot may not show yet.
#[derive(Debug, Clone)]
pub(super) struct LocalChange {
    /// When Cloudify accepted it. A snapshot fetched after this instant includes it.
    pub accepted_at: Instant,
    /// Net change of the target size.
    pub delta: i32,
    /// The scale execution it started; scale-outs are cancellable by DecreaseTargetSize.
    pub started: Option<ScaleExecution>,
    /// Provider ids it asked Cloudify to remove.
    pub deleting: Vec<String>,
    /// Waiting executions it cancelled.
    pub cancelled: Vec<String>,
}

impl LocalChange {
    /// A scale Cloudify accepted: a scale-out, or a scale-in removing `deleting`.
    pub fn started(execution: ScaleExecution, deleting: Vec<String>) -> LocalChange {
        LocalChange {
            accepted_at: Instant::now(),
            delta: execution.delta,
            started: Some(execution),
            deleting,
            cancelled: Vec::new(),
        }
    }

    /// A waiting scale-out of `delta` that was cancelled.
    pub fn cancelled(execution: &str, delta: i32) -> LocalChange {
        LocalChange {
            accepted_at: Instant::now(),
            delta: -delta,
            started: None,
            deleting: Vec::new(),
            cancelled: vec![execution.to_owned()],
        }
    }
}

/// One group instance a DeleteNodes call removes, as its scale-in names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Removal {
    /// The id CA knows the instance by (a Node's provider id, or our placeholder).
    pub provider_id: String,
    /// The VM node instance the scale-in names in `include_instances`.
    pub vm_instance: String,
    /// The group instance that goes with it: the unit Cloudify removes.
    pub group_instance: String,
}

/// A scale whose `POST /executions` got no definite answer (a 502, a cut connection, a body cut
/// short) and whose fate Cloudify could not tell yet: every later mutation of the group settles
/// it first (`settle.rs`, issue 20 item 12).
#[derive(Debug, Clone)]
pub(super) struct AmbiguousScale {
    /// What was sent.
    pub request: ScaleRequest,
    /// Wall-clock time just before the POST, compared with Cloudify's `created_at`.
    pub sent_wall: SystemTime,
    /// When the POST started.
    pub sent_at: Instant,
    /// The manager may still be processing it (our timeout, a gateway's 504): not finding it
    /// right away does not prove it was not stored.
    pub may_still_run: bool,
    /// Provider ids a scale-in would remove (empty for a scale-out).
    pub deleting: Vec<String>,
}

/// Calls of DeleteNodes waiting for one `scale` execution.
#[derive(Debug, Default)]
pub(super) struct DeleteBatch {
    /// What to remove, one entry per group instance.
    pub removals: Vec<Removal>,
    /// One sender per waiting call.
    pub waiters: Vec<oneshot::Sender<Result<(), DomainError>>>,
}

impl DeleteBatch {
    fn contains(&self, provider_id: &str) -> bool {
        self.removals.iter().any(|r| r.provider_id == provider_id)
    }

    fn len(&self) -> i64 {
        i64::try_from(self.removals.len()).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Default)]
pub(super) struct Overlay {
    pub changes: Vec<LocalChange>,
    /// Synthetic failed-instance ids CA deleted.
    pub acked_failed: HashMap<String, Instant>,
    /// DeleteNodes calls gathering for the next scale-in.
    pub batch: Option<DeleteBatch>,
    /// The batch whose `POST /executions` is on its way: not in `changes` yet, but already
    /// taken out of the target (issue 11: a second DeleteNodes in this window passed the min
    /// check without it). Calls naming its instances wait for its outcome.
    pub inflight: Option<DeleteBatch>,
    /// Scales whose POST got no definite answer and that are not settled yet.
    pub ambiguous: Vec<AmbiguousScale>,
}

impl Overlay {
    /// Drops what the snapshot already shows.
    pub fn prune(&mut self, snap: &Snapshot) {
        self.changes.retain(|c| c.accepted_at >= snap.fetched_at);
        self.acked_failed
            .retain(|_, at| at.elapsed() < ACK_RETENTION);
    }

    /// The net change of the local changes the snapshot does not show yet. A change accepted
    /// while the refresh was fetching may already be in it: a scale whose execution the snapshot
    /// lists, or a cancel whose execution it no longer lists as waiting, is not added twice
    /// (issue #7: TargetSize read 11 on a group of max 10 during concurrent IncreaseSize+Refresh).
    pub fn local_delta(&self, g: &NodeGroup) -> i64 {
        let counted_here = |e: &str| {
            self.changes.iter().any(|c| {
                c.started.as_ref().is_some_and(|s| s.id == e)
                    && !g.seen_executions.iter().any(|s| s == e)
            })
        };
        self.changes
            .iter()
            .filter(|c| {
                !c.started
                    .as_ref()
                    .is_some_and(|s| g.seen_executions.contains(&s.id))
            })
            // A cancel offsets an execution only while something still counts it.
            .filter(|c| {
                c.cancelled.is_empty()
                    || c.cancelled
                        .iter()
                        .any(|e| g.waiting.iter().any(|w| w.id == *e) || counted_here(e))
            })
            .map(|c| i64::from(c.delta))
            .sum()
    }

    pub fn is_deleting(&self, provider_id: &str) -> bool {
        self.changes
            .iter()
            .any(|c| c.deleting.iter().any(|d| d == provider_id))
    }

    pub fn is_cancelled(&self, execution: &str) -> bool {
        self.changes
            .iter()
            .any(|c| c.cancelled.iter().any(|d| d == execution))
    }

    /// Named by the gathering batch.
    pub fn batched(&self, provider_id: &str) -> bool {
        self.batch.as_ref().is_some_and(|b| b.contains(provider_id))
    }

    /// Named by the scale-in being sent.
    pub fn in_flight(&self, provider_id: &str) -> bool {
        self.inflight
            .as_ref()
            .is_some_and(|b| b.contains(provider_id))
    }

    /// Removals asked for but not recorded as changes yet (gathering or being sent).
    pub fn pending_removals(&self) -> i64 {
        self.batch.as_ref().map_or(0, DeleteBatch::len)
            + self.inflight.as_ref().map_or(0, DeleteBatch::len)
    }

    /// Acknowledged synthetic ids that the snapshot still reports.
    fn acked_in(&self, g: &NodeGroup) -> i64 {
        let n = g
            .failed
            .iter()
            .flat_map(|f| f.synthetic_ids.iter())
            .filter(|id| self.acked_failed.contains_key(*id))
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// Capacity asked for but not in place yet, which a failure would take back:
    /// `(additions, removals)`. Additions: waiting or running scale-outs, failed scale-outs' records
    /// and our own not yet listed; removals: the same for scale-ins. Cancelled ones are final.
    fn unsettled(&self, g: &NodeGroup) -> (i64, i64) {
        let mut up = 0i64;
        let mut down = 0i64;
        let mut add = |d: i64| {
            if d > 0 {
                up = up.saturating_add(d);
            } else {
                down = down.saturating_add(-d);
            }
        };
        for w in g.waiting.iter().chain(&g.running) {
            if !self.is_cancelled(&w.id) {
                add(i64::from(w.delta));
            }
        }
        for c in &self.changes {
            if let Some(s) = &c.started
                && !g.seen_executions.contains(&s.id)
                && !self.is_cancelled(&s.id)
            {
                add(i64::from(s.delta));
            }
        }
        let failed = g
            .failed
            .iter()
            .flat_map(|f| f.synthetic_ids.iter())
            .filter(|id| !self.acked_failed.contains_key(*id))
            .count();
        (
            up.saturating_add(i64::try_from(failed).unwrap_or(i64::MAX)),
            down,
        )
    }

    /// The most the group can end with if every unsettled scale-in fails: what an increase is
    /// checked against (issue 11: a scale-out accepted on a lowered target went past max when
    /// the scale-in it counted on failed and rolled back).
    pub fn upper_bound(&self, g: &NodeGroup) -> i64 {
        self.target_wide(g).saturating_add(self.unsettled(g).1)
    }

    /// The least the group can end with if every unsettled scale-out fails and every removal
    /// asked for happens: what a deletion is checked against.
    pub fn lower_bound(&self, g: &NodeGroup) -> i64 {
        self.target_wide(g)
            .saturating_sub(self.pending_removals())
            .saturating_sub(self.unsettled(g).0)
    }

    /// Target size of `g` under this overlay, in i64 (Cloudify's numbers can be anything).
    ///
    /// Not clamped to max: every increase is checked before it is sent, so a target above max
    /// means something else scaled the group (the inventory logs it), and CA must see the truth.
    pub fn target_wide(&self, g: &NodeGroup) -> i64 {
        i64::from(g.cloudify_target())
            .saturating_add(self.local_delta(g))
            .saturating_sub(self.acked_in(g))
            .max(0)
    }

    /// [`Self::target_wide`] for CA's int32 field.
    pub fn target(&self, g: &NodeGroup) -> i32 {
        i32::try_from(self.target_wide(g)).unwrap_or(i32::MAX)
    }
}

/// Runtime state of one group.
#[derive(Debug, Default)]
pub struct GroupRuntime {
    pub(super) mutation: tokio::sync::Mutex<()>,
    pub(super) overlay: Mutex<Overlay>,
}

impl GroupRuntime {
    /// Runs `f` on the overlay pruned against the current snapshot, which it also gets. The
    /// snapshot is loaded under the overlay lock: a reader holding an older snapshot could
    /// otherwise compute without a change another caller just pruned against a newer one
    /// (issue 11). A poisoned lock (a panic elsewhere) still yields the data: the overlay stays
    /// consistent because every update is a single push/retain.
    pub(super) fn with_overlay<R>(
        &self,
        inventory: &Inventory,
        f: impl FnOnce(&mut Overlay, &Arc<Snapshot>) -> R,
    ) -> R {
        let mut guard = match self.overlay.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let snap = inventory.snapshot();
        guard.prune(&snap);
        f(&mut guard, &snap)
    }

    /// Target size of group `id` and the snapshot it was computed on.
    pub(super) fn target(&self, inventory: &Inventory, id: &str) -> Option<i32> {
        self.with_overlay(inventory, |o, snap| snap.group(id).map(|g| o.target(g)))
    }

    pub(super) fn instances(&self, inventory: &Inventory, id: &str) -> Option<Vec<InstanceView>> {
        self.with_overlay(inventory, |o, snap| {
            let g = snap.group(id)?;
            let mut out: Vec<InstanceView> = g
                .instances
                .iter()
                .map(|i| InstanceView {
                    id: i.provider_id.clone(),
                    state: if o.is_deleting(&i.provider_id)
                        || o.batched(&i.provider_id)
                        || o.in_flight(&i.provider_id)
                    {
                        InstanceState::Deleting
                    } else {
                        i.state
                    },
                    error: None,
                })
                .collect();
            for f in &g.failed {
                let class = if f.error.to_ascii_lowercase().contains("quota") {
                    ErrorClass::OutOfResources
                } else {
                    ErrorClass::Other
                };
                let code = match class {
                    ErrorClass::OutOfResources => "QUOTA_EXCEEDED",
                    ErrorClass::Other => "CLOUDIFY_SCALE_FAILED",
                };
                for id in f
                    .synthetic_ids
                    .iter()
                    .filter(|id| !o.acked_failed.contains_key(*id))
                {
                    out.push(InstanceView {
                        id: id.clone(),
                        state: InstanceState::Creating,
                        error: Some(InstanceError {
                            code: code.to_owned(),
                            message: failure_message(&f.execution_id, &f.error),
                            class,
                        }),
                    });
                }
            }
            Some(out)
        })
    }
}

/// Longest error text sent to CA; CA copies it into events and logs, where a whole Python
/// traceback is noise.
const MAX_FAILURE_TEXT: usize = 512;

/// The errorMessage CA gets for a failed scale-out: the execution id and the last non-empty line
/// of Cloudify's `error` (for a Python traceback, the exception itself), at most
/// [`MAX_FAILURE_TEXT`] bytes. The whole text is logged by the inventory when it first sees the
/// failure.
pub(super) fn failure_message(execution_id: &str, error: &str) -> String {
    let line = error
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no error text");
    let mut end = line.len().min(MAX_FAILURE_TEXT);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let ellipsis = if end < line.len() { "…" } else { "" };
    format!(
        "Cloudify scale execution {execution_id} failed: {}{ellipsis}",
        &line[..end]
    )
}
