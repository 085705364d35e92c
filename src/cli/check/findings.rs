//! What `check` reports beyond the configuration's own validation: the mistakes that only show
//! against Cloudify's answer (issue 21 part 2). Pure functions of the configuration and one
//! snapshot, so each finding is tested without a manager; the CLI test drives them through the
//! simulator.

use std::fmt;
use std::path::Path;

use crate::config::{Config, OptionsSpec, key_path};
use crate::inventory::{InstanceState, Snapshot};

/// How bad a finding is: errors make `check` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// CA will misbehave or a setting is silently unused: fix before deploying.
    Error,
    /// Works, but probably not as meant.
    Warning,
    /// How the provider reads something unusual (a group instance of several VMs).
    Note,
}

/// One line of `check`'s report: where, what is wrong, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The configuration key (with its file or flag) or the group the finding is about.
    pub subject: String,
    /// What is wrong and what to fix.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{severity}: {}: {}", self.subject, self.message)
    }
}

/// Where the checked settings came from, so a finding names what the operator wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The configuration file (`--config`).
    pub file: Option<&'a Path>,
    /// Static groups came from `--nodes`, not from `node_groups.static`.
    pub nodes_flag: bool,
}

impl Origin<'_> {
    fn file_key(&self, key: &str) -> String {
        match self.file {
            Some(f) => format!("{}: {key}", f.display()),
            None => key.to_owned(),
        }
    }
}

/// Every finding for `config` against the snapshot `snap`; `target` is a group's target size as
/// CA would be told it.
pub fn findings(
    config: &Config,
    origin: Origin<'_>,
    snap: &Snapshot,
    target: &dyn Fn(&str) -> Option<i32>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let known = known_ids(snap);
    missing_static_groups(config, origin, snap, &known, &mut out);
    unused_group_settings(config, origin, snap, &known, &mut out);
    if snap.groups.is_empty() {
        out.push(Finding {
            severity: Severity::Error,
            subject: origin.file_key("node_groups"),
            message: "no node group found: CA would have nothing to scale (check \
                      node_groups.static / auto_discovery, or --nodes / \
                      --node-group-auto-discovery, against the deployments in Cloudify)"
                .into(),
        });
    }
    for g in &snap.groups {
        let subject = format!("group {}", g.id);
        unidentified_vms(config, origin, g, &subject, &mut out);
        if let Some(t) = target(&g.id) {
            bounds(g.min, g.max, t, &subject, &mut out);
        }
        if let Some(options) = config.node_groups.settings_for(&g.id).options {
            out.push(Finding {
                severity: Severity::Warning,
                subject: subject.clone(),
                message: startup_time_warning(&options),
            });
        }
    }
    duplicate_provider_ids(snap, &mut out);
    group_instance_model(config, snap, &mut out);
    out.sort_by_key(|f| f.severity);
    out
}

/// The node group ids found, for "known: ..." hints (at most ten, so a big cluster's report
/// stays readable).
fn known_ids(snap: &Snapshot) -> String {
    const SHOWN: usize = 10;
    let mut ids: Vec<&str> = snap
        .groups
        .iter()
        .map(|g| g.id.as_str())
        .take(SHOWN)
        .collect();
    if snap.groups.len() > SHOWN {
        ids.push("...");
    }
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

/// A static group Cloudify does not have: the inventory leaves it out (a typo must not become an
/// empty group CA scales), so CA never sees it.
fn missing_static_groups(
    config: &Config,
    origin: Origin<'_>,
    snap: &Snapshot,
    known: &str,
    out: &mut Vec<Finding>,
) {
    for (i, s) in config.node_groups.static_groups.iter().enumerate() {
        let found = snap
            .groups
            .iter()
            .any(|g| g.source == s.source && g.deployment == s.deployment && g.group == s.group);
        if found {
            continue;
        }
        let subject = if origin.nodes_flag {
            format!("--nodes[{i}]")
        } else {
            origin.file_key(&format!("node_groups.static[{i}]"))
        };
        let entry = config
            .cloudify
            .get(s.source)
            .map(|c| format!(" (Cloudify entry {}, tenant {})", c.name, c.tenant))
            .unwrap_or_default();
        out.push(Finding {
            severity: Severity::Error,
            subject,
            message: format!(
                "Cloudify has no scaling group {:?} in a deployment {:?}{entry}: CA never sees \
                 this group; fix the <deployment>/<group> (node groups found: {known})",
                s.group, s.deployment
            ),
        });
    }
}

/// A `node_groups.groups` key no group has: its min/max, template, options and price apply to
/// nothing, silently (the file's key names are checked at load; ids only against Cloudify).
fn unused_group_settings(
    config: &Config,
    origin: Origin<'_>,
    snap: &Snapshot,
    known: &str,
    out: &mut Vec<Finding>,
) {
    for id in config.node_groups.groups.keys() {
        if snap.group(id).is_some() {
            continue;
        }
        out.push(Finding {
            severity: Severity::Error,
            subject: origin.file_key(&key_path(&["node_groups", "groups", id])),
            message: format!(
                "no node group has this id, so these settings apply to no group (known: {known}); \
                 write the id as check lists it, [<entry>:]<deployment>/<group>"
            ),
        });
    }
}

/// Started VMs whose provider id cannot be rendered: a `{runtime.*}` property of the template is
/// missing, so they stay "creating" for CA, no Node ever matches them, and CA deletes them after
/// its `--max-node-provision-time`.
fn unidentified_vms(
    config: &Config,
    origin: Origin<'_>,
    g: &crate::inventory::NodeGroup,
    subject: &str,
    out: &mut Vec<Finding>,
) {
    let started = g
        .instances
        .iter()
        .filter(|i| i.cloudify_state == "started")
        .count();
    // A started VM is `Running` unless its id is a placeholder (or a scale-in names it, which
    // makes it `Deleting`).
    let stuck = g
        .instances
        .iter()
        .filter(|i| i.cloudify_state == "started" && i.state == InstanceState::Creating)
        .count();
    if stuck == 0 {
        return;
    }
    let (key, template) = match config.node_groups.groups.get(&g.id) {
        Some(s) if s.provider_id_template.is_some() => (
            key_path(&["node_groups", "groups", &g.id, "provider_id_template"]),
            s.provider_id_template.clone(),
        ),
        _ => (
            "node_groups.defaults.provider_id_template".to_owned(),
            config.node_groups.defaults.provider_id_template.clone(),
        ),
    };
    let template = template.map(|t| t.as_str().to_owned()).unwrap_or_default();
    let keys = runtime_keys(&template);
    out.push(Finding {
        severity: Severity::Error,
        subject: subject.to_owned(),
        message: format!(
            "{stuck} of {started} started VMs lack the runtime propert{} {} that {} {template:?} \
             needs: CA sees them as creating, no Node matches them, and CA deletes them after \
             its --max-node-provision-time (15m by default); set the property in the blueprint \
             or change the template",
            if keys.len() == 1 { "y" } else { "ies" },
            keys.join(", "),
            origin.file_key(&key),
        ),
    });
}

/// The `{runtime.<key>}` placeholders of a template, in order.
fn runtime_keys(template: &str) -> Vec<String> {
    template
        .split("{runtime.")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(k, _)| k.to_owned()))
        .collect()
}

/// A target outside the group's bounds: CA does not scale such a group the way its bounds say.
fn bounds(min: i32, max: i32, target: i32, subject: &str, out: &mut Vec<Finding>) {
    let message = if target > max {
        format!(
            "target size {target} is above max {max}: CA will not scale this group up (an \
             increase past max is refused); raise max (node_groups.groups.<id>.max or --nodes) \
             or scale the deployment in"
        )
    } else if target < min {
        format!(
            "target size {target} is below min {min}: CA will not scale this group down (never \
             below min) and raises it to min only when run with --enforce-node-group-min-size; \
             lower min or scale the deployment out"
        )
    } else {
        return;
    };
    out.push(Finding {
        severity: Severity::Warning,
        subject: subject.to_owned(),
        message,
    });
}

/// A provider id several instances render: a Node with that id cannot be told apart from the
/// others, so lookups and DeleteNodes refuse it (issue 20).
fn duplicate_provider_ids(snap: &Snapshot, out: &mut Vec<Finding>) {
    for a in snap.ambiguous_provider_ids() {
        let owners: Vec<String> = a
            .instances
            .iter()
            .map(|(group, vm)| format!("{group} {vm}"))
            .collect();
        out.push(Finding {
            severity: Severity::Error,
            subject: format!("provider id {:?}", a.provider_id),
            message: format!(
                "rendered by {} instances ({}): CA gets no group for it and DeleteNodes refuses \
                 it; make the group's provider_id_template name one instance (e.g. end with \
                 {{vm_instance}}) and the kubelet's --provider-id match it",
                owners.len(),
                owners.join(", ")
            ),
        });
    }
}

/// The one-Node-per-group-instance model (issue 20): a configured `joining_node` that is no VM
/// node of its group, scaling groups left out (several VMs per group instance and no
/// `joining_node`), and, as notes, which VM joins when a group instance holds several.
fn group_instance_model(config: &Config, snap: &Snapshot, out: &mut Vec<Finding>) {
    for g in &snap.groups {
        let subject = format!("group {}", g.id);
        let configured = config.node_groups.settings_for(&g.id).joining_node;
        if let Some(node) =
            configured.filter(|n| !g.instances.is_empty() && !g.vm_nodes.contains(n))
        {
            out.push(Finding {
                severity: Severity::Error,
                subject: subject.clone(),
                message: format!(
                    "joining_node {node:?} is no VM node of the group (VM nodes: {:?})",
                    g.vm_nodes
                ),
            });
        }
        let infrastructure: std::collections::BTreeSet<&str> = g
            .instances
            .iter()
            .flat_map(|i| i.infrastructure.iter().map(|v| v.vm_instance.as_str()))
            .collect();
        if !infrastructure.is_empty() {
            out.push(Finding {
                severity: Severity::Note,
                subject,
                message: format!(
                    "its group instances hold several VMs; one Kubernetes Node per group \
                     instance, its VM of node {} ({} infrastructure VM(s) leave with their \
                     group instance and are never Nodes)",
                    g.joining_node
                        .as_deref()
                        .unwrap_or("(the smallest node id)"),
                    infrastructure.len()
                ),
            });
        }
    }
    for r in snap.refused_groups() {
        out.push(Finding {
            severity: Severity::Error,
            subject: format!("group {}", r.id),
            message: format!("left out: {}", r.reason),
        });
    }
}

/// The warning `check` gives for a group that answers NodeGroupGetOptions.
///
/// CA 1.35 and later build the options from that answer without `MaxNodeStartupTime` (the proto
/// has no field for it; upstream issue 10245), so such a group gets 0 s instead of CA's 15 min:
/// a node that registers before it is Ready counts as *unready* at once, not *not started*, and
/// CA 1.36 scales up again while it boots (seen in the e2e tier). The provider cannot send the
/// field, and dropping the configured options would silently lose them, so the documented choice
/// (docs/configuration.md) is to keep answering and say so here.
fn startup_time_warning(options: &OptionsSpec) -> String {
    let unready = match options.scale_down_unready_time {
        Some(d) => format!("{}s (options.scale_down_unready_time)", d.as_secs()),
        None => "CA's --scale-down-unready-time (default 20m)".to_owned(),
    };
    format!(
        "has `options`: CA 1.35+ reads no MaxNodeStartupTime from the GetOptions answer \
         (upstream issue 10245) and uses 0s for this group, so a node that registers before it \
         is Ready counts as unready at once: CA may scale up again for the same pods while it \
         boots, and removes unready nodes after {unready}. Use `options` only if this group's \
         nodes register Ready; otherwise drop them (CA's defaults, 15m startup time) and keep \
         that unready time above the boot time (docs/configuration.md)."
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
    fn model_findings(yaml: &str) -> Vec<Finding> {
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
        let config = testkit::config(&format!("cloudify: [{{url: \"http://x\"}}]\n{yaml}"));
        let snap = build_snapshot(
            Instant::now(),
            SystemTime::now(),
            &[src],
            &config.node_groups,
            false,
        );
        let mut out = Vec::new();
        duplicate_provider_ids(&snap, &mut out);
        group_instance_model(&config, &snap, &mut out);
        out
    }

    #[test]
    fn check_names_the_joining_vm_and_fails_on_ambiguous_ids_refused_groups_and_unknown_joining_nodes()
     {
        let f = model_findings(
            "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], groups: {\"d/g\": {joining_node: vm}, \"d/h\": {provider_id_template: \"x://{runtime.uid}\"}}}",
        );
        let notes: Vec<&Finding> = f.iter().filter(|f| f.severity == Severity::Note).collect();
        let errors: Vec<&Finding> = f.iter().filter(|f| f.severity == Severity::Error).collect();
        assert_eq!(notes.len(), 1, "{f:?}");
        assert!(
            notes[0].subject == "group d/g" && notes[0].message.contains("of node vm"),
            "{f:?}"
        );
        assert_eq!(errors.len(), 1, "{f:?}");
        assert!(
            errors[0]
                .to_string()
                .contains("\"x://same\": rendered by 2 instances"),
            "{f:?}"
        );
        let f = model_findings(
            "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], groups: {\"d/g\": {joining_node: worker}}}",
        );
        assert!(
            f.iter().any(|p| p
                .message
                .contains("joining_node \"worker\" is no VM node of the group")),
            "{f:?}"
        );
        let f = model_findings("node_groups: {auto_discovery: [\"cloudify:label=x=y\"]}");
        assert!(
            f.iter().any(|p| p.subject == "group d/g"
                && p.message.starts_with("left out")
                && p.message.contains("joining_node")),
            "{f:?}"
        );
    }

    #[test]
    fn runtime_keys_are_read_from_the_template() {
        assert_eq!(
            runtime_keys("aws:///{runtime.zone}/{runtime.external_id}"),
            ["zone", "external_id"]
        );
        assert!(runtime_keys("cloudify://{tenant}/{deployment}/{vm_instance}").is_empty());
    }

    #[test]
    fn a_target_outside_the_bounds_is_a_warning_saying_what_ca_does() {
        let mut out = Vec::new();
        bounds(1, 3, 2, "group g", &mut out);
        assert!(out.is_empty());
        bounds(1, 3, 5, "group g", &mut out);
        bounds(2, 3, 1, "group g", &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|f| f.severity == Severity::Warning));
        assert!(
            out[0]
                .to_string()
                .starts_with("warning: group g: target size 5 is above max 3")
        );
        assert!(out[1].message.contains("below min 2"));
    }
}
