//! The node controller's decisions, as pure functions of a Node and the inventory snapshot: what
//! to patch on a joining Node, which Nodes to taint or delete, and which deletions the safety rules
//! hold back. No I/O here, so every rule is a unit test (`tests.rs`).
//!
//! The rules follow the upstream cloud-node and cloud-node-lifecycle controllers
//! (`kubernetes/cloud-provider`), with the guards they lack, because upstream has deleted large
//! parts of clusters when the cloud API failed (oracle/oci-cloud-controller-manager#57,
//! cloud-provider-vsphere#355/#479): a Node is deleted only when two consecutive *complete*
//! snapshots lack its instance, it is not Ready, its provider id is in the managed id space, it
//! is older than a grace period, its group's listing is consistent with Cloudify's own counts,
//! and at most a few per refresh.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, Taint};

use crate::config::{NodeControllerConfig, NodeGroupsConfig};
use crate::inventory::{GroupInstance, NodeGroup, Snapshot};
use crate::nodegroup::template::{INSTANCE_TYPE_LABEL, REGION_LABEL, ZONE_LABEL};

/// The taint kubelet `--cloud-provider=external` registers with; the controller removes it.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// The taint of a Node whose VM is stopped (removed when the Node is Ready again).
pub const SHUTDOWN_TAINT: &str = "node.cloudprovider.kubernetes.io/shutdown";
/// kubelet's `--node-ip`, which the reported addresses must include (KEP 3705).
pub const PROVIDED_NODE_IP_ANNOTATION: &str = "alpha.kubernetes.io/provided-node-ip";
/// Consecutive complete snapshots without a Node's instance before it may be deleted.
pub const ABSENT_SNAPSHOTS_BEFORE_DELETE: u32 = 2;

/// Per-group facts the decisions need, computed once per snapshot from it and the configuration.
#[derive(Debug, Clone, Default)]
pub struct GroupFacts {
    /// Labels every Node of the group gets: deployment/group labels, instance type, region and
    /// zone, and the template's own labels (what CA's scale-from-zero template has).
    pub labels: BTreeMap<String, String>,
    /// The template's taints: initialization puts them on the Node, as CA's template has them.
    pub taints: Vec<Taint>,
    /// The provider-id prefix shared by the group's instances, if its template has one.
    pub prefix: Option<String>,
    /// The group lists fewer instances than Cloudify's own counts say it has: a listing that
    /// cannot be trusted to prove an instance gone.
    pub listing_inconsistent: bool,
}

/// The inventory as the node controller reads it: the snapshot plus per-group facts.
pub struct InventoryView<'s> {
    /// A complete snapshot: the controller plans nothing before the first one.
    pub snapshot: &'s Snapshot,
    /// Facts by group index (same order as `snapshot.groups`).
    pub groups: Vec<GroupFacts>,
}

impl<'s> InventoryView<'s> {
    /// Builds the view. `managers` are the Cloudify entry names (a `cloudify.co/manager` label is
    /// added when there are several, as the template node has).
    pub fn new(snapshot: &'s Snapshot, config: &NodeGroupsConfig, managers: &[String]) -> Self {
        let groups = snapshot
            .groups
            .iter()
            .map(|g| group_facts(g, config, managers))
            .collect();
        InventoryView { snapshot, groups }
    }

    /// The instance of a Node and its group's facts (by provider id, then node name).
    pub fn find(&self, node: &Node) -> Option<(&NodeGroup, &GroupInstance, &GroupFacts)> {
        let r = self.snapshot.lookup(provider_id(node), node_name(node))?;
        let (g, i) = self.snapshot.instance(r)?;
        Some((g, i, self.groups.get(r.group as usize)?))
    }

    /// The groups whose provider-id space contains `pid` (several groups of one deployment
    /// share the default template's prefix).
    pub(super) fn owners(&self, pid: &str) -> Vec<(&NodeGroup, &GroupFacts)> {
        self.snapshot
            .groups
            .iter()
            .zip(&self.groups)
            .filter(|(_, f)| f.prefix.as_deref().is_some_and(|p| pid.starts_with(p)))
            .collect()
    }
}

fn group_facts(g: &NodeGroup, config: &NodeGroupsConfig, managers: &[String]) -> GroupFacts {
    let settings = config.settings_for(&g.id);
    let manager = (managers.len() > 1)
        .then(|| managers.get(g.source).map(String::as_str))
        .flatten();
    let mut labels = crate::nodegroup::template::group_labels(g, manager);
    labels.extend(crate::nodegroup::template::topology_labels(g, &settings));
    let mut taints = Vec::new();
    if let Some(t) = &settings.template {
        labels.extend(t.labels.clone());
        taints = t
            .taints
            .iter()
            .map(|t| Taint {
                key: t.key.clone(),
                value: (!t.value.is_empty()).then(|| t.value.clone()),
                effect: t.effect.clone(),
                time_added: None,
            })
            .collect();
    }
    let template = settings.provider_id_template.unwrap_or_default();
    let listed = i32::try_from(g.instances.len()).unwrap_or(i32::MAX);
    GroupFacts {
        labels,
        taints,
        prefix: template.group_prefix(&g.tenant, &g.deployment, &g.group),
        listing_inconsistent: listed < g.current.min(g.planned),
    }
}

/// The Node's `spec.providerID` (`""` when unset).
pub fn provider_id(node: &Node) -> &str {
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .unwrap_or("")
}

/// The Node's name.
pub fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or("")
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// True when the Node carries a taint with this key (any effect, as upstream matches it).
pub fn has_taint(node: &Node, key: &str) -> bool {
    taints(node).iter().any(|t| t.key == key)
}

/// The Node's Ready condition is `True`. False, Unknown and absent all count as not Ready, as in
/// the upstream lifecycle controller.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Everything initialization writes to a Node, in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct InitPatch {
    /// The group the Node belongs to.
    pub group: String,
    /// The VM node-instance id.
    pub vm_instance: String,
    /// `spec.providerID` to set (only when the Node has none: the API refuses to change it).
    pub provider_id: Option<String>,
    /// Labels to set (only those that differ from the Node's).
    pub labels: BTreeMap<String, String>,
    /// The Node's whole new taint list: without the `uninitialized` taint, with the template's.
    pub taints: Vec<Taint>,
    /// `status.addresses` to set, `None` to leave them (Cloudify reports none, or no change).
    pub addresses: Option<Vec<NodeAddress>>,
}

/// What to do with a Node that may need initializing.
#[derive(Debug, Clone, PartialEq)]
pub enum InitDecision {
    /// The Node does not carry the `uninitialized` taint.
    NotTainted,
    /// Patch it and remove the taint.
    Initialize(InitPatch),
    /// Keep the taint: no instance matches (or it is not ready to be matched); retried on the
    /// next snapshot or Node change. The text says why (it goes into a Kubernetes Event).
    Unmatched(String),
}

/// Decides the initialization of one Node.
pub fn plan_init(node: &Node, view: &InventoryView<'_>) -> InitDecision {
    if !has_taint(node, UNINITIALIZED_TAINT) {
        return InitDecision::NotTainted;
    }
    let Some((g, inst, facts)) = view.find(node) else {
        return InitDecision::Unmatched(why_unmatched(node, view));
    };
    if inst.provider_id.starts_with("cloudify-pending://") {
        // Writing a placeholder would be for good: spec.providerID cannot change once set.
        return InitDecision::Unmatched(format!(
            "instance {} of {} does not report the runtime property its provider-id template needs yet",
            inst.vm_instance, g.id
        ));
    }
    let addresses = desired_addresses(node, inst);
    if let Some(ip) = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVIDED_NODE_IP_ANNOTATION))
        .filter(|ip| !ip.is_empty() && ip.as_str() != "0.0.0.0" && ip.as_str() != "::")
    {
        let reported = addresses.as_deref().unwrap_or(&[]);
        if !ip
            .split(',')
            .all(|one| reported.iter().any(|a| a.address == one.trim()))
        {
            return InitDecision::Unmatched(format!(
                "kubelet --node-ip {ip} is not among the addresses instance {} reports",
                inst.vm_instance
            ));
        }
    }
    let current = node.metadata.labels.clone().unwrap_or_default();
    let labels = facts
        .labels
        .iter()
        .filter(|(k, v)| {
            // The well-known topology labels are Cloudify's to say (upstream sets them); any
            // other label kubelet already has (--node-labels) is the operator's and is kept.
            match current.get(*k) {
                None => true,
                Some(have) => is_topology_label(k) && have != *v,
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut new_taints: Vec<Taint> = taints(node)
        .iter()
        .filter(|t| t.key != UNINITIALIZED_TAINT)
        .cloned()
        .collect();
    for t in &facts.taints {
        if !new_taints
            .iter()
            .any(|have| have.key == t.key && have.effect == t.effect)
        {
            new_taints.push(t.clone());
        }
    }
    let current_addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    InitDecision::Initialize(InitPatch {
        group: g.id.clone(),
        vm_instance: inst.vm_instance.clone(),
        provider_id: provider_id(node)
            .is_empty()
            .then(|| inst.provider_id.clone()),
        labels,
        taints: new_taints,
        addresses: addresses.filter(|a| *a != current_addresses),
    })
}

/// Why no instance matches a Node, for its Event: an infrastructure VM of a group instance
/// (issue 20), or nothing by provider id or name.
fn why_unmatched(node: &Node, view: &InventoryView<'_>) -> String {
    let pid = provider_id(node);
    if let Some((g, inst)) = view.snapshot.infrastructure_of(pid) {
        return format!(
            "provider id {pid:?} is an infrastructure VM of group instance {} of {}: only its \
             joining VM {} is a Kubernetes Node (node_groups joining_node)",
            inst.group_instance, g.id, inst.vm_instance
        );
    }
    if pid.is_empty() {
        format!(
            "no instance of a managed node group has the node name {:?} (through the group's \
             node_name_property runtime property), and the Node has no spec.providerID",
            node_name(node)
        )
    } else {
        format!(
            "no instance of a managed node group has provider id {pid:?} or node name {:?}",
            node_name(node)
        )
    }
}

fn is_topology_label(k: &str) -> bool {
    k == INSTANCE_TYPE_LABEL || k == REGION_LABEL || k == ZONE_LABEL
}

/// The addresses Cloudify reports for an instance; kubelet's Hostname is kept when Cloudify has
/// none (as upstream does). `None` when Cloudify reports no IP at all.
fn desired_addresses(node: &Node, inst: &GroupInstance) -> Option<Vec<NodeAddress>> {
    let a = &inst.addresses;
    let address = |type_: &str, v: &Option<String>| {
        v.as_deref().filter(|v| !v.is_empty()).map(|v| NodeAddress {
            type_: type_.to_owned(),
            address: v.to_owned(),
        })
    };
    let mut out: Vec<NodeAddress> = [
        address("InternalIP", &a.internal_ip),
        address("ExternalIP", &a.external_ip),
    ]
    .into_iter()
    .flatten()
    .collect();
    if out.is_empty() {
        return None;
    }
    match address("Hostname", &a.hostname) {
        Some(h) => out.push(h),
        None => out.extend(
            node.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|x| x.type_ == "Hostname")
                .cloned(),
        ),
    }
    Some(out)
}

/// A lifecycle action on one Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleAction {
    /// Its VM is stopped: taint it `shutdown:NoSchedule`.
    AddShutdownTaint,
    /// It is Ready again: remove the shutdown taint.
    RemoveShutdownTaint,
    /// Its VM is gone: delete it (with a UID precondition).
    Delete {
        /// Why, for the log line and the Event.
        reason: String,
    },
}

/// One planned action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    /// `metadata.name` of the Node to act on.
    pub node: String,
    /// Node UID (the delete precondition).
    pub uid: String,
    /// What to do.
    pub action: LifecycleAction,
}

/// A Node whose instance is gone but which is not deleted this time, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `metadata.name` of the kept Node.
    pub node: String,
    /// The rule that keeps it (young, untrustworthy listing, not absent long enough), for the
    /// log line and the Node's report.
    pub reason: String,
}

/// The lifecycle plan of one completed refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecyclePlan {
    /// Actions to take now (deletions already capped).
    pub actions: Vec<PlannedAction>,
    /// Deletions the per-refresh cap holds back until the next refresh.
    pub held_back: Vec<String>,
    /// Nodes absent from Cloudify that the safety rules keep (young, untrustworthy listing, not
    /// seen absent often enough yet).
    pub refused: Vec<Refusal>,
}

/// What the controller remembers between completed refreshes: in how many consecutive complete
/// snapshots each Node (by UID) was missing its instance.
#[derive(Debug, Clone, Default)]
pub struct AbsenceTracker {
    streaks: HashMap<String, u32>,
}

impl AbsenceTracker {
    /// Consecutive complete snapshots the Node's instance was missing from.
    pub fn streak(&self, uid: &str) -> u32 {
        self.streaks.get(uid).copied().unwrap_or(0)
    }
}

/// What a Node's state and its instance call for, before the deletion rules.
#[derive(Debug)]
pub(super) enum Observation<'n, 'v> {
    /// Nothing: initialization's business, no UID, present and as it should be, or outside the
    /// managed provider-id space.
    Nothing,
    /// A shutdown-taint change.
    Taint(LifecycleAction),
    /// NotReady, and its instance is absent from the snapshot (or `deleted`): a candidate for
    /// deletion, in the provider-id space of `owners` (empty: a managed prefix).
    Gone {
        /// The Node's provider id.
        pid: &'n str,
        /// The groups whose provider-id space holds it.
        owners: Vec<(&'v NodeGroup, &'v GroupFacts)>,
    },
}

/// Looks at one Node against the snapshot.
pub(super) fn observe<'n, 'v>(
    node: &'n Node,
    view: &'v InventoryView<'_>,
    settings: &NodeControllerConfig,
) -> Observation<'n, 'v> {
    if has_taint(node, UNINITIALIZED_TAINT) {
        return Observation::Nothing;
    }
    if is_ready(node) {
        return if has_taint(node, SHUTDOWN_TAINT) {
            Observation::Taint(LifecycleAction::RemoveShutdownTaint)
        } else {
            Observation::Nothing
        };
    }
    if let Some((_, inst, _)) = view.find(node) {
        // Cloudify's `deleted` is a definitive answer that the VM no longer exists (an
        // uninstall leaves the instance listed in that state).
        if inst.cloudify_state != "deleted" {
            return if inst.cloudify_state == "stopped" && !has_taint(node, SHUTDOWN_TAINT) {
                Observation::Taint(LifecycleAction::AddShutdownTaint)
            } else {
                Observation::Nothing
            };
        }
    }
    // Absent (or deleted). Only Nodes in the managed id space are ours to delete, and a Node
    // of an infrastructure VM is not gone: its VM is there (issue 20).
    let pid = provider_id(node);
    if pid.is_empty() || view.snapshot.infrastructure_of(pid).is_some() {
        return Observation::Nothing;
    }
    let owners = view.owners(pid);
    let by_prefix = settings
        .managed_provider_id_prefixes
        .iter()
        .any(|p| pid.starts_with(p.as_str()));
    if owners.is_empty() && !by_prefix {
        return Observation::Nothing;
    }
    Observation::Gone { pid, owners }
}

/// Why a gone Node is kept this time, or `None` when it may be deleted: absent from fewer than
/// [`ABSENT_SNAPSHOTS_BEFORE_DELETE`] consecutive complete snapshots, Cloudify suddenly listing
/// nothing at all (a broken answer, not a cluster-wide scale-in), a group listing fewer
/// instances than its counts, or a Node younger than `min_node_age` (or of unknown age).
pub(super) fn refusal(
    streak: u32,
    everything_vanished: bool,
    owners: &[(&NodeGroup, &GroupFacts)],
    age: Option<Duration>,
    settings: &NodeControllerConfig,
) -> Option<String> {
    if streak < ABSENT_SNAPSHOTS_BEFORE_DELETE {
        return Some(format!(
            "instance missing from {streak} of {ABSENT_SNAPSHOTS_BEFORE_DELETE} consecutive complete snapshots"
        ));
    }
    if everything_vanished {
        return Some(
            "Cloudify lists no instances at all; refusing to delete on that answer".into(),
        );
    }
    if let Some((g, _)) = owners.iter().find(|(_, f)| f.listing_inconsistent) {
        return Some(format!(
            "group {} lists {} instances while Cloudify counts current={} planned={}; \
             not trusting that listing",
            g.id,
            g.instances.len(),
            g.current,
            g.planned
        ));
    }
    match age {
        Some(age) if age >= settings.min_node_age => None,
        age => Some(format!(
            "Node is younger than node_controller.min_node_age ({:?} < {:?})",
            age.unwrap_or_default(),
            settings.min_node_age
        )),
    }
}

/// The reason a deletion carries into the log line and the Event.
pub(super) fn deletion_reason(
    pid: &str,
    owners: &[(&NodeGroup, &GroupFacts)],
    streak: u32,
) -> String {
    let owner = owners.first().map_or_else(
        || "a managed provider-id prefix".to_owned(),
        |(g, _)| g.id.clone(),
    );
    format!(
        "its instance ({pid}) of {owner} is gone from Cloudify \
         ({streak} consecutive complete snapshots) and the Node is not Ready"
    )
}

/// Takes the first `cap` deletions by Node name (stable across refreshes, so the same Nodes go
/// first) and holds the rest back until the next refresh.
pub(super) fn cap_deletions(
    mut candidates: Vec<PlannedAction>,
    cap: usize,
    plan: &mut LifecyclePlan,
) {
    candidates.sort_by(|a, b| a.node.cmp(&b.node));
    for (i, c) in candidates.into_iter().enumerate() {
        if i < cap {
            plan.actions.push(c);
        } else {
            plan.held_back.push(c.node);
        }
    }
}

/// Plans the lifecycle actions of one completed refresh over every Node, updating `tracker`.
/// Call it once per new complete snapshot, never on a failed refresh.
pub fn plan_lifecycle(
    nodes: &[&Node],
    view: &InventoryView<'_>,
    previous_instances: Option<usize>,
    settings: &NodeControllerConfig,
    ages: &dyn Fn(&Node) -> Option<Duration>,
    tracker: &mut AbsenceTracker,
) -> LifecyclePlan {
    let mut plan = LifecyclePlan::default();
    let mut streaks = HashMap::new();
    let mut candidates: Vec<PlannedAction> = Vec::new();
    let everything_vanished =
        view.snapshot.instance_count() == 0 && previous_instances.is_some_and(|n| n > 0);
    for node in nodes {
        let Some(uid) = node.metadata.uid.clone() else {
            continue;
        };
        let name = node_name(node).to_owned();
        let (pid, owners) = match observe(node, view, settings) {
            Observation::Nothing => continue,
            Observation::Taint(action) => {
                plan.actions.push(PlannedAction {
                    node: name,
                    uid,
                    action,
                });
                continue;
            }
            Observation::Gone { pid, owners } => (pid, owners),
        };
        // Only Nodes still gone carry their streak on: one present snapshot resets it.
        let streak = tracker.streak(&uid).saturating_add(1);
        streaks.insert(uid.clone(), streak);
        if let Some(reason) = refusal(streak, everything_vanished, &owners, ages(node), settings) {
            plan.refused.push(Refusal { node: name, reason });
            continue;
        }
        candidates.push(PlannedAction {
            node: name,
            uid,
            action: LifecycleAction::Delete {
                reason: deletion_reason(pid, &owners, streak),
            },
        });
    }
    tracker.streaks = streaks;
    cap_deletions(candidates, settings.max_deletions_per_refresh, &mut plan);
    plan
}
