//! The node controller: the two jobs of a cloud controller manager's node controllers, done from
//! the inventory snapshot the gRPC facade already serves (zero extra Cloudify calls).
//!
//! - **Initialization**: a Node registered by kubelet `--cloud-provider=external` carries the
//!   `node.cloudprovider.kubernetes.io/uninitialized` taint. The controller finds its instance,
//!   sets `spec.providerID`, addresses, the instance-type/region/zone labels and the group
//!   template's labels and taints, then removes the taint ([`plan::plan_init`]).
//! - **Lifecycle**: once per *completed* refresh, a Node that is not Ready and whose instance is
//!   gone is deleted, within the safety rules of [`plan::plan_lifecycle`]; a Node whose VM is
//!   stopped is tainted `shutdown` until it is Ready again.
//!
//! Nodes come from a kube-rs reflector (watch, not polling). The decisions are pure functions in
//! [`plan`]; this module only moves data between the reflector, the inventory and the API server.

mod apply;
pub mod plan;
#[cfg(test)]
mod tests;
mod verdict;

pub use verdict::Verdict;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use serde::Serialize;

use crate::config::NodeControllerConfig;
use crate::inventory::{Inventory, RefreshGeneration, Snapshot};
use crate::observability::metrics::{ActionLabels, Metrics, TaintAction};
use plan::{AbsenceTracker, InitDecision, InventoryView, LifecycleAction};

/// Whether this process may mutate the cluster now (the Lease leader). The default says always;
/// leader election plugs its own answer in, and the controller then only writes while it leads.
pub type LeaderFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// A [`LeaderFn`] for a single replica: always the leader.
pub fn always_leader() -> LeaderFn {
    Arc::new(|| true)
}

/// The controller's view of one Node, for `inspect node` and `GET /nodes/{name}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeReport {
    /// `metadata.name`, the `{name}` of `GET /nodes/{name}`.
    pub node: String,
    /// `spec.providerID` (empty when unset).
    pub provider_id: String,
    /// The matching instance's group, if any.
    pub group: Option<String>,
    /// The matching VM node-instance id, if any.
    pub vm_instance: Option<String>,
    /// Cloudify's state of that instance.
    pub cloudify_state: Option<String>,
    /// Ready condition is True.
    pub ready: bool,
    /// Carries the `uninitialized` taint.
    pub uninitialized: bool,
    /// Carries the `shutdown` taint.
    pub shutdown: bool,
    /// Consecutive complete snapshots its instance was missing from.
    pub absent_snapshots: u32,
    /// What the controller decided last (in words in JSON).
    pub verdict: Verdict,
    /// Refresh generation of the snapshot the verdict was made from.
    pub generation: RefreshGeneration,
}

/// Shared, read-only view of every Node's last verdict.
#[derive(Clone, Default)]
pub struct NodeReports(Arc<RwLock<BTreeMap<String, NodeReport>>>);

impl NodeReports {
    /// One Node's report.
    pub fn get(&self, name: &str) -> Option<NodeReport> {
        self.0.read().ok()?.get(name).cloned()
    }

    /// Every Node's report, by name.
    pub fn all(&self) -> Vec<NodeReport> {
        self.0
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn replace(&self, reports: BTreeMap<String, NodeReport>) {
        if let Ok(mut m) = self.0.write() {
            *m = reports;
        }
    }
}

/// The running node controller: initializes joining Nodes and removes Nodes whose VM is gone.
pub struct NodeController {
    /// Its view of every Node.
    pub reports: NodeReports,
    task: tokio::task::JoinHandle<()>,
}

impl NodeController {
    /// Starts the controller on `client`. It waits for the Node cache to sync and acts on every
    /// Node change (initialization) and every completed refresh (initialization retries and the
    /// lifecycle).
    pub fn spawn(
        client: Client,
        inventory: Arc<Inventory>,
        settings: NodeControllerConfig,
        metrics: Arc<Metrics>,
        is_leader: LeaderFn,
    ) -> NodeController {
        let reports = NodeReports::default();
        let worker = Worker {
            api: Api::all(client.clone()),
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "autoscaler-cloudify-node-controller".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
            managers: inventory
                .sources()
                .iter()
                .map(|s| s.name().to_owned())
                .collect(),
            inventory,
            settings,
            metrics,
            is_leader,
            reports: reports.clone(),
            tracker: AbsenceTracker::default(),
            unmatched: HashMap::new(),
            generation: 0,
            previous_instances: None,
        };
        NodeController {
            reports,
            task: tokio::spawn(worker.run()),
        }
    }

    /// Stops the controller's task at once; a write in progress may be cut short.
    pub fn abort(&self) {
        self.task.abort();
    }
}

struct Worker {
    api: Api<Node>,
    recorder: Recorder,
    managers: Vec<String>,
    inventory: Arc<Inventory>,
    settings: NodeControllerConfig,
    metrics: Arc<Metrics>,
    is_leader: LeaderFn,
    reports: NodeReports,
    tracker: AbsenceTracker,
    /// Last reason an uninitialized Node (by UID) could not be matched: one Event per reason.
    unmatched: HashMap<String, String>,
    generation: RefreshGeneration,
    previous_instances: Option<usize>,
}

/// Age of a Node from its creation timestamp (`None` when it has none).
fn node_age(node: &Node) -> Option<Duration> {
    let created = node.metadata.creation_timestamp.as_ref()?.0.as_second();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(
        now.saturating_sub(u64::try_from(created).ok()?),
    ))
}

impl Worker {
    async fn run(mut self) {
        let (store, writer) = reflector::store::<Node>();
        let changed = Arc::new(tokio::sync::Notify::new());
        let stream = reflector(
            writer,
            watcher(self.api.clone(), watcher::Config::default()).default_backoff(),
        )
        .applied_objects();
        let notify = Arc::clone(&changed);
        let watch_task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => notify.notify_one(),
                    // The watcher retries with backoff by itself; the cache keeps its last state.
                    Err(e) => tracing::warn!(error = %e, "node controller: Node watch failed"),
                }
            }
        });
        if store.wait_until_ready().await.is_err() {
            tracing::error!("node controller: the Node cache never synced; controller stopped");
            return;
        }
        tracing::info!("node controller: Node cache synced");
        let mut refreshes = self.inventory.completed_refreshes();
        loop {
            let nodes = store.state();
            let (generation, snapshot) = refreshes.borrow_and_update().clone();
            let lifecycle = generation != self.generation && snapshot.complete;
            self.pass(&nodes, generation, &snapshot, lifecycle).await;
            tokio::select! {
                r = refreshes.changed() => if r.is_err() { break },
                _ = changed.notified() => {}
            }
        }
        watch_task.abort();
    }

    /// One pass over every cached Node: initialization always, the lifecycle only for a new
    /// completed refresh.
    async fn pass(
        &mut self,
        nodes: &[Arc<Node>],
        generation: RefreshGeneration,
        snapshot: &Snapshot,
        lifecycle: bool,
    ) {
        if !snapshot.complete {
            return; // no inventory yet: nothing can be matched, and nothing may be decided
        }
        let view = InventoryView::new(snapshot, self.inventory.config(), &self.managers);
        let leader = (self.is_leader)();
        let mut verdicts: HashMap<String, Verdict> = HashMap::new();
        let mut unmatched_now = 0i64;
        for node in nodes {
            let name = plan::node_name(node).to_owned();
            match plan::plan_init(node, &view) {
                InitDecision::NotTainted => {}
                InitDecision::Initialize(patch) => {
                    let verdict = if leader {
                        self.initialize(node, patch, &view).await
                    } else {
                        Verdict::WouldInitialize
                    };
                    verdicts.insert(name, verdict);
                }
                InitDecision::Unmatched(reason) => {
                    unmatched_now += 1;
                    if leader {
                        self.report_unmatched(node, &reason).await;
                    }
                    verdicts.insert(name, Verdict::Unmatched(reason));
                }
            }
        }
        self.metrics.node_controller.unmatched.set(unmatched_now);
        // Forget the Event memory of Nodes that are gone, so it does not grow with churn.
        let live: std::collections::HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.uid.as_deref())
            .collect();
        self.unmatched.retain(|uid, _| live.contains(uid.as_str()));

        if lifecycle {
            let refs: Vec<&Node> = nodes.iter().map(Arc::as_ref).collect();
            let plan = plan::plan_lifecycle(
                &refs,
                &view,
                self.previous_instances,
                &self.settings,
                &node_age,
                &mut self.tracker,
            );
            self.generation = generation;
            self.previous_instances = Some(snapshot.instance_count());
            for r in &plan.refused {
                tracing::info!(node = %r.node, reason = %r.reason, "node controller: not deleting");
                verdicts.insert(r.node.clone(), Verdict::NotDeletedYet(r.reason.clone()));
            }
            if !plan.held_back.is_empty() {
                self.metrics
                    .node_controller
                    .held_back
                    .inc_by(plan.held_back.len() as u64);
                tracing::warn!(
                    held_back = plan.held_back.len(),
                    cap = self.settings.max_deletions_per_refresh,
                    nodes = ?plan.held_back,
                    "node controller: deletion cap reached; the other Nodes wait for the next refresh"
                );
                for n in &plan.held_back {
                    verdicts.insert(n.clone(), Verdict::HeldBack);
                }
            }
            for a in plan.actions {
                let Some(node) = nodes.iter().find(|n| plan::node_name(n) == a.node) else {
                    continue;
                };
                let verdict = if leader {
                    self.lifecycle(node, &a.uid, &a.action).await
                } else {
                    Verdict::WouldAct(a.action.clone())
                };
                verdicts.insert(a.node.clone(), verdict);
            }
        }
        self.publish_reports(nodes, &view, verdicts);
    }

    async fn initialize(
        &self,
        node: &Node,
        patch: plan::InitPatch,
        view: &InventoryView<'_>,
    ) -> Verdict {
        let name = plan::node_name(node).to_owned();
        match apply::initialize(&self.api, node, patch, view).await {
            Ok(done) => {
                self.metrics.node_controller.initialized.inc();
                tracing::info!(
                    node = %name, group = %done.group, vm_instance = %done.vm_instance,
                    provider_id = %done.provider_id, "node controller: Node initialized"
                );
                apply::event(
                    &self.recorder,
                    node,
                    apply::Note::normal(
                        "Initialized",
                        format!(
                            "initialized from Cloudify instance {} of {}",
                            done.vm_instance, done.group
                        ),
                    ),
                )
                .await;
                Verdict::Initialized {
                    vm_instance: done.vm_instance,
                    group: done.group,
                }
            }
            Err(e) => {
                self.metrics.node_controller.errors.inc();
                tracing::warn!(node = %name, error = %e, "node controller: initialization failed; retried on the next change");
                Verdict::InitializationFailed(e.to_string())
            }
        }
    }

    async fn report_unmatched(&mut self, node: &Node, reason: &str) {
        let uid = node.metadata.uid.clone().unwrap_or_default();
        if self.unmatched.get(&uid).map(String::as_str) == Some(reason) {
            return;
        }
        self.unmatched.insert(uid, reason.to_owned());
        self.metrics.node_controller.unmatched_events.inc();
        tracing::warn!(node = %plan::node_name(node), %reason, "node controller: Node not initialized");
        apply::event(
            &self.recorder,
            node,
            apply::Note::warning("InstanceNotFound", reason.to_owned()),
        )
        .await;
    }

    async fn lifecycle(&self, node: &Node, uid: &str, action: &LifecycleAction) -> Verdict {
        let name = plan::node_name(node).to_owned();
        let nc = &self.metrics.node_controller;
        match action {
            LifecycleAction::Delete { reason } => {
                apply::event(
                    &self.recorder,
                    node,
                    apply::Note::normal("DeletingNode", format!("Deleting Node {name}: {reason}")),
                )
                .await;
                match apply::delete(&self.api, &name, uid).await {
                    Ok(true) => {
                        nc.deleted.inc();
                        tracing::warn!(node = %name, %reason, "node controller: Node deleted");
                        Verdict::Deleted(reason.clone())
                    }
                    Ok(false) => {
                        tracing::info!(node = %name, "node controller: Node already gone or re-created (UID differs); not deleted");
                        Verdict::AlreadyGone
                    }
                    Err(e) => {
                        nc.errors.inc();
                        tracing::warn!(node = %name, error = %e, "node controller: delete failed");
                        Verdict::DeleteFailed(e.to_string())
                    }
                }
            }
            LifecycleAction::AddShutdownTaint | LifecycleAction::RemoveShutdownTaint => {
                let add = *action == LifecycleAction::AddShutdownTaint;
                match apply::shutdown_taint(&self.api, &name, add).await {
                    Ok(()) => {
                        let action = if add {
                            TaintAction::Added
                        } else {
                            TaintAction::Removed
                        };
                        nc.shutdown_taints
                            .get_or_create(&ActionLabels { action })
                            .inc();
                        tracing::info!(
                            node = %name,
                            "node controller: shutdown taint {}",
                            action.as_str()
                        );
                        Verdict::ShutdownTaint(action)
                    }
                    Err(e) => {
                        nc.errors.inc();
                        tracing::warn!(node = %name, error = %e, "node controller: taint update failed");
                        Verdict::TaintUpdateFailed(e.to_string())
                    }
                }
            }
        }
    }

    fn publish_reports(
        &self,
        nodes: &[Arc<Node>],
        view: &InventoryView<'_>,
        mut verdicts: HashMap<String, Verdict>,
    ) {
        let previous = self.reports.clone();
        let mut out = BTreeMap::new();
        for node in nodes {
            let name = plan::node_name(node).to_owned();
            let found = view.find(node);
            let uid = node.metadata.uid.as_deref().unwrap_or("");
            let verdict = verdicts.remove(&name).unwrap_or_else(|| {
                // Keep the last verdict of a lifecycle pass until something new is decided.
                previous
                    .get(&name)
                    .map(|r| r.verdict)
                    .filter(|_| found.is_none())
                    .unwrap_or_else(|| match found {
                        Some(_) => Verdict::Matched,
                        None if plan::provider_id(node).is_empty() => Verdict::NotManaged,
                        None => Verdict::NoMatchingInstance,
                    })
            });
            out.insert(
                name.clone(),
                NodeReport {
                    node: name,
                    provider_id: plan::provider_id(node).to_owned(),
                    group: found.map(|(g, _, _)| g.id.clone()),
                    vm_instance: found.map(|(_, i, _)| i.vm_instance.clone()),
                    cloudify_state: found.map(|(_, i, _)| i.cloudify_state.clone()),
                    ready: plan::is_ready(node),
                    uninitialized: plan::has_taint(node, plan::UNINITIALIZED_TAINT),
                    shutdown: plan::has_taint(node, plan::SHUTDOWN_TAINT),
                    absent_snapshots: self.tracker.streak(uid),
                    verdict,
                    generation: self.generation,
                },
            );
        }
        self.reports.replace(out);
    }
}
