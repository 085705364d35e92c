//! [`Inventory`]: the store readers are answered from, and the refresh loop that fills it.
//!
//! Concurrency: readers call the [`Store`]'s lock-free reads ([`Inventory::snapshot`],
//! [`Inventory::cloudify_unreachable`]...). Refreshes are single-flight behind a tokio `Mutex`
//! that also guards the per-source caches of the fetch: a caller that asked for a refresh while
//! another was running reuses that result when it started after the request, instead of hitting
//! Cloudify twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::build::build_snapshot;
use super::fetch::{FetchOptions, SourceCache, fetch_source};
use super::pools::PoolSource;
use super::store::{InventoryStatus, RefreshGeneration, Store};
use super::{InventoryError, Snapshot};
use crate::cloudify::{Cloudify, CloudifyError};
use crate::config::NodeGroupsConfig;
use crate::observability::metrics::{GroupLabels, Metrics, RefreshResult, ResultLabels};

/// The inventory of node groups and instances.
pub struct Inventory {
    store: Store,
    sources: Vec<Arc<dyn Cloudify>>,
    /// The configuration plus the pools of the last refresh ([`super::pools`]).
    config: ArcSwap<NodeGroupsConfig>,
    /// The configuration as loaded.
    base_config: Arc<NodeGroupsConfig>,
    /// Pools declared as Kubernetes objects, when the pool controller runs.
    pools: std::sync::OnceLock<Arc<dyn PoolSource>>,
    options: FetchOptions,
    /// Held for the whole of a refresh: one at a time, and the caches of its sources.
    refreshing: tokio::sync::Mutex<Vec<SourceCache>>,
    /// Wakes the refresh loop at once (see [`Inventory::trigger_refresh`]).
    wake: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

impl Inventory {
    /// An inventory serving the empty placeholder until the first refresh, with the default
    /// [`FetchOptions`].
    pub fn new(
        sources: Vec<Arc<dyn Cloudify>>,
        config: Arc<NodeGroupsConfig>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Inventory::with_options(sources, config, metrics, FetchOptions::default())
    }

    /// [`new`](Self::new) with how the refresh reads (`refresh.full_every`).
    pub fn with_options(
        sources: Vec<Arc<dyn Cloudify>>,
        config: Arc<NodeGroupsConfig>,
        metrics: Arc<Metrics>,
        options: FetchOptions,
    ) -> Arc<Self> {
        let caches = vec![SourceCache::default(); sources.len()];
        Arc::new(Inventory {
            store: Store::new(),
            sources,
            config: ArcSwap::new(Arc::clone(&config)),
            base_config: config,
            pools: std::sync::OnceLock::new(),
            options,
            refreshing: tokio::sync::Mutex::new(caches),
            wake: tokio::sync::Notify::new(),
            metrics,
        })
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.store.snapshot()
    }

    /// A cheaper borrow of the current snapshot for short reads on the hot path.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.store.peek()
    }

    /// The completed refreshes: generation number and the snapshot it swapped in (generation 0 is
    /// the empty placeholder). Read-only; the node controller waits on it.
    pub fn completed_refreshes(
        &self,
    ) -> tokio::sync::watch::Receiver<(RefreshGeneration, Arc<Snapshot>)> {
        self.store.completed_refreshes()
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
        self.store.is_ready()
    }

    /// Waits until the first complete snapshot is loaded.
    pub async fn wait_ready(&self) {
        self.store.wait_ready().await;
    }

    /// True while the last refresh failed (Cloudify unreachable, refusing us, or answering
    /// nonsense): the snapshot served is the last good one and no scale can be started.
    /// Lock-free (an atomic load): `NodeGroupForNode` asks it on every call.
    pub fn cloudify_unreachable(&self) -> bool {
        self.store.cloudify_unreachable()
    }

    /// Health summary for `/readyz`: readiness, snapshot age and size, the last refresh error.
    pub fn status(&self) -> InventoryStatus {
        self.store.status()
    }

    /// Refreshes now, unless a refresh that started after this call already completed.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, InventoryError> {
        let requested = Instant::now();
        let mut caches = self.refreshing.lock().await;
        let snap = self.snapshot();
        if snap.complete && snap.fetched_at >= requested {
            return Ok(snap);
        }
        let started = Instant::now();
        let result =
            super::changes::with_progress(!snap.complete, self.fetch_and_build(&caches)).await;
        self.metrics
            .refresh_duration
            .observe(started.elapsed().as_secs_f64());
        let label = |result: RefreshResult| ResultLabels { result };
        match result {
            Ok((snap, next)) => {
                *caches = next;
                let snap = Arc::new(snap);
                let (previous, was_failing) = self.store.publish(&snap);
                log_new_failures(&previous, &snap);
                super::report_snapshot_problems(&previous, &snap, &self.metrics);
                super::changes::log_group_changes(&previous, &snap, &self.config());
                self.metrics
                    .refreshes
                    .get_or_create(&label(RefreshResult::Ok))
                    .inc();
                self.publish_gauges(&snap);
                if was_failing {
                    tracing::info!("refresh from Cloudify works again");
                }
                Ok(snap)
            }
            Err(e) => {
                let result = if e.is_inconsistency() {
                    RefreshResult::Inconsistent
                } else {
                    RefreshResult::Error
                };
                self.metrics.refreshes.get_or_create(&label(result)).inc();
                tracing::warn!(error = %e, "inventory refresh failed; serving the previous snapshot");
                self.store.fail(
                    e.to_string(),
                    e.cloudify().is_some_and(CloudifyError::is_auth),
                );
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

    /// Every source's fetch (concurrently), then one snapshot of them all, and the sources'
    /// next caches.
    async fn fetch_and_build(
        &self,
        caches: &[SourceCache],
    ) -> Result<(Snapshot, Vec<SourceCache>), InventoryError> {
        let config = self.effective_config();
        let fetched_at = Instant::now();
        let fetched_at_wall = SystemTime::now();
        let empty = SourceCache::default();
        let fetches = self.sources.iter().enumerate().map(|(i, c)| {
            let cache = caches.get(i).unwrap_or(&empty);
            fetch_source(i, c.as_ref(), &config, cache, self.options)
        });
        let fetched = futures::future::try_join_all(fetches).await?;
        let (data, next): (Vec<_>, Vec<_>) = fetched.into_iter().map(|f| (f.data, f.cache)).unzip();
        let snapshot = build_snapshot(
            fetched_at,
            fetched_at_wall,
            &data,
            &config,
            self.sources.len() > 1,
        );
        Ok((snapshot, next))
    }
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
