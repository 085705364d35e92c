//! Starting and stopping the simulator, the shared state handed to handlers and workflow
//! tasks, and the middleware that counts requests and injects faults.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::SimError;
use super::faults::{Faults, RequestLog};
use super::scenario::{Scenario, Timing};
use super::state::Model;

/// State shared by every handler and workflow task.
///
/// Each piece sits behind a `std::sync::Mutex`, not a tokio one: every critical section is
/// short, synchronous and never held across an `.await` (handlers render JSON under the lock
/// and serialize after releasing it; workflow tasks lock only between sleeps), which is the
/// case the tokio docs recommend the std mutex for. One mutex for the whole model keeps every
/// request and workflow step atomic, as a manager's database transaction would.
#[derive(Debug)]
pub(crate) struct Shared {
    model: Mutex<Model>,
    faults: Mutex<Faults>,
    requests: Mutex<RequestLog>,
    pub timing: Timing,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The model, locked. A poisoned lock (a panic elsewhere) is recovered rather than
    /// propagated: the simulator must keep answering.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The injected faults, locked.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request counters, locked.
    pub fn requests(&self) -> MutexGuard<'_, RequestLog> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps `ms` (or just yields when 0); false if the simulator is shutting down.
    pub async fn pause(&self, ms: u64) -> bool {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return false;
        }
        if ms == 0 {
            tokio::task::yield_now().await;
            return !*shutdown.borrow();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => !*self.shutdown.borrow(),
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// Waits while `hold_executions` is set; false if the simulator is shutting down.
    pub async fn wait_while_held(&self) -> bool {
        // Polling keeps this free of lost-wakeup races; 10 ms is far below any step time.
        while self.faults().hold_executions {
            if !self.pause(10).await {
                return false;
            }
        }
        !*self.shutdown.borrow()
    }
}

/// Entry point: starts a simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Builds the scenario's state, binds `addr` (port 0 picks a free port) and serves the
    /// REST API until [`SimulatorHandle::shutdown`] (or the handle is dropped).
    pub async fn start(scenario: Scenario, addr: SocketAddr) -> Result<SimulatorHandle, SimError> {
        let timing = scenario.timing;
        // Building 100k+ instances takes a moment; keep it off the async workers.
        let model = tokio::task::spawn_blocking(move || Model::from_scenario(&scenario))
            .await
            .map_err(|e| SimError::Internal(format!("scenario build task failed: {e}")))??;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Io {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| SimError::Io {
            addr: addr.to_string(),
            source,
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            model: Mutex::new(model),
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(RequestLog::default()),
            timing,
            shutdown: stop_rx.clone(),
        });
        let app = super::routes::router(shared);
        let mut stop = stop_rx;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .map_err(|source| SimError::Io {
                    addr: local.to_string(),
                    source,
                })
        });
        tracing::debug!(%local, "Cloudify simulator listening");
        Ok(SimulatorHandle {
            addr: local,
            stop: stop_tx,
            server: Some(server),
        })
    }
}

/// A running simulator. Dropping it stops the server and the workflow tasks.
#[derive(Debug)]
pub struct SimulatorHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<Result<(), SimError>>>,
}

impl SimulatorHandle {
    /// The manager URL, `http://127.0.0.1:PORT` (REST lives under `{url}/api/v3.1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The typed client of this simulator's `/_sim` faults and request counts.
    pub fn control(&self) -> crate::SimControl {
        crate::SimControl::new(&self.url())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (in-flight requests finish) and stops running workflows.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "simulator server error"),
                Err(e) => tracing::warn!(error = %e, "simulator server task failed"),
            }
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Counts every `/api/v3.1` request by method and templated route, then applies the injected
/// faults (latency, maintenance mode, random 500s). `/_sim/*` is neither counted nor faulted.
pub(crate) async fn observe(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/_sim") {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str)
        .to_string();
    shared
        .requests()
        .record(format!("{} {route}", request.method()));
    let faults = shared.faults().clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.down {
        return SimError::MaintenanceMode(
            "Your request was rejected since Cloudify manager is currently under maintenance mode"
                .into(),
        )
        .into_response();
    }
    if faults.error_rate > 0.0 && rand::rng().random::<f64>() < faults.error_rate {
        return SimError::Internal(
            "Internal error occurred in manager REST server (simulated)".into(),
        )
        .into_response();
    }
    next.run(request).await
}
