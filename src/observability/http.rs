//! The plain HTTP port: `/healthz` (process alive), `/readyz` (first complete inventory and no
//! authentication problem, with JSON detail), `/metrics` (OpenMetrics text), and, when the node
//! controller runs, `/nodes` and `/nodes/{name}` (its view of each Node, JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::metrics::Metrics;

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

/// Binds and serves until the future is dropped. Returns the bound address through `bound`.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: ReadinessFn,
    nodes: Option<NodesFn>,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(metrics, readiness, nodes);
    Ok((local, async move { axum::serve(listener, app).await }))
}
