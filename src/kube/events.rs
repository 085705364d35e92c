//! Kubernetes Events for what an operator must see without reading logs (issue 21): node groups
//! found and lost, and failed scale-outs, as Cloudify reports them in each complete snapshot.
//!
//! The Events are about the election's Lease (`kubectl describe lease <name> -n <namespace>`
//! lists them): it outlives every Pod, so a rolling update does not lose them. Only the leader
//! publishes; every replica keeps the baseline, so a new leader does not repeat what its
//! predecessor already said. Publishing is best effort: a failure is logged and dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::inventory::{Inventory, NodeGroup};

/// What one complete snapshot said about the groups: their ids and, per group, the failed
/// scale-out executions.
pub type GroupsSeen = BTreeMap<String, BTreeSet<String>>;

/// One Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// The Event's reason (CamelCase, as `kubectl describe` shows it).
    pub reason: &'static str,
    /// What happened, naming the group (and the execution).
    pub text: String,
}

/// The groups and failed scale-outs of a snapshot's groups.
pub fn seen(groups: &[NodeGroup]) -> GroupsSeen {
    groups
        .iter()
        .map(|g| {
            let failed = g.failed.iter().map(|f| f.execution_id.clone()).collect();
            (g.id.clone(), failed)
        })
        .collect()
}

/// The Events between two complete snapshots: a group that appeared, one that disappeared, and a
/// failed scale-out not reported before (with Cloudify's error).
pub fn notes(before: &GroupsSeen, groups: &[NodeGroup]) -> Vec<Note> {
    let mut out = Vec::new();
    for g in groups {
        if !before.contains_key(&g.id) {
            out.push(Note {
                warning: false,
                reason: "NodeGroupFound",
                text: format!(
                    "node group {} found (min {}, max {}, target {})",
                    g.id,
                    g.min,
                    g.max,
                    g.cloudify_target()
                ),
            });
        }
        let known = before.get(&g.id);
        for f in &g.failed {
            if known.is_some_and(|k| k.contains(&f.execution_id)) {
                continue;
            }
            let error = last_line(&f.error);
            out.push(Note {
                warning: true,
                reason: "ScaleOutFailed",
                text: format!(
                    "node group {}: Cloudify scale execution {} failed ({} instance(s) not \
                     created): {error}",
                    g.id,
                    f.execution_id,
                    f.synthetic_ids.len()
                ),
            });
        }
    }
    for id in before.keys() {
        if !groups.iter().any(|g| &g.id == id) {
            out.push(Note {
                warning: true,
                reason: "NodeGroupLost",
                text: format!(
                    "node group {id} is gone from Cloudify (deployment, scaling group or \
                     discovery label removed): Cluster Autoscaler no longer scales it"
                ),
            });
        }
    }
    out
}

/// The line of Cloudify's error an operator needs: the last one (a workflow error is a Python
/// traceback whose last line names the failed task and the cause), at most 500 bytes (an Event's
/// note is limited to 1 kB).
fn last_line(error: &str) -> &str {
    let line = error
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no error text");
    let mut end = line.len().min(500);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

async fn lease_ref(api: &kube::Api<Lease>, name: &str) -> Option<ObjectReference> {
    let lease = api.get_opt(name).await.ok().flatten()?;
    Some(ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: lease.metadata.name,
        namespace: lease.metadata.namespace,
        uid: lease.metadata.uid,
        ..ObjectReference::default()
    })
}

/// Starts the task that publishes the Events about the Lease `namespace/name` while `is_leader`.
pub fn spawn(
    client: kube::Client,
    inventory: Arc<Inventory>,
    namespace: String,
    name: String,
    is_leader: crate::kube::nodes::LeaderFn,
) -> tokio::task::JoinHandle<()> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "autoscaler-cloudify".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let api: kube::Api<Lease> = kube::Api::namespaced(client, &namespace);
    tokio::spawn(async move {
        let mut refreshes = inventory.completed_refreshes();
        let mut baseline: Option<GroupsSeen> = None;
        let mut regarding: Option<ObjectReference> = None;
        while refreshes.changed().await.is_ok() {
            let snapshot = Arc::clone(&refreshes.borrow_and_update().1);
            if !snapshot.complete {
                continue;
            }
            let before = baseline.replace(seen(&snapshot.groups)).unwrap_or_default();
            if !is_leader() {
                continue;
            }
            let pending = notes(&before, &snapshot.groups);
            if pending.is_empty() {
                continue;
            }
            if regarding.is_none() {
                regarding = lease_ref(&api, &name).await;
            }
            let Some(obj) = &regarding else {
                tracing::debug!(lease = %name, "events: the Lease is not readable; not recorded");
                continue;
            };
            for n in pending {
                tracing::info!(reason = n.reason, "{}", n.text);
                let ev = Event {
                    type_: if n.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: n.reason.into(),
                    note: Some(n.text),
                    action: n.reason.into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, obj).await {
                    tracing::debug!(error = %e, "events: not recorded");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::FailedScale;

    fn group(id: &str, failed: &[&str]) -> NodeGroup {
        let (deployment, name) = id.split_once('/').unwrap_or((id, id));
        NodeGroup {
            id: id.into(),
            source: 0,
            tenant: "t".into(),
            deployment: deployment.into(),
            group: name.into(),
            site: None,
            min: 1,
            max: 5,
            planned: 1,
            current: 1,
            waiting: Vec::new(),
            running: Vec::new(),
            instances: Vec::new(),
            failed: failed
                .iter()
                .map(|e| FailedScale {
                    execution_id: (*e).into(),
                    error: "quota exceeded".into(),
                    synthetic_ids: vec![format!("{e}-0")],
                })
                .collect(),
            vm_nodes: Vec::new(),
            joining_node: None,
            seen_executions: Vec::new(),
            orphan_modification: false,
            debug: String::new(),
        }
    }

    #[test]
    fn groups_found_and_lost_and_each_failed_scale_out_once() {
        let first = vec![group("d/a", &[])];
        let found = notes(&GroupsSeen::new(), &first);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].reason, found[0].warning),
            ("NodeGroupFound", false)
        );
        assert!(found[0].text.contains("d/a"), "{}", found[0].text);

        let second = vec![group("d/a", &["e1"]), group("d/b", &[])];
        let n = notes(&seen(&first), &second);
        let reasons: Vec<_> = n.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["ScaleOutFailed", "NodeGroupFound"]);
        assert!(n[0].warning && n[0].text.contains("e1") && n[0].text.contains("quota exceeded"));
        assert_eq!(
            last_line("Traceback (most recent call last):\n  File x\nRuntimeError: quota\n\n"),
            "RuntimeError: quota"
        );
        assert_eq!(last_line(""), "no error text");
        assert_eq!(last_line(&"é".repeat(400)).len(), 500);

        // The same failure in the next snapshot is not repeated; a lost group is a warning.
        let third = vec![group("d/a", &["e1"])];
        let n = notes(&seen(&second), &third);
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!((n[0].reason, n[0].warning), ("NodeGroupLost", true));
        assert!(n[0].text.contains("d/b"));
    }
}
