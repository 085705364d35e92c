//! Why a refresh did not complete (the previous snapshot stays served).

use super::build::Contradiction;
use crate::cloudify::CloudifyError;

/// A refresh that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A Cloudify call failed.
    #[error("refresh from Cloudify {manager:?} failed: {source}")]
    Cloudify {
        /// The `cloudify[].name` of the entry whose call failed.
        manager: String,
        /// The failed call.
        #[source]
        source: CloudifyError,
    },
    /// Scales kept starting or ending while the inventory was read, so no pass gave a view in
    /// which each one is counted exactly once; the previous snapshot stays.
    #[error(
        "refresh from Cloudify {manager:?}: scale executions moved during each of {attempts} passes"
    )]
    Unsettled {
        /// The `cloudify[].name` of the entry that would not settle.
        manager: String,
        /// Passes read before giving up.
        attempts: u32,
    },
    /// The answers of a pass contradicted each other in every pass read (issue 20): a group's
    /// members that are none of its deployment's nodes, fewer group instances than its counts,
    /// scaling groups gone from a deployment nobody updated. Taking them as the truth would
    /// make groups or instances vanish from CA's view; the previous snapshot stays.
    #[error(
        "refresh from Cloudify {manager:?}: its answers contradict each other in each of \
         {attempts} passes: {}{}",
        .contradictions.first().map(ToString::to_string).unwrap_or_default(),
        match .contradictions.len() { 0 | 1 => String::new(), n => format!(" (and {} more)", n - 1) }
    )]
    Inconsistent {
        /// The `cloudify[].name` of the entry whose answers do not add up.
        manager: String,
        /// Passes read before giving up.
        attempts: u32,
        /// What the last pass contradicted (at least one).
        contradictions: Vec<Contradiction>,
    },
}

impl InventoryError {
    /// The Cloudify error underneath, if a call failed.
    pub fn cloudify(&self) -> Option<&CloudifyError> {
        match self {
            InventoryError::Cloudify { source, .. } => Some(source),
            InventoryError::Unsettled { .. } | InventoryError::Inconsistent { .. } => None,
        }
    }

    /// True when Cloudify answered, but with parts that cannot all be true (paging that makes
    /// no progress, contradictions): the metric's `inconsistent` result.
    pub fn is_inconsistency(&self) -> bool {
        match self {
            InventoryError::Inconsistent { .. } => true,
            InventoryError::Cloudify { source, .. } => {
                matches!(source, CloudifyError::Paging { .. })
            }
            InventoryError::Unsettled { .. } => false,
        }
    }
}
