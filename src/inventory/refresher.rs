//! [`Inventory`]: holds the current snapshot behind an `ArcSwap` and refreshes it from Cloudify.
//!
//! Concurrency: readers call [`Inventory::snapshot`] (a lock-free atomic load). Refreshes are
//! single-flight behind a tokio `Mutex`: a caller that asked for a refresh while another was running
//! reuses that result when it started after the request, instead of hitting Cloudify twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::Snapshot;
use super::build::{SourceData, build_snapshot};
use super::pools::PoolSource;
use crate::cloudify::models::ACTIVE_STATUSES;
use crate::cloudify::{
    Cloudify, CloudifyError, Deployment, DeploymentModification, Execution, ExecutionStatus, Node,
    NodeInstance,
};
use crate::config::NodeGroupsConfig;
use crate::observability::metrics::{GroupLabels, Metrics, RefreshResult, ResultLabels};

/// A refresh that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A Cloudify call failed.
    #[error("refresh from Cloudify {manager:?} failed: {source}")]
    Cloudify {
        /// The `cloudify[].name` of the entry whose call failed.
        manager: String,
        /// The failed call.
        #[source]
        source: CloudifyError,
    },
    /// Scales kept starting or ending while the inventory was read, so no pass gave a view in
    /// which each one is counted exactly once; the previous snapshot stays.
    #[error(
        "refresh from Cloudify {manager:?}: scale executions moved during each of {attempts} passes"
    )]
    Unsettled {
        /// The `cloudify[].name` of the entry that would not settle.
        manager: String,
        /// Passes read before giving up (`COLLECT_ATTEMPTS`).
        attempts: u32,
    },
}

impl InventoryError {
    /// The Cloudify error underneath, if a call failed.
    pub fn cloudify(&self) -> Option<&CloudifyError> {
        match self {
            InventoryError::Cloudify { source, .. } => Some(source),
            InventoryError::Unsettled { .. } => None,
        }
    }
}

/// Health of the inventory, for `/readyz` and logs.
#[derive(Debug, Clone)]
pub struct InventoryStatus {
    /// A complete snapshot has been loaded.
    pub ready: bool,
    /// Age of the served snapshot.
    pub snapshot_age: Duration,
    /// The last refresh failed with this error (cleared by a success).
    pub last_error: Option<String>,
    /// The last refresh failed on authentication.
    pub auth_problem: bool,
    /// Groups in the snapshot.
    pub groups: usize,
    /// Instances in the snapshot.
    pub instances: usize,
}

/// How many refreshes have completed (read every manager and every page) and been swapped in.
/// The node controller acts once per new generation: a failed refresh leaves it unchanged, so an
/// outage of the manager never looks like instances going away.
pub type RefreshGeneration = u64;

/// The inventory of node groups and instances.
pub struct Inventory {
    current: ArcSwap<Snapshot>,
    sources: Vec<Arc<dyn Cloudify>>,
    /// The configuration plus the pools of the last refresh ([`super::pools`]).
    config: ArcSwap<NodeGroupsConfig>,
    /// The configuration as loaded.
    base_config: Arc<NodeGroupsConfig>,
    /// Pools declared as Kubernetes objects, when the pool controller runs.
    pools: std::sync::OnceLock<Arc<dyn PoolSource>>,
    refresh_lock: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<(String, bool)>>,
    ready: tokio::sync::watch::Sender<bool>,
    generation: tokio::sync::watch::Sender<(RefreshGeneration, Arc<Snapshot>)>,
    /// Wakes the refresh loop at once (see [`Inventory::trigger_refresh`]).
    wake: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

impl Inventory {
    /// An inventory serving the empty placeholder until the first refresh.
    pub fn new(
        sources: Vec<Arc<dyn Cloudify>>,
        config: Arc<NodeGroupsConfig>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let empty = Arc::new(Snapshot::empty());
        Arc::new(Inventory {
            current: ArcSwap::new(Arc::clone(&empty)),
            generation: tokio::sync::watch::channel((0, empty)).0,
            sources,
            config: ArcSwap::new(Arc::clone(&config)),
            base_config: config,
            pools: std::sync::OnceLock::new(),
            refresh_lock: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            ready: tokio::sync::watch::channel(false).0,
            wake: tokio::sync::Notify::new(),
            metrics,
        })
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A cheaper borrow of the current snapshot for short reads on the hot path.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The completed refreshes: generation number and the snapshot it swapped in (generation 0 is
    /// the empty placeholder). Read-only; the node controller waits on it.
    pub fn completed_refreshes(
        &self,
    ) -> tokio::sync::watch::Receiver<(RefreshGeneration, Arc<Snapshot>)> {
        self.generation.subscribe()
    }

    /// One client per `cloudify[]` entry, in configuration order
    /// ([`NodeGroup::source`](super::NodeGroup::source) indexes it).
    pub fn sources(&self) -> &[Arc<dyn Cloudify>] {
        &self.sources
    }

    /// The node-group configuration, with the pools of the last refresh.
    pub fn config(&self) -> Arc<NodeGroupsConfig> {
        self.config.load_full()
    }

    /// Serves the pools of `source` as node groups from the next refresh on (once; a second
    /// source is ignored).
    pub fn set_pool_source(&self, source: Arc<dyn PoolSource>) {
        if self.pools.set(source).is_err() {
            tracing::warn!("a pool source is already set");
        }
    }

    /// The configuration this refresh works with: the loaded one plus the pools now declared.
    fn effective_config(&self) -> Arc<NodeGroupsConfig> {
        let Some(source) = self.pools.get() else {
            return Arc::clone(&self.base_config);
        };
        let prefixed = self.sources.len() > 1;
        let names: Vec<String> = self.sources.iter().map(|c| c.name().to_owned()).collect();
        let config = super::pools::with_pools(&self.base_config, &source.pools(), |p| {
            let entry = names.get(p.source).map_or("", String::as_str);
            super::build::group_id(entry, prefixed, &p.deployment, &p.group)
        });
        let config = Arc::new(config);
        self.config.store(Arc::clone(&config));
        config
    }

    /// True once a complete snapshot is loaded.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first complete snapshot is loaded.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// True while the last refresh failed (Cloudify unreachable, or refusing us): the snapshot
    /// served is the last good one and no scale can be started.
    pub fn cloudify_unreachable(&self) -> bool {
        self.last_error.lock().map(|e| e.is_some()).unwrap_or(false)
    }

    /// Health summary for `/readyz`: readiness, snapshot age and size, the last refresh error.
    pub fn status(&self) -> InventoryStatus {
        let snap = self.peek();
        let (last_error, auth_problem) = match self.last_error.lock() {
            Ok(g) => match g.as_ref() {
                Some((e, auth)) => (Some(e.clone()), *auth),
                None => (None, false),
            },
            Err(_) => (None, false),
        };
        InventoryStatus {
            ready: self.is_ready(),
            snapshot_age: snap.fetched_at.elapsed(),
            last_error,
            auth_problem,
            groups: snap.groups.len(),
            instances: snap.instance_count(),
        }
    }

    /// Refreshes now, unless a refresh that started after this call already completed.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, InventoryError> {
        let requested = Instant::now();
        let _guard = self.refresh_lock.lock().await;
        let snap = self.snapshot();
        if snap.complete && snap.fetched_at >= requested {
            return Ok(snap);
        }
        let started = Instant::now();
        let result = super::changes::with_progress(!snap.complete, self.fetch_and_build()).await;
        self.metrics
            .refresh_duration
            .observe(started.elapsed().as_secs_f64());
        let label = |result: RefreshResult| ResultLabels { result };
        match result {
            Ok(snap) => {
                let snap = Arc::new(snap);
                let previous = self.current.swap(snap.clone());
                self.generation.send_modify(|(n, s)| {
                    *n += 1;
                    *s = Arc::clone(&snap);
                });
                log_new_failures(&previous, &snap);
                super::report_snapshot_problems(&previous, &snap, &self.metrics);
                super::changes::log_group_changes(&previous, &snap, &self.config());
                self.metrics
                    .refreshes
                    .get_or_create(&label(RefreshResult::Ok))
                    .inc();
                self.publish_gauges(&snap);
                if let Ok(mut e) = self.last_error.lock()
                    && e.take().is_some()
                {
                    tracing::info!("refresh from Cloudify works again");
                }
                self.ready.send_replace(true);
                Ok(snap)
            }
            Err(e) => {
                self.metrics
                    .refreshes
                    .get_or_create(&label(RefreshResult::Error))
                    .inc();
                tracing::warn!(error = %e, "inventory refresh failed; serving the previous snapshot");
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some((
                        e.to_string(),
                        e.cloudify().is_some_and(CloudifyError::is_auth),
                    ));
                }
                Err(e)
            }
        }
    }

    /// Refreshes when the snapshot is older than `max_age` (or not complete).
    pub async fn refresh_if_older(&self, max_age: Duration) -> Result<(), InventoryError> {
        let snap = self.peek();
        if snap.complete && snap.fetched_at.elapsed() <= max_age {
            return Ok(());
        }
        drop(snap);
        self.refresh().await.map(|_| ())
    }

    /// Asks the refresh loop for a refresh now, without waiting for it (issue #13: after an
    /// accepted mutation, after a scale execution ends, and from a Refresh RPC that found the
    /// snapshot old). Requests made while a refresh runs coalesce into one more refresh, so a
    /// burst of triggers costs at most two refreshes; with no loop running it does nothing.
    pub fn trigger_refresh(&self) {
        // `notify_one` stores a permit when the loop is busy refreshing: the request is not lost.
        self.wake.notify_one();
    }

    /// Runs the periodic refresh until the returned task is aborted: every `interval`, and at once
    /// when [`trigger_refresh`](Self::trigger_refresh) is called.
    pub fn spawn_refresh_loop(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let inv = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let triggered = tokio::select! {
                    _ = tick.tick() => false,
                    () = inv.wake.notified() => true,
                };
                // Errors are logged and kept for /readyz inside refresh(). A triggered refresh
                // always fetches (the trigger means "Cloudify changed"); a periodic one skips
                // when a triggered one just ran.
                let _ = if triggered {
                    inv.refresh().await.map(|_| ())
                } else {
                    inv.refresh_if_older(interval / 2).await
                };
            }
        })
    }

    fn publish_gauges(&self, snap: &Snapshot) {
        let m = &self.metrics;
        m.instances
            .set(i64::try_from(snap.instance_count()).unwrap_or(i64::MAX));
        m.groups
            .set(i64::try_from(snap.groups.len()).unwrap_or(i64::MAX));
        m.snapshot_age.set(0.0);
        m.ready.set(1);
        for g in &snap.groups {
            if g.planned > g.max || g.cloudify_target() > g.max {
                // This provider checks every increase against max, so something else scaled
                // the group: report the truth to CA, and say so.
                tracing::warn!(
                    group = %g.id, planned = g.planned, target = g.cloudify_target(), max = g.max,
                    "node group is above its max size: a scale outside this provider went past it"
                );
            }
            m.target_size
                .get_or_create(&GroupLabels {
                    group: g.id.clone(),
                })
                .set(i64::from(g.cloudify_target()));
        }
    }

    async fn fetch_and_build(&self) -> Result<Snapshot, InventoryError> {
        let config = self.effective_config();
        let fetched_at = Instant::now();
        let fetched_at_wall = SystemTime::now();
        let fetches = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, c)| fetch_source(i, c.as_ref(), &config));
        let data = futures::future::try_join_all(fetches).await?;
        Ok(build_snapshot(
            fetched_at,
            fetched_at_wall,
            &data,
            &config,
            self.sources.len() > 1,
        ))
    }
}

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
        let statuses = |list: &[Execution]| -> HashMap<String, ExecutionStatus> {
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
    let mut modifications = c
        .deployment_modifications(deployment_ids, "started")
        .await?;
    let ended = ended_modifications(c, &executions, &modifications).await?;
    modifications.extend(ended);
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

/// One source's REST calls: the discovery searches (one per rule), then collect passes of
/// executions, started modifications (and the ended ones of executions still `started`),
/// deployments, nodes, one call per 1000 VM instances and
/// the executions again, repeated (at most [`COLLECT_ATTEMPTS`] times) while a scale moved
/// during the pass; then the refresh fails and the previous snapshot stays.
async fn fetch_source(
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
        if e.status.is_active() {
            active.push(e);
        } else if e.status == ExecutionStatus::Failed {
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

/// Logs each failed scale-out once, with Cloudify's whole error text (often a Python traceback);
/// CA only gets its last line (see the node-group domain).
fn log_new_failures(previous: &Snapshot, current: &Snapshot) {
    let seen: HashSet<&str> = previous
        .groups
        .iter()
        .flat_map(|g| g.failed.iter().map(|f| f.execution_id.as_str()))
        .collect();
    for g in &current.groups {
        for f in g
            .failed
            .iter()
            .filter(|f| !seen.contains(f.execution_id.as_str()))
        {
            tracing::warn!(
                group = %g.id,
                execution = %f.execution_id,
                missing = f.synthetic_ids.len(),
                error = %f.error,
                "Cloudify scale execution failed"
            );
        }
    }
}
