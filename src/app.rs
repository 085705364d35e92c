//! The composition root: from a validated [`Config`] to a running provider (inventory + refresh
//! loop, domain, gRPC server, HTTP port). Used by `serve`, `demo` and the integration tests; the
//! CLI only parses flags and calls [`start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

mod readiness;
use readiness::{LeaseView, readiness};

use crate::cloudify::deployments::DeploymentLifecycle;
use crate::cloudify::{Cloudify, CloudifyClient, CloudifyError};
use crate::config::Config;
use crate::config::LeaseMode;
use crate::grpc::{Provider, ServeError, ServerHandle};
use crate::inventory::{FetchOptions, Inventory};
use crate::kube::lease::LeaseElection;
use crate::kube::lease::label::{LabelWritten, PodLabelTarget};
use crate::kube::nodes::{LeaderFn, NodeController, always_leader};
use crate::kube::services::ServiceController;
use crate::nodegroup::{NodeGroupService, ServiceSettings};
use crate::observability::http::{HttpConnections, NodesFn, ReadinessFn};
use crate::observability::metrics::Metrics;

/// Starting the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is invalid (the message names the key or flag).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A Cloudify client could not be built.
    #[error("cloudify client: {0}")]
    Cloudify(#[from] CloudifyError),
    /// The gRPC server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Kubernetes credentials are present but unusable (the node controller or leader election
    /// would use them; `--node-controller=false` with `--leader-elect=false` skips them).
    #[error("kubernetes: {0}")]
    Kube(#[from] crate::kube::KubeError),
    /// Leader election was asked for (`lease.enabled: true`) but cannot run.
    #[error("leader election: {0}")]
    Lease(String),
    /// The service controller was asked for (`load_balancers.enabled: true`) but cannot run.
    #[error("load balancers: {0}")]
    LoadBalancers(String),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr} (http): {source}")]
    HttpBind {
        /// The address asked for (`http.listen`, `--http-listen`).
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A running provider.
pub struct App {
    /// The gRPC server; its `addr` is the bound port (the real one when `:0` was asked).
    pub grpc: ServerHandle,
    /// The bound HTTP address (the real port when `:0` was asked).
    pub http_addr: SocketAddr,
    /// The domain service behind the gRPC facade.
    pub service: Arc<NodeGroupService>,
    /// The snapshot store the refresh loop fills, shared by the service and the node controller.
    pub inventory: Arc<Inventory>,
    /// What `/metrics` serves; every layer records into this one registry.
    pub metrics: Arc<Metrics>,
    /// The node controller, when it runs (credentials present, not turned off).
    pub node_controller: Option<Arc<NodeController>>,
    /// The leader election, when a Lease is used (`None`: a sole replica).
    pub election: Option<LeaseElection>,
    /// The service controller (issue 23), when `load_balancers.enabled`.
    pub service_controller: Option<ServiceController>,
    /// The task keeping the leader label on this replica's Pod (`lease.leader_label`).
    leader_label: Option<tokio::task::JoinHandle<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Stops everything. A leader stops mutating and releases its lease first, so the other
    /// replica takes over at once instead of after the lease duration (rolling updates).
    pub async fn shutdown(self) {
        if let Some(e) = self.election {
            e.stop(Duration::from_secs(3)).await;
        }
        // The election's end removes the leader label; wait for that write (bounded), so the
        // Service drops this Pod before the process exits.
        if let Some(t) = self.leader_label
            && tokio::time::timeout(Duration::from_secs(3), t)
                .await
                .is_err()
        {
            tracing::warn!("the leader label could not be removed in time");
        }
        for t in &self.background {
            t.abort();
        }
        if let Some(c) = &self.node_controller {
            c.abort();
        }
        if let Some(c) = &self.service_controller {
            c.abort();
        }
        self.grpc.shutdown().await;
    }
}

/// Starts leader election when the configuration asks for it (or, in `auto`, when Kubernetes
/// credentials are present).
fn election(
    config: &Config,
    client: Option<::kube::Client>,
) -> Result<Option<LeaseElection>, AppError> {
    if config.lease.mode == LeaseMode::Off {
        return Ok(None);
    }
    match (client, config.lease.mode) {
        (Some(client), _) => Ok(Some(crate::kube::lease::start(
            client,
            &config.lease,
            crate::kube::lease::identity(),
        ))),
        (None, LeaseMode::On) => Err(AppError::Lease(
            "lease.enabled is true but no Kubernetes credentials were found (in-cluster service \
             account, KUBECONFIG or ~/.kube/config)"
                .into(),
        )),
        (None, _) => {
            tracing::info!(
                "no Kubernetes credentials: running as the only replica (no leader election)"
            );
            Ok(None)
        }
    }
}

/// Builds the Cloudify clients of the configuration.
pub fn clients(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Vec<Arc<CloudifyClient>>, CloudifyError> {
    config
        .cloudify
        .iter()
        .map(|s| {
            if s.insecure_skip_verify {
                tracing::warn!(manager = %s.name, "TLS verification of the Cloudify manager is DISABLED");
            }
            CloudifyClient::new(s.clone(), Some(Arc::clone(metrics))).map(Arc::new)
        })
        .collect()
}

/// Starts the provider: first refresh in the background (readiness waits for it), periodic
/// refresh, gRPC and HTTP servers, and, when Kubernetes credentials are present, the Lease
/// election and the node controller (which, like the domain, mutates only while this replica
/// leads).
pub async fn start(config: &Config, mut settings: ServiceSettings) -> Result<App, AppError> {
    // One Kubernetes client for the Lease and the node controller, when either may run.
    let kube = if config.node_controller.enabled
        || config.lease.mode != LeaseMode::Off
        || config.load_balancers.enabled
        || config.pools.enabled
    {
        crate::kube::connect().await?
    } else {
        None
    };
    let node_client = kube.clone().filter(|_| config.node_controller.enabled);
    // With the node controller, a Node without a provider id is one it has not initialized yet
    // (at most a refresh interval): CA must not count it as a registered node of its group, or it
    // simulates pods on a tainted Node, finds no room and scales up once more. Left unmatched,
    // CA counts the instance as upcoming until the controller sets the id.
    settings.name_lookup_without_provider_id = node_client.is_none();
    let metrics = Metrics::new();
    let clients = clients(config, &metrics)?;
    let sources: Vec<Arc<dyn Cloudify>> = clients
        .iter()
        .map(|c| Arc::clone(c) as Arc<dyn Cloudify>)
        .collect();
    let inventory = Inventory::with_options(
        sources,
        Arc::new(config.node_groups.clone()),
        Arc::clone(&metrics),
        FetchOptions {
            full_every: config.refresh_full_every,
        },
    );
    let service = NodeGroupService::new(Arc::clone(&inventory), Arc::clone(&metrics), settings);

    let mut background = vec![inventory.spawn_refresh_loop(config.refresh_interval)];
    let kube_for_label = kube.clone();
    let election = election(config, kube)?;
    match &election {
        Some(e) => {
            service.set_leadership(Arc::clone(&e.gate) as Arc<dyn crate::nodegroup::Leadership>);
        }
        None => {
            metrics.leader.set(1);
        }
    }
    let node_controller = node_controller(
        config,
        node_client,
        &inventory,
        &metrics,
        leader_fn(election.as_ref()),
    );
    if let (Some(e), Some(client)) = (&election, kube_for_label.clone()) {
        // Events about groups and failed scale-outs on the Lease (issue 21), from the leader.
        background.push(crate::kube::events::spawn(
            client,
            Arc::clone(&inventory),
            e.namespace.clone(),
            config.lease.name.clone(),
            leader_fn(Some(e)),
        ));
    }
    if config.pools.enabled {
        match kube_for_label.clone() {
            Some(client) => {
                // CloudifyNodePools (issue 22): every replica serves them, the leader owns them.
                let managers = config
                    .cloudify
                    .iter()
                    .map(|c| crate::kube::pools::registry::ManagerEntry {
                        name: c.name.clone(),
                        tenant: c.tenant.clone(),
                    })
                    .collect();
                let lifecycles = clients
                    .iter()
                    .map(|c| {
                        Arc::clone(c) as Arc<dyn crate::cloudify::deployments::DeploymentLifecycle>
                    })
                    .collect();
                let (task, registry) = crate::kube::pools::controller::spawn(
                    client,
                    Arc::clone(&inventory),
                    managers,
                    lifecycles,
                    config.pools.cluster_labels.clone(),
                    config.pools.flavors.clone(),
                    leader_fn(election.as_ref()),
                );
                inventory.set_pool_source(registry);
                background.push(task);
            }
            None => tracing::warn!(
                "pools.enabled, but no Kubernetes credentials: CloudifyNodePools are not served"
            ),
        }
    }
    let service_controller = service_controller(
        config,
        kube_for_label.clone(),
        &clients,
        &metrics,
        election.as_ref(),
    )?;
    let (leader_label, label_written) = leader_label(config, kube_for_label, election.as_ref());
    let readiness = readiness(
        Arc::clone(&inventory),
        Arc::clone(&metrics),
        clients,
        election
            .as_ref()
            .map(|e| LeaseView::of(e, &config.lease.name, label_written)),
    );
    let (http_addr, http_task) = serve_http(
        config.http_listen,
        config.http_connections,
        &metrics,
        readiness,
        node_controller.as_ref().map(nodes_fn),
    )
    .await?;
    background.push(http_task);

    let grpc = serve_grpc(config, &service, &metrics).await?;
    if let Some(e) = &election {
        background.push(follow_leadership(
            e.leading.clone(),
            grpc.connection_closer(),
            Arc::clone(&inventory),
            Arc::clone(&metrics),
        ));
    }
    Ok(App {
        grpc,
        http_addr,
        service,
        inventory,
        metrics,
        node_controller,
        election,
        service_controller,
        leader_label,
        background,
    })
}

/// Starts the service controller when `load_balancers.enabled` (an error without Kubernetes
/// credentials: it was asked for and cannot run). It looks at Services only while this replica
/// leads, and at all of them again when it becomes the leader.
fn service_controller(
    config: &Config,
    client: Option<::kube::Client>,
    clients: &[Arc<CloudifyClient>],
    metrics: &Arc<Metrics>,
    election: Option<&LeaseElection>,
) -> Result<Option<ServiceController>, AppError> {
    if !config.load_balancers.enabled {
        return Ok(None);
    }
    let Some(client) = client else {
        return Err(AppError::LoadBalancers(
            "load_balancers.enabled is true but no Kubernetes credentials were found \
             (in-cluster service account, KUBECONFIG or ~/.kube/config)"
                .into(),
        ));
    };
    tracing::info!(
        class = %config.load_balancers.class,
        blueprints = config.load_balancers.blueprints.len(),
        "service controller starting"
    );
    Ok(Some(crate::kube::services::spawn(
        client,
        config.load_balancers.clone(),
        clients
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn DeploymentLifecycle>)
            .collect(),
        config.cloudify.iter().map(|c| c.name.clone()).collect(),
        Arc::clone(metrics),
        leader_fn(election),
        election.map(|e| e.leading.clone()),
    )))
}

/// Binds the gRPC port as the configuration says (address, TLS, connection handling).
async fn serve_grpc(
    config: &Config,
    service: &Arc<NodeGroupService>,
    metrics: &Arc<Metrics>,
) -> Result<ServerHandle, ServeError> {
    crate::grpc::serve(
        config.grpc_listen,
        config.tls.as_ref(),
        config.insecure,
        &config.grpc_connections,
        Provider::new(Arc::clone(service), Arc::clone(metrics)),
    )
    .await
}

/// Starts the task that keeps the leader label on this replica's Pod, when `lease.leader_label`
/// is set, an election runs and the process runs in a Pod (`POD_NAME`). Returns it with the
/// label's key and written state for readiness.
fn leader_label(
    config: &Config,
    client: Option<::kube::Client>,
    election: Option<&LeaseElection>,
) -> (
    Option<tokio::task::JoinHandle<()>>,
    Option<(String, LabelWritten)>,
) {
    let (Some(key), Some(client), Some(e)) =
        (config.lease.leader_label.as_deref(), client, election)
    else {
        return (None, None);
    };
    let fallback = config
        .lease
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let Some(target) = PodLabelTarget::from_env(key, &fallback) else {
        tracing::warn!(
            label = key,
            "lease.leader_label is set but POD_NAME is not (the downward API sets it in a Pod): \
             no Pod is labelled, so a Service selecting the label finds no leader"
        );
        return (None, None);
    };
    let (task, written) = crate::kube::lease::label::spawn(client, target, e.leading.clone());
    (Some(task), Some((key.to_owned(), written)))
}

/// Whether this replica leads now, for the node controller: it writes to the cluster only then,
/// as the domain mutates Cloudify only then, so two replicas never delete or patch the same Node
/// twice. Without an election this replica is the only one.
fn leader_fn(election: Option<&LeaseElection>) -> LeaderFn {
    match election {
        Some(e) => {
            let gate = Arc::clone(&e.gate);
            Arc::new(move || crate::nodegroup::Leadership::check(gate.as_ref()).is_ok())
        }
        None => always_leader(),
    }
}

/// Starts the node controller when it is on and Kubernetes credentials were found, and says in
/// the log which of the two it is not.
fn node_controller(
    config: &Config,
    client: Option<::kube::Client>,
    inventory: &Arc<Inventory>,
    metrics: &Arc<Metrics>,
    is_leader: LeaderFn,
) -> Option<Arc<NodeController>> {
    if !config.node_controller.enabled {
        tracing::info!("node controller turned off (--node-controller=false)");
        return None;
    }
    let Some(client) = client else {
        tracing::info!("no Kubernetes credentials: node controller not started");
        return None;
    };
    tracing::info!(
        max_deletions_per_refresh = config.node_controller.max_deletions_per_refresh,
        min_node_age = ?config.node_controller.min_node_age,
        "node controller starting (Kubernetes credentials found)"
    );
    Some(Arc::new(NodeController::spawn(
        client,
        Arc::clone(inventory),
        config.node_controller.clone(),
        Arc::clone(metrics),
        is_leader,
    )))
}

/// `/nodes` and `/nodes/{name}`: the node controller's reports as JSON.
fn nodes_fn(controller: &Arc<NodeController>) -> NodesFn {
    let reports = controller.reports.clone();
    Arc::new(move |name: Option<&str>| match name {
        Some(n) => reports.get(n).and_then(|r| serde_json::to_value(r).ok()),
        None => serde_json::to_value(reports.all()).ok(),
    })
}

/// Binds the HTTP port (`/healthz`, `/readyz`, `/metrics`, `/nodes`) and serves it in the
/// background.
async fn serve_http(
    addr: SocketAddr,
    connections: HttpConnections,
    metrics: &Arc<Metrics>,
    readiness: ReadinessFn,
    nodes: Option<NodesFn>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AppError> {
    let (bound, server) =
        crate::observability::http::bind(addr, connections, Arc::clone(metrics), readiness, nodes)
            .await
            .map_err(|source| AppError::HttpBind { addr, source })?;
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(addr = %bound, "HTTP server listening (/healthz /readyz /metrics)");
    Ok((bound, task))
}

/// Follows this replica's leadership: on losing it, closes CA's long-lived HTTP/2 connections so
/// CA reconnects, through the Service, to the new leader; on gaining it, refreshes at once to
/// catch up with what the previous leader did before the first mutation needs it (the domain
/// would refresh then anyway).
fn follow_leadership(
    mut leading: watch::Receiver<bool>,
    close_connections: impl Fn() + Send + 'static,
    inventory: Arc<Inventory>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    // Read here, not in the task: a change between this call and the task's first poll would
    // otherwise be taken for the starting state and never acted on.
    let mut was = *leading.borrow_and_update();
    tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            let now = *leading.borrow_and_update();
            metrics.leader.set(i64::from(now));
            match (was, now) {
                (true, false) => close_connections(),
                (false, true) => inventory.trigger_refresh(),
                _ => {}
            }
            was = now;
        }
    })
}

/// Domain settings from the configuration (GPU label, Refresh max age); the rest default.
pub fn service_settings(config: &Config) -> ServiceSettings {
    ServiceSettings {
        gpu_label: config.gpu_label.clone(),
        refresh_max_age: config.refresh_max_age,
        ..ServiceSettings::default()
    }
}

/// Waits up to `limit` for the first complete snapshot; false when it did not come in time.
pub async fn wait_ready(inventory: &Inventory, limit: Duration) -> bool {
    tokio::time::timeout(limit, inventory.wait_ready())
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::cloudify::fake::FakeCloudify;

    fn inventory(metrics: &Arc<Metrics>) -> Arc<Inventory> {
        let fake: Arc<dyn Cloudify> = Arc::new(FakeCloudify::new("fake", "t"));
        let config = crate::inventory::testkit::config("cloudify: [{url: \"http://fake\"}]");
        Inventory::new(
            vec![fake],
            Arc::new(config.node_groups),
            Arc::clone(metrics),
        )
    }

    #[test]
    fn a_sole_replica_may_write_nodes() {
        assert!(
            leader_fn(None)(),
            "no election: the node controller may write"
        );
    }

    #[tokio::test]
    async fn losing_the_lead_closes_connections_and_gaining_it_records_it() {
        let metrics = Metrics::new();
        let (tx, rx) = watch::channel(true);
        let closed = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&closed);
        let task = follow_leadership(
            rx,
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            inventory(&metrics),
            Arc::clone(&metrics),
        );
        let until = |want_closed: usize, want_leader: i64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            let closed = Arc::clone(&closed);
            let metrics = Arc::clone(&metrics);
            async move {
                while Instant::now() < deadline {
                    if closed.load(Ordering::SeqCst) == want_closed
                        && metrics.leader.get() == want_leader
                    {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                false
            }
        };
        tx.send(false).expect("send");
        assert!(until(1, 0).await, "lost: connections closed, gauge 0");
        tx.send(true).expect("send");
        assert!(until(1, 1).await, "regained: gauge 1, nothing closed");
        drop(tx);
        task.await.expect("ends when the election is gone");
    }
}
