//! The inventory: an immutable [`Snapshot`] of every node group and instance, with indexes, built
//! aside by a background refresh and swapped in whole (arc-swap). Readers get the current snapshot
//! without locking and never wait on Cloudify.
//!
//! Layout: `store` (the served snapshot and what readers ask of it), `refresh` (the
//! [`Inventory`] and its loop: scheduling, triggers, readiness and generations), `fetch` (the REST
//! reads of one refresh and what they keep between refreshes), `build` (a snapshot from what a
//! refresh read, and the checks of whether it can all be true), `changes` (what a refresh
//! logs about node groups found or lost, and its progress while the first one runs), `error`.

mod build;
mod changes;
mod error;
mod fetch;
pub mod pools;
mod refresh;
mod store;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

pub use build::group_id;
pub use build::{SourceData, build_snapshot};
pub use error::{Contradiction, InventoryError};
pub use fetch::FetchOptions;
pub use pools::{PoolGroup, PoolSource};
pub use refresh::Inventory;
pub use store::{InventoryStatus, RefreshGeneration};

/// The map type of the lookup indexes. foldhash instead of the default SipHash: CA asks for
/// every node every loop and for unmanaged nodes several times (three probes each), and on
/// 40-60 byte provider ids foldhash hashes several times faster (benches/inventory.rs,
/// BENCHMARKS.md). It is seeded randomly per map like the default, so crafted ids cannot
/// predict collisions.
pub(crate) type IndexMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// What CA is told about an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// The VM is `started`.
    Running,
    /// The VM is being created (or its provider id is not known yet).
    Creating,
    /// The VM is being removed (stopping/deleting, or named by an active scale-in).
    Deleting,
}

/// One group instance, seen through its joining VM: the one VM of it that is a Kubernetes Node.
///
/// Cloudify adds and removes whole group instances (`delta` counts them), so a group instance is
/// exactly one Node for CA, whatever it holds: with several VMs (a worker and a storage VM), the
/// group's [`NodeGroup::joining_node`] names the one that joins, and the others are its
/// [`infrastructure`](Self::infrastructure), removed with it and never a Node (issue 20).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInstance {
    /// The id reported to CA (= the Kubernetes node's `spec.providerID`), or a placeholder while
    /// the runtime property the template needs is not set yet.
    pub provider_id: String,
    /// The joining VM's node-instance id: what a scale-in names in `include_instances`.
    pub vm_instance: String,
    /// The group-instance id (shared by the VM, its port, its floating IP…).
    pub group_instance: String,
    /// The Kubernetes node name, from the configured runtime property.
    pub node_name: Option<String>,
    /// From `cloudify_state`, except: `Creating` while the provider id is a placeholder, and
    /// `Deleting` once an active scale-in names the instance.
    pub state: InstanceState,
    /// Cloudify's node-instance state.
    pub cloudify_state: String,
    /// The Node addresses its runtime properties report (for the node controller).
    pub addresses: InstanceAddresses,
    /// An active scale execution is removing it. A `Deleting` instance that nothing removes
    /// (a failed scale-in without rollback, a cancelled or killed one) may be deleted again.
    pub being_removed: bool,
    /// The group instance's other VMs, in node-instance id order: none in the usual one-VM
    /// group.
    pub infrastructure: Vec<InfrastructureVm>,
}

/// A VM of a group instance that is not its Kubernetes Node (a storage VM beside the worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfrastructureVm {
    /// Its node-instance id.
    pub vm_instance: String,
    /// The id the group's template renders for it (`None` while a runtime property it needs is
    /// not set): a Node registered with it is told apart from a Node whose VM is gone.
    pub provider_id: Option<String>,
}

/// A scaling group the inventory does not serve, and why (`check` and the log say it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedGroup {
    /// The id it would have (`[<name>:]<deployment>/<group>`).
    pub id: String,
    /// What is wrong and what to configure.
    pub reason: String,
}

/// A provider id that several instances render (a template that does not tell them apart, or
/// runtime properties that repeat): answering for it could remove the wrong VM, so lookups and
/// DeleteNodes never act on it (issue 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousProviderId {
    /// The id.
    pub provider_id: String,
    /// `(group id, VM instance id)` of every instance that renders it, sorted.
    pub instances: Vec<(String, String)>,
}

/// Addresses of a VM, read from the runtime properties the group configures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceAddresses {
    /// The Node's `InternalIP` (runtime property `ip` unless configured otherwise).
    pub internal_ip: Option<String>,
    /// The Node's `ExternalIP` (runtime property `public_ip` by default).
    pub external_ip: Option<String>,
    /// The Node's `Hostname` (runtime property `hostname` by default).
    pub hostname: Option<String>,
}

/// A scale-out that failed: its missing instances are reported as creating-with-error until CA
/// deletes them.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedScale {
    /// Id of the failed `scale` execution; part of every synthetic id and of CA's message.
    pub execution_id: String,
    /// Cloudify's `error` text, empty when it gave none; `quota` in it makes the error class
    /// `OutOfResources`.
    pub error: String,
    /// Synthetic instance ids, one per missing instance.
    pub synthetic_ids: Vec<String>,
}

/// A scale execution of a group whose delta `planned_instances` does not show yet: queued,
/// pending, or `started` before its deployment modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingExecution {
    /// The execution's id: a decrease cancels a `cancellable` scale-out by it.
    pub id: String,
    /// The `delta` parameter (default 1), clamped to i32; never 0 (those are not listed).
    pub delta: i32,
    /// Still queued/pending, so a cancel removes it whole (a started one may be past that).
    pub cancellable: bool,
}

/// One node group: a Cloudify scaling group.
#[derive(Debug, Clone)]
pub struct NodeGroup {
    /// Group id, `<deployment>/<group>` (prefixed `<name>:` with several managers).
    pub id: String,
    /// Index into `cloudify[]` (and [`Inventory::sources`]) of the entry holding the deployment.
    pub source: usize,
    /// The entry's tenant: every call for the group carries it, `{tenant}` renders it.
    pub tenant: String,
    /// Cloudify deployment id: where the group's scales are started.
    pub deployment: String,
    /// Scaling group name inside the deployment (the scales' `scalable_entity_name`).
    pub group: String,
    /// The deployment's Cloudify site (`site_name`), if it has one.
    pub site: Option<String>,
    /// The configured bound (`--nodes`, `node_groups.groups.<id>.min`, defaults), else the
    /// policy's `min_instances`, else 0; never negative.
    pub min: i32,
    /// The configured bound, else the policy's `max_instances` (`-1` or absent:
    /// `node_groups.unbounded_max`); never below `min`.
    pub max: i32,
    /// `planned_instances` (absent: `current`) clamped to `0..=i32::MAX`; `current` instead
    /// while an orphan modification of the group is started.
    pub planned: i32,
    /// `current_instances` (absent: 0) clamped to `0..=i32::MAX`.
    pub current: i32,
    /// Scale executions whose delta `planned_instances` does not show yet.
    pub waiting: Vec<WaitingExecution>,
    /// Active scale executions whose modification `planned_instances` already shows: until
    /// they end, a failure would roll their delta back.
    pub running: Vec<WaitingExecution>,
    /// Instances, sorted by provider id.
    pub instances: Vec<GroupInstance>,
    /// Recent failed scale-outs.
    pub failed: Vec<FailedScale>,
    /// Compute node ids of the group (for verification queries).
    pub vm_nodes: Vec<String>,
    /// The node whose VM joins Kubernetes in each group instance: the configured `joining_node`,
    /// else the group's only VM member (with several and none configured the group is refused);
    /// `None` when no member is a VM itself (each group instance is then seen through its VM of
    /// the smallest node id).
    pub joining_node: Option<String>,
    /// Ids of this group's scale executions the refresh saw (active or recently ended). A
    /// local change whose execution is listed here is already counted by the snapshot: the
    /// overlay must not add it a second time.
    pub seen_executions: Vec<String>,
    /// The deployment has a started modification no active execution owns: every scale sent
    /// to it must pass `abort_started`, and `planned` counts `current` meanwhile.
    pub orphan_modification: bool,
    /// Human summary for CA's `debug` field, built once per snapshot so lookups do not format.
    pub debug: String,
}

impl NodeGroup {
    /// Target size as Cloudify sees it: `planned_instances` plus the deltas of scale executions
    /// not started yet, plus the missing instances of failed scale-outs (CA deletes those).
    pub fn cloudify_target(&self) -> i32 {
        // Summed in i64: the deltas come from Cloudify and may be anything (issue 11).
        let waiting: i64 = self.waiting.iter().map(|w| i64::from(w.delta)).sum();
        let failed: usize = self.failed.iter().map(|f| f.synthetic_ids.len()).sum();
        let total = i64::from(self.planned)
            .saturating_add(waiting)
            .saturating_add(i64::try_from(failed).unwrap_or(i64::MAX));
        total.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }
}

/// Where an instance sits in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceRef {
    /// Index into [`Snapshot::groups`].
    pub group: u32,
    /// Index into the group's instances.
    pub instance: u32,
}

/// An immutable view of every node group, with lookup indexes.
#[derive(Debug)]
pub struct Snapshot {
    /// When the refresh that built it started fetching (Cloudify state is at least this new).
    pub fetched_at: Instant,
    /// Wall-clock twin of `fetched_at`, for humans.
    pub fetched_at_wall: SystemTime,
    /// False only for the empty placeholder before the first refresh.
    pub complete: bool,
    /// Groups sorted by id.
    pub groups: Vec<NodeGroup>,
    group_index: IndexMap<u32>,
    by_provider_id: IndexMap<InstanceRef>,
    by_alias: IndexMap<InstanceRef>,
    /// Provider ids of infrastructure VMs → their group instance.
    by_infrastructure: IndexMap<InstanceRef>,
    /// Provider ids several instances render, sorted; none of them is in the indexes above.
    ambiguous: Vec<AmbiguousProviderId>,
    /// Scaling groups left out, sorted by id.
    refused: Vec<RefusedGroup>,
    instance_count: usize,
}

/// The last path segment of a provider id (`aws:///zone/i-1` → `i-1`), as the clusterapi
/// provider normalizes ids. Borrowed, so the lookup allocates nothing.
pub fn normalize_provider_id(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

impl Snapshot {
    /// The placeholder served before the first refresh.
    pub fn empty() -> Self {
        Snapshot {
            fetched_at: Instant::now(),
            fetched_at_wall: SystemTime::now(),
            complete: false,
            groups: Vec::new(),
            group_index: IndexMap::default(),
            by_provider_id: IndexMap::default(),
            by_alias: IndexMap::default(),
            by_infrastructure: IndexMap::default(),
            ambiguous: Vec::new(),
            refused: Vec::new(),
            instance_count: 0,
        }
    }

    /// A group by id (`[<name>:]<deployment>/<group>`); `None` for an unknown id.
    pub fn group(&self, id: &str) -> Option<&NodeGroup> {
        self.group_index
            .get(id)
            .and_then(|i| self.groups.get(*i as usize))
    }

    /// The group and instance `r` points at; `None` if `r` came from another snapshot and is out
    /// of range.
    pub fn instance(&self, r: InstanceRef) -> Option<(&NodeGroup, &GroupInstance)> {
        let g = self.groups.get(r.group as usize)?;
        Some((g, g.instances.get(r.instance as usize)?))
    }

    /// Finds the instance of a Kubernetes node: by exact provider id, then by normalized provider
    /// id, then by node name. At most three hash lookups, no allocation. A provider id several
    /// instances render finds nothing, whatever the name says.
    pub fn lookup(&self, provider_id: &str, name: &str) -> Option<InstanceRef> {
        if !provider_id.is_empty() {
            if let Some(r) = self.by_provider_id.get(provider_id) {
                return Some(*r);
            }
            if self.ambiguity(provider_id).is_some() {
                return None;
            }
            if let Some(r) = self.by_alias.get(normalize_provider_id(provider_id)) {
                return Some(*r);
            }
        }
        if !name.is_empty() {
            return self.by_alias.get(name).copied();
        }
        None
    }

    /// Finds an instance by the exact id CA echoes back (provider id or placeholder id).
    pub fn by_instance_id(&self, id: &str) -> Option<InstanceRef> {
        self.by_provider_id.get(id).copied()
    }

    /// Number of instances in all groups.
    pub fn instance_count(&self) -> usize {
        self.instance_count
    }

    /// Every provider id that several instances render (`check`, logs and a metric report them).
    pub fn ambiguous_provider_ids(&self) -> &[AmbiguousProviderId] {
        &self.ambiguous
    }

    /// The scaling groups left out of the node groups, and why.
    pub fn refused_groups(&self) -> &[RefusedGroup] {
        &self.refused
    }

    /// The instances behind `provider_id` when several render it.
    pub fn ambiguity(&self, provider_id: &str) -> Option<&AmbiguousProviderId> {
        if self.ambiguous.is_empty() {
            return None;
        }
        self.ambiguous
            .binary_search_by(|a| a.provider_id.as_str().cmp(provider_id))
            .ok()
            .and_then(|i| self.ambiguous.get(i))
    }

    /// The group instance whose infrastructure VM renders `provider_id` (not a Kubernetes Node
    /// of the group, but not gone either).
    pub fn infrastructure_of(&self, provider_id: &str) -> Option<(&NodeGroup, &GroupInstance)> {
        self.instance(*self.by_infrastructure.get(provider_id)?)
    }
}

/// Logs the scaling groups left out and the provider ids several instances render when those
/// lists changed since `previous` (not on every refresh), and publishes the number of ambiguous
/// ids as a gauge.
pub(crate) fn report_snapshot_problems(
    previous: &Snapshot,
    current: &Snapshot,
    metrics: &crate::observability::metrics::Metrics,
) {
    if current.refused_groups() != previous.refused_groups() {
        for r in current.refused_groups() {
            tracing::error!(group = %r.id, reason = %r.reason, "scaling group left out of the node groups");
        }
    }
    let now = current.ambiguous_provider_ids();
    metrics
        .ambiguous_provider_ids
        .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
    if now == previous.ambiguous_provider_ids() {
        return;
    }
    if now.is_empty() {
        tracing::info!("no provider id is rendered by several instances any more");
        return;
    }
    for a in now {
        tracing::error!(
            provider_id = %a.provider_id, instances = ?a.instances,
            "several instances render this provider id: CA gets no group for it and DeleteNodes \
             refuses it; make provider_id_template name one instance"
        );
    }
}
