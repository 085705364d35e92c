//! A typed client for the simulator's control surface (`/_sim/faults`, `/_sim/requests`), so
//! tests, benchmarks and the load test set faults and read request counts through one API
//! instead of each building JSON by hand. It talks HTTP, so it drives an in-process simulator
//! and a `simulator` process alike.

use std::time::Duration;

use crate::{Faults, FaultsPatch, RequestLog};

/// A control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request did not get an answer (connection refused, timeout, unreadable body).
    #[error("{route}: {source}")]
    Http {
        /// `METHOD /path` of the call.
        route: String,
        /// The transport or decoding error.
        #[source]
        source: reqwest::Error,
    },
    /// The simulator answered with an error status (e.g. a patch with `error_rate` above 1).
    #[error("{route}: HTTP {status}: {body}")]
    Status {
        /// `METHOD /path` of the call.
        route: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body (the simulator's `{message, error_code}`).
        body: String,
    },
}

/// The control handle of one simulator, by its base URL (`http://127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct SimControl {
    base: String,
    http: reqwest::Client,
}

impl SimControl {
    /// A handle for the simulator at `base_url` (what [`crate::SimulatorHandle::url`] returns,
    /// or the URL a `simulator` process prints).
    pub fn new(base_url: &str) -> SimControl {
        SimControl {
            base: base_url.trim_end_matches('/').to_owned(),
            // Control calls bypass injected latency (it applies to /api/v3.1 only), so a short
            // timeout only ever trips on a simulator that is gone.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The faults in force now (`GET /_sim/faults`).
    pub async fn faults(&self) -> Result<Faults, ControlError> {
        self.json(self.http.get(self.url("/_sim/faults")), "GET /_sim/faults")
            .await
    }

    /// Merges `patch` into the faults in force and returns the result.
    pub async fn set_faults(&self, patch: &FaultsPatch) -> Result<Faults, ControlError> {
        self.json(
            self.http.post(self.url("/_sim/faults")).json(patch),
            "POST /_sim/faults",
        )
        .await
    }

    /// Removes every fault (`DELETE /_sim/faults`); returns the now empty set.
    pub async fn clear_faults(&self) -> Result<Faults, ControlError> {
        self.json(
            self.http.delete(self.url("/_sim/faults")),
            "DELETE /_sim/faults",
        )
        .await
    }

    /// REST calls counted per templated route since start or the last reset (`/_sim/*` is
    /// never counted).
    pub async fn requests(&self) -> Result<RequestLog, ControlError> {
        self.json(
            self.http.get(self.url("/_sim/requests")),
            "GET /_sim/requests",
        )
        .await
    }

    /// Sets the request counts back to zero.
    pub async fn reset_requests(&self) -> Result<(), ControlError> {
        let route = "DELETE /_sim/requests";
        self.send(self.http.delete(self.url("/_sim/requests")), route)
            .await
            .map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        route: &str,
    ) -> Result<reqwest::Response, ControlError> {
        let http = |source| ControlError::Http {
            route: route.to_owned(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(ControlError::Status {
            route: route.to_owned(),
            status: status.as_u16(),
            body: response.text().await.unwrap_or_default(),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        route: &str,
    ) -> Result<T, ControlError> {
        self.send(request, route)
            .await?
            .json()
            .await
            .map_err(|source| ControlError::Http {
                route: route.to_owned(),
                source,
            })
    }
}
