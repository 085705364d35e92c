//! Per-group runtime state: the mutation lock and the overlay of local changes.
//!
//! Concurrency: `mutation` is a tokio `Mutex` held across the Cloudify POST, so IncreaseSize,
//! DecreaseTargetSize and DeleteNodes flushes on one group run one at a time and each sees the
//! target the previous one left (no double scale-up). `overlay` is a std `Mutex` held only for
//! short, non-async bookkeeping, so readers (TargetSize, NodeGroupNodes) never wait on Cloudify.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{DomainError, ErrorClass, InstanceError, InstanceView};
use crate::inventory::{InstanceState, NodeGroup, Snapshot};

/// How long we remember that CA deleted a synthetic failed instance (longer than the inventory
/// reports failed scale-outs, so a deleted record never comes back).
const ACK_RETENTION: Duration = Duration::from_secs(30 * 60);

/// A change this process made that the snapshot may not show yet.
#[derive(Debug, Clone)]
pub(super) struct LocalChange {
    /// When Cloudify accepted it. A snapshot fetched after this instant includes it.
    pub accepted_at: Instant,
    /// Net change of the target size.
    pub delta: i32,
    /// The scale execution it started (id, delta); scale-outs are cancellable by
    /// DecreaseTargetSize.
    pub started: Option<(String, i32)>,
    /// Provider ids it asked Cloudify to remove.
    pub deleting: Vec<String>,
    /// Waiting executions it cancelled.
    pub cancelled: Vec<String>,
}

/// Calls of DeleteNodes waiting for one `scale` execution.
#[derive(Debug, Default)]
pub(super) struct DeleteBatch {
    /// (provider id, VM instance id) to remove.
    pub instances: Vec<(String, String)>,
    /// One sender per waiting call.
    pub waiters: Vec<oneshot::Sender<Result<(), DomainError>>>,
}

#[derive(Debug, Default)]
pub(super) struct Overlay {
    pub changes: Vec<LocalChange>,
    /// Synthetic failed-instance ids CA deleted.
    pub acked_failed: HashMap<String, Instant>,
    pub batch: Option<DeleteBatch>,
    /// VM instances this process asked Cloudify to remove (until their scale-in is verified).
    pub requested_removals: std::collections::HashSet<String>,
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
    pub fn local_delta(&self, g: &NodeGroup) -> i32 {
        let counted_here = |e: &str| {
            self.changes.iter().any(|c| {
                c.started.as_ref().is_some_and(|(s, _)| s == e)
                    && !g.seen_executions.iter().any(|s| s == e)
            })
        };
        self.changes
            .iter()
            .filter(|c| {
                !c.started
                    .as_ref()
                    .is_some_and(|(e, _)| g.seen_executions.contains(e))
            })
            // A cancel offsets an execution only while something still counts it.
            .filter(|c| {
                c.cancelled.is_empty()
                    || c.cancelled
                        .iter()
                        .any(|e| g.waiting.iter().any(|w| w.id == *e) || counted_here(e))
            })
            .map(|c| c.delta)
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

    pub fn batched(&self, provider_id: &str) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|b| b.instances.iter().any(|(p, _)| p == provider_id))
    }

    pub fn batch_len(&self) -> i32 {
        self.batch
            .as_ref()
            .map_or(0, |b| i32::try_from(b.instances.len()).unwrap_or(i32::MAX))
    }

    /// Acknowledged synthetic ids that the snapshot still reports.
    fn acked_in(&self, g: &NodeGroup) -> i32 {
        let n = g
            .failed
            .iter()
            .flat_map(|f| f.synthetic_ids.iter())
            .filter(|id| self.acked_failed.contains_key(*id))
            .count();
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    /// Target size of `g` under this overlay.
    pub fn target(&self, g: &NodeGroup) -> i32 {
        let target = g
            .cloudify_target()
            .saturating_add(self.local_delta(g))
            .saturating_sub(self.acked_in(g))
            .max(0);
        // Every increase is checked against max before it is sent, so a target above max that
        // `planned_instances` does not explain is a counting artifact: an execution that starts
        // between the executions read and the deployments read is counted as waiting and in
        // planned for one refresh (the refresher prefers that to counting it zero times).
        if target > g.max && g.planned <= g.max {
            g.max
        } else {
            target
        }
    }
}

/// Runtime state of one group.
#[derive(Debug, Default)]
pub struct GroupRuntime {
    pub(super) mutation: tokio::sync::Mutex<()>,
    pub(super) overlay: Mutex<Overlay>,
}

impl GroupRuntime {
    /// Runs `f` on the pruned overlay. A poisoned lock (a panic elsewhere) still yields the data:
    /// the overlay stays consistent because every update is a single push/retain.
    pub(super) fn with_overlay<R>(&self, snap: &Snapshot, f: impl FnOnce(&mut Overlay) -> R) -> R {
        let mut guard = match self.overlay.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.prune(snap);
        f(&mut guard)
    }

    pub(super) fn target(&self, g: &NodeGroup, snap: &Snapshot) -> i32 {
        self.with_overlay(snap, |o| o.target(g))
    }

    pub(super) fn instances(&self, g: &NodeGroup, snap: &Snapshot) -> Vec<InstanceView> {
        self.with_overlay(snap, |o| {
            let mut out: Vec<InstanceView> = g
                .instances
                .iter()
                .map(|i| InstanceView {
                    id: i.provider_id.clone(),
                    state: if o.is_deleting(&i.provider_id) || o.batched(&i.provider_id) {
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
            out
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
