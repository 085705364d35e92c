//! One pass of a source's refresh: its REST reads, in an order that lets [`Pass::consistent`]
//! tell whether a scale moved while they were made.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::cache::{Served, SourceCache};
use crate::cloudify::models::ACTIVE_STATUSES;
use crate::cloudify::{
    Cloudify, CloudifyError, Deployment, DeploymentModification, Execution, ExecutionStatus, Node,
    NodeInstance,
};
use crate::config::NodeGroupsConfig;
use crate::inventory::build::SourceData;

/// Scale executions read per pass (newest first, all statuses, every deployment of the
/// tenant): the active ones, the recent failures CA must hear about, and the recently ended
/// ones local changes are matched against.
pub(super) const RECENT_EXECUTIONS: usize = 1000;

/// What one pass read, before it is checked and built.
pub(super) struct Pass {
    /// Recent scale executions of this source's deployments, newest first.
    executions: Vec<Execution>,
    /// Started modifications of this source's deployments.
    modifications: Vec<DeploymentModification>,
    /// Ids discovery found (deployments with scaling groups).
    discovered: HashSet<String>,
    /// Ids of the static groups' deployments of this source.
    static_ids: HashSet<String>,
    /// The deployments whose groups may be node groups: discovered ones with scaling groups,
    /// and those of static groups.
    deployments: Vec<Deployment>,
    /// Every deployment record read (also those without scaling groups).
    pub read: Vec<Deployment>,
    /// Nodes of each deployment (read now or kept).
    nodes: HashMap<String, Arc<Vec<Node>>>,
    /// VM instances of each deployment (read now or kept).
    instances: HashMap<String, Arc<Vec<NodeInstance>>>,
    /// Deployments whose nodes this pass read.
    pub nodes_read: HashSet<String>,
    /// Deployments whose instances this pass read.
    pub instances_read: usize,
    /// Ids and statuses of the scale executions, read last.
    executions_after: Vec<Execution>,
}

/// The `scale` executions in the recent window, plus every active one behind a full window.
async fn recent_executions(c: &dyn Cloudify, brief: bool) -> Result<Vec<Execution>, CloudifyError> {
    let read = |statuses: &'static [ExecutionStatus], limit: Option<usize>| async move {
        if brief {
            c.scale_execution_statuses(statuses, limit).await
        } else {
            c.scale_executions(&[], statuses, limit).await
        }
    };
    let mut executions = read(&[], Some(RECENT_EXECUTIONS)).await?;
    if executions.len() >= RECENT_EXECUTIONS {
        // A full window: an old execution may still be active behind it.
        let known: HashSet<String> = executions.iter().map(|e| e.id.clone()).collect();
        let active = read(&ACTIVE_STATUSES, None).await?;
        executions.extend(active.into_iter().filter(|e| !known.contains(&e.id)));
    }
    Ok(executions)
}

/// The deployments of this source: discovery's searches (whose answers carry the groups, so
/// they are not read again by id), then the static groups' deployments discovery did not find.
async fn deployments(
    c: &dyn Cloudify,
    config: &NodeGroupsConfig,
    source: usize,
) -> Result<(Vec<Deployment>, HashSet<String>, HashSet<String>), CloudifyError> {
    let mut read: Vec<Deployment> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut discovered: HashSet<String> = HashSet::new();
    for rule in &config.discovery {
        for d in c.search_deployments(&rule.labels).await? {
            if !d.scaling_groups.is_empty() {
                discovered.insert(d.id.clone());
            }
            if seen.insert(d.id.clone()) {
                read.push(d);
            }
        }
    }
    let static_ids: HashSet<String> = config
        .static_groups
        .iter()
        .filter(|s| s.source == source)
        .map(|s| s.deployment.clone())
        .collect();
    let mut missing: Vec<String> = static_ids
        .iter()
        .filter(|id| !discovered.contains(*id))
        .cloned()
        .collect();
    missing.sort();
    for d in c.deployments_by_id(&missing).await? {
        if seen.insert(d.id.clone()) {
            read.push(d);
        } else if let Some(r) = read.iter_mut().find(|r| r.id == d.id) {
            // Labelled but without groups in the search: the by-id answer is as new.
            *r = d;
        }
    }
    Ok((read, discovered, static_ids))
}

/// The ended (finished or rolled back) modifications of the executions that read `started`
/// but own no started modification. Issue 19: on the real manager a scale's modification ends
/// 0.4-2.6 s before its execution leaves `started`; without it such an execution reads as one
/// that has not started its modification yet, and its delta was counted a second time. Read
/// only for the deployments of such executions, so a refresh with no scale in that window (or
/// in the one before its modification starts) makes no extra call.
async fn ended_modifications(
    c: &dyn Cloudify,
    executions: &[Execution],
    started: &[DeploymentModification],
) -> Result<Vec<DeploymentModification>, CloudifyError> {
    let owners: HashSet<&str> = started.iter().filter_map(|m| m.execution_id()).collect();
    let unknown: HashSet<&str> = executions
        .iter()
        .filter(|e| !e.is_waiting() && !e.is_ended() && !owners.contains(e.id.as_str()))
        .map(|e| e.id.as_str())
        .collect();
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let mut deployments: Vec<String> = executions
        .iter()
        .filter(|e| unknown.contains(e.id.as_str()))
        .map(|e| e.deployment_id.clone())
        .collect();
    deployments.sort();
    deployments.dedup();
    let mut out = Vec::new();
    for status in ["finished", "rolledback"] {
        out.extend(
            c.deployment_modifications(&deployments, status)
                .await?
                .into_iter()
                .filter(|m| m.execution_id().is_some_and(|e| unknown.contains(e))),
        );
    }
    Ok(out)
}

impl Pass {
    /// Reads one pass: executions, started modifications, deployments, then the nodes and
    /// instances `cache` does not hold or that may have changed (all of them when `full`, and
    /// those of `forced`), and the executions' statuses again.
    ///
    /// Order matters: a scale whose modification starts after the modifications were read
    /// shows up as a deployment whose planned differs from what the modifications say; one
    /// that starts or ends anywhere in the pass changes the second execution read. Either makes
    /// the pass inconsistent.
    pub(super) async fn read(
        c: &dyn Cloudify,
        config: &NodeGroupsConfig,
        source: usize,
        cache: &SourceCache,
        full: bool,
        forced: &HashSet<String>,
    ) -> Result<Pass, CloudifyError> {
        // Of every deployment of the tenant: one request each, whatever the number of
        // deployments (issue 20), filtered here once the deployments are known.
        let executions = recent_executions(c, false).await?;
        let modifications = c.deployment_modifications(&[], "started").await?;
        let (read, discovered, static_ids) = deployments(c, config, source).await?;
        let deployments: Vec<Deployment> = read
            .iter()
            .filter(|d| discovered.contains(&d.id) || static_ids.contains(&d.id))
            .cloned()
            .collect();
        let ours: HashSet<&str> = deployments.iter().map(|d| d.id.as_str()).collect();
        let executions: Vec<Execution> = executions
            .into_iter()
            .filter(|e| ours.contains(e.deployment_id.as_str()))
            .collect();
        let mut modifications: Vec<DeploymentModification> = modifications
            .into_iter()
            .filter(|m| ours.contains(m.deployment_id.as_str()))
            .collect();
        let ended = ended_modifications(c, &executions, &modifications).await?;
        modifications.extend(ended);

        let plan = cache.plan(&deployments, &executions, &modifications, full, forced);
        let mut nodes: HashMap<String, Arc<Vec<Node>>> = HashMap::new();
        let mut fresh: HashMap<String, Vec<Node>> = HashMap::new();
        for n in c.nodes(&plan.nodes).await? {
            fresh.entry(n.deployment_id.clone()).or_default().push(n);
        }
        for id in &plan.nodes {
            nodes.insert(id.clone(), Arc::new(fresh.remove(id).unwrap_or_default()));
        }
        for d in &deployments {
            if !nodes.contains_key(&d.id) {
                nodes.insert(d.id.clone(), cache.nodes_of(&d.id).unwrap_or_default());
            }
        }

        let mut compute_ids: Vec<String> = plan
            .instances
            .iter()
            .filter_map(|id| nodes.get(id))
            .flat_map(|list| list.iter().filter(|n| n.is_compute()).map(|n| n.id.clone()))
            .collect();
        compute_ids.sort();
        compute_ids.dedup();
        let mut read_now: HashMap<String, Vec<NodeInstance>> = HashMap::new();
        for mut i in c.node_instances(&plan.instances, &compute_ids).await? {
            i.keep_scalar_runtime_properties();
            read_now.entry(i.deployment_id.clone()).or_default().push(i);
        }
        let mut instances: HashMap<String, Arc<Vec<NodeInstance>>> = HashMap::new();
        for id in &plan.instances {
            instances.insert(
                id.clone(),
                Arc::new(read_now.remove(id).unwrap_or_default()),
            );
        }
        for d in &deployments {
            if !instances.contains_key(&d.id) {
                instances.insert(d.id.clone(), cache.instances_of(&d.id).unwrap_or_default());
            }
        }
        let executions_after = recent_executions(c, true).await?;
        Ok(Pass {
            executions,
            modifications,
            discovered,
            static_ids,
            deployments,
            read,
            nodes,
            instances,
            nodes_read: plan.nodes.into_iter().collect(),
            instances_read: plan.instances.len(),
            executions_after,
        })
    }

    /// True when nothing that the counting depends on moved during the pass: no scale of these
    /// deployments started or ended between the first execution read and the last, and each
    /// deployment's `planned_instances` is what its started modification (or none) says.
    /// Otherwise a scale could be counted twice (as waiting and in planned) or not at all.
    pub(super) fn consistent(&self) -> bool {
        let before: HashMap<&str, &ExecutionStatus> = self
            .executions
            .iter()
            .map(|e| (e.id.as_str(), &e.status))
            .collect();
        let ours: HashSet<&str> = self.deployments.iter().map(|d| d.id.as_str()).collect();
        let after: HashMap<&str, &ExecutionStatus> = self
            .executions_after
            .iter()
            .filter(|e| ours.contains(e.deployment_id.as_str()))
            .map(|e| (e.id.as_str(), &e.status))
            .collect();
        // A new execution, or one whose status changed. An ended one that left the window
        // (pushed out by newer ones, of any deployment) moved nothing; an active one cannot
        // leave it unnoticed, since a full window is followed by every active execution.
        let moved = after.iter().any(|(id, s)| before.get(id) != Some(s))
            || before
                .iter()
                .any(|(id, s)| s.is_active() && !after.contains_key(id));
        if moved {
            return false;
        }
        self.deployments.iter().all(|d| {
            let started: Vec<&DeploymentModification> = self
                .modifications
                .iter()
                .filter(|m| m.deployment_id == d.id && m.status == "started")
                .collect();
            d.scaling_groups.iter().all(|(name, sg)| {
                let p = &sg.properties;
                let current = p.current_instances.unwrap_or(0);
                let planned = p.planned_instances.unwrap_or(current);
                match started.iter().find_map(|m| m.target_of(name)) {
                    Some(target) => planned == target,
                    None => planned == current,
                }
            })
        })
    }

    /// What the snapshot is built from.
    pub(super) fn source_data(&self, source: usize, c: &dyn Cloudify) -> SourceData {
        let (discovered, static_deployments): (Vec<Deployment>, Vec<Deployment>) = self
            .deployments
            .iter()
            .filter(|d| !d.scaling_groups.is_empty() || self.static_ids.contains(&d.id))
            .cloned()
            .partition(|d| self.discovered.contains(&d.id));
        let mut active = Vec::new();
        let mut failed = Vec::new();
        let mut ended = Vec::new();
        for e in &self.executions {
            if e.status.is_active() {
                active.push(e.clone());
            } else if e.status == ExecutionStatus::Failed {
                failed.push(e.clone());
            } else {
                ended.push(e.clone());
            }
        }
        let ids: Vec<&String> = self.deployments.iter().map(|d| &d.id).collect();
        SourceData {
            source,
            name: c.name().to_owned(),
            tenant: c.tenant().to_owned(),
            discovered,
            static_deployments,
            nodes: ids
                .iter()
                .filter_map(|id| self.nodes.get(*id))
                .flat_map(|n| n.iter().cloned())
                .collect(),
            instances: ids
                .iter()
                .filter_map(|id| self.instances.get(*id))
                .flat_map(|i| i.iter().cloned())
                .collect(),
            active,
            failed,
            ended,
            modifications: self.modifications.clone(),
        }
    }

    /// The cache the next refresh starts from, once this pass is the one served.
    pub(super) fn into_cache(
        self,
        previous: &SourceCache,
        full_at: Option<std::time::Instant>,
    ) -> SourceCache {
        let used = self
            .deployments
            .iter()
            .map(|d| Served {
                deployment: d.clone(),
                nodes: self.nodes.get(&d.id).cloned().unwrap_or_default(),
                instances: self.instances.get(&d.id).cloned().unwrap_or_default(),
            })
            .collect();
        previous.next(used, &self.nodes_read, &self.executions, full_at)
    }
}
