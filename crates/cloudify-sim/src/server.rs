//! Starting and stopping the simulator: builds the [`Shared`] state, binds, serves the routes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::SimError;
use super::scenario::Scenario;
use super::shared::Shared;
use super::state::Model;

/// Starts a simulator in this process ([`Simulator::start`]); the returned
/// [`SimulatorHandle`] keeps it running.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Builds the scenario's state, binds `addr` (port 0 picks a free port) and serves the
    /// REST API until [`SimulatorHandle::shutdown`] (or the handle is dropped).
    pub async fn start(scenario: Scenario, addr: SocketAddr) -> Result<SimulatorHandle, SimError> {
        let timing = scenario.timing;
        let max_request_line = scenario.max_request_line;
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
        let shared = Arc::new(Shared::new(model, timing, stop_rx.clone()));
        let mut app = super::routes::router(shared);
        if let Some(max) = max_request_line {
            app = app.layer(axum::middleware::from_fn(move |req, next| {
                limit_request_line(max, req, next)
            }));
        }
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

/// The length gunicorn compares with its `limit_request_line`: method, space, path and
/// query, space, protocol (no CRLF).
fn request_line_len(method: &str, path_and_query: &str) -> usize {
    method.len() + 1 + path_and_query.len() + " HTTP/1.1".len()
}

/// A manager's gunicorn refuses a request line longer than its limit with 414 and an HTML page
/// (not Cloudify's JSON error body), before the REST service sees the request.
async fn limit_request_line(
    max: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let len = request_line_len(
        req.method().as_str(),
        req.uri().path_and_query().map_or("/", |p| p.as_str()),
    );
    if len <= max {
        return next.run(req).await;
    }
    let body = format!(
        "<html>\n  <head>\n    <title>URI Too Long</title>\n  </head>\n  <body>\n    \
         <h1><p>URI Too Long</p></h1>\n    Request Line is too large ({len} &gt; {max})\n  \
         </body>\n</html>\n"
    );
    (
        axum::http::StatusCode::URI_TOO_LONG,
        [(axum::http::header::CONTENT_TYPE, "text/html")],
        body,
    )
        .into_response()
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

    /// The address the simulator listens on (with the real port when started on port 0).
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

#[cfg(test)]
mod tests {
    use super::request_line_len;

    #[test]
    fn the_request_line_is_measured_as_gunicorn_measures_it() {
        // `GET /api/v3.1/ok HTTP/1.1`
        assert_eq!(request_line_len("GET", "/api/v3.1/ok"), 25);
    }
}
