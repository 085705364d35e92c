//! Errors of the node-group domain.

use std::sync::Arc;

use crate::cloudify::CloudifyError;

/// Why a node-group operation was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DomainError {
    /// The request itself is malformed (e.g. a non-positive delta).
    #[error("{0}")]
    InvalidArgument(String),
    /// No node group with this id.
    #[error("node group {0:?} not found")]
    GroupNotFound(String),
    /// The request is valid but the group's state forbids it (min size, existing instances).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The increase would take the group above its max size.
    #[error(
        "node group {group:?}: target {target} (unfinished scale-ins counted) + {delta} would exceed max size {max}"
    )]
    AboveMax {
        /// The group CA asked to grow.
        group: String,
        /// The size the group could end with: the target, plus scale-ins that have not
        /// finished yet (a failure would roll them back).
        target: i32,
        /// CA's `delta` (positive).
        delta: i32,
        /// The group's [`NodeGroup::max`](crate::inventory::NodeGroup::max).
        max: i32,
    },
    /// The optional feature is not configured for this group.
    #[error("{0}")]
    NotImplemented(String),
    /// No inventory yet, or Cloudify cannot be reached.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// The Cloudify error, if any.
        #[source]
        source: Option<Arc<CloudifyError>>,
    },
    /// Another replica leads (or this one's lease lapsed): mutations go to the leader.
    #[error("{0}")]
    NotLeader(super::NotLeader),
    /// Cloudify refused or failed the call.
    #[error("Cloudify call failed: {0}")]
    Cloudify(#[source] Arc<CloudifyError>),
}

impl From<CloudifyError> for DomainError {
    fn from(e: CloudifyError) -> Self {
        if e.is_unavailable() || e.is_auth() {
            DomainError::Unavailable {
                message: format!("Cloudify unavailable: {e}"),
                source: Some(Arc::new(e)),
            }
        } else {
            DomainError::Cloudify(Arc::new(e))
        }
    }
}
