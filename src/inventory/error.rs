//! Why a refresh did not complete (the previous snapshot stays served).

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
        /// Passes read before giving up (`COLLECT_ATTEMPTS`).
        attempts: u32,
    },
}

impl InventoryError {
    /// The Cloudify error underneath, if a call failed.
    pub fn cloudify(&self) -> Option<&CloudifyError> {
        match self {
            InventoryError::Cloudify { source, .. } => Some(source),
            InventoryError::Unsettled { .. } => None,
        }
    }
}
