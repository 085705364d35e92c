//! Building a [`Snapshot`] from what one refresh fetched. Pure: no I/O, so it is unit-tested with
//! hand-written Cloudify answers.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::cloudify::{Deployment, DeploymentModification, Execution, Node, NodeInstance};
use crate::config::{AddressProperties, NodeGroupsConfig, ProviderIdParts, ProviderIdTemplate};

/// How long a failed scale-out keeps being reported (as creating-with-error instances), unless
/// CA deletes them first. CA reacts within a loop or two; this only bounds stale records.
const FAILED_SCALE_RETENTION: Duration = Duration::from_secs(15 * 60);

/// Everything one refresh fetched from one Cloudify entry.
#[derive(Debug, Default, Clone)]
pub struct SourceData {
    /// Index of the entry.
    pub source: usize,
    /// Entry name (group id prefix with several entries).
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Deployments found by auto-discovery (all their scaling groups are node groups).
    pub discovered: Vec<Deployment>,
    /// Deployments named by static groups.
    pub static_deployments: Vec<Deployment>,
    /// Nodes of the deployments above.
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
    /// The `started` deployment modifications of these deployments.
    pub modifications: Vec<DeploymentModification>,
}

fn state_of(cloudify_state: &str) -> InstanceState {
    match cloudify_state {
        "started" => InstanceState::Running,
        "stopping" | "stopped" | "deleting" | "deleted" => InstanceState::Deleting,
        // uninitialized, initializing, creating, created, configuring, configured, starting,
        // and anything unknown: not ready yet.
        _ => InstanceState::Creating,
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i64::from(i32::MAX)) as i32
}

fn is_recent(e: &Execution, now: SystemTime) -> bool {
    let stamp = e.ended_at.as_deref().or(e.created_at.as_deref());
    let Some(parsed) = stamp.and_then(parse_time) else {
        // Unknown age: report it; CA deletes the synthetic instances and we forget them.
        return true;
    };
    now.duration_since(parsed)
        .map(|age| age <= FAILED_SCALE_RETENTION)
        .unwrap_or(true)
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&chrono::Utc))
        .or_else(|_| {
            // Cloudify often omits the zone ("2026-11-27T23:00:00.123"): it is UTC.
            chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .map(|n| n.and_utc())
        })
        .ok()?;
    let secs = u64::try_from(t.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The synthetic id of the `n`-th missing instance of a failed scale-out.
pub fn synthetic_failed_id(deployment: &str, group: &str, execution: &str, n: usize) -> String {
    format!("cloudify-failed://{deployment}/{group}/{execution}/{n}")
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
    for src in sources {
        build_source(src, config, prefixed, fetched_at_wall, &mut groups);
    }
    groups.sort_by(|a, b| a.id.cmp(&b.id));

    // Sized up front: growing a 100k-entry map rehashes it several times.
    let instances: usize = groups.iter().map(|g| g.instances.len()).sum();
    let mut group_index: IndexMap<u32> =
        IndexMap::with_capacity_and_hasher(groups.len(), Default::default());
    let mut by_provider_id: IndexMap<InstanceRef> =
        IndexMap::with_capacity_and_hasher(instances, Default::default());
    let mut by_alias: IndexMap<InstanceRef> =
        IndexMap::with_capacity_and_hasher(2 * instances, Default::default());
    let mut ambiguous: HashSet<String> = HashSet::new();
    let mut instance_count = 0;
    for (gi, g) in groups.iter().enumerate() {
        group_index.insert(g.id.clone(), gi as u32);
        for (ii, inst) in g.instances.iter().enumerate() {
            let r = InstanceRef {
                group: gi as u32,
                instance: ii as u32,
            };
            instance_count += 1;
            by_provider_id.insert(inst.provider_id.clone(), r);
            let normalized = normalize_provider_id(&inst.provider_id);
            let aliases = [Some(normalized), inst.node_name.as_deref()];
            for alias in aliases.into_iter().flatten() {
                if alias.is_empty() || ambiguous.contains(alias) {
                    continue;
                }
                match by_alias.get(alias) {
                    Some(existing) if *existing != r => {
                        // Two instances claim one name: answering either could delete the
                        // wrong VM, so the alias answers nothing.
                        by_alias.remove(alias);
                        ambiguous.insert(alias.to_owned());
                    }
                    Some(_) => {}
                    None => {
                        by_alias.insert(alias.to_owned(), r);
                    }
                }
            }
        }
    }
    Snapshot {
        fetched_at,
        fetched_at_wall,
        complete: true,
        groups,
        group_index,
        by_provider_id,
        by_alias,
        instance_count,
    }
}

fn build_source(
    src: &SourceData,
    config: &NodeGroupsConfig,
    prefixed: bool,
    now: SystemTime,
    out: &mut Vec<NodeGroup>,
) {
    // (deployment, group) → (min, max) from static configuration; None = bounds from Cloudify.
    let mut selected: HashMap<(&str, &str), Option<(i32, i32)>> = HashMap::new();
    let mut deployments: HashMap<&str, &Deployment> = HashMap::new();
    for d in &src.discovered {
        deployments.insert(&d.id, d);
        for g in d.scaling_groups.keys() {
            selected.entry((&d.id, g)).or_insert(None);
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
                selected.insert((&s.deployment, &s.group), Some((s.min, s.max)));
            }
            _ => tracing::warn!(
                deployment = %s.deployment, group = %s.group,
                "configured node group not found in Cloudify"
            ),
        }
    }

    let compute: HashSet<(&str, &str)> = src
        .nodes
        .iter()
        .filter(|n| n.is_compute())
        .map(|n| (n.deployment_id.as_str(), n.id.as_str()))
        .collect();

    let mut by_group: HashMap<(&str, &str), NodeGroup> = HashMap::new();
    for (&(dep, gname), bounds) in &selected {
        let Some(d) = deployments.get(dep) else {
            continue;
        };
        let Some(sg) = d.scaling_groups.get(gname) else {
            continue;
        };
        let id = if prefixed {
            format!("{}:{dep}/{gname}", src.name)
        } else {
            format!("{dep}/{gname}")
        };
        let settings = config.settings_for(&id);
        let p = &sg.properties;
        let (min, max) = match bounds {
            Some((lo, hi)) => (*lo, *hi),
            None => {
                let min = settings
                    .min
                    .unwrap_or_else(|| clamp_i32(p.min_instances.unwrap_or(0)));
                let max = settings.max.unwrap_or_else(|| match p.max_instances {
                    Some(m) if m >= 0 => clamp_i32(m),
                    _ => config.unbounded_max,
                });
                (min, max.max(min))
            }
        };
        let current = clamp_i32(p.current_instances.unwrap_or(0));
        let planned = clamp_i32(p.planned_instances.unwrap_or(i64::from(current)));
        let vm_nodes = sg
            .members
            .iter()
            .filter(|m| compute.contains(&(dep, m.as_str())))
            .cloned()
            .collect();
        by_group.insert(
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
                seen_executions: Vec::new(),
                orphan_modification: false,
                debug: String::new(),
            },
        );
    }

    // A `started` scale is in `planned_instances` only once its deployment modification exists
    // (the workflow validates first): the modifications tell which. A started modification
    // whose execution is no longer active was left by a failed, cancelled or killed scale: its
    // half-applied change is void (our next scale aborts it), so the group counts `current`.
    let active_ids: HashSet<&str> = src.active.iter().map(|e| e.id.as_str()).collect();
    let mut in_planned: HashSet<&str> = HashSet::new();
    for m in src.modifications.iter().filter(|m| m.status == "started") {
        let execution = m.execution_id().or_else(|| {
            // Without a recorded execution: the deployment's started scale, if any.
            src.active
                .iter()
                .find(|e| e.deployment_id == m.deployment_id && e.status == "started")
                .map(|e| e.id.as_str())
        });
        match execution {
            Some(e) if active_ids.contains(e) => {
                in_planned.insert(e);
            }
            _ => {
                for g in by_group
                    .values_mut()
                    .filter(|g| g.deployment == m.deployment_id)
                {
                    g.orphan_modification = true;
                    if m.target_of(&g.group).is_some() {
                        g.planned = g.current;
                    }
                }
            }
        }
    }
    // Instances named by active scale-ins are leaving even while their VM still says `started`.
    let mut leaving: HashSet<(&str, String)> = HashSet::new();
    // Deployments with an active scale-in that names nothing: any of their stopping instances
    // may be its victims.
    let mut unhinted_scale_in: HashSet<&str> = HashSet::new();
    for e in &src.active {
        let Some(gname) = e.scaled_group() else {
            continue;
        };
        let Some(g) = by_group.get_mut(&(e.deployment_id.as_str(), gname)) else {
            continue;
        };
        g.seen_executions.push(e.id.clone());
        let delta = e.delta();
        let started_without_modification =
            e.status == "started" && !in_planned.contains(e.id.as_str());
        let execution = WaitingExecution {
            id: e.id.clone(),
            delta: delta.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            cancellable: e.is_waiting(),
        };
        if delta == 0 {
        } else if e.is_waiting() || started_without_modification {
            g.waiting.push(execution);
        } else if in_planned.contains(e.id.as_str()) {
            g.running.push(execution);
        }
        if delta < 0 {
            let named = e.include_instances();
            if named.is_empty() {
                unhinted_scale_in.insert(e.deployment_id.as_str());
            }
            for id in named {
                leaving.insert((e.deployment_id.as_str(), id));
            }
        }
    }
    for e in &src.ended {
        let Some(gname) = e.scaled_group() else {
            continue;
        };
        if let Some(g) = by_group.get_mut(&(e.deployment_id.as_str(), gname)) {
            g.seen_executions.push(e.id.clone());
        }
    }
    for e in src.failed.iter().filter(|e| is_recent(e, now)) {
        let Some(gname) = e.scaled_group() else {
            continue;
        };
        let Some(g) = by_group.get_mut(&(e.deployment_id.as_str(), gname)) else {
            continue;
        };
        g.seen_executions.push(e.id.clone());
        let delta = e.delta();
        if delta <= 0 {
            continue;
        }
        let n = usize::try_from(delta).unwrap_or(0).min(1000);
        g.failed.push(FailedScale {
            execution_id: e.id.clone(),
            error: e.error.clone().unwrap_or_default(),
            synthetic_ids: (0..n)
                .map(|i| synthetic_failed_id(&g.deployment, &g.group, &e.id, i))
                .collect(),
        });
    }

    // Settings resolved once per group: `settings_for` clones the group's template spec (maps
    // of labels and capacities), which per instance was most of the build time at 100k.
    let mut resolved: HashMap<String, (ProviderIdTemplate, String, AddressProperties)> =
        HashMap::new();
    for inst in &src.instances {
        let is_vm = compute.contains(&(inst.deployment_id.as_str(), inst.node_id.as_str()))
            || inst.host_id.as_deref() == Some(inst.id.as_str());
        if !is_vm || inst.id.is_empty() {
            continue;
        }
        let Some((g, gref)) = inst.scaling_groups.iter().find_map(|r| {
            by_group
                .contains_key(&(inst.deployment_id.as_str(), r.name.as_str()))
                .then_some(r)
                .map(|r| ((inst.deployment_id.as_str(), r.name.as_str()), r))
        }) else {
            continue;
        };
        let Some(group) = by_group.get_mut(&g) else {
            continue;
        };
        if !resolved.contains_key(group.id.as_str()) {
            let s = config.settings_for(&group.id);
            resolved.insert(
                group.id.clone(),
                (
                    s.provider_id_template.unwrap_or_default(),
                    s.node_name_property
                        .unwrap_or_else(|| "hostname".to_owned()),
                    s.address_properties.unwrap_or_default(),
                ),
            );
        }
        let Some((template, name_key, address_keys)) = resolved.get(group.id.as_str()) else {
            continue;
        };
        let parts = ProviderIdParts {
            tenant: &group.tenant,
            deployment: &group.deployment,
            group: &group.group,
            group_instance: &gref.id,
            vm_instance: &inst.id,
        };
        let mut state = state_of(&inst.state);
        let provider_id = match template.render(&parts, |k| inst.runtime_str(k)) {
            Some(id) => id,
            None => {
                // The id needs a runtime property the VM has not reported yet: a placeholder
                // CA can still echo back to DeleteNodes, as clusterapi's `pending-machine-…`.
                if state == InstanceState::Running {
                    state = InstanceState::Creating;
                }
                format!(
                    "cloudify-pending://{}/{}/{}",
                    group.tenant, group.deployment, inst.id
                )
            }
        };
        // Usually no scale-in is running: skip the two key copies per instance then.
        let leaving_now = !leaving.is_empty()
            && (leaving.contains(&(inst.deployment_id.as_str(), inst.id.clone()))
                || leaving.contains(&(inst.deployment_id.as_str(), gref.id.clone())));
        if leaving_now {
            state = InstanceState::Deleting;
        }
        let being_removed = leaving_now
            || (state == InstanceState::Deleting
                && unhinted_scale_in.contains(inst.deployment_id.as_str()));
        if !group.vm_nodes.contains(&inst.node_id) {
            // The VM node may be contained in a listed member rather than listed itself.
            group.vm_nodes.push(inst.node_id.clone());
        }
        group.instances.push(GroupInstance {
            provider_id,
            vm_instance: inst.id.clone(),
            group_instance: gref.id.clone(),
            node_name: inst.runtime_str(name_key),
            state,
            cloudify_state: inst.state.clone(),
            addresses: InstanceAddresses {
                internal_ip: inst.runtime_str(&address_keys.internal_ip),
                external_ip: inst.runtime_str(&address_keys.external_ip),
                hostname: inst.runtime_str(&address_keys.hostname),
            },
            being_removed,
        });
    }
    for mut g in by_group.into_values() {
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
        out.push(g);
    }
}
