//! Step 1: which scaling groups of a source are node groups, with which bounds and sizes.

use super::*;
use crate::cloudify::models::ScalingGroupProperties;
use crate::config::GroupSettings;

/// The scaling groups of one source that are node groups.
pub(super) struct Selection<'a> {
    /// Every fetched deployment by id.
    pub deployments: HashMap<&'a str, &'a Deployment>,
    /// The selected groups, with the bounds a static group sets (`min:max:dep/group`); `None`
    /// for a discovered group, whose bounds come from the settings or Cloudify.
    pub bounds: HashMap<GroupKey<'a>, Option<(i32, i32)>>,
}

/// Every scaling group of a discovered deployment, and every static group of this source that
/// exists in Cloudify. A static group wins over discovery (its bounds apply); one Cloudify does
/// not have is left out with a warning, so a typo cannot become an empty group CA scales.
pub(super) fn select<'a>(src: &'a SourceData, config: &'a NodeGroupsConfig) -> Selection<'a> {
    let mut bounds: HashMap<GroupKey<'a>, Option<(i32, i32)>> = HashMap::new();
    let mut deployments: HashMap<&str, &Deployment> = HashMap::new();
    for d in &src.discovered {
        deployments.insert(&d.id, d);
        for g in d.scaling_groups.keys() {
            bounds.entry((&d.id, g)).or_insert(None);
        }
    }
    for d in &src.static_deployments {
        deployments.insert(&d.id, d);
    }
    for s in config
        .static_groups
        .iter()
        .filter(|s| s.source == src.source)
    {
        match deployments.get(s.deployment.as_str()) {
            Some(d) if d.scaling_groups.contains_key(&s.group) => {
                bounds.insert((&s.deployment, &s.group), Some((s.min, s.max)));
            }
            _ => tracing::warn!(
                deployment = %s.deployment, group = %s.group,
                "configured node group not found in Cloudify"
            ),
        }
    }
    Selection {
        deployments,
        bounds,
    }
}

/// The id CA knows the group by: `<deployment>/<group>`, prefixed `<entry>:` when the
/// configuration lists several Cloudify entries (ids must be unique across them).
pub(super) fn group_id(entry: &str, prefixed: bool, deployment: &str, group: &str) -> String {
    if prefixed {
        format!("{entry}:{deployment}/{group}")
    } else {
        format!("{deployment}/{group}")
    }
}

/// `(min, max)` of a group. A static group's bounds are final. Otherwise the group's settings
/// win over the scaling policy; Cloudify's `max_instances: -1` (or none) means
/// `unbounded_max`; and max is never below min, so CA never sees an inverted range.
pub(super) fn bounds(
    static_bounds: Option<(i32, i32)>,
    settings: &GroupSettings,
    policy: &ScalingGroupProperties,
    unbounded_max: i32,
) -> (i32, i32) {
    if let Some(b) = static_bounds {
        return b;
    }
    let min = settings
        .min
        .unwrap_or_else(|| clamp_i32(policy.min_instances.unwrap_or(0)));
    let max = settings.max.unwrap_or_else(|| match policy.max_instances {
        Some(m) if m >= 0 => clamp_i32(m),
        _ => unbounded_max,
    });
    (min, max.max(min))
}

/// `(current, planned)`: planned is current when Cloudify omits it (no modification running).
pub(super) fn sizes(policy: &ScalingGroupProperties) -> (i32, i32) {
    let current = clamp_i32(policy.current_instances.unwrap_or(0));
    let planned = clamp_i32(policy.planned_instances.unwrap_or(i64::from(current)));
    (current, planned)
}

/// The node whose VM joins Kubernetes in each group instance: the configured one, else the only
/// VM member. A group with several VM members and none configured is refused (the reason says
/// what to set): Cloudify lists `members` in no particular order (the real manager answered
/// `[storage_host, worker_port, worker_host, storage_port]` for a blueprint listing the worker
/// first), and a guess that picked the storage VM would report ids no Node has, so CA would in
/// the end delete the group instance of a running, undrained Node (issue 20).
fn joining_node(
    id: &str,
    settings: &GroupSettings,
    vm_nodes: &[String],
) -> Result<Option<String>, String> {
    match (&settings.joining_node, vm_nodes) {
        (Some(n), _) => Ok(Some(n.clone())),
        (None, [] | [_]) => Ok(vm_nodes.first().cloned()),
        (None, _) => Err(format!(
            "its group instances hold several VMs (nodes {vm_nodes:?}): set \
             node_groups.groups.\"{id}\".joining_node to the node whose VM joins Kubernetes \
             (one Node per group instance; the others are its infrastructure)"
        )),
    }
}

/// A node group for each selected scaling group, before executions and instances are applied,
/// and the scaling groups refused.
pub(super) fn create<'a>(
    src: &'a SourceData,
    selection: &Selection<'a>,
    compute: &ComputeNodes<'a>,
    config: &NodeGroupsConfig,
    prefixed: bool,
) -> (Groups<'a>, Vec<RefusedGroup>) {
    let mut groups: Groups<'a> = HashMap::new();
    let mut refused = Vec::new();
    for (&(dep, gname), static_bounds) in &selection.bounds {
        let Some(d) = selection.deployments.get(dep) else {
            continue;
        };
        let Some(sg) = d.scaling_groups.get(gname) else {
            continue;
        };
        let id = group_id(&src.name, prefixed, dep, gname);
        let settings = config.settings_for(&id);
        let (min, max) = bounds(
            *static_bounds,
            &settings,
            &sg.properties,
            config.unbounded_max,
        );
        // A max from Cloudify's policy is not checked at load like a configured one: it is
        // lowered to what one NodeGroupNodes answer can list for CA (issue 20).
        let template = settings.provider_id_template.clone().unwrap_or_default();
        let answer_limit =
            crate::config::max_instances_in_answer(&template, &src.tenant, Some(dep), Some(gname));
        let max = max.min(answer_limit).max(min);
        let (current, planned) = sizes(&sg.properties);
        // Members that are VMs; a VM contained in a listed member is added with its instances.
        let vm_nodes: Vec<String> = sg
            .members
            .iter()
            .filter(|m| compute.contains(&(dep, m.as_str())))
            .cloned()
            .collect();
        let joining_node = match joining_node(&id, &settings, &vm_nodes) {
            Ok(n) => n,
            Err(reason) => {
                refused.push(RefusedGroup { id, reason });
                continue;
            }
        };
        groups.insert(
            (dep, gname),
            NodeGroup {
                id,
                source: src.source,
                tenant: src.tenant.clone(),
                deployment: dep.to_owned(),
                group: gname.to_owned(),
                site: d.site_name.clone().filter(|s| !s.is_empty()),
                min,
                max,
                planned,
                current,
                waiting: Vec::new(),
                running: Vec::new(),
                instances: Vec::new(),
                failed: Vec::new(),
                vm_nodes,
                joining_node,
                seen_executions: Vec::new(),
                orphan_modification: false,
                debug: String::new(),
            },
        );
    }
    (groups, refused)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixtures::{self, config};
    use super::*;

    fn policy(min: Option<i64>, max: Option<i64>) -> ScalingGroupProperties {
        ScalingGroupProperties {
            min_instances: min,
            max_instances: max,
            ..Default::default()
        }
    }

    fn source() -> SourceData {
        let groups = json!({"g": {"members": ["vm", "port"], "properties": {"current_instances": 2}},
            "h": {"members": ["vm"]}});
        SourceData {
            discovered: vec![fixtures::deployment("a", groups.clone())],
            static_deployments: vec![fixtures::deployment("b", groups)],
            nodes: vec![fixtures::node("a", "vm", &["cloudify.nodes.Compute"])],
            ..Default::default()
        }
    }

    #[test]
    fn select_takes_every_discovered_group_and_the_static_groups_cloudify_has() {
        let src = source();
        let cfg = config(
            "node_groups: {static: [\"1:4:b/g\", \"1:4:b/missing\", \"1:4:nowhere/g\"], auto_discovery: [\"cloudify:label=x=y\"]}",
        );
        let s = select(&src, &cfg);
        let mut keys: Vec<_> = s.bounds.iter().map(|(k, b)| (*k, *b)).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                (("a", "g"), None),
                (("a", "h"), None),
                (("b", "g"), Some((1, 4)))
            ],
            "b/h is not selected (b is only fetched for its static group); missing groups dropped"
        );
        assert_eq!(s.deployments.len(), 2);
    }

    #[test]
    fn a_static_group_of_a_discovered_deployment_keeps_its_static_bounds() {
        let src = source();
        let cfg = config(
            "node_groups: {static: [\"2:3:a/g\"], auto_discovery: [\"cloudify:label=x=y\"]}",
        );
        assert_eq!(
            select(&src, &cfg).bounds.get(&("a", "g")),
            Some(&Some((2, 3)))
        );
    }

    #[test]
    fn a_static_group_of_another_source_is_not_this_ones() {
        let mut src = source();
        src.source = 1;
        let cfg = config("node_groups: {static: [\"1:4:b/g\"]}");
        assert!(!select(&src, &cfg).bounds.contains_key(&("b", "g")));
    }

    #[test]
    fn group_ids_are_prefixed_with_the_entry_only_with_several_entries() {
        assert_eq!(group_id("eu", false, "dep", "g"), "dep/g");
        assert_eq!(group_id("eu", true, "dep", "g"), "eu:dep/g");
    }

    #[test]
    fn static_bounds_are_final() {
        let settings = GroupSettings {
            min: Some(5),
            ..Default::default()
        };
        assert_eq!(
            bounds(Some((1, 2)), &settings, &policy(Some(3), Some(9)), 100),
            (1, 2)
        );
    }

    #[test]
    fn settings_win_over_the_scaling_policy() {
        let settings = GroupSettings {
            min: Some(1),
            max: Some(4),
            ..Default::default()
        };
        assert_eq!(
            bounds(None, &settings, &policy(Some(3), Some(9)), 100),
            (1, 4)
        );
        let only_max = GroupSettings {
            max: Some(4),
            ..Default::default()
        };
        assert_eq!(
            bounds(None, &only_max, &policy(Some(3), Some(9)), 100),
            (3, 4)
        );
    }

    #[test]
    fn an_unbounded_or_missing_policy_max_is_the_configured_cap() {
        let none = GroupSettings::default();
        assert_eq!(bounds(None, &none, &policy(None, Some(-1)), 42), (0, 42));
        assert_eq!(bounds(None, &none, &policy(Some(2), None), 42), (2, 42));
    }

    #[test]
    fn max_is_raised_to_min_and_huge_policies_saturate() {
        let none = GroupSettings::default();
        assert_eq!(bounds(None, &none, &policy(Some(5), Some(2)), 42), (5, 5));
        assert_eq!(
            bounds(None, &none, &policy(Some(-3), Some(i64::MAX)), 42),
            (0, i32::MAX)
        );
    }

    #[test]
    fn planned_defaults_to_current_and_counts_are_clamped() {
        let p = |current, planned| ScalingGroupProperties {
            current_instances: current,
            planned_instances: planned,
            ..Default::default()
        };
        assert_eq!(sizes(&p(Some(3), None)), (3, 3));
        assert_eq!(sizes(&p(Some(3), Some(5))), (3, 5));
        assert_eq!(sizes(&p(None, None)), (0, 0));
        assert_eq!(sizes(&p(Some(-1), Some(i64::MAX))), (0, i32::MAX));
    }

    #[test]
    fn create_makes_a_group_per_selected_scaling_group_with_its_vm_members() {
        let mut src = source();
        src.name = "eu".into();
        src.tenant = "t".into();
        src.discovered[0].site_name = Some(String::new());
        let cfg = config(
            "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], unbounded_max: 9, groups: {\"eu:a/g\": {max: 6}}}",
        );
        let selection = select(&src, &cfg);
        let compute = compute_nodes(&src.nodes);
        let (groups, refused) = create(&src, &selection, &compute, &cfg, true);
        assert!(refused.is_empty());
        assert_eq!(groups.len(), 2);
        let g = groups.get(&("a", "g")).expect("a/g");
        assert_eq!(g.id, "eu:a/g");
        assert_eq!(
            (g.min, g.max),
            (0, 6),
            "per-group settings by the prefixed id"
        );
        assert_eq!((g.current, g.planned), (2, 2));
        assert_eq!(g.vm_nodes, ["vm"], "the port is not a VM");
        assert_eq!(g.site, None, "an empty site is no site");
        assert_eq!(g.tenant, "t");
        let h = groups.get(&("a", "h")).expect("a/h");
        assert_eq!((h.min, h.max), (0, 9));
    }

    #[test]
    fn the_joining_node_is_the_configured_one_else_the_only_vm_member() {
        let mut src = source();
        src.discovered[0].scaling_groups = serde_json::from_value(json!({
            "g": {"members": ["port", "storage", "vm"]}, "h": {"members": ["port", "vm"]}}))
        .expect("groups");
        src.nodes
            .push(fixtures::node("a", "storage", &["cloudify.nodes.Compute"]));
        let discovery = "node_groups: {auto_discovery: [\"cloudify:label=x=y\"]";
        let built = |yaml: String| {
            let cfg = config(&yaml);
            let compute = compute_nodes(&src.nodes);
            let (groups, refused) = create(&src, &select(&src, &cfg), &compute, &cfg, false);
            let mut joining: Vec<(String, Option<String>)> = groups
                .into_values()
                .map(|g| (g.id, g.joining_node))
                .collect();
            joining.sort();
            (joining, refused)
        };
        let (groups, refused) = built(format!("{discovery}}}"));
        assert_eq!(
            groups,
            [("a/h".to_owned(), Some("vm".to_owned()))],
            "a/g: two VM members, none named"
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].id, "a/g");
        assert!(
            refused[0]
                .reason
                .contains("node_groups.groups.\"a/g\".joining_node"),
            "{refused:?}"
        );
        let (groups, refused) = built(format!(
            "{discovery}, groups: {{\"a/g\": {{joining_node: vm}}}}}}"
        ));
        assert!(refused.is_empty());
        assert!(groups.contains(&("a/g".to_owned(), Some("vm".to_owned()))));
    }
}
