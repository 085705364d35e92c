//! The composition root: from a validated [`Config`] to a running provider (inventory + refresh
//! loop, domain, gRPC server, HTTP port). Used by `serve`, `demo` and the integration tests; the
//! CLI only parses flags and calls [`start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cloudify::{Cloudify, CloudifyClient, CloudifyError};
use crate::config::Config;
use crate::grpc::{Provider, ServeError, ServerHandle};
use crate::inventory::Inventory;
use crate::kube::nodes::{LeaderFn, NodeController, always_leader};
use crate::nodegroup::{NodeGroupService, ServiceSettings};
use crate::observability::http::{NodesFn, Readiness, ReadinessFn};
use crate::observability::metrics::Metrics;

/// Starting the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A Cloudify client could not be built.
    #[error("cloudify client: {0}")]
    Cloudify(#[from] CloudifyError),
    /// The gRPC server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Kubernetes credentials are present but unusable (`--node-controller=false` skips them).
    #[error("node controller: {0}")]
    Kube(#[from] crate::kube::KubeError),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr} (http): {source}")]
    HttpBind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A running provider.
pub struct App {
    /// The gRPC server.
    pub grpc: ServerHandle,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The domain service.
    pub service: Arc<NodeGroupService>,
    /// The inventory.
    pub inventory: Arc<Inventory>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The node controller, when it runs (credentials present, not turned off).
    pub node_controller: Option<Arc<NodeController>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Stops everything.
    pub async fn shutdown(self) {
        for t in &self.background {
            t.abort();
        }
        if let Some(c) = &self.node_controller {
            c.abort();
        }
        self.grpc.shutdown().await;
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
/// refresh, gRPC and HTTP servers, and the node controller when Kubernetes credentials are
/// present (acting always: a single replica leads).
pub async fn start(config: &Config, settings: ServiceSettings) -> Result<App, AppError> {
    start_with_leader(config, settings, always_leader()).await
}

/// [`start`], with the node controller mutating the cluster only while `is_leader` says so
/// (the hook for Lease leader election).
pub async fn start_with_leader(
    config: &Config,
    settings: ServiceSettings,
    is_leader: LeaderFn,
) -> Result<App, AppError> {
    let metrics = Metrics::new();
    let clients = clients(config, &metrics)?;
    let sources: Vec<Arc<dyn Cloudify>> = clients
        .iter()
        .map(|c| Arc::clone(c) as Arc<dyn Cloudify>)
        .collect();
    let inventory = Inventory::new(
        sources,
        Arc::new(config.node_groups.clone()),
        Arc::clone(&metrics),
    );
    let service = NodeGroupService::new(Arc::clone(&inventory), Arc::clone(&metrics), settings);

    let mut background = vec![inventory.spawn_refresh_loop(config.refresh_interval)];

    let node_controller = if config.node_controller.enabled {
        match crate::kube::connect().await? {
            Some(client) => {
                tracing::info!(
                    max_deletions_per_refresh = config.node_controller.max_deletions_per_refresh,
                    min_node_age = ?config.node_controller.min_node_age,
                    "node controller starting (Kubernetes credentials found)"
                );
                Some(Arc::new(NodeController::spawn(
                    client,
                    Arc::clone(&inventory),
                    config.node_controller.clone(),
                    Arc::clone(&metrics),
                    is_leader,
                )))
            }
            None => {
                tracing::info!("no Kubernetes credentials: node controller not started");
                None
            }
        }
    } else {
        tracing::info!("node controller turned off (--node-controller=false)");
        None
    };
    let nodes: Option<NodesFn> = node_controller.as_ref().map(|c| {
        let reports = c.reports.clone();
        Arc::new(move |name: Option<&str>| match name {
            Some(n) => reports.get(n).and_then(|r| serde_json::to_value(r).ok()),
            None => serde_json::to_value(reports.all()).ok(),
        }) as NodesFn
    });

    let readiness: ReadinessFn = {
        let inventory = Arc::clone(&inventory);
        let metrics = Arc::clone(&metrics);
        let clients = clients.clone();
        Arc::new(move || {
            let st = inventory.status();
            metrics.snapshot_age.set(st.snapshot_age.as_secs_f64());
            let auth: Vec<String> = clients
                .iter()
                .filter_map(|c| c.auth_problem().map(|m| format!("{}: {m}", c.name())))
                .collect();
            Readiness {
                ready: st.ready && auth.is_empty(),
                detail: serde_json::json!({
                    "snapshot_loaded": st.ready,
                    "snapshot_age_seconds": if st.ready { Some(st.snapshot_age.as_secs_f64()) } else { None },
                    "groups": st.groups,
                    "instances": st.instances,
                    "cloudify_reachable": st.last_error.is_none(),
                    "last_refresh_error": st.last_error,
                    "auth_problem": st.auth_problem || !auth.is_empty(),
                    "auth_errors": auth,
                }),
            }
        })
    };
    let (http_addr, http_server) = crate::observability::http::bind(
        config.http_listen,
        Arc::clone(&metrics),
        readiness,
        nodes,
    )
    .await
    .map_err(|source| AppError::HttpBind {
        addr: config.http_listen,
        source,
    })?;
    background.push(tokio::spawn(async move {
        if let Err(e) = http_server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    tracing::info!(addr = %http_addr, "HTTP server listening (/healthz /readyz /metrics)");

    let grpc = crate::grpc::serve(
        config.grpc_listen,
        config.tls.as_ref(),
        config.insecure,
        Provider::new(Arc::clone(&service), Arc::clone(&metrics)),
    )
    .await?;
    Ok(App {
        grpc,
        http_addr,
        service,
        inventory,
        metrics,
        node_controller,
        background,
    })
}

/// Default domain settings for a configuration.
pub fn service_settings(config: &Config) -> ServiceSettings {
    ServiceSettings {
        gpu_label: config.gpu_label.clone(),
        refresh_max_age: config.refresh_max_age,
        ..ServiceSettings::default()
    }
}

/// Waits for the first snapshot, logging progress, up to `limit`.
pub async fn wait_ready(inventory: &Inventory, limit: Duration) -> bool {
    tokio::time::timeout(limit, inventory.wait_ready())
        .await
        .is_ok()
}
