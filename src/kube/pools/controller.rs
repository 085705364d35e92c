//! The pool controller (issue 22): a kube-rs `Controller` over `CloudifyNodePool`s, running on
//! every replica (its reflector store feeds [`PoolRegistry`]) but acting only on the leader.
//! Each reconcile observes Cloudify (the deployment and its executions), asks [`plan::decide`],
//! makes at most one Cloudify call, writes the status and an Event, and requeues.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::crd::{CloudifyNodePool, CloudifyNodePoolStatus, ExecutionRef, FINALIZER};
use super::plan::{self, Action, Decision, Note, Observed};
use super::registry::{ManagerEntry, PoolRegistry, resolve_manager};
use crate::cloudify::Execution;
use crate::cloudify::deployments::{
    DeploymentLifecycle, DeploymentState, Refusal, Workflow, read_with_executions,
};
use crate::inventory::Inventory;
use crate::kube::nodes::LeaderFn;

/// The controller's error: a Kubernetes or Cloudify call failed (requeued with a backoff).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A Kubernetes API call failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// A Cloudify call failed in a way worth a retry.
    #[error("cloudify: {0}")]
    Cloudify(#[from] crate::cloudify::CloudifyError),
}

/// What the controller works with.
pub struct PoolContext {
    client: kube::Client,
    inventory: Arc<Inventory>,
    managers: Arc<Vec<ManagerEntry>>,
    lifecycles: Vec<Arc<dyn DeploymentLifecycle>>,
    cluster_labels: Vec<(String, String)>,
    is_leader: LeaderFn,
    recorder: Recorder,
}

/// Starts the controller; returns its task and the registry the inventory serves pools from.
pub fn spawn(
    client: kube::Client,
    inventory: Arc<Inventory>,
    managers: Vec<ManagerEntry>,
    lifecycles: Vec<Arc<dyn DeploymentLifecycle>>,
    cluster_labels: Vec<(String, String)>,
    flavors: super::registry::Flavors,
    is_leader: LeaderFn,
) -> (tokio::task::JoinHandle<()>, Arc<PoolRegistry>) {
    let managers = Arc::new(managers);
    let api: Api<CloudifyNodePool> = Api::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let registry = Arc::new(PoolRegistry::new(
        controller.store(),
        Arc::clone(&managers),
        flavors,
    ));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "autoscaler-cloudify-pools".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(PoolContext {
        client,
        inventory,
        managers,
        lifecycles,
        cluster_labels,
        is_leader,
        recorder,
    });
    let task = tokio::spawn(async move {
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "pool reconcile");
                }
            })
            .await;
    });
    (task, registry)
}

fn error_policy(_: Arc<CloudifyNodePool>, error: &PoolError, _: Arc<PoolContext>) -> Requeue {
    tracing::warn!(%error, "pool reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(15))
}

async fn reconcile(
    pool: Arc<CloudifyNodePool>,
    ctx: Arc<PoolContext>,
) -> Result<Requeue, PoolError> {
    if !(ctx.is_leader)() {
        return Ok(Requeue::requeue(Duration::from_secs(10)));
    }
    let name = pool.name_any();
    let api: Api<CloudifyNodePool> = Api::all(ctx.client.clone());
    let deleting = pool.metadata.deletion_timestamp.is_some();
    if let Some(requeue) = ensure_finalizer(&api, &pool, &name, deleting).await? {
        return Ok(requeue);
    }
    let status = pool.status.clone().unwrap_or_default();
    let resolved = resolve_manager(&ctx.managers, &pool.spec.manager, &pool.spec.tenant);
    let deployment_id = pool.spec.deployment_for(&name);
    // A misconfigured pool has no lifecycle: nothing is called, the decision says what to fix.
    let source = resolved.as_ref().map_or(0, |i| *i);
    let lifecycle = resolved
        .as_ref()
        .ok()
        .and_then(|i| ctx.lifecycles.get(*i).cloned());
    let (deployment, executions) = observe_deployment(lifecycle.as_deref(), &deployment_id).await?;
    let snapshot = ctx.inventory.snapshot();
    let group_id = pool_group_id(
        &ctx.managers,
        source,
        &deployment_id,
        &pool.spec.scaling_group,
    );
    let group = snapshot.group(&group_id);
    let nodes_registered = if deleting {
        registered_nodes(&ctx.client, group, manager_label(&ctx.managers, source)).await?
    } else {
        0
    };
    let uid = pool.uid().unwrap_or_default();
    let Decision {
        action,
        status: mut new_status,
        note,
        mut requeue,
    } = plan::decide(&Observed {
        name: &name,
        uid: &uid,
        generation: pool.metadata.generation.unwrap_or(0),
        spec: &pool.spec,
        status: &status,
        deleting,
        misconfigured: resolved.err(),
        cluster_labels: &ctx.cluster_labels,
        group_id: &group_id,
        deployment: deployment.as_ref(),
        executions: &executions,
        nodes_registered,
        sizes: group.map(|g| (g.current, g.cloudify_target())),
        now: chrono::Utc::now(),
    });
    let was_ready = status.phase == "Ready";
    let mut notes: Vec<Note> = note.into_iter().collect();
    if let Some(l) = &lifecycle {
        carry_out(
            l.as_ref(),
            &action,
            &deployment_id,
            &mut new_status,
            &mut notes,
            &mut requeue,
        )
        .await?;
    }
    write_status(&api, &name, &status, &new_status).await?;
    publish_notes(&ctx.recorder, &pool, &name, notes).await;
    if new_status.phase == "Ready" && !was_ready {
        // CA sees the pool on its next loop, not a refresh interval later.
        ctx.inventory.trigger_refresh();
    }
    if action == Action::RemoveFinalizer {
        let finalizers = pool.finalizers().iter().filter(|f| *f != FINALIZER);
        patch_finalizers(&api, &pool, &name, finalizers.cloned().collect()).await?;
        ctx.inventory.trigger_refresh();
        return Ok(Requeue::await_change());
    }
    Ok(Requeue::requeue(requeue))
}

/// The manager a pool's Nodes are labelled with: only when several managers serve (as in the
/// group's labels).
fn manager_label(managers: &[ManagerEntry], source: usize) -> Option<&str> {
    (managers.len() > 1)
        .then(|| managers.get(source).map(|m| m.name.as_str()))
        .flatten()
}

/// The inventory's id of the pool's group: prefixed with the manager entry's name when more
/// than one manager is configured, as the inventory names every group.
fn pool_group_id(
    managers: &[ManagerEntry],
    source: usize,
    deployment_id: &str,
    scaling_group: &str,
) -> String {
    let prefixed = managers.len() > 1;
    let entry = managers.get(source).map_or("", |m| m.name.as_str());
    crate::inventory::group_id(entry, prefixed, deployment_id, scaling_group)
}

/// Puts our finalizer on the pool before any Cloudify call, so a pool deleted from then on
/// waits for its cleanup. `Some` ends this reconcile: the finalizer was just added (go on at
/// once, with the new resource version) or the pool is going without it (nothing of ours to
/// clean up).
async fn ensure_finalizer(
    api: &Api<CloudifyNodePool>,
    pool: &CloudifyNodePool,
    name: &str,
    deleting: bool,
) -> Result<Option<Requeue>, PoolError> {
    let has_finalizer = pool.finalizers().iter().any(|f| f == FINALIZER);
    if has_finalizer {
        return Ok(None);
    }
    if deleting {
        return Ok(Some(Requeue::await_change()));
    }
    let mut finalizers = pool.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    patch_finalizers(api, pool, name, finalizers).await?;
    Ok(Some(Requeue::requeue(Duration::ZERO)))
}

/// Writes the pool's finalizers, guarded by the resource version it was read at: a pool changed
/// meanwhile fails the patch (a conflict) instead of losing another writer's finalizer.
async fn patch_finalizers(
    api: &Api<CloudifyNodePool>,
    pool: &CloudifyNodePool,
    name: &str,
    finalizers: Vec<String>,
) -> Result<(), PoolError> {
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": pool.resource_version()}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Patches the pool's status when the reconcile changed it: an unchanged one costs no write
/// (and no watch event that would bring the pool back at once).
async fn write_status(
    api: &Api<CloudifyNodePool>,
    name: &str,
    old: &CloudifyNodePoolStatus,
    new: &CloudifyNodePoolStatus,
) -> Result<(), PoolError> {
    if new != old {
        let patch = json!({"status": new});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// The pool's deployment and its executions as Cloudify has them ([`read_with_executions`]: an
/// install ending between the two reads is never started again); nothing when the pool names no
/// configured manager or the deployment does not exist (yet, or any more).
async fn observe_deployment(
    lifecycle: Option<&dyn DeploymentLifecycle>,
    deployment_id: &str,
) -> Result<(Option<DeploymentState>, Vec<Execution>), PoolError> {
    let Some(l) = lifecycle else {
        return Ok((None, Vec::new()));
    };
    Ok(match read_with_executions(l, deployment_id).await? {
        Some((deployment, executions)) => (Some(deployment), executions),
        None => (None, Vec::new()),
    })
}

/// Logs each note and records it as an Event on the pool; an Event that cannot be recorded is
/// only logged (the reconcile's work is done either way).
async fn publish_notes(recorder: &Recorder, pool: &CloudifyNodePool, name: &str, notes: Vec<Note>) {
    let reference = pool.object_ref(&());
    for n in notes {
        tracing::info!(pool = %name, reason = n.reason, "{}", n.message);
        let event = Event {
            type_: if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: n.reason.into(),
            note: Some(n.message),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "pool event not recorded");
        }
    }
}

/// Makes the decided Cloudify call; a refusal the next reconcile can resolve only shortens the
/// requeue, one that needs the user becomes a condition.
async fn carry_out(
    l: &dyn DeploymentLifecycle,
    action: &Action,
    deployment_id: &str,
    status: &mut CloudifyNodePoolStatus,
    notes: &mut Vec<Note>,
    requeue: &mut Duration,
) -> Result<(), PoolError> {
    let now = chrono::Utc::now();
    match action {
        Action::Create(new) => match l.create_deployment(new).await {
            Ok(_) => notes.push(Note {
                warning: false,
                reason: "Created",
                message: format!(
                    "created deployment {} from blueprint {}",
                    new.id, new.blueprint_id
                ),
            }),
            Err(e) => match Refusal::of(&e) {
                Refusal::AlreadyExists => *requeue = Duration::from_secs(1),
                Refusal::NotFound => {
                    *requeue = refused(status, notes, "BlueprintNotFound", e.to_string(), now);
                }
                Refusal::Invalid => {
                    *requeue = refused(status, notes, "InvalidInputs", e.to_string(), now);
                }
                _ => return Err(e.into()),
            },
        },
        Action::Install | Action::Uninstall => {
            let workflow = if *action == Action::Install {
                Workflow::Install
            } else {
                Workflow::Uninstall
            };
            start_lifecycle_workflow(l, workflow, deployment_id, status, notes, requeue).await?;
        }
        Action::Update(inputs) => match l.start_update(deployment_id, inputs).await {
            Ok(u) => {
                status.last_execution = u.execution_id.map(|id| ExecutionRef {
                    id,
                    workflow: "update".into(),
                    status: u.state.clone(),
                    error: None,
                });
            }
            Err(e) if Refusal::of(&e) == Refusal::Invalid => {
                *requeue = refused(status, notes, "InvalidInputs", e.to_string(), now);
            }
            Err(e) => return Err(e.into()),
        },
        Action::Delete => delete_deployment(l, deployment_id, notes).await?,
        Action::RemoveFinalizer | Action::None => {}
    }
    Ok(())
}

/// A refusal only the user can resolve: the pool fails with a condition and a warning, and
/// the next attempt waits out a backoff that grows with the failures in a row. Returns the wait.
fn refused(
    status: &mut CloudifyNodePoolStatus,
    notes: &mut Vec<Note>,
    reason: &'static str,
    message: String,
    now: chrono::DateTime<chrono::Utc>,
) -> Duration {
    let generation = status.observed_generation;
    status.failures = status.failures.saturating_add(1);
    let wait = plan::backoff(status.failures);
    status.retry_after = Some(
        (now + chrono::Duration::from_std(wait).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    plan::set_condition(
        &mut status.conditions,
        "Failed",
        true,
        reason,
        &message,
        generation,
        now,
    );
    status.phase = "Failed".into();
    notes.push(Note {
        warning: true,
        reason,
        message,
    });
    wait
}

/// Queues `install` or `uninstall` and records the execution; a refusal that clears by itself
/// (environment still being created, another execution running, workflow not available yet)
/// only brings the next reconcile closer.
async fn start_lifecycle_workflow(
    l: &dyn DeploymentLifecycle,
    workflow: Workflow,
    deployment_id: &str,
    status: &mut CloudifyNodePoolStatus,
    notes: &mut Vec<Note>,
    requeue: &mut Duration,
) -> Result<(), PoolError> {
    match l.start_workflow(deployment_id, workflow).await {
        Ok(e) => {
            status.last_execution = Some(ExecutionRef {
                id: e.id.clone(),
                workflow: e.workflow_id.clone(),
                status: e.status.as_str().to_owned(),
                error: None,
            });
            notes.push(Note {
                warning: false,
                reason: if workflow == Workflow::Install {
                    "Installing"
                } else {
                    "Uninstalling"
                },
                message: format!("{} {} queued on {deployment_id}", workflow.id(), e.id),
            });
        }
        Err(e) => match Refusal::of(&e) {
            Refusal::EnvironmentNotReady | Refusal::Busy | Refusal::WorkflowUnavailable => {
                *requeue = Duration::from_secs(2);
            }
            _ => return Err(e.into()),
        },
    }
    Ok(())
}

/// Deletes the pool's deployment; one gone already is fine.
async fn delete_deployment(
    l: &dyn DeploymentLifecycle,
    deployment_id: &str,
    notes: &mut Vec<Note>,
) -> Result<(), PoolError> {
    match l.delete_deployment(deployment_id, false).await {
        Ok(()) => notes.push(Note {
            warning: false,
            reason: "Deleted",
            message: format!("deleted deployment {deployment_id}"),
        }),
        // Instances live although the deployment is not installed (a failed install):
        // uninstall first.
        Err(e) if Refusal::of(&e) == Refusal::DependentsExist => {
            if let Err(e) = l.start_workflow(deployment_id, Workflow::Uninstall).await
                && Refusal::of(&e) == Refusal::Other
            {
                return Err(e.into());
            }
        }
        Err(e) if Refusal::of(&e) == Refusal::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Kubernetes Nodes that belong to the pool's group: by provider id, else by node name.
async fn registered_nodes(
    client: &kube::Client,
    group: Option<&crate::inventory::NodeGroup>,
    prefixed_manager: Option<&str>,
) -> Result<usize, PoolError> {
    let Some(group) = group else { return Ok(0) };
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await?;
    Ok(pool_nodes(&list.items, group, prefixed_manager))
}

/// The Nodes of a pool's group: those of its listed instances (by provider id, or by name
/// before the node controller set one) and those carrying the group's labels, which the node
/// controller puts on every Node it initializes. The labels count because a VM that CA scaled
/// away leaves the listing at once while its Node stays registered until its kubelet's silence
/// makes it NotReady and the node controller deletes it; a pool uninstalled in that window is
/// no longer served, and its Node, owned by no group any more, was left behind for good
/// (issue 22, item 5: seen on the real manager, tests/manager/pools-ca.sh).
fn pool_nodes(
    nodes: &[Node],
    group: &crate::inventory::NodeGroup,
    prefixed_manager: Option<&str>,
) -> usize {
    let ids: HashSet<&str> = group
        .instances
        .iter()
        .map(|i| i.provider_id.as_str())
        .collect();
    let names: HashSet<&str> = group
        .instances
        .iter()
        .filter_map(|i| i.node_name.as_deref())
        .collect();
    let labels = crate::nodegroup::template::group_labels(group, prefixed_manager);
    nodes
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .is_some_and(|p| ids.contains(p))
                || n.metadata
                    .name
                    .as_deref()
                    .is_some_and(|m| names.contains(m))
                || n.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|have| labels.iter().all(|(k, v)| have.get(k) == Some(v)))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Node, NodeSpec};
    use kube::api::ObjectMeta;

    use serde_json::json;

    use super::{observe_deployment, plan, pool_nodes};
    use crate::cloudify::Execution;
    use crate::cloudify::deployments::DeploymentState;
    use crate::cloudify::deployments::doubles::EndsBetweenReads;
    use crate::inventory::testkit::group;
    use crate::kube::pools::crd::{CloudifyNodePoolSpec, CloudifyNodePoolStatus};
    use crate::kube::pools::plan::UID_LABEL;

    fn node(name: &str, provider_id: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(provider_id.into()),
                ..NodeSpec::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn a_node_whose_vm_left_the_listing_still_counts_by_the_group_labels() {
        // CA scaled the VM away: the group lists no instance, the Node is still registered.
        let g = group("pool-a", "workers");
        let labels = [
            ("cloudify.co/deployment", "pool-a"),
            ("cloudify.co/scaling-group", "workers"),
        ];
        let nodes = [
            node("w-1", "cloudify://t/pool-a/worker_host_1", &labels),
            node(
                "other",
                "cloudify://t/pool-b/worker_host_2",
                &[
                    ("cloudify.co/deployment", "pool-b"),
                    ("cloudify.co/scaling-group", "workers"),
                ],
            ),
        ];
        assert_eq!(pool_nodes(&nodes, &g, None), 1);
        // With several managers the manager's label must match too.
        assert_eq!(pool_nodes(&nodes, &g, Some("east")), 0);
    }

    fn deployment(installation_status: &str) -> DeploymentState {
        serde_json::from_value(json!({
            "id": "np-a", "blueprint_id": "bp", "installation_status": installation_status,
            "inputs": {"flavor": "m1.small"},
            "labels": [{"key": UID_LABEL, "value": "uid-a"}],
        }))
        .expect("deployment")
    }

    fn install(status: &str) -> Vec<Execution> {
        vec![
            serde_json::from_value(json!({"id": "i1", "workflow_id": "install",
                "status": status, "deployment_id": "np-a"}))
            .expect("execution"),
        ]
    }

    #[tokio::test]
    async fn an_install_ending_between_the_reads_is_not_started_again() {
        // The real manager ends the install between the controller's two GETs: whatever it
        // read first must not make the pool look idle and not installed.
        let manager = EndsBetweenReads::new(
            (deployment("inactive"), install("started")),
            (deployment("active"), install("terminated")),
        );
        let (deployment, executions) = observe_deployment(Some(&manager), "np-a")
            .await
            .expect("read");
        let spec: CloudifyNodePoolSpec = serde_json::from_value(json!({
            "blueprintId": "bp", "minSize": 0, "maxSize": 3, "compute": {"flavor": "m1.small"},
        }))
        .expect("spec");
        let decision = plan::decide(&plan::Observed {
            name: "a",
            uid: "uid-a",
            generation: 1,
            spec: &spec,
            status: &CloudifyNodePoolStatus::default(),
            deleting: false,
            misconfigured: None,
            cluster_labels: &[],
            group_id: "np-a/workers",
            deployment: deployment.as_ref(),
            executions: &executions,
            nodes_registered: 0,
            sizes: None,
            now: chrono::Utc::now(),
        });
        assert_ne!(
            decision.action,
            plan::Action::Install,
            "the install was running: {:?} / {executions:?}",
            deployment.map(|d| d.installation_status)
        );
    }
}
