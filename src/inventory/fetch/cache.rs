//! What one source's last complete refresh read, kept so that the next refresh reads only what
//! may have changed (issue 19): on the real manager a refresh that read every deployment's nodes
//! and instances took ~11 s of its time at 120 deployments.
//!
//! - A deployment's nodes, and which of them its scaling groups hold, change only with a
//!   deployment update: they are read again when its `updated_at` or its groups' members move.
//! - Its instances change only while an execution runs on it: they are read again when its
//!   newest execution is another one, or not ended (or Cloudify does not say), when one of its
//!   scale executions started or ended since the last refresh, while a deployment modification
//!   of it is started, when its groups' counts moved, or while one of its VMs is in a state
//!   other than `started`.
//! - Everything is read again every `refresh.full_every`, and what a contradiction names at once
//!   (a safety net for changes no marker shows, e.g. a runtime property written through the REST
//!   API outside any execution).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cloudify::models::ScalingGroup;
use crate::cloudify::{
    Deployment, DeploymentModification, Execution, ExecutionStatus, Node, NodeInstance,
};
use crate::inventory::error::Contradiction;

/// A deployment as the last complete refresh read it.
#[derive(Debug, Clone)]
struct Known {
    /// The deployment record of that refresh (read before its instances in the same pass).
    deployment: Deployment,
    /// `updated_at` when its nodes were read.
    nodes_at: Option<String>,
    /// Its nodes.
    nodes: Arc<Vec<Node>>,
    /// Its VM node instances (runtime properties trimmed to scalars).
    instances: Arc<Vec<NodeInstance>>,
}

/// What one source's last complete refresh read.
#[derive(Debug, Clone, Default)]
pub struct SourceCache {
    deployments: HashMap<String, Known>,
    /// Statuses of the recent scale executions of its deployments, by id.
    executions: HashMap<String, ExecutionStatus>,
    /// When every deployment's nodes and instances were last read.
    last_full: Option<Instant>,
}

/// A deployment a complete refresh served, with the nodes and instances it used (read then or
/// kept from before).
pub(super) struct Served {
    /// The deployment as that refresh read it.
    pub deployment: Deployment,
    /// Its nodes.
    pub nodes: Arc<Vec<Node>>,
    /// Its VM instances.
    pub instances: Arc<Vec<NodeInstance>>,
}

/// What a pass reads again, by deployment id.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Deployments whose nodes are read.
    pub nodes: Vec<String>,
    /// Deployments whose instances are read (those above included).
    pub instances: Vec<String>,
}

/// Each scaling group's members, sorted, by group name.
fn membership(groups: &HashMap<String, ScalingGroup>) -> BTreeMap<&str, Vec<&str>> {
    groups
        .iter()
        .map(|(name, g)| {
            let mut members: Vec<&str> = g.members.iter().map(String::as_str).collect();
            members.sort_unstable();
            (name.as_str(), members)
        })
        .collect()
}

/// Each scaling group's `(current_instances, planned_instances)`, by group name.
fn counts(groups: &HashMap<String, ScalingGroup>) -> BTreeMap<&str, (Option<i64>, Option<i64>)> {
    groups
        .iter()
        .map(|(name, g)| {
            let p = &g.properties;
            (name.as_str(), (p.current_instances, p.planned_instances))
        })
        .collect()
}

impl SourceCache {
    /// True when the last full read is older than `every` (or there was none).
    pub(super) fn full_due(&self, now: Instant, every: Duration) -> bool {
        self.last_full
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
    }

    /// What a pass that read `deployments`, `executions` and `modifications` must read again:
    /// everything when `full`, and the deployments in `forced`.
    pub(super) fn plan(
        &self,
        deployments: &[Deployment],
        executions: &[Execution],
        modifications: &[DeploymentModification],
        full: bool,
        forced: &HashSet<String>,
    ) -> Plan {
        let mut busy: HashSet<&str> = modifications
            .iter()
            .map(|m| m.deployment_id.as_str())
            .collect();
        for e in executions {
            if !e.is_ended() || self.executions.get(&e.id) != Some(&e.status) {
                busy.insert(e.deployment_id.as_str());
            }
        }
        let mut plan = Plan::default();
        for d in deployments {
            let known = self
                .deployments
                .get(&d.id)
                .filter(|_| !full && !forced.contains(&d.id));
            let read_nodes = known.is_none_or(|k| {
                d.updated_at.is_none()
                    || k.nodes_at != d.updated_at
                    || membership(&k.deployment.scaling_groups) != membership(&d.scaling_groups)
            });
            let read_instances = read_nodes
                || known.is_none_or(|k| {
                    !d.is_settled()
                        || k.deployment.latest_execution != d.latest_execution
                        || k.deployment.latest_execution_status != d.latest_execution_status
                        || counts(&k.deployment.scaling_groups) != counts(&d.scaling_groups)
                        || busy.contains(d.id.as_str())
                        || k.instances.iter().any(|i| i.state != "started")
                });
            if read_nodes {
                plan.nodes.push(d.id.clone());
            }
            if read_instances {
                plan.instances.push(d.id.clone());
            }
        }
        plan
    }

    /// The nodes the last refresh read for a deployment.
    pub(super) fn nodes_of(&self, deployment: &str) -> Option<Arc<Vec<Node>>> {
        self.deployments
            .get(deployment)
            .map(|k| Arc::clone(&k.nodes))
    }

    /// The VM instances the last refresh read for a deployment.
    pub(super) fn instances_of(&self, deployment: &str) -> Option<Arc<Vec<NodeInstance>>> {
        self.deployments
            .get(deployment)
            .map(|k| Arc::clone(&k.instances))
    }

    /// Deployments of `read` that lost scaling groups the last refresh saw, while their
    /// `updated_at` (known to both) stayed the same.
    pub(super) fn vanished_groups(&self, read: &[Deployment]) -> Vec<Contradiction> {
        let mut found = Vec::new();
        for d in read {
            let Some(k) = self.deployments.get(&d.id) else {
                continue;
            };
            let Some(updated_at) = d.updated_at.as_ref() else {
                continue;
            };
            if k.deployment.updated_at.as_ref() != Some(updated_at) {
                continue;
            }
            let mut gone: Vec<String> = k
                .deployment
                .scaling_groups
                .keys()
                .filter(|g| !d.scaling_groups.contains_key(*g))
                .cloned()
                .collect();
            if !gone.is_empty() {
                gone.sort();
                found.push(Contradiction::GroupsVanished {
                    deployment: d.id.clone(),
                    groups: gone,
                    updated_at: updated_at.clone(),
                });
            }
        }
        found
    }

    /// The cache after a complete refresh: its deployments with the nodes and instances it
    /// used (read again or kept), its executions, and `now` as the last full read if it was one.
    pub(super) fn next(
        &self,
        used: Vec<Served>,
        nodes_read: &HashSet<String>,
        executions: &[Execution],
        full_at: Option<Instant>,
    ) -> SourceCache {
        let deployments = used
            .into_iter()
            .map(|served| {
                let d = served.deployment;
                let nodes_at = if nodes_read.contains(&d.id) {
                    d.updated_at.clone()
                } else {
                    self.deployments.get(&d.id).and_then(|k| k.nodes_at.clone())
                };
                let known = Known {
                    deployment: d,
                    nodes_at,
                    nodes: served.nodes,
                    instances: served.instances,
                };
                (known.deployment.id.clone(), known)
            })
            .collect();
        SourceCache {
            deployments,
            executions: executions
                .iter()
                .map(|e| (e.id.clone(), e.status.clone()))
                .collect(),
            last_full: full_at.or(self.last_full),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(latest: &str, status: &str, current: i64) -> Deployment {
        serde_json::from_value(json!({"id": "a", "updated_at": "t0",
            "latest_execution": latest, "latest_execution_status": status,
            "scaling_groups": {"g": {"members": ["vm"],
                "properties": {"current_instances": current, "planned_instances": current}}}}))
        .expect("deployment")
    }

    fn instance(state: &str) -> NodeInstance {
        serde_json::from_value(json!({"id": "vm_1", "deployment_id": "a", "state": state}))
            .expect("instance")
    }

    fn execution(id: &str, status: &str) -> Execution {
        serde_json::from_value(json!({"id": id, "deployment_id": "a", "status": status}))
            .expect("execution")
    }

    /// A cache that read `d` with one VM in `state` and saw `executions`.
    fn cache(d: &Deployment, state: &str, executions: &[Execution]) -> SourceCache {
        SourceCache::default().next(
            vec![Served {
                deployment: d.clone(),
                nodes: Arc::new(Vec::new()),
                instances: Arc::new(vec![instance(state)]),
            }],
            &HashSet::from(["a".to_owned()]),
            executions,
            Some(Instant::now()),
        )
    }

    fn plan(c: &SourceCache, d: &Deployment, executions: &[Execution]) -> (bool, bool) {
        let p = c.plan(
            std::slice::from_ref(d),
            executions,
            &[],
            false,
            &HashSet::new(),
        );
        (!p.nodes.is_empty(), !p.instances.is_empty())
    }

    #[test]
    fn an_unknown_deployment_is_read_whole_and_a_quiet_one_not_at_all() {
        let d = deployment("e1", "completed", 2);
        assert_eq!(plan(&SourceCache::default(), &d, &[]), (true, true));
        let done = [execution("e1", "terminated")];
        assert_eq!(
            plan(&cache(&d, "started", &done), &d, &done),
            (false, false)
        );
    }

    #[test]
    fn activity_reads_the_instances_again() {
        let d = deployment("e1", "completed", 2);
        let c = cache(&d, "started", &[execution("e1", "terminated")]);
        for (why, now, executions) in [
            (
                "another newest execution",
                deployment("e2", "completed", 2),
                vec![],
            ),
            ("a running one", deployment("e1", "in_progress", 2), vec![]),
            (
                "no summary",
                {
                    let mut x = d.clone();
                    x.latest_execution_status = None;
                    x
                },
                vec![],
            ),
            ("counts moved", deployment("e1", "completed", 3), vec![]),
            ("a scale started", d.clone(), vec![execution("s", "queued")]),
            ("a scale ended", d.clone(), vec![execution("e1", "failed")]),
        ] {
            assert_eq!(plan(&c, &now, &executions), (false, true), "{why}");
        }
        let creating = cache(&d, "creating", &[]);
        assert_eq!(plan(&creating, &d, &[]), (false, true), "a VM not started");
        let p = c.plan(
            std::slice::from_ref(&d),
            &[],
            &[DeploymentModification {
                deployment_id: "a".into(),
                ..Default::default()
            }],
            false,
            &HashSet::new(),
        );
        assert_eq!(p.instances, ["a"], "a started modification");
    }

    #[test]
    fn an_update_or_new_members_read_the_nodes_again() {
        let d = deployment("e1", "completed", 2);
        let c = cache(&d, "started", &[]);
        let mut updated = d.clone();
        updated.updated_at = Some("t1".into());
        assert_eq!(plan(&c, &updated, &[]), (true, true));
        let mut members = d.clone();
        if let Some(g) = members.scaling_groups.get_mut("g") {
            g.members.push("port".into());
        }
        assert_eq!(plan(&c, &members, &[]), (true, true));
        let mut unknown = d.clone();
        unknown.updated_at = None;
        assert_eq!(
            plan(&c, &unknown, &[]),
            (true, true),
            "no updated_at: cannot tell"
        );
    }

    #[test]
    fn a_full_or_forced_read_reads_everything() {
        let d = deployment("e1", "completed", 2);
        let c = cache(&d, "started", &[]);
        let all = |full: bool, forced: &[&str]| {
            let forced = forced.iter().map(|s| (*s).to_owned()).collect();
            c.plan(std::slice::from_ref(&d), &[], &[], full, &forced)
        };
        assert_eq!(all(true, &[]).nodes, ["a"]);
        assert_eq!(all(false, &["a"]).instances, ["a"]);
        assert!(c.full_due(
            Instant::now() + Duration::from_secs(61),
            Duration::from_secs(60)
        ));
        assert!(!c.full_due(Instant::now(), Duration::from_secs(60)));
    }

    #[test]
    fn groups_gone_without_an_update_are_a_contradiction() {
        let d = deployment("e1", "completed", 2);
        let c = cache(&d, "started", &[]);
        let mut none = d.clone();
        none.scaling_groups.clear();
        assert_eq!(c.vanished_groups(std::slice::from_ref(&none)).len(), 1);
        none.updated_at = Some("t1".into());
        assert!(
            c.vanished_groups(&[none]).is_empty(),
            "an update may remove groups"
        );
        assert!(c.vanished_groups(&[d]).is_empty());
    }
}
