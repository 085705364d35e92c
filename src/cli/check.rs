//! `autoscaler-cloudify check`: load the configuration, refresh once from Cloudify, print the
//! node groups. Exits non-zero on any problem.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::CheckArgs;
use crate::cloudify::Cloudify;
use crate::config::{NodeGroupsConfig, OptionsSpec};
use crate::inventory::{InstanceState, Inventory, Snapshot};
use crate::nodegroup::{NodeGroupService, ServiceSettings};
use crate::observability::metrics::Metrics;

pub(super) async fn run(args: CheckArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = args.serve.load()?;
    println!(
        "configuration OK: {} Cloudify entr(y/ies)",
        config.cloudify.len()
    );
    let metrics = Metrics::new();
    let sources: Vec<Arc<dyn Cloudify>> = crate::app::clients(&config, &metrics)?
        .into_iter()
        .map(|c| c as Arc<dyn Cloudify>)
        .collect();
    let inventory = Inventory::new(
        sources,
        Arc::new(config.node_groups.clone()),
        Arc::clone(&metrics),
    );
    let snap = inventory.refresh().await?;
    let service =
        NodeGroupService::new(Arc::clone(&inventory), metrics, ServiceSettings::default());
    println!(
        "{:<40} {:>5} {:>5} {:>6} {:>9} {:>8} {:>8} {:>8}",
        "GROUP", "MIN", "MAX", "TARGET", "INSTANCES", "RUNNING", "CREATING", "DELETING"
    );
    for g in &snap.groups {
        let count = |s: InstanceState| g.instances.iter().filter(|i| i.state == s).count();
        println!(
            "{:<40} {:>5} {:>5} {:>6} {:>9} {:>8} {:>8} {:>8}",
            g.id,
            g.min,
            g.max,
            service.target_size(&g.id)?,
            g.instances.len(),
            count(InstanceState::Running),
            count(InstanceState::Creating),
            count(InstanceState::Deleting),
        );
    }
    if snap.groups.is_empty() {
        return Err("no node groups found (check node_groups.static / auto_discovery)".into());
    }
    for g in &snap.groups {
        if let Some(options) = config.node_groups.settings_for(&g.id).options {
            println!("{}", startup_time_warning(&g.id, &options));
        }
    }
    let findings = model_findings(&snap, &config.node_groups);
    for note in &findings.notes {
        println!("note: {note}");
    }
    for problem in &findings.problems {
        println!("error: {problem}");
    }
    if !findings.problems.is_empty() {
        return Err(format!(
            "{} problem(s) with the node groups",
            findings.problems.len()
        )
        .into());
    }
    Ok(())
}

/// What `check` says about the one-Node-per-group-instance model and the provider ids
/// (issue 20).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ModelFindings {
    /// Groups whose group instances hold several VMs: which one joins Kubernetes.
    pub notes: Vec<String>,
    /// What makes `check` fail: scaling groups left out (several VMs per group instance and no
    /// `joining_node`), provider ids several instances render, a configured `joining_node` that
    /// is no VM node of its group.
    pub problems: Vec<String>,
}

pub(crate) fn model_findings(snap: &Snapshot, config: &NodeGroupsConfig) -> ModelFindings {
    let mut f = ModelFindings::default();
    for g in &snap.groups {
        let configured = config.settings_for(&g.id).joining_node;
        if let Some(node) =
            configured.filter(|n| !g.instances.is_empty() && !g.vm_nodes.contains(n))
        {
            f.problems.push(format!(
                "group {}: joining_node {node:?} is no VM node of the group (VM nodes: {:?})",
                g.id, g.vm_nodes
            ));
        }
        let infrastructure: BTreeSet<&str> = g
            .instances
            .iter()
            .flat_map(|i| i.infrastructure.iter().map(|v| v.vm_instance.as_str()))
            .collect();
        if !infrastructure.is_empty() {
            f.notes.push(format!(
                "group {}: its group instances hold several VMs; one Kubernetes Node per group \
                 instance, its VM of node {} ({} infrastructure VM(s) leave with their group \
                 instance and are never Nodes)",
                g.id,
                g.joining_node
                    .as_deref()
                    .unwrap_or("(the smallest node id)"),
                infrastructure.len()
            ));
        }
    }
    for r in snap.refused_groups() {
        f.problems
            .push(format!("group {} is left out: {}", r.id, r.reason));
    }
    for a in snap.ambiguous_provider_ids() {
        f.problems.push(format!(
            "provider id {:?} is rendered by {} instances {:?}: CA gets no group for it and \
             DeleteNodes refuses it; make provider_id_template name one instance",
            a.provider_id,
            a.instances.len(),
            a.instances
        ));
    }
    f
}

/// The warning `check` prints for a group that answers NodeGroupGetOptions.
///
/// CA 1.35 and later build the options from that answer without `MaxNodeStartupTime` (the proto
/// has no field for it; upstream issue 10245), so such a group gets 0 s instead of CA's 15 min:
/// a node that registers before it is Ready counts as *unready* at once, not *not started*, and
/// CA 1.36 scales up again while it boots (seen in the e2e tier). The provider cannot send the
/// field, and dropping the configured options would silently lose them, so the documented choice
/// (docs/configuration.md) is to keep answering and say so here.
pub(crate) fn startup_time_warning(group: &str, options: &OptionsSpec) -> String {
    let unready = match options.scale_down_unready_time {
        Some(d) => format!("{}s (options.scale_down_unready_time)", d.as_secs()),
        None => "CA's --scale-down-unready-time (default 20m)".to_owned(),
    };
    format!(
        "warning: group {group} has `options`: CA 1.35+ reads no MaxNodeStartupTime from the \
         GetOptions answer (upstream issue 10245) and uses 0s for this group, so a node that \
         registers before it is Ready counts as unready at once: CA may scale up again for the \
         same pods while it boots, and removes unready nodes after {unready}. Use `options` only \
         if this group's nodes register Ready; otherwise drop them (CA's defaults, 15m startup \
         time) and keep that unready time above the boot time (docs/configuration.md)."
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use serde_json::json;

    use super::*;
    use crate::inventory::{SourceData, build_snapshot, testkit};

    /// Deployment `d`: group `g` whose group instance `gi` holds `vm_1` and `st_1`; group `h`
    /// whose two VMs render the same provider id through `{runtime.uid}`.
    fn findings(yaml: &str) -> ModelFindings {
        let dep = testkit::deployment(
            "d",
            json!({"g": {"members": ["vm", "storage"]}, "h": {"members": ["vm"]}}),
        );
        let (nodes, mut instances) = testkit::two_vm_group_instance("d", "g", "gi", json!({}));
        let same = json!({"uid": "same"});
        instances.push(testkit::vm("h_1", "d", "h", "started", same.clone()));
        instances.push(testkit::vm("h_2", "d", "h", "started", same));
        let src = SourceData {
            tenant: "t".into(),
            discovered: vec![dep],
            nodes,
            instances,
            ..Default::default()
        };
        let cfg = testkit::node_groups(yaml);
        let snap = build_snapshot(Instant::now(), SystemTime::now(), &[src], &cfg, false);
        model_findings(&snap, &cfg)
    }

    #[test]
    fn check_names_the_joining_vm_and_fails_on_ambiguous_ids_refused_groups_and_unknown_joining_nodes()
     {
        let f = findings(
            "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], groups: {\"d/g\": {joining_node: vm}, \"d/h\": {provider_id_template: \"x://{runtime.uid}\"}}}",
        );
        assert_eq!(f.notes.len(), 1, "{f:?}");
        assert!(
            f.notes[0].contains("group d/g") && f.notes[0].contains("of node vm"),
            "{f:?}"
        );
        assert_eq!(f.problems.len(), 1, "{f:?}");
        assert!(
            f.problems[0].contains("\"x://same\" is rendered by 2 instances"),
            "{f:?}"
        );
        let f = findings(
            "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], groups: {\"d/g\": {joining_node: worker}}}",
        );
        assert!(
            f.problems
                .iter()
                .any(|p| p.contains("joining_node \"worker\" is no VM node of the group")),
            "{f:?}"
        );
        let f = findings("node_groups: {auto_discovery: [\"cloudify:label=x=y\"]}");
        assert!(
            f.problems
                .iter()
                .any(|p| p.starts_with("group d/g is left out") && p.contains("joining_node")),
            "{f:?}"
        );
    }
}
