//! The node-group domain: CA's node-group semantics over the inventory and the [`Cloudify`] trait.
//! It knows neither tonic nor HTTP, so it is unit-tested with a fake Cloudify.
//!
//! Reads (groups, lookups, sizes, instances, templates, options) are answered from the snapshot
//! plus a small per-group *overlay* of changes this process made since the snapshot was fetched;
//! they never call Cloudify. IncreaseSize and DecreaseTargetSize live in `scale.rs`,
//! DeleteNodes from start to end in `delete.rs` (its verification in `verify.rs`); a scale
//! whose POST got no definite answer is settled with Cloudify in `settle.rs`. What
//! configuration alone answers (templates, GPUs, options, prices) is the [`GroupCatalog`], built
//! on the pure [`template`] builders.

mod catalog;
mod delete;
mod error;
mod follow;
pub mod leadership;
mod overlay;
mod scale;
mod settle;
pub mod template;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

pub use catalog::GroupCatalog;
pub use delete::NodeRef;
pub use error::DomainError;
pub use leadership::{LeaderTerm, Leadership, NotLeader, SoleReplica};
pub use overlay::GroupRuntime;

pub use crate::cloudify::Cloudify;
use crate::inventory::{InstanceState, Inventory, NodeGroup, Snapshot};
use crate::observability::metrics::Metrics;

/// Tunables of the domain.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Label whose value names the GPU type, answered by the GPULabel RPC (`gpu_label`).
    pub gpu_label: String,
    /// NodeGroupForNode matches a Node that has no provider id by its name (the configured
    /// runtime property). Off while the node controller runs: such a Node is then one it has not
    /// initialized yet, and CA must count its instance as upcoming, not as a registered node.
    pub name_lookup_without_provider_id: bool,
    /// How long DeleteNodes waits for more calls on the same group before sending one `scale`.
    /// CA sends one node per call, up to 10 calls at once (`--max-scale-down-parallelism`);
    /// 300 ms gathers such a burst into one execution while staying far inside CA's 5 s deadline.
    pub delete_batch_window: Duration,
    /// Refresh RPC: refresh when the snapshot is older than this.
    pub refresh_max_age: Duration,
    /// First pause between polls of a scale-in's execution (default 2 s, doubling up to 15 s).
    pub verify_poll: Duration,
    /// A scale-in still running after this long (default 30 min) is logged and left unverified.
    pub verify_timeout: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            gpu_label: "cloudify.co/gpu-type".into(),
            name_lookup_without_provider_id: true,
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
    /// The inventory's group id, echoed back by CA in every per-group call.
    pub id: String,
    /// [`NodeGroup::min`], or the target while Cloudify is unreachable (bounds frozen).
    pub min: i32,
    /// [`NodeGroup::max`], or the target while Cloudify is unreachable (bounds frozen).
    pub max: i32,
    /// CA's `debug` field: deployment, group, planned/current counts and instance count.
    pub debug: String,
}

/// Error class of a failed instance, as CA's `InstanceErrorClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Quota or capacity exhausted.
    OutOfResources,
    /// Any other failure (CA's `OtherErrorClass`).
    Other,
}

/// Error details of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceError {
    /// Non-empty code (CA drops error info with an empty code).
    pub code: String,
    /// `Cloudify scale execution <id> failed: ` and the last line of its error, shortened.
    pub message: String,
    /// `OutOfResources` when Cloudify's error mentions a quota, else `Other`.
    pub class: ErrorClass,
}

/// An instance as CA sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    /// Instance id (= the node's provider id).
    pub id: String,
    /// The snapshot's state, `Deleting` once this process asked to remove the instance.
    pub state: InstanceState,
    /// Error details (failed scale-outs).
    pub error: Option<InstanceError>,
}

/// The domain: answers CA from the snapshot and starts scales, one mutation per group at a
/// time, only while this replica leads.
pub struct NodeGroupService {
    inventory: Arc<Inventory>,
    runtime: RwLock<HashMap<String, Arc<GroupRuntime>>>,
    metrics: Arc<Metrics>,
    settings: ServiceSettings,
    catalog: GroupCatalog,
    /// Who may mutate; unset = [`SoleReplica`] (a single process, tests).
    leadership: OnceLock<Arc<dyn Leadership>>,
}

impl NodeGroupService {
    /// The service over `inventory`; a sole replica until [`set_leadership`](Self::set_leadership).
    pub fn new(
        inventory: Arc<Inventory>,
        metrics: Arc<Metrics>,
        settings: ServiceSettings,
    ) -> Arc<Self> {
        Arc::new(NodeGroupService {
            catalog: GroupCatalog::new(Arc::clone(&inventory), settings.gpu_label.clone()),
            inventory,
            runtime: RwLock::new(HashMap::new()),
            metrics,
            settings,
            leadership: OnceLock::new(),
        })
    }

    /// Plugs in the leadership gate (the composition root does, when a Lease is configured).
    /// Set once, before serving; a second call is ignored and returns false.
    pub fn set_leadership(&self, gate: Arc<dyn Leadership>) -> bool {
        self.leadership.set(gate).is_ok()
    }

    /// The current leadership term, or `UNAVAILABLE` naming the leader. Every mutation asks
    /// right before it calls Cloudify.
    fn leader_term(&self) -> Result<LeaderTerm, DomainError> {
        match self.leadership.get() {
            Some(gate) => gate.check().map_err(DomainError::NotLeader),
            None => SoleReplica.check().map_err(DomainError::NotLeader),
        }
    }

    /// Runs one Cloudify mutation inside the current term: it must be answered before another
    /// replica could take the lease, or the caller gets `UNAVAILABLE` (the call is abandoned; if
    /// Cloudify still accepted it, every replica's next refresh counts it).
    async fn within_term<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, DomainError>>,
    ) -> Result<T, DomainError> {
        let term = self.leader_term()?;
        let Some(expires) = term.expires else {
            return call.await;
        };
        match tokio::time::timeout_at(tokio::time::Instant::from_std(expires), call).await {
            Ok(r) => r,
            Err(_) => Err(DomainError::Unavailable {
                message: "the leadership term ended while Cloudify was answering; the next \
                          refresh shows whether the call took effect"
                    .into(),
                source: None,
            }),
        }
    }

    /// The snapshot a mutation may decide on: for a new term, one fetched after the term began
    /// (the previous leader's executions are then in it), refreshing first if needed.
    async fn leader_snapshot(&self) -> Result<Arc<Snapshot>, DomainError> {
        let term = self.leader_term()?;
        let snap = self.inventory.snapshot();
        match term.since {
            Some(since) if snap.fetched_at < since => {
                self.inventory.refresh().await.map_err(|e| DomainError::Unavailable {
                    message: format!(
                        "new leader: catching up with Cloudify before the first mutation failed: {e}"
                    ),
                    source: None,
                })
            }
            _ => Ok(snap),
        }
    }

    /// The inventory the service reads (tests and benches refresh or inspect it directly).
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// The configured answers about groups (templates, GPUs, options, prices).
    pub fn catalog(&self) -> &GroupCatalog {
        &self.catalog
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

    /// The Cloudify entry that holds the group's deployment.
    fn source(&self, g: &NodeGroup) -> Result<Arc<dyn Cloudify>, DomainError> {
        self.inventory
            .sources()
            .get(g.source)
            .cloned()
            .ok_or_else(|| DomainError::GroupNotFound(g.id.clone()))
    }

    fn group<'s>(snap: &'s Snapshot, id: &str) -> Result<&'s NodeGroup, DomainError> {
        group_in(snap, id)
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
            .map(|g| self.view_of(g, frozen))
            .collect()
    }

    fn view_of(&self, g: &NodeGroup, frozen: bool) -> GroupView {
        let mut v = view(g);
        if frozen && let Some(target) = self.runtime(&g.id).target(&self.inventory, &g.id) {
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
        if provider_id.is_empty() && !self.settings.name_lookup_without_provider_id {
            return None;
        }
        let snap = self.inventory.peek();
        match snap.lookup(provider_id, name) {
            Some(r) => {
                let frozen = self.inventory.cloudify_unreachable();
                snap.instance(r).map(|(g, _)| self.view_of(g, frozen))
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
        // Unknown ids never get runtime state (the map would grow with every bad request).
        Self::group(&self.inventory.peek(), id)?;
        let target = self
            .runtime(id)
            .target(&self.inventory, id)
            .ok_or_else(|| DomainError::GroupNotFound(id.to_owned()))?;
        self.metrics
            .target_size
            .get_or_create(&crate::observability::metrics::GroupLabels {
                group: id.to_owned(),
            })
            .set(i64::from(target));
        Ok(target)
    }

    /// Every instance of the group, created or not.
    pub fn nodes(&self, id: &str) -> Result<Vec<InstanceView>, DomainError> {
        Self::group(&self.inventory.peek(), id)?;
        self.runtime(id)
            .instances(&self.inventory, id)
            .ok_or_else(|| DomainError::GroupNotFound(id.to_owned()))
    }

    /// The Refresh RPC. CA calls it at the start of every loop under its `grpc_timeout`, so it
    /// never waits on Cloudify (issue #13: it took 0.6-1.2 s with the manager down): it answers
    /// from the snapshot at once and, when the snapshot is older than `refresh_max_age`, asks the
    /// background refresher for a new one. Fails only before the first complete snapshot.
    pub fn refresh(&self) -> Result<(), DomainError> {
        let st = self.inventory.status();
        if st.ready {
            if st.snapshot_age > self.settings.refresh_max_age {
                self.inventory.trigger_refresh();
            }
            return Ok(());
        }
        self.inventory.trigger_refresh();
        let message = match st.last_error {
            Some(e) => format!("no inventory yet: {e}"),
            None => "no inventory yet: the first refresh has not completed".to_owned(),
        };
        Err(DomainError::Unavailable {
            message,
            source: None,
        })
    }
}

/// Group `id` of `snap`, or `GroupNotFound`.
fn group_in<'s>(snap: &'s Snapshot, id: &str) -> Result<&'s NodeGroup, DomainError> {
    snap.group(id)
        .ok_or_else(|| DomainError::GroupNotFound(id.to_owned()))
}

fn view(g: &NodeGroup) -> GroupView {
    GroupView {
        id: g.id.clone(),
        min: g.min,
        max: g.max,
        debug: g.debug.clone(),
    }
}
