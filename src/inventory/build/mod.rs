//! Building a [`Snapshot`] from what one refresh fetched. Pure: no I/O, so every step is
//! unit-tested with hand-written Cloudify answers.
//!
//! One source (Cloudify entry) is built in named steps, each in its own module:
//! 1. [`groups`]: which scaling groups are node groups, their bounds and sizes;
//! 2. [`executions`]: what the deployment modifications and scale executions add to them
//!    (waiting and running deltas, orphan modifications, failed scale-outs, leaving instances);
//! 3. [`instances`]: each VM instance's provider id, names, addresses and state for CA.
//!
//! [`build_snapshot`] then indexes the groups of every source. Before it, [`contradictions`]
//! tells whether the parts of what a refresh fetched can all be true (issue 20).

mod checks;
mod executions;
#[cfg(test)]
mod fixtures;
mod groups;
pub use groups::group_id;
mod instances;

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

pub use checks::contradictions;

use super::*;
use crate::cloudify::{Deployment, DeploymentModification, Execution, Node, NodeInstance};
use crate::config::NodeGroupsConfig;

/// Everything one refresh fetched from one Cloudify entry.
#[derive(Debug, Default, Clone)]
pub struct SourceData {
    /// Position of the entry in the `cloudify` list of the configuration; [`NodeGroup::source`]
    /// and static groups refer to it.
    pub source: usize,
    /// The entry's `name`: prefixes the group ids (`<name>:<deployment>/<group>`) when the
    /// configuration lists several entries.
    pub name: String,
    /// The tenant every request of this entry ran in.
    pub tenant: String,
    /// Deployments found by auto-discovery (all their scaling groups are node groups).
    pub discovered: Vec<Deployment>,
    /// Deployments named by static groups.
    pub static_deployments: Vec<Deployment>,
    /// Nodes of the deployments above: tell which scaling-group members are VMs.
    pub nodes: Vec<Node>,
    /// VM node instances of the deployments above.
    pub instances: Vec<NodeInstance>,
    /// Active scale executions (queued/pending/started/cancelling).
    pub active: Vec<Execution>,
    /// Recently failed scale executions.
    pub failed: Vec<Execution>,
    /// Recently ended scale executions that did not fail (terminated, cancelled): already in
    /// `planned_instances`, or never.
    pub ended: Vec<Execution>,
    /// The `started` deployment modifications of these deployments, and the ended ones of
    /// executions still active (their modification can end seconds before they do).
    pub modifications: Vec<DeploymentModification>,
}

/// A scaling group within one source: `(deployment id, group name)`.
type GroupKey<'a> = (&'a str, &'a str);

/// The node groups of one source while they are being built.
type Groups<'a> = HashMap<GroupKey<'a>, NodeGroup>;

/// `(deployment id, node id)` of every VM node of one source.
type ComputeNodes<'a> = HashSet<(&'a str, &'a str)>;

/// Saturates a Cloudify count into CA's `int32`; negative counts (nonsense) read as 0.
fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i64::from(i32::MAX)) as i32
}

/// Builds the snapshot. `fetched_at` is when the refresh started fetching.
pub fn build_snapshot(
    fetched_at: Instant,
    fetched_at_wall: SystemTime,
    sources: &[SourceData],
    config: &NodeGroupsConfig,
    prefixed: bool,
) -> Snapshot {
    let mut groups: Vec<NodeGroup> = Vec::new();
    let mut refused: Vec<RefusedGroup> = Vec::new();
    for src in sources {
        let (built, left_out) = build_source(src, config, prefixed, fetched_at_wall);
        groups.extend(built);
        refused.extend(left_out);
    }
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    refused.sort_by(|a, b| a.id.cmp(&b.id));
    let indexes = Indexes::of(&groups);
    Snapshot {
        fetched_at,
        fetched_at_wall,
        complete: true,
        groups,
        group_index: indexes.group_index,
        by_provider_id: indexes.by_provider_id,
        by_alias: indexes.by_alias,
        by_infrastructure: indexes.by_infrastructure,
        ambiguous: indexes.ambiguous,
        refused,
        instance_count: indexes.instance_count,
    }
}

/// The node groups of one source, in the order of the steps above, and the ones left out.
fn build_source(
    src: &SourceData,
    config: &NodeGroupsConfig,
    prefixed: bool,
    now: SystemTime,
) -> (Vec<NodeGroup>, Vec<RefusedGroup>) {
    let selection = groups::select(src, config);
    let compute = compute_nodes(&src.nodes);
    let (mut by_group, refused) = groups::create(src, &selection, &compute, config, prefixed);
    let in_planned = executions::void_orphan_modifications(src, &mut by_group);
    let settled = executions::settled_executions(src);
    let removals = executions::apply_active(&src.active, &in_planned, &settled, &mut by_group);
    executions::note_ended(&src.ended, &mut by_group);
    executions::apply_failed(&src.failed, now, &mut by_group);
    instances::attach(src, config, &compute, &removals, &mut by_group);
    (by_group.into_values().map(finish).collect(), refused)
}

/// The VM nodes: instances of other nodes (ports, floating IPs, software) are not CA's nodes.
fn compute_nodes(nodes: &[Node]) -> ComputeNodes<'_> {
    nodes
        .iter()
        .filter(|n| n.is_compute())
        .map(|n| (n.deployment_id.as_str(), n.id.as_str()))
        .collect()
}

/// The last step of a group: instances in provider-id order (the order CA is answered in) and
/// the `debug` text, formatted once per snapshot so that lookups do not format.
fn finish(mut g: NodeGroup) -> NodeGroup {
    g.instances
        .sort_by(|a, b| a.provider_id.cmp(&b.provider_id));
    g.debug = format!(
        "cloudify deployment={} group={} planned={} current={} instances={}",
        g.deployment,
        g.group,
        g.planned,
        g.current,
        g.instances.len()
    );
    g
}

/// The lookup indexes of a snapshot.
struct Indexes {
    group_index: IndexMap<u32>,
    /// Provider ids exactly one instance renders.
    by_provider_id: IndexMap<InstanceRef>,
    /// Normalized provider ids and node names that exactly one instance claims.
    by_alias: IndexMap<InstanceRef>,
    /// Provider ids of infrastructure VMs.
    by_infrastructure: IndexMap<InstanceRef>,
    /// Provider ids several instances render, sorted by id.
    ambiguous: Vec<AmbiguousProviderId>,
    instance_count: usize,
}

impl Indexes {
    /// Indexes `groups` (sorted by id: [`InstanceRef`]s point into it).
    fn of(groups: &[NodeGroup]) -> Indexes {
        // Sized up front: growing a 100k-entry map rehashes it several times.
        let instances: usize = groups.iter().map(|g| g.instances.len()).sum();
        let mut ix = Indexes {
            group_index: IndexMap::with_capacity_and_hasher(groups.len(), Default::default()),
            by_provider_id: IndexMap::with_capacity_and_hasher(instances, Default::default()),
            by_alias: IndexMap::with_capacity_and_hasher(2 * instances, Default::default()),
            by_infrastructure: IndexMap::default(),
            ambiguous: Vec::new(),
            instance_count: 0,
        };
        let mut ambiguous: HashSet<String> = HashSet::new();
        // Provider ids rendered more than once → every instance rendering them (rare: a bad
        // template or repeated runtime properties; issue 20).
        let mut repeated: HashMap<String, Vec<InstanceRef>> = HashMap::new();
        for (gi, g) in groups.iter().enumerate() {
            ix.group_index.insert(g.id.clone(), gi as u32);
            for (ii, inst) in g.instances.iter().enumerate() {
                let r = InstanceRef {
                    group: gi as u32,
                    instance: ii as u32,
                };
                ix.instance_count += 1;
                if let Some(first) = ix.by_provider_id.insert(inst.provider_id.clone(), r) {
                    repeated
                        .entry(inst.provider_id.clone())
                        .or_insert_with(|| vec![first])
                        .push(r);
                }
                let normalized = normalize_provider_id(&inst.provider_id);
                for alias in [Some(normalized), inst.node_name.as_deref()]
                    .into_iter()
                    .flatten()
                {
                    ix.add_alias(alias, r, &mut ambiguous);
                }
                for vm in &inst.infrastructure {
                    if let Some(p) = vm.provider_id.as_ref().filter(|p| **p != inst.provider_id) {
                        ix.by_infrastructure.insert(p.clone(), r);
                    }
                }
            }
        }
        ix.set_aside(repeated, groups);
        ix
    }

    /// Takes the repeated provider ids out of the index: any answer for them could name the
    /// wrong VM.
    fn set_aside(&mut self, repeated: HashMap<String, Vec<InstanceRef>>, groups: &[NodeGroup]) {
        for (provider_id, refs) in repeated {
            self.by_provider_id.remove(&provider_id);
            let mut instances: Vec<(String, String)> = refs
                .iter()
                .filter_map(|r| {
                    let g = groups.get(r.group as usize)?;
                    let i = g.instances.get(r.instance as usize)?;
                    Some((g.id.clone(), i.vm_instance.clone()))
                })
                .collect();
            instances.sort();
            self.ambiguous.push(AmbiguousProviderId {
                provider_id,
                instances,
            });
        }
        self.ambiguous
            .sort_by(|a, b| a.provider_id.cmp(&b.provider_id));
    }

    /// Lets `alias` find `r`, unless another instance claims it too: answering either could
    /// delete the wrong VM, so such an alias answers nothing, however many more claim it.
    fn add_alias(&mut self, alias: &str, r: InstanceRef, ambiguous: &mut HashSet<String>) {
        if alias.is_empty() || ambiguous.contains(alias) {
            return;
        }
        match self.by_alias.get(alias) {
            Some(existing) if *existing != r => {
                self.by_alias.remove(alias);
                ambiguous.insert(alias.to_owned());
            }
            Some(_) => {}
            None => {
                self.by_alias.insert(alias.to_owned(), r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(group: u32, instance: u32) -> InstanceRef {
        InstanceRef { group, instance }
    }

    fn empty() -> Indexes {
        Indexes::of(&[])
    }

    #[test]
    fn an_alias_one_instance_claims_finds_it() {
        let mut ix = empty();
        let mut ambiguous = HashSet::new();
        ix.add_alias("node-1", at(0, 0), &mut ambiguous);
        ix.add_alias("node-1", at(0, 0), &mut ambiguous);
        assert_eq!(ix.by_alias.get("node-1"), Some(&at(0, 0)));
        assert!(
            ambiguous.is_empty(),
            "the same instance twice is no conflict"
        );
    }

    #[test]
    fn an_alias_two_instances_claim_answers_nothing_even_if_a_third_claims_it() {
        let mut ix = empty();
        let mut ambiguous = HashSet::new();
        ix.add_alias("same", at(0, 0), &mut ambiguous);
        ix.add_alias("same", at(1, 0), &mut ambiguous);
        assert_eq!(ix.by_alias.get("same"), None);
        ix.add_alias("same", at(2, 0), &mut ambiguous);
        assert_eq!(ix.by_alias.get("same"), None, "still ambiguous");
    }

    #[test]
    fn an_empty_alias_is_not_indexed() {
        let mut ix = empty();
        ix.add_alias("", at(0, 0), &mut HashSet::new());
        assert!(ix.by_alias.is_empty());
    }

    #[test]
    fn indexes_point_into_the_sorted_groups() {
        let mut a = fixtures::group("a", "g");
        a.instances = vec![fixtures::instance_of("cloudify://t/a/vm_1", Some("n1"))];
        let mut b = fixtures::group("b", "g");
        b.instances = vec![
            fixtures::instance_of("cloudify://t/b/vm_1", None),
            fixtures::instance_of("cloudify://t/b/vm_2", Some("n2")),
        ];
        let ix = Indexes::of(&[a, b]);
        assert_eq!(ix.instance_count, 3);
        assert_eq!(ix.group_index.get("b/g"), Some(&1));
        assert_eq!(
            ix.by_provider_id.get("cloudify://t/b/vm_2"),
            Some(&at(1, 1))
        );
        assert_eq!(ix.by_alias.get("n2"), Some(&at(1, 1)));
        assert_eq!(ix.by_alias.get("vm_2"), Some(&at(1, 1)), "normalized id");
        assert_eq!(
            ix.by_alias.get("vm_1"),
            None,
            "vm_1 is the last segment of two provider ids"
        );
    }

    #[test]
    fn a_provider_id_two_instances_render_is_set_aside_with_both() {
        let mut a = fixtures::group("a", "g");
        a.instances = vec![
            fixtures::instance_of("x://same", None),
            fixtures::instance_of("x://a/1", None),
        ];
        a.instances[0].vm_instance = "vm_1".into();
        let mut b = fixtures::group("b", "g");
        b.instances = vec![fixtures::instance_of("x://same", None)];
        b.instances[0].vm_instance = "vm_2".into();
        let ix = Indexes::of(&[a, b]);
        assert_eq!(ix.by_provider_id.get("x://same"), None);
        assert_eq!(ix.by_alias.get("same"), None);
        assert_eq!(ix.by_provider_id.get("x://a/1"), Some(&at(0, 1)));
        assert_eq!(
            ix.ambiguous,
            [AmbiguousProviderId {
                provider_id: "x://same".into(),
                instances: vec![("a/g".into(), "vm_1".into()), ("b/g".into(), "vm_2".into())],
            }]
        );
    }

    #[test]
    fn infrastructure_vms_are_indexed_apart_unless_they_render_the_nodes_id() {
        let mut a = fixtures::group("a", "g");
        let mut inst = fixtures::instance_of("x://a/vm_1", None);
        inst.infrastructure = vec![
            InfrastructureVm {
                vm_instance: "st_1".into(),
                provider_id: Some("x://a/st_1".into()),
            },
            InfrastructureVm {
                vm_instance: "st_2".into(),
                provider_id: Some("x://a/vm_1".into()),
            },
        ];
        a.instances = vec![inst];
        let ix = Indexes::of(&[a]);
        assert_eq!(ix.by_infrastructure.get("x://a/st_1"), Some(&at(0, 0)));
        assert_eq!(ix.by_infrastructure.len(), 1);
        assert_eq!(ix.by_provider_id.get("x://a/vm_1"), Some(&at(0, 0)));
    }

    #[test]
    fn finish_sorts_instances_and_writes_the_debug_text() {
        let mut g = fixtures::group("a", "g");
        g.planned = 2;
        g.current = 1;
        g.instances = vec![
            fixtures::instance_of("cloudify://t/a/vm_2", None),
            fixtures::instance_of("cloudify://t/a/vm_1", None),
        ];
        let g = finish(g);
        let ids: Vec<&str> = g.instances.iter().map(|i| i.provider_id.as_str()).collect();
        assert_eq!(ids, ["cloudify://t/a/vm_1", "cloudify://t/a/vm_2"]);
        assert_eq!(
            g.debug,
            "cloudify deployment=a group=g planned=2 current=1 instances=2"
        );
    }

    #[test]
    fn compute_nodes_are_the_vms_only() {
        let nodes = vec![
            fixtures::node(
                "a",
                "vm",
                &["cloudify.nodes.Root", "cloudify.nodes.Compute"],
            ),
            fixtures::node("a", "port", &["cloudify.nodes.Root"]),
        ];
        let compute = compute_nodes(&nodes);
        assert!(compute.contains(&("a", "vm")));
        assert!(!compute.contains(&("a", "port")));
    }

    #[test]
    fn clamp_saturates_into_int32_and_reads_negatives_as_zero() {
        assert_eq!(clamp_i32(-5), 0);
        assert_eq!(clamp_i32(7), 7);
        assert_eq!(clamp_i32(i64::MAX), i32::MAX);
    }
}
