//! The plain HTTP port: `/healthz` (process alive), `/readyz` (first complete inventory and no
//! authentication problem, with JSON detail), `/metrics` (OpenMetrics text), and, when the node
//! controller runs, `/nodes` and `/nodes/{name}` (its view of each Node, JSON).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::listener::{ConnectionLimits, GuardedListener};
use super::metrics::{Metrics, Port};

/// A client that takes none of an answer's bytes for this long is disconnected: the answers
/// here are small, so only a peer that stopped reading is that slow.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// How the HTTP port treats its connections (`http.*`; issue 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConnections {
    /// A request's headers must arrive within this, also on an idle keep-alive connection
    /// (`http.header_read_timeout`, default 5 s: probes and scrapes send them at once).
    pub header_read_timeout: Duration,
    /// Open connections at most; more are closed at once (`http.max_connections`, default 64:
    /// the kubelet's probes and a scraper or two need a handful).
    pub max_connections: usize,
}

impl Default for HttpConnections {
    fn default() -> Self {
        HttpConnections {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    /// `/readyz` answers 200 when true, else 503 (so the Service sends CA only to a ready leader).
    pub ready: bool,
    /// Details (snapshot age, Cloudify reachability, authentication problem).
    pub detail: serde_json::Value,
}

/// Computes readiness on demand (keeps this module free of inventory types).
pub type ReadinessFn = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// The node controller's view: every Node (`None`) or one by name, as JSON; `None` = unknown.
pub type NodesFn = Arc<dyn Fn(Option<&str>) -> Option<serde_json::Value> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: ReadinessFn,
    nodes: Option<NodesFn>,
}

/// The router (exposed for in-process tests).
pub fn router(metrics: Arc<Metrics>, readiness: ReadinessFn, nodes: Option<NodesFn>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/nodes", get(all_nodes))
        .route("/nodes/{name}", get(one_node))
        .with_state(AppState {
            metrics,
            readiness,
            nodes,
        })
}

fn no_controller() -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "the node controller is not running (no Kubernetes credentials, or --node-controller=false)"
        })),
    )
}

async fn all_nodes(State(s): State<AppState>) -> impl IntoResponse {
    match &s.nodes {
        None => no_controller(),
        Some(f) => (StatusCode::OK, Json(f(None).unwrap_or_default())),
    }
}

async fn one_node(State(s): State<AppState>, Path(name): Path<String>) -> impl IntoResponse {
    match &s.nodes {
        None => no_controller(),
        Some(f) => match f(Some(&name)) {
            Some(v) => (StatusCode::OK, Json(v)),
            None => (
                StatusCode::NOT_FOUND,
                Json(
                    serde_json::json!({"error": format!("the node controller has not seen Node {name:?}")}),
                ),
            ),
        },
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let r = (s.readiness)();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    // Refresh the computed gauge before encoding.
    let _ = (s.readiness)();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Binds and serves until the future is dropped. Returns the bound address and the serving
/// future. HTTP/1.1 only (probes and scrapers speak it), with hyper's header-read timeout, which
/// also closes idle keep-alive connections, and the connection limit of `connections`: axum's own
/// `serve` has neither, so idle and half-sent connections stayed open for ever (issue 20).
pub async fn bind(
    addr: SocketAddr,
    connections: HttpConnections,
    metrics: Arc<Metrics>,
    readiness: ReadinessFn,
    nodes: Option<NodesFn>,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let limits = ConnectionLimits {
        max_connections: connections.max_connections,
        // hyper's header-read timeout covers a silent connection.
        read_idle: None,
        write_stall: Some(WRITE_STALL),
    };
    let listener = GuardedListener::new(listener, limits, Port::Http, Arc::clone(&metrics));
    let app = router(metrics, readiness, nodes);
    Ok((local, async move {
        loop {
            let stream = listener.accept(None).await;
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(connections.header_read_timeout);
            let conn = http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            });
        }
    }))
}
