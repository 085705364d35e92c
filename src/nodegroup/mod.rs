//! The node-group domain: CA's node-group semantics over the inventory and the [`Cloudify`] trait.
//! It knows neither tonic nor HTTP, so it is unit-tested with a fake Cloudify.
//!
//! Reads (groups, lookups, sizes, instances, templates, options) are answered from the snapshot
//! plus a small per-group *overlay* of changes this process made since the snapshot was fetched;
//! they never call Cloudify. Mutations live in [`scale`](self::scale) and the template/options
//! logic in [`template`](self::template).

mod error;
mod overlay;
mod scale;
pub mod template;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use error::DomainError;
pub use overlay::GroupRuntime;
pub use scale::NodeRef;

pub use crate::cloudify::Cloudify;
use crate::config::NodeGroupsConfig;
use crate::inventory::{InstanceState, Inventory, NodeGroup, Snapshot};
use crate::observability::metrics::Metrics;

/// The longest a Refresh RPC waits for Cloudify while the last refresh failed (see
/// [`NodeGroupService::refresh`]).
pub const UNREACHABLE_REFRESH_WAIT: Duration = Duration::from_millis(100);

/// Tunables of the domain.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Label whose value names the GPU type.
    pub gpu_label: String,
    /// How long DeleteNodes waits for more calls on the same group before sending one `scale`.
    /// CA sends one node per call, up to 10 calls at once (`--max-scale-down-parallelism`);
    /// 300 ms gathers such a burst into one execution while staying far inside CA's 5 s deadline.
    pub delete_batch_window: Duration,
    /// Refresh RPC: refresh when the snapshot is older than this.
    pub refresh_max_age: Duration,
    /// Poll interval when verifying a finished scale-in.
    pub verify_poll: Duration,
    /// Give up verifying after this long.
    pub verify_timeout: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            gpu_label: "cloudify.co/gpu-type".into(),
            delete_batch_window: Duration::from_millis(300),
            refresh_max_age: Duration::from_secs(5),
            verify_poll: Duration::from_secs(2),
            verify_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// A node group as CA sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    /// Group id.
    pub id: String,
    /// Minimum size.
    pub min: i32,
    /// Maximum size.
    pub max: i32,
    /// Human summary.
    pub debug: String,
}

/// Error class of a failed instance, as CA's `InstanceErrorClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Quota or capacity exhausted.
    OutOfResources,
    /// Anything else.
    Other,
}

/// Error details of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceError {
    /// Non-empty code (CA drops error info with an empty code).
    pub code: String,
    /// Text.
    pub message: String,
    /// Class.
    pub class: ErrorClass,
}

/// An instance as CA sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    /// Instance id (= the node's provider id).
    pub id: String,
    /// State.
    pub state: InstanceState,
    /// Error details (failed scale-outs).
    pub error: Option<InstanceError>,
}

/// The node-group service.
pub struct NodeGroupService {
    inventory: Arc<Inventory>,
    runtime: RwLock<HashMap<String, Arc<GroupRuntime>>>,
    metrics: Arc<Metrics>,
    settings: ServiceSettings,
    templates: moka::sync::Cache<String, Arc<Vec<u8>>>,
}

impl NodeGroupService {
    /// Creates the service.
    pub fn new(
        inventory: Arc<Inventory>,
        metrics: Arc<Metrics>,
        settings: ServiceSettings,
    ) -> Arc<Self> {
        Arc::new(NodeGroupService {
            inventory,
            runtime: RwLock::new(HashMap::new()),
            metrics,
            settings,
            // Encoded template nodes depend only on configuration and the group id: build once.
            templates: moka::sync::Cache::new(10_000),
        })
    }

    /// The inventory.
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    fn config(&self) -> &NodeGroupsConfig {
        self.inventory.config()
    }

    /// The per-group runtime state (mutation lock, overlay), created on first use.
    fn runtime(&self, id: &str) -> Arc<GroupRuntime> {
        if let Ok(map) = self.runtime.read()
            && let Some(r) = map.get(id)
        {
            return Arc::clone(r);
        }
        match self.runtime.write() {
            Ok(mut map) => Arc::clone(map.entry(id.to_owned()).or_default()),
            // A poisoned map only means a panic elsewhere; a fresh runtime is a safe answer.
            Err(_) => Arc::new(GroupRuntime::default()),
        }
    }

    fn group<'s>(snap: &'s Snapshot, id: &str) -> Result<&'s NodeGroup, DomainError> {
        snap.group(id)
            .ok_or_else(|| DomainError::GroupNotFound(id.to_owned()))
    }

    /// Every node group.
    ///
    /// While Cloudify is unreachable the bounds are reported frozen at the current target
    /// (min = max = target): no scale can be started then, and a CA that saw room would call
    /// IncreaseSize/DeleteNodes, get UNAVAILABLE, log a failed loop and back the group off for
    /// minutes after the manager is back. Frozen, CA skips the group ("max size reached") and
    /// scales in the first loop after a refresh succeeds again.
    pub fn node_groups(&self) -> Vec<GroupView> {
        let snap = self.inventory.peek();
        let frozen = self.inventory.cloudify_unreachable();
        snap.groups
            .iter()
            .map(|g| self.view_of(g, &snap, frozen))
            .collect()
    }

    fn view_of(&self, g: &NodeGroup, snap: &Snapshot, frozen: bool) -> GroupView {
        let mut v = view(g);
        if frozen {
            let target = self.runtime(&g.id).target(g, snap);
            v.min = target.min(g.max);
            v.max = target.max(g.min);
        }
        v
    }

    /// The group of a Kubernetes node, `None` for nodes of no group (control plane, other pools).
    ///
    /// At most three hash lookups in the snapshot and no Cloudify call. CA repeats misses
    /// (control plane) several times per loop; a miss costs the same three lookups, so no
    /// negative cache (moka) sits in front of it: it would add a lookup of its own.
    pub fn node_group_for_node(&self, provider_id: &str, name: &str) -> Option<GroupView> {
        let snap = self.inventory.peek();
        match snap.lookup(provider_id, name) {
            Some(r) => {
                let frozen = self.inventory.cloudify_unreachable();
                snap.instance(r)
                    .map(|(g, _)| self.view_of(g, &snap, frozen))
            }
            None => {
                self.metrics.lookup_misses.inc();
                None
            }
        }
    }

    /// Target size: Cloudify's (planned + waiting executions + failed-instance records) plus the
    /// changes this process made since the snapshot was fetched.
    pub fn target_size(&self, id: &str) -> Result<i32, DomainError> {
        let snap = self.inventory.snapshot();
        let g = Self::group(&snap, id)?;
        let target = self.runtime(id).target(g, &snap);
        self.metrics
            .target_size
            .get_or_create(&crate::observability::metrics::GroupLabels {
                group: g.id.clone(),
            })
            .set(i64::from(target));
        Ok(target)
    }

    /// Every instance of the group, created or not.
    pub fn nodes(&self, id: &str) -> Result<Vec<InstanceView>, DomainError> {
        let snap = self.inventory.snapshot();
        let g = Self::group(&snap, id)?;
        Ok(self.runtime(id).instances(g, &snap))
    }

    /// The Refresh RPC: refresh when the snapshot is older than the bound, waiting at most
    /// `budget` (the refresh itself continues in the background). Fails only before the first
    /// complete snapshot.
    ///
    /// While Cloudify is unreachable (the last refresh failed) the wait is at most
    /// [`UNREACHABLE_REFRESH_WAIT`]: a failing attempt takes its retries' time (~0.6 s against a
    /// manager in maintenance mode), CA calls Refresh every loop, and there is nothing fresher to
    /// wait for; a manager that is back answers within that bound and the snapshot is fresh again.
    pub async fn refresh(&self, budget: Duration) -> Result<(), DomainError> {
        let inv = Arc::clone(&self.inventory);
        let max_age = self.settings.refresh_max_age;
        let budget = if self.inventory.is_ready() && self.inventory.cloudify_unreachable() {
            budget.min(UNREACHABLE_REFRESH_WAIT)
        } else {
            budget
        };
        let task = tokio::spawn(async move { inv.refresh_if_older(max_age).await });
        let outcome = tokio::time::timeout(budget, task).await;
        if self.inventory.is_ready() {
            return Ok(());
        }
        let message = match outcome {
            Ok(Ok(Err(e))) => format!("no inventory yet: {e}"),
            _ => "no inventory yet: the first refresh has not completed".to_owned(),
        };
        Err(DomainError::Unavailable {
            message,
            source: None,
        })
    }
}

fn view(g: &NodeGroup) -> GroupView {
    GroupView {
        id: g.id.clone(),
        min: g.min,
        max: g.max,
        debug: g.debug.clone(),
    }
}
