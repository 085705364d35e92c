//! Consistency checks: parts of one refresh that cannot all be true (issue 20, item 6).
//!
//! Each answer of a refresh can be well-formed and still contradict the others: a node list
//! that names none of a group's members, an instance list shorter than the group's counts.
//! Taken as the truth, groups or instances would vanish from CA's view without a refresh error.
//!
//! The real manager's reads are not atomic with each other (a new instance can appear before
//! `planned_instances` moves; `current_instances` can reach the target before the modification
//! reads `finished`), so the checks only refuse what no such window explains: a group has at
//! least `min(current_instances, planned_instances)` group instances at any moment of a scale,
//! out or in, finished, failed or rolled back. The fetch reads a contradicting pass again and
//! fails the refresh only when the contradiction lasts.

use super::*;
use crate::inventory::error::Contradiction;

/// Every contradiction between the deployments, nodes and instances of one source's pass, for
/// the scaling groups that are node groups.
pub fn contradictions(src: &SourceData, config: &NodeGroupsConfig) -> Vec<Contradiction> {
    let selection = groups::select(src, config);
    let compute = compute_nodes(&src.nodes);
    let mut nodes_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for n in &src.nodes {
        nodes_of
            .entry(n.deployment_id.as_str())
            .or_default()
            .insert(n.id.as_str());
    }
    let mut group_instances: HashMap<GroupKey<'_>, HashSet<&str>> = HashMap::new();
    for inst in &src.instances {
        let vm = compute.contains(&(inst.deployment_id.as_str(), inst.node_id.as_str()))
            || inst.host_id.as_deref() == Some(inst.id.as_str());
        if !vm {
            continue;
        }
        for r in &inst.scaling_groups {
            group_instances
                .entry((inst.deployment_id.as_str(), r.name.as_str()))
                .or_default()
                .insert(r.id.as_str());
        }
    }
    let mut keys: Vec<&GroupKey<'_>> = selection.bounds.keys().collect();
    keys.sort();
    let mut found = Vec::new();
    for &(dep, group) in keys {
        let Some(sg) = selection
            .deployments
            .get(dep)
            .and_then(|d| d.scaling_groups.get(group))
        else {
            continue;
        };
        let Some(d) = selection.deployments.get(dep) else {
            continue;
        };
        let nodes = nodes_of.get(dep);
        for member in &sg.members {
            let known = nodes.is_some_and(|n| n.contains(member.as_str()))
                || d.scaling_groups.contains_key(member);
            if !known {
                found.push(Contradiction::UnknownMember {
                    deployment: dep.to_owned(),
                    group: group.to_owned(),
                    member: member.clone(),
                    nodes: nodes.map_or(0, HashSet::len),
                });
            }
        }
        // Only a group whose members include a VM node can be counted: its VMs are the group
        // instances (a VM contained in a member is found from the instances, not the nodes).
        if !sg
            .members
            .iter()
            .any(|m| compute.contains(&(dep, m.as_str())))
        {
            continue;
        }
        let (current, planned) = groups::sizes(&sg.properties);
        let expected = usize::try_from(current.min(planned)).unwrap_or(0);
        let have = group_instances.get(&(dep, group)).map_or(0, HashSet::len);
        if have < expected {
            found.push(Contradiction::MissingInstances {
                deployment: dep.to_owned(),
                group: group.to_owned(),
                found: have,
                expected,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixtures::{self, config, vm};
    use super::*;

    fn cfg() -> NodeGroupsConfig {
        config("node_groups: {auto_discovery: [\"cloudify:label=x=y\"]}")
    }

    /// Deployment `a`, group `g` of `vm` and `port`, with these counts, and instances
    /// `vm_1..=vm_n` (one group instance each).
    fn source(current: i64, planned: i64, n: usize) -> SourceData {
        let groups = json!({"g": {"members": ["vm", "port"],
            "properties": {"current_instances": current, "planned_instances": planned}}});
        SourceData {
            discovered: vec![fixtures::deployment("a", groups)],
            nodes: vec![
                fixtures::node("a", "vm", &["cloudify.nodes.Compute"]),
                fixtures::node("a", "port", &["cloudify.nodes.Root"]),
            ],
            instances: (1..=n)
                .map(|i| vm(&format!("vm_{i}"), "a", "started", json!({})))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_consistent_source_has_no_contradiction() {
        assert!(contradictions(&source(2, 2, 2), &cfg()).is_empty());
    }

    #[test]
    fn the_windows_of_a_scale_are_no_contradiction() {
        // Scale-out: the new instances exist before or after planned moves.
        assert!(contradictions(&source(2, 3, 2), &cfg()).is_empty());
        assert!(contradictions(&source(2, 2, 3), &cfg()).is_empty());
        // Scale-in: the removed rows are gone before current moves.
        assert!(contradictions(&source(3, 2, 2), &cfg()).is_empty());
    }

    #[test]
    fn fewer_group_instances_than_both_counts_is_a_contradiction() {
        assert_eq!(
            contradictions(&source(3, 3, 1), &cfg()),
            [Contradiction::MissingInstances {
                deployment: "a".into(),
                group: "g".into(),
                found: 1,
                expected: 3
            }]
        );
        let mut two_vms = source(2, 2, 2);
        // A second VM in the first group instance is not a second group instance.
        two_vms.instances[1].scaling_groups = two_vms.instances[0].scaling_groups.clone();
        assert_eq!(contradictions(&two_vms, &cfg()).len(), 1);
    }

    #[test]
    fn members_that_are_no_node_are_a_contradiction() {
        let mut src = source(1, 1, 1);
        src.nodes.clear();
        let found = contradictions(&src, &cfg());
        assert!(
            found.iter().any(
                |c| matches!(c, Contradiction::UnknownMember { member, .. } if member == "port")
            ),
            "{found:?}"
        );
        // A nested group is a member too.
        let groups = json!({"outer": {"members": ["g"]}, "g": {"members": ["vm"]}});
        let mut nested = source(0, 0, 0);
        nested.discovered = vec![fixtures::deployment("a", groups)];
        assert!(contradictions(&nested, &cfg()).is_empty());
    }
}
