//! The store: the snapshot CA's reads are answered from, behind an atomic pointer, with the
//! readiness, the completed-refresh generations and the health of the last refresh.
//!
//! Concurrency: every read is lock-free. The snapshot and the last refresh failure are
//! `ArcSwap`s (an atomic load; the refresh loop swaps a new value in whole), readiness and
//! generations are `watch` channels (a read borrows the current value). `NodeGroupForNode`,
//! CA's most frequent call, reads the snapshot and the failure on every call: a lock there would
//! be taken thousands of times per CA loop by every gRPC worker.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use super::Snapshot;

/// Health of the inventory, for `/readyz` and logs.
#[derive(Debug, Clone)]
pub struct InventoryStatus {
    /// A complete snapshot has been loaded.
    pub ready: bool,
    /// Age of the served snapshot.
    pub snapshot_age: Duration,
    /// The last refresh failed with this error (cleared by a success).
    pub last_error: Option<String>,
    /// The last refresh failed on authentication.
    pub auth_problem: bool,
    /// Groups in the snapshot.
    pub groups: usize,
    /// Instances in the snapshot.
    pub instances: usize,
}

/// How many refreshes have completed (read every manager and every page) and been swapped in.
/// The node controller acts once per new generation: a failed refresh leaves it unchanged, so an
/// outage of the manager never looks like instances going away.
pub type RefreshGeneration = u64;

/// Why the last refresh failed.
#[derive(Debug)]
struct RefreshFailure {
    /// The error, as `/readyz` shows it.
    message: String,
    /// It was an authentication failure (a 401 or the back-off after one).
    auth: bool,
}

/// The served snapshot and what readers ask about it.
pub struct Store {
    current: ArcSwap<Snapshot>,
    failure: ArcSwapOption<RefreshFailure>,
    ready: watch::Sender<bool>,
    generation: watch::Sender<(RefreshGeneration, Arc<Snapshot>)>,
}

impl Store {
    /// A store serving the empty placeholder until the first refresh.
    pub(super) fn new() -> Store {
        let empty = Arc::new(Snapshot::empty());
        Store {
            current: ArcSwap::new(Arc::clone(&empty)),
            failure: ArcSwapOption::empty(),
            ready: watch::channel(false).0,
            generation: watch::channel((0, empty)).0,
        }
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A cheaper borrow of the current snapshot for short reads on the hot path.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The completed refreshes: generation number and the snapshot it swapped in (generation 0 is
    /// the empty placeholder). Read-only; the node controller waits on it.
    pub fn completed_refreshes(&self) -> watch::Receiver<(RefreshGeneration, Arc<Snapshot>)> {
        self.generation.subscribe()
    }

    /// True once a complete snapshot is loaded.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first complete snapshot is loaded.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// True while the last refresh failed (Cloudify unreachable, refusing us, or answering
    /// nonsense): the snapshot served is the last good one and no scale can be started.
    /// Lock-free: `NodeGroupForNode` asks it on every call.
    pub fn cloudify_unreachable(&self) -> bool {
        self.failure.load().is_some()
    }

    /// Health summary for `/readyz`: readiness, snapshot age and size, the last refresh error.
    pub fn status(&self) -> InventoryStatus {
        let snap = self.peek();
        let failure = self.failure.load_full();
        InventoryStatus {
            ready: self.is_ready(),
            snapshot_age: snap.fetched_at.elapsed(),
            last_error: failure.as_ref().map(|f| f.message.clone()),
            auth_problem: failure.as_ref().is_some_and(|f| f.auth),
            groups: snap.groups.len(),
            instances: snap.instance_count(),
        }
    }

    /// Serves `snap` from now on: a new generation, ready, the last failure cleared. Returns the
    /// snapshot it replaces, and whether the refresh before this one had failed.
    pub(super) fn publish(&self, snap: &Arc<Snapshot>) -> (Arc<Snapshot>, bool) {
        let previous = self.current.swap(Arc::clone(snap));
        self.generation.send_modify(|(n, s)| {
            *n += 1;
            *s = Arc::clone(snap);
        });
        let was_failing = self.failure.swap(None).is_some();
        self.ready.send_replace(true);
        (previous, was_failing)
    }

    /// Records a failed refresh; the snapshot stays.
    pub(super) fn fail(&self, message: String, auth: bool) {
        self.failure
            .store(Some(Arc::new(RefreshFailure { message, auth })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_the_next_snapshot() {
        let store = Store::new();
        assert!(!store.is_ready() && !store.cloudify_unreachable());
        store.fail("manager down".into(), false);
        assert!(store.cloudify_unreachable());
        assert_eq!(store.status().last_error.as_deref(), Some("manager down"));
        store.fail("401".into(), true);
        assert!(store.status().auth_problem);
        let snap = Arc::new(Snapshot::empty());
        let (_, was_failing) = store.publish(&snap);
        assert!(was_failing);
        assert!(store.is_ready() && !store.cloudify_unreachable());
        assert!(store.status().last_error.is_none());
        assert_eq!(store.completed_refreshes().borrow().0, 1);
        assert!(!store.publish(&snap).1);
    }
}
