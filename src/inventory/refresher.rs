//! [`Inventory`]: holds the current snapshot behind an `ArcSwap` and refreshes it from Cloudify.
//!
//! Concurrency: readers call [`Inventory::snapshot`] (a lock-free atomic load). Refreshes are
//! single-flight behind a tokio `Mutex`: a caller that asked for a refresh while another was running
//! reuses that result when it started after the request, instead of hitting Cloudify twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::Snapshot;
use super::build::{SourceData, build_snapshot};
use crate::cloudify::models::ACTIVE_STATUSES;
use crate::cloudify::{Cloudify, CloudifyError};
use crate::config::NodeGroupsConfig;
use crate::observability::metrics::{GroupLabels, Metrics, ResultLabels};

/// Failed scale executions fetched per refresh (newest first).
const FAILED_EXECUTIONS_FETCHED: usize = 20;

/// A refresh that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A Cloudify call failed.
    #[error("refresh from Cloudify {manager:?} failed: {source}")]
    Cloudify {
        /// Entry name.
        manager: String,
        /// The failed call.
        #[source]
        source: CloudifyError,
    },
}

impl InventoryError {
    /// The Cloudify error underneath.
    pub fn cloudify(&self) -> &CloudifyError {
        match self {
            InventoryError::Cloudify { source, .. } => source,
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

/// The inventory of node groups and instances.
pub struct Inventory {
    current: ArcSwap<Snapshot>,
    sources: Vec<Arc<dyn Cloudify>>,
    config: Arc<NodeGroupsConfig>,
    refresh_lock: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<(String, bool)>>,
    ready: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Inventory {
    /// An inventory serving the empty placeholder until the first refresh.
    pub fn new(
        sources: Vec<Arc<dyn Cloudify>>,
        config: Arc<NodeGroupsConfig>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Inventory {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            sources,
            config,
            refresh_lock: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            ready: tokio::sync::watch::channel(false).0,
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

    /// The Cloudify entries.
    pub fn sources(&self) -> &[Arc<dyn Cloudify>] {
        &self.sources
    }

    /// The node-group configuration.
    pub fn config(&self) -> &NodeGroupsConfig {
        &self.config
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

    /// Health summary.
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
        let result = self.fetch_and_build().await;
        self.metrics
            .refresh_duration
            .observe(started.elapsed().as_secs_f64());
        let label = |r: &str| ResultLabels { result: r.into() };
        match result {
            Ok(snap) => {
                let snap = Arc::new(snap);
                let previous = self.current.swap(snap.clone());
                log_new_failures(&previous, &snap);
                self.metrics.refreshes.get_or_create(&label("ok")).inc();
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
                self.metrics.refreshes.get_or_create(&label("error")).inc();
                tracing::warn!(error = %e, "inventory refresh failed; serving the previous snapshot");
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some((e.to_string(), e.cloudify().is_auth()));
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

    /// Runs the periodic refresh until the returned task is aborted.
    pub fn spawn_refresh_loop(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let inv = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Errors are logged and kept for /readyz inside refresh().
                let _ = inv.refresh_if_older(interval / 2).await;
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
            m.target_size
                .get_or_create(&GroupLabels {
                    group: g.id.clone(),
                })
                .set(i64::from(g.cloudify_target()));
        }
    }

    async fn fetch_and_build(&self) -> Result<Snapshot, InventoryError> {
        let fetched_at = Instant::now();
        let fetched_at_wall = SystemTime::now();
        let fetches = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, c)| fetch_source(i, c.as_ref(), &self.config));
        let data = futures::future::try_join_all(fetches).await?;
        Ok(build_snapshot(
            fetched_at,
            fetched_at_wall,
            &data,
            &self.config,
            self.sources.len() > 1,
        ))
    }
}

/// One source's REST calls: executions (first, see below), deployments (one per discovery rule
/// plus one for static ids), nodes, and one call per 1000 VM instances.
async fn fetch_source(
    source: usize,
    c: &dyn Cloudify,
    config: &NodeGroupsConfig,
) -> Result<SourceData, InventoryError> {
    let err = |source: CloudifyError| InventoryError::Cloudify {
        manager: c.name().to_owned(),
        source,
    };
    // Executions are read BEFORE the deployments: if a waiting execution starts in between,
    // it is counted twice (waiting delta + planned) for one refresh, never zero times. Counting
    // it zero times would let CA scale up again past what it asked for.
    let active = c
        .scale_executions(&[], &ACTIVE_STATUSES, None)
        .await
        .map_err(err)?;
    let failed = c
        .scale_executions(&[], &["failed"], Some(FAILED_EXECUTIONS_FETCHED))
        .await
        .map_err(err)?;

    let mut discovered = Vec::new();
    for rule in &config.discovery {
        discovered.extend(c.search_deployments(&rule.labels).await.map_err(err)?);
    }
    let static_ids: Vec<String> = {
        let mut seen = HashSet::new();
        config
            .static_groups
            .iter()
            .filter(|s| s.source == source && seen.insert(s.deployment.clone()))
            .map(|s| s.deployment.clone())
            .collect()
    };
    let static_deployments = c.deployments_by_id(&static_ids).await.map_err(err)?;

    let mut deployment_ids: Vec<String> = discovered
        .iter()
        .chain(static_deployments.iter())
        .filter(|d| !d.scaling_groups.is_empty())
        .map(|d| d.id.clone())
        .collect();
    deployment_ids.sort();
    deployment_ids.dedup();
    let nodes = c.nodes(&deployment_ids).await.map_err(err)?;
    let mut compute_ids: Vec<String> = nodes
        .iter()
        .filter(|n| n.is_compute())
        .map(|n| n.id.clone())
        .collect();
    compute_ids.sort();
    compute_ids.dedup();
    let instances = c
        .node_instances(&deployment_ids, &compute_ids)
        .await
        .map_err(err)?;
    Ok(SourceData {
        source,
        name: c.name().to_owned(),
        tenant: c.tenant().to_owned(),
        discovered,
        static_deployments,
        nodes,
        instances,
        active,
        failed,
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
