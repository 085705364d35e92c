//! The fetch: the REST reads of one refresh, per Cloudify entry (source).

use std::collections::{HashMap, HashSet};

use super::InventoryError;
use super::build::SourceData;
use crate::cloudify::models::ACTIVE_STATUSES;
use crate::cloudify::{
    Cloudify, CloudifyError, Deployment, DeploymentModification, Execution, Node, NodeInstance,
};
use crate::config::NodeGroupsConfig;

/// Scale executions read per collect pass (newest first, all statuses): the active ones, the
/// recent failures CA must hear about, and the recently ended ones local changes are matched
/// against.
const RECENT_EXECUTIONS: usize = 1000;
/// Collect passes before a refresh gives up on a view in which something moved (see
/// [`fetch_source`]).
const COLLECT_ATTEMPTS: u32 = 5;

/// One collect pass: what the counting needs, read in an order that lets
/// [`Collected::consistent`] tell whether it moved meanwhile.
struct Collected {
    executions: Vec<Execution>,
    modifications: Vec<DeploymentModification>,
    deployments: Vec<Deployment>,
    nodes: Vec<Node>,
    instances: Vec<NodeInstance>,
    executions_after: Vec<Execution>,
}

impl Collected {
    /// True when nothing that the counting depends on moved during the pass: the executions
    /// read after everything else are the ones read first, with the same statuses, and each
    /// deployment's `planned_instances` is what its started modification (or none) says.
    /// Otherwise a scale could be counted twice (as waiting and in planned) or not at all.
    fn consistent(&self) -> bool {
        let statuses = |list: &[Execution]| -> HashMap<String, String> {
            list.iter()
                .map(|e| (e.id.clone(), e.status.clone()))
                .collect()
        };
        if statuses(&self.executions) != statuses(&self.executions_after) {
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
}

async fn collect(c: &dyn Cloudify, deployment_ids: &[String]) -> Result<Collected, CloudifyError> {
    // Order matters: executions, then modifications, then deployments. A scale whose
    // modification starts after the modifications were read shows up as a deployment whose
    // planned differs from what the modifications say; one that starts or ends anywhere in
    // the pass changes the second execution read. Either makes the pass inconsistent.
    let mut executions = c
        .scale_executions(deployment_ids, &[], Some(RECENT_EXECUTIONS))
        .await?;
    if executions.len() >= RECENT_EXECUTIONS {
        // A full page: an old execution may still be active behind it.
        let known: HashSet<String> = executions.iter().map(|e| e.id.clone()).collect();
        let active = c
            .scale_executions(deployment_ids, &ACTIVE_STATUSES, None)
            .await?;
        executions.extend(active.into_iter().filter(|e| !known.contains(&e.id)));
    }
    let modifications = c
        .deployment_modifications(deployment_ids, "started")
        .await?;
    let deployments = c.deployments_by_id(deployment_ids).await?;
    let nodes = c.nodes(deployment_ids).await?;
    let mut compute_ids: Vec<String> = nodes
        .iter()
        .filter(|n| n.is_compute())
        .map(|n| n.id.clone())
        .collect();
    compute_ids.sort();
    compute_ids.dedup();
    let instances = c.node_instances(deployment_ids, &compute_ids).await?;
    let mut executions_after = c
        .scale_executions(deployment_ids, &[], Some(RECENT_EXECUTIONS))
        .await?;
    if executions.len() > RECENT_EXECUTIONS {
        let known: HashSet<String> = executions_after.iter().map(|e| e.id.clone()).collect();
        let active = c
            .scale_executions(deployment_ids, &ACTIVE_STATUSES, None)
            .await?;
        executions_after.extend(active.into_iter().filter(|e| !known.contains(&e.id)));
    }
    Ok(Collected {
        executions,
        modifications,
        deployments,
        nodes,
        instances,
        executions_after,
    })
}

/// One source's REST calls: the discovery searches (one per rule), then collect passes of
/// executions, started modifications, deployments, nodes, one call per 1000 VM instances and
/// the executions again, repeated (at most [`COLLECT_ATTEMPTS`] times) while a scale moved
/// during the pass; then the refresh fails and the previous snapshot stays.
pub(super) async fn fetch_source(
    source: usize,
    c: &dyn Cloudify,
    config: &NodeGroupsConfig,
) -> Result<SourceData, InventoryError> {
    let err = |source: CloudifyError| InventoryError::Cloudify {
        manager: c.name().to_owned(),
        source,
    };
    let mut discovered_ids: HashSet<String> = HashSet::new();
    for rule in &config.discovery {
        discovered_ids.extend(
            c.search_deployments(&rule.labels)
                .await
                .map_err(err)?
                .into_iter()
                .filter(|d| !d.scaling_groups.is_empty())
                .map(|d| d.id),
        );
    }
    let static_ids: HashSet<String> = config
        .static_groups
        .iter()
        .filter(|s| s.source == source)
        .map(|s| s.deployment.clone())
        .collect();
    let mut deployment_ids: Vec<String> = discovered_ids.union(&static_ids).cloned().collect();
    deployment_ids.sort();

    let mut attempt = 0;
    let pass = loop {
        attempt += 1;
        let pass = collect(c, &deployment_ids).await.map_err(err)?;
        if pass.consistent() {
            break pass;
        }
        if attempt >= COLLECT_ATTEMPTS {
            // Counting from an unsettled pass could count a scale twice or not at all; the
            // previous snapshot (plus this process's own changes) is the safer answer.
            return Err(InventoryError::Unsettled {
                manager: c.name().to_owned(),
                attempts: attempt,
            });
        }
        tracing::debug!(
            manager = c.name(),
            attempt,
            "a scale moved during the refresh; reading again"
        );
    };
    let (discovered, static_deployments): (Vec<Deployment>, Vec<Deployment>) = pass
        .deployments
        .into_iter()
        .filter(|d| !d.scaling_groups.is_empty() || static_ids.contains(&d.id))
        .partition(|d| discovered_ids.contains(&d.id));
    let mut active = Vec::new();
    let mut failed = Vec::new();
    let mut ended = Vec::new();
    for e in pass.executions {
        if ACTIVE_STATUSES.contains(&e.status.as_str()) {
            active.push(e);
        } else if e.status == "failed" {
            failed.push(e);
        } else {
            ended.push(e);
        }
    }
    Ok(SourceData {
        source,
        name: c.name().to_owned(),
        tenant: c.tenant().to_owned(),
        discovered,
        static_deployments,
        nodes: pass.nodes,
        instances: pass.instances,
        active,
        failed,
        ended,
        modifications: pass.modifications,
    })
}
