//! Why a refresh did not complete (the previous snapshot stays served), and the contradictions
//! between the parts of one refresh that make it incomplete (`build::checks` finds them).

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

/// Two parts of one refresh that cannot both be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Contradiction {
    /// A scaling group names a member that is neither a node of its deployment nor one of its
    /// scaling groups (a node list that lost nodes, e.g. `items: []`).
    #[error(
        "scaling group {deployment}/{group} names member {member:?}, which is none of the \
         deployment's {nodes} nodes"
    )]
    UnknownMember {
        /// The deployment.
        deployment: String,
        /// The scaling group.
        group: String,
        /// The member no node or group answers to.
        member: String,
        /// How many nodes the refresh read for the deployment.
        nodes: usize,
    },
    /// A group has fewer group instances with a VM than both of its counts say (an instance
    /// list that lost instances).
    #[error(
        "scaling group {deployment}/{group}: {found} group instances with a VM, fewer than the \
         {expected} its current and planned instances both count"
    )]
    MissingInstances {
        /// The deployment.
        deployment: String,
        /// The scaling group.
        group: String,
        /// Group instances the instance list holds.
        found: usize,
        /// `min(current_instances, planned_instances)`.
        expected: usize,
    },
    /// A deployment lost scaling groups while its `updated_at` stayed the same: only a
    /// deployment update changes them (e.g. an answer with `scaling_groups: null`).
    #[error(
        "deployment {deployment} lost scaling groups {groups:?} without being updated \
         (updated_at {updated_at})"
    )]
    GroupsVanished {
        /// The deployment.
        deployment: String,
        /// The scaling groups the previous refresh read and this one did not.
        groups: Vec<String>,
        /// The unchanged `updated_at`.
        updated_at: String,
    },
}

impl Contradiction {
    /// The deployment it is about: what the next pass reads again whole.
    pub fn deployment(&self) -> &str {
        match self {
            Contradiction::UnknownMember { deployment, .. }
            | Contradiction::MissingInstances { deployment, .. }
            | Contradiction::GroupsVanished { deployment, .. } => deployment,
        }
    }
}
