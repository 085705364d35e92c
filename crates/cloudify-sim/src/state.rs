//! The simulated manager's data: tenants, users, tokens, deployments, nodes, node instances and
//! executions, held in one [`Model`] behind one mutex (see `mod.rs` for why).
//!
//! Node instances live in a `BTreeMap` keyed by insertion sequence, so list order is stable
//! (storage order, like the manager's primary key) and removal is O(log n); an id index and a
//! per-group-instance member list keep every lookup the workflow needs away from full scans.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;

use super::scenario::AuthPolicy;

mod groups;
mod populate;

pub(crate) use groups::Members;

/// Type hierarchy of the VM node of every group (an OpenStack v2 plugin server).
pub(crate) const SERVER_TYPE: &str = "cloudify.openstack.nodes.Server";
pub(crate) const SERVER_HIERARCHY: &[&str] = &[
    "cloudify.nodes.Root",
    "cloudify.nodes.Compute",
    "cloudify.openstack.nodes.Server",
];
/// Type hierarchy of the port node of every group (related to the VM, not contained in it).
pub(crate) const PORT_TYPE: &str = "cloudify.openstack.nodes.Port";
pub(crate) const PORT_HIERARCHY: &[&str] = &[
    "cloudify.nodes.Root",
    "cloudify.nodes.Port",
    "cloudify.openstack.nodes.Port",
];

/// Current UTC time in the manager's format (`2024-08-12T10:11:12.345Z`).
pub(crate) fn now_stamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A user account with its failed-login bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub username: String,
    pub password: String,
    pub role: String,
    pub tenants: BTreeSet<String>,
    pub failed_logins: u32,
    pub last_failed_login: Option<std::time::Instant>,
}

/// An API token (`POST /tokens`).
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub id: String,
    pub secret: String,
    pub username: String,
    pub description: Option<String>,
    pub expiration: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used: Option<String>,
}

/// One scaling group of a deployment and its group instances.
#[derive(Debug, Clone)]
pub(crate) struct ScalingGroup {
    pub name: String,
    pub members: Vec<String>,
    pub default_instances: i64,
    pub min: i64,
    pub max: i64,
    pub current: i64,
    pub planned: i64,
    /// group-instance id → sequence keys of its member node instances, in [`Self::member_nodes`]
    /// order (VM, port, extra VMs).
    pub instances: BTreeMap<String, Vec<u64>>,
    /// Highest `index` of each member node's instances (same order), so a new instance's index
    /// costs O(1) instead of a scan of the group (startup of 100k instances would be O(n^2)).
    pub max_index: Vec<u32>,
    /// Names of the further Compute members (`storage` for node `<name>_storage`).
    pub extra_vms: Vec<String>,
}

impl ScalingGroup {
    pub fn host_node(&self) -> String {
        format!("{}_host", self.name)
    }
    pub fn port_node(&self) -> String {
        format!("{}_port", self.name)
    }
    /// The nodes of a group instance: VM, port, then the extra VMs.
    pub fn member_nodes(&self) -> Vec<String> {
        let mut nodes = vec![self.host_node(), self.port_node()];
        nodes.extend(self.extra_vms.iter().map(|v| format!("{}_{v}", self.name)));
        nodes
    }
}

/// The started deployment modification of a deployment: the running scale's, or one left
/// `started` by a failed scale without rollback, a cancelled or killed scale; the next scale
/// must pass `abort_started=true`.
#[derive(Debug, Clone)]
pub(crate) struct Modification {
    pub group: String,
    /// Group instances being added.
    pub added: Vec<String>,
    /// Group instances being removed.
    pub removing: Vec<String>,
    /// Index of its row in [`Model::modifications`].
    pub record: usize,
}

/// Status of a deployment modification (`DeploymentModificationState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModificationStatus {
    Started,
    Finished,
    RolledBack,
}

impl ModificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModificationStatus::Started => "started",
            ModificationStatus::Finished => "finished",
            ModificationStatus::RolledBack => "rolledback",
        }
    }
}

/// A row of `GET /deployment-modifications`: what a scale asked the manager to change.
#[derive(Debug, Clone)]
pub(crate) struct ModificationRecord {
    pub id: String,
    pub tenant: Arc<str>,
    pub deployment_id: Arc<str>,
    pub status: ModificationStatus,
    pub created_at: String,
    pub ended_at: Option<String>,
    /// `{group: {instances, removed_ids_include_hint, removed_ids_exclude_hint}}`.
    pub modified_nodes: Value,
    /// Member node-instance ids added / removed (rendered under `node_instances`).
    pub added_instances: Vec<String>,
    pub removed_instances: Vec<String>,
    /// The execution that started it (`context.execution_id`).
    pub execution_id: String,
    pub created_by: String,
}

/// A deployment: its scaling groups and their instances, labels, started modification and
/// executions. Never removed, so its index in [`Model::deployments`] stays valid.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub tenant: Arc<str>,
    pub id: Arc<str>,
    pub blueprint_id: String,
    pub created_at: String,
    pub created_by: String,
    pub labels: Vec<(String, String)>,
    pub groups: Vec<ScalingGroup>,
    pub modification: Option<Modification>,
    /// Execution ids of this deployment, oldest first.
    pub executions: Vec<String>,
}

impl Deployment {
    pub fn group(&self, name: &str) -> Option<&ScalingGroup> {
        self.groups.iter().find(|g| g.name == name)
    }
    pub fn group_mut(&mut self, name: &str) -> Option<&mut ScalingGroup> {
        self.groups.iter_mut().find(|g| g.name == name)
    }
}

/// A node (template) of a deployment.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub tenant: Arc<str>,
    pub deployment_id: Arc<str>,
    pub blueprint_id: String,
    pub id: String,
    pub type_name: &'static str,
    pub hierarchy: &'static [&'static str],
    pub host_id: Option<String>,
    /// Scaling group the node belongs to, if any.
    pub group: Option<String>,
    /// Instances per group instance (or in total for a node outside groups).
    pub number_of_instances: i64,
    pub created_by: String,
}

/// Runtime properties a node instance has, generated rather than stored as JSON to keep
/// 100k-instance scenarios small.
#[derive(Debug, Clone)]
pub(crate) enum Runtime {
    /// `{}` (not yet `started`).
    Empty,
    /// A compute VM once `started`.
    Vm {
        external_id: String,
        ip: Ipv4Addr,
        hostname: String,
    },
    /// A port once `started`.
    Port { external_id: String, ip: Ipv4Addr },
}

/// A node instance (a group's VM or port, or a standalone VM): one row of
/// `GET /node-instances`.
#[derive(Debug, Clone)]
pub(crate) struct NodeInstance {
    pub id: String,
    pub node_id: Arc<str>,
    pub deployment_id: Arc<str>,
    pub tenant: Arc<str>,
    pub host_id: Option<String>,
    pub state: &'static str,
    pub runtime: Runtime,
    /// `(group name, group-instance id)`.
    pub group: Option<(Arc<str>, String)>,
    pub index: u32,
    pub version: u32,
    /// `(type, target node, target instance id)`.
    pub relationships: Vec<(&'static str, String, String)>,
    pub created_by: Arc<str>,
    /// IP reserved for this VM/port, revealed in runtime properties once `started`.
    pub ip: Ipv4Addr,
}

/// Execution status (`cloudify.models_states.ExecutionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecStatus {
    Pending,
    Started,
    Cancelling,
    ForceCancelling,
    KillCancelling,
    Cancelled,
    Terminated,
    Failed,
    Queued,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Pending => "pending",
            ExecStatus::Started => "started",
            ExecStatus::Cancelling => "cancelling",
            ExecStatus::ForceCancelling => "force_cancelling",
            ExecStatus::KillCancelling => "kill_cancelling",
            ExecStatus::Cancelled => "cancelled",
            ExecStatus::Terminated => "terminated",
            ExecStatus::Failed => "failed",
            ExecStatus::Queued => "queued",
        }
    }
    /// `END_STATES`.
    pub fn is_end(self) -> bool {
        matches!(
            self,
            ExecStatus::Terminated | ExecStatus::Failed | ExecStatus::Cancelled
        )
    }
    /// `ACTIVE_STATES`: what blocks another workflow on the deployment.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ExecStatus::Pending
                | ExecStatus::Started
                | ExecStatus::Cancelling
                | ExecStatus::ForceCancelling
                | ExecStatus::KillCancelling
        )
    }
}

/// An execution (a row of `GET /executions`). `scale` is the only workflow the simulator
/// has, so every execution is a scale.
#[derive(Debug, Clone)]
pub(crate) struct Execution {
    pub id: String,
    pub tenant: Arc<str>,
    pub deployment_id: Arc<str>,
    pub blueprint_id: String,
    pub workflow_id: String,
    pub status: ExecStatus,
    pub error: String,
    pub parameters: Value,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub created_by: String,
    pub is_dry_run: bool,
    pub allow_custom_parameters: bool,
    /// Runs outside the deployment's FIFO (`force=true`).
    pub forced: bool,
    pub total_operations: u64,
    pub finished_operations: u64,
}

#[cfg(test)]
impl Execution {
    /// A `scale` execution of `tenant/deployment` by `created_by`, for unit tests that need one
    /// in the model (the deployment need not exist).
    pub fn scale_for_test(
        id: &str,
        tenant: &str,
        deployment: &str,
        created_by: &str,
        status: ExecStatus,
    ) -> Execution {
        Execution {
            id: id.to_string(),
            tenant: Arc::from(tenant),
            deployment_id: Arc::from(deployment),
            blueprint_id: deployment.to_string(),
            workflow_id: "scale".into(),
            status,
            error: String::new(),
            parameters: Value::Null,
            created_at: now_stamp(),
            started_at: None,
            ended_at: None,
            created_by: created_by.to_string(),
            is_dry_run: false,
            allow_custom_parameters: false,
            forced: false,
            total_operations: 0,
            finished_operations: 0,
        }
    }
}

/// The whole simulated manager state, behind one mutex in `Shared`: every request and
/// workflow step sees and leaves it consistent, as a manager's database transaction would.
#[derive(Debug)]
pub(crate) struct Model {
    pub auth: AuthPolicy,
    pub tenants: BTreeSet<String>,
    /// Lower-cased username → user.
    pub users: BTreeMap<String, User>,
    pub tokens: Vec<Token>,
    pub deployments: Vec<Deployment>,
    /// tenant → deployment id → index in `deployments` (deployments are never removed).
    pub deployment_lookup: HashMap<String, HashMap<String, usize>>,
    pub nodes: Vec<Node>,
    pub instances: BTreeMap<u64, NodeInstance>,
    pub instance_keys: HashMap<String, u64>,
    /// Instance keys per deployment `(tenant, id)`, in storage order: list calls filtered by
    /// deployment (the provider's refresh) never walk other deployments' rows.
    pub instances_by_deployment: HashMap<(Arc<str>, Arc<str>), Vec<u64>>,
    /// Instance keys per tenant, in storage order (unfiltered list calls).
    pub instances_by_tenant: HashMap<Arc<str>, Vec<u64>>,
    next_key: u64,
    pub executions: Vec<Execution>,
    pub execution_index: HashMap<String, usize>,
    /// Every deployment modification ever started, oldest first.
    pub modifications: Vec<ModificationRecord>,
    /// Deployments `(tenant, id)` whose FIFO runner task is alive.
    pub runners: HashSet<(Arc<str>, Arc<str>)>,
    pub rng: StdRng,
    ip_counter: u32,
}

impl Model {
    /// Index of deployment `id` in `tenant`.
    pub fn deployment_index(&self, tenant: &str, id: &str) -> Option<usize> {
        self.deployment_lookup
            .get(tenant)
            .and_then(|ids| ids.get(id))
            .copied()
    }

    /// A fresh `<prefix>_<6 [a-z0-9]>` id that no node instance or group instance has.
    pub fn fresh_instance_id(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        loop {
            let suffix: String = (0..6)
                .map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())]))
                .collect();
            let id = format!("{prefix}_{suffix}");
            if !self.instance_keys.contains_key(&id) {
                return id;
            }
        }
    }

    fn next_ip(&mut self) -> Ipv4Addr {
        // 10.0.1.1 onwards, skipping .0 and .255 so every address looks like a host.
        loop {
            self.ip_counter = self.ip_counter.wrapping_add(1);
            let c = self.ip_counter.wrapping_add(256);
            let last = (c & 0xff) as u8;
            if last != 0 && last != 255 {
                return Ipv4Addr::new(10, ((c >> 16) & 0xff) as u8, ((c >> 8) & 0xff) as u8, last);
            }
        }
    }

    fn insert_instance(&mut self, instance: NodeInstance) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.instance_keys.insert(instance.id.clone(), key);
        self.instances_by_deployment
            .entry((instance.tenant.clone(), instance.deployment_id.clone()))
            .or_default()
            .push(key);
        self.instances_by_tenant
            .entry(instance.tenant.clone())
            .or_default()
            .push(key);
        self.instances.insert(key, instance);
        key
    }

    /// Removes node instance rows and their index entries (one pass per touched index, so
    /// a big scale-in stays linear).
    pub fn remove_instances(&mut self, keys: &[u64]) {
        let gone: HashSet<u64> = keys.iter().copied().collect();
        let mut deployments: HashSet<(Arc<str>, Arc<str>)> = HashSet::new();
        for key in keys {
            if let Some(inst) = self.instances.remove(key) {
                self.instance_keys.remove(&inst.id);
                deployments.insert((inst.tenant.clone(), inst.deployment_id.clone()));
            }
        }
        let tenants: HashSet<Arc<str>> = deployments.iter().map(|(t, _)| t.clone()).collect();
        for d in &deployments {
            if let Some(index) = self.instances_by_deployment.get_mut(d) {
                index.retain(|k| !gone.contains(k));
            }
        }
        for t in &tenants {
            if let Some(index) = self.instances_by_tenant.get_mut(t) {
                index.retain(|k| !gone.contains(k));
            }
        }
    }

    /// Keys of the node instances a list call can match, in storage order:
    /// those of the named deployments, or of every deployment of the tenant. Served from the
    /// indexes, so a page of a 200k-instance manager never walks the rows themselves.
    pub fn instance_candidates<'a>(
        &'a self,
        tenant: &str,
        deployments: Option<&[String]>,
    ) -> Cow<'a, [u64]> {
        let index = match deployments {
            None => self.instances_by_tenant.get(tenant),
            Some([one]) => self
                .instances_by_deployment
                .get(&(Arc::from(tenant), Arc::from(one.as_str()))),
            Some(many) => {
                let mut keys: Vec<u64> = Vec::new();
                for ((t, d), index) in &self.instances_by_deployment {
                    if &**t == tenant && many.iter().any(|w| w.as_str() == &**d) {
                        keys.extend_from_slice(index);
                    }
                }
                keys.sort_unstable();
                return Cow::Owned(keys);
            }
        };
        index.map_or(Cow::Borrowed(&[][..]), |keys| {
            Cow::Borrowed(keys.as_slice())
        })
    }

    /// The node instance with this id, if any.
    pub fn instance_by_id(&self, id: &str) -> Option<&NodeInstance> {
        self.instance_keys
            .get(id)
            .and_then(|k| self.instances.get(k))
    }

    /// Adds an execution and indexes it.
    pub fn push_execution(&mut self, execution: Execution) {
        if let Some(di) = self.deployment_index(&execution.tenant, &execution.deployment_id) {
            self.deployments[di].executions.push(execution.id.clone());
        }
        self.execution_index
            .insert(execution.id.clone(), self.executions.len());
        self.executions.push(execution);
    }

    /// The execution with this id.
    pub fn execution(&self, id: &str) -> Option<&Execution> {
        self.execution_index
            .get(id)
            .and_then(|&i| self.executions.get(i))
    }

    /// Ends the deployment's started modification (finish or rollback) and drops it.
    pub fn end_modification(
        &mut self,
        di: usize,
        status: ModificationStatus,
    ) -> Option<Modification> {
        let m = self.deployments[di].modification.take()?;
        if let Some(r) = self.modifications.get_mut(m.record) {
            r.status = status;
            r.ended_at = Some(now_stamp());
        }
        Some(m)
    }

    /// The execution with this id, mutably.
    pub fn execution_mut(&mut self, id: &str) -> Option<&mut Execution> {
        let i = *self.execution_index.get(id)?;
        self.executions.get_mut(i)
    }

    /// The executions of a deployment, oldest first.
    pub fn deployment_executions(&self, di: usize) -> impl Iterator<Item = &Execution> {
        self.deployments[di]
            .executions
            .iter()
            .filter_map(|id| self.execution(id))
    }
}

/// `<deployment>-<vm instance id>`, lower-cased, `_` → `-`: a valid Kubernetes node name.
pub(crate) fn hostname_for(deployment: &str, vm_id: &str) -> String {
    format!("{deployment}-{vm_id}")
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn default_scenario_builds_named_instances() {
        let model = Model::from_scenario(&Scenario::default_demo().with_seed(7)).expect("model");
        assert_eq!(model.instances.len(), 5);
        let vm = model
            .instances
            .values()
            .find(|i| &*i.node_id == "workers_host")
            .expect("a worker VM");
        assert_eq!(vm.host_id.as_deref(), Some(vm.id.as_str()));
        assert_eq!(vm.state, "started");
        let suffix = vm.id.strip_prefix("workers_host_").expect("prefix");
        assert_eq!(suffix.len(), 6);
        match &vm.runtime {
            Runtime::Vm { hostname, .. } => {
                assert_eq!(hostname, &format!("k8s-pool-a-{}", vm.id.replace('_', "-")))
            }
            other => panic!("unexpected runtime {other:?}"),
        }
        let gid = &vm.group.as_ref().expect("group").1;
        assert!(gid.starts_with("workers_"));
    }

    #[test]
    fn hostname_is_a_valid_node_name() {
        assert_eq!(
            hostname_for("Pool_A", "gpu-workers_host_ab12cd"),
            "pool-a-gpu-workers-host-ab12cd"
        );
    }
}
