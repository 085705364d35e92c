//! What the node controller decided about a Node, as a closed vocabulary (issue 24): one variant
//! per outcome, with the details each one carries. `/nodes` and `inspect node` show it in words
//! (its `Display`), as before.

use serde::{Serialize, Serializer};

use super::plan::LifecycleAction;
use crate::observability::metrics::TaintAction;

/// The node controller's last decision about one Node.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Initialized from this VM instance of this group.
    Initialized {
        /// The VM node-instance id.
        vm_instance: String,
        /// The node group id.
        group: String,
    },
    /// The initialization patch failed (retried on the next change).
    InitializationFailed(String),
    /// Would initialize, but this replica does not lead.
    WouldInitialize,
    /// Carries the uninitialized taint and matches no instance, for this reason.
    Unmatched(String),
    /// Its instance is gone, but the safety rules refuse the deletion yet, for this reason.
    NotDeletedYet(String),
    /// Its deletion waits for the next refresh (`node_controller.max_deletions_per_refresh`).
    HeldBack,
    /// Deleted, for this reason.
    Deleted(String),
    /// Not deleted: gone already, or re-created with another UID.
    AlreadyGone,
    /// The deletion failed.
    DeleteFailed(String),
    /// The shutdown taint was added or removed.
    ShutdownTaint(TaintAction),
    /// Updating the shutdown taint failed.
    TaintUpdateFailed(String),
    /// Would act so, but this replica does not lead.
    WouldAct(LifecycleAction),
    /// Matches its instance; nothing to do.
    Matched,
    /// No provider id and no matching instance: not one of ours.
    NotManaged,
    /// Has a provider id that matches no instance.
    NoMatchingInstance,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Initialized { vm_instance, group } => {
                write!(f, "initialized from {vm_instance} ({group})")
            }
            Verdict::InitializationFailed(e) => write!(f, "initialization failed: {e}"),
            Verdict::WouldInitialize => f.write_str("would initialize (not the leader)"),
            Verdict::Unmatched(reason) => write!(f, "unmatched, keeps the taint: {reason}"),
            Verdict::NotDeletedYet(reason) => write!(f, "not deleted yet: {reason}"),
            Verdict::HeldBack => {
                f.write_str("deletion held back by node_controller.max_deletions_per_refresh")
            }
            Verdict::Deleted(reason) => write!(f, "deleted: {reason}"),
            Verdict::AlreadyGone => {
                f.write_str("not deleted: gone already or re-created with another UID")
            }
            Verdict::DeleteFailed(e) => write!(f, "delete failed: {e}"),
            Verdict::ShutdownTaint(action) => write!(f, "shutdown taint {}", action.as_str()),
            Verdict::TaintUpdateFailed(e) => write!(f, "taint update failed: {e}"),
            Verdict::WouldAct(action) => write!(f, "would {action:?} (not the leader)"),
            Verdict::Matched => f.write_str("matched; nothing to do"),
            Verdict::NotManaged => {
                f.write_str("no providerID and no matching instance: not managed")
            }
            Verdict::NoMatchingInstance => f.write_str("no matching instance"),
        }
    }
}

/// In words, as `/nodes` has always shown it.
impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
