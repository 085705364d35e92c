//! The reqwest implementation of [`Cloudify`].
//!
//! Every call has a timeout; reads (GETs and the idempotent search POST) are retried with
//! exponential backoff on transport errors and 5xx answers; writes are never retried (a retried
//! `POST /executions` could scale twice). After a 401 the client refuses to call Cloudify for a
//! growing back-off period, because Cloudify locks an account after 4 failed logins.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::CloudifyError;
use super::models::ErrorBody;
use crate::observability::metrics::{Answer, CloudifyLabels, Metrics, RouteLabels};

/// Read attempts (first try included).
const READ_ATTEMPTS: u32 = 3;

/// Whether a call may be retried: the read-versus-write policy of every Cloudify call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    /// Changes nothing (GETs, the search POST): retried with back-off on transport errors, 5xx
    /// and 429.
    Read,
    /// Changes something (`POST /executions`, a cancel): sent once, never retried, since a
    /// retried scale could scale twice.
    Write,
}

impl CallKind {
    fn attempts(self) -> u32 {
        match self {
            CallKind::Read => READ_ATTEMPTS,
            CallKind::Write => 1,
        }
    }
}
/// First retry delay; doubles each attempt.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// First back-off after a 401; doubles on each further 401, up to [`AUTH_BACKOFF_MAX`].
const AUTH_BACKOFF_START: Duration = Duration::from_secs(60);
/// Longest back-off after repeated 401s.
const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// Default cap on one answer's body (`cloudify[].max_response_size`): a page of 1,000 node
/// instances with their runtime properties, several times over, and far below the chart's 256Mi
/// memory limit (issue 20: a 300 MiB answer took the process to 318 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Basic`.
    Basic {
        /// `cloudify[].username` (default `admin`).
        username: String,
        /// Password (never logged).
        password: String,
    },
    /// `Authentication-Token`, from `token_env` or `token_file`; preferred over a password.
    Token(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// Settings of one manager/tenant connection.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Entry name (`cloudify[].name`, default `main`, then `cloudify<i>`): the prefix of group
    /// ids when several entries are configured.
    pub name: String,
    /// Manager URL, e.g. `https://cfy.example:443` (the client appends `/api/v3.1`).
    pub url: String,
    /// The `Tenant` header of every call (default `default_tenant`).
    pub tenant: String,
    /// Sent on every call; a 401 starts the back-off instead of retrying.
    pub auth: Auth,
    /// PEM of the CA that signed the manager certificate (trusted exclusively when set).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Skip certificate verification (loudly warned about at start).
    pub insecure_skip_verify: bool,
    /// Timeout of every request (`request_timeout`, default 10 s, never zero).
    pub request_timeout: Duration,
    /// The largest answer body read (`max_response_size`, default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]): the body is read as a stream and the call fails once it
    /// passes this, so a hostile or broken manager cannot take the process's memory.
    pub max_response_bytes: u64,
}

#[derive(Default)]
struct AuthState {
    failures: u32,
    until: Option<Instant>,
    message: String,
}

/// Cloudify REST client over reqwest.
pub struct CloudifyClient {
    http: reqwest::Client,
    api: String,
    pub(super) settings: ClientSettings,
    auth_header: (&'static str, String),
    auth_state: Mutex<AuthState>,
    metrics: Option<Arc<Metrics>>,
}

impl CloudifyClient {
    /// Builds a client; fails on an unusable CA certificate or URL.
    pub fn new(
        settings: ClientSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, CloudifyError> {
        let url = url::Url::parse(&settings.url)
            .map_err(|e| CloudifyError::Settings(format!("url {:?}: {e}", settings.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CloudifyError::Settings(format!(
                "url {:?}: scheme must be http or https",
                settings.url
            )));
        }
        let mut builder = reqwest::Client::builder()
            // Never follow a redirect (issue 20): reqwest drops `Authorization` when a redirect
            // leaves the origin, but not Cloudify's `Authentication-Token`, and a 307 would send a
            // scale POST to wherever the answer points. Cloudify's REST API does not redirect, so
            // a 3xx means a wrong `url` (http on an https manager) or something in between.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)));
        if let Some(pem) = &settings.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| CloudifyError::Settings(format!("CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(CloudifyError::Settings(
                    "CA certificate: no certificate in PEM".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        if settings.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| CloudifyError::Settings(format!("HTTP client: {e}")))?;
        let auth_header = match &settings.auth {
            Auth::Basic { username, password } => (
                "Authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                ),
            ),
            Auth::Token(t) => ("Authentication-Token", t.clone()),
        };
        let api = format!("{}/api/v3.1", settings.url.trim_end_matches('/'));
        Ok(CloudifyClient {
            http,
            api,
            settings,
            auth_header,
            auth_state: Mutex::new(AuthState::default()),
            metrics,
        })
    }

    /// The last authentication problem, if the client is backing off after a 401.
    pub fn auth_problem(&self) -> Option<String> {
        let st = self.auth_state.lock().ok()?;
        st.until
            .filter(|u| *u > Instant::now())
            .map(|_| st.message.clone())
    }

    /// How many 401 answers this client got since its last accepted call: each one is a failed
    /// login that counts towards Cloudify's account lock (`check` reports it, issue 21).
    pub fn failed_logins(&self) -> u32 {
        self.auth_state.lock().map(|st| st.failures).unwrap_or(0)
    }

    fn check_auth_backoff(&self) -> Result<(), CloudifyError> {
        let Ok(st) = self.auth_state.lock() else {
            return Ok(());
        };
        if let Some(until) = st.until {
            let now = Instant::now();
            if until > now {
                return Err(CloudifyError::AuthBackoff {
                    remaining: until - now,
                    message: st.message.clone(),
                });
            }
        }
        Ok(())
    }

    fn note_auth(&self, unauthorized: Option<&str>) {
        let Ok(mut st) = self.auth_state.lock() else {
            return;
        };
        match unauthorized {
            None => {
                st.failures = 0;
                st.until = None;
            }
            Some(message) => {
                st.failures = st.failures.saturating_add(1);
                let factor = 2u32.saturating_pow(st.failures.saturating_sub(1).min(8));
                let wait = AUTH_BACKOFF_START
                    .saturating_mul(factor)
                    .min(AUTH_BACKOFF_MAX);
                st.until = Some(Instant::now() + wait);
                st.message = message.to_owned();
                tracing::error!(
                    manager = %self.settings.name,
                    failures = st.failures,
                    backoff = ?wait,
                    "Cloudify rejected the credentials; not calling it again before the back-off ends \
                     (Cloudify locks an account after 4 failed logins)"
                );
            }
        }
    }

    pub(super) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.api, path))
            .header("Tenant", &self.settings.tenant)
            .header(self.auth_header.0, &self.auth_header.1)
    }

    /// Sends one request, records metrics, and decodes success or error bodies.
    pub(super) async fn send<T: DeserializeOwned>(
        &self,
        route: &'static str,
        build: impl Fn() -> RequestBuilder,
        kind: CallKind,
    ) -> Result<T, CloudifyError> {
        let attempts = kind.attempts();
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(RETRY_BASE * 2u32.pow(attempt - 1)).await;
            }
            self.check_auth_backoff()?;
            match self.send_once(route, build()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(route, attempt, error = %e, "Cloudify call failed");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| CloudifyError::Settings("no attempt made".into())))
    }

    async fn send_once<T: DeserializeOwned>(
        &self,
        route: &'static str,
        req: RequestBuilder,
    ) -> Result<T, CloudifyError> {
        let started = Instant::now();
        let result = req.send().await;
        let status = match &result {
            Ok(r) => Answer::Status(r.status().as_u16()),
            Err(_) => Answer::None,
        };
        if let Some(m) = &self.metrics {
            m.cloudify_requests
                .get_or_create(&CloudifyLabels { route, status })
                .inc();
            m.cloudify_duration
                .get_or_create(&RouteLabels { route })
                .observe(started.elapsed().as_secs_f64());
        }
        let resp = result.map_err(|e| self.transport_error(route, e))?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if status.is_redirection() {
            return Err(redirect(route, &resp));
        }
        let body = self.read_body(route, resp).await?;
        if status.is_success() {
            self.note_auth(None);
            // 204 No Content (`DELETE /deployments/{id}`) has no body: it reads as JSON `null`.
            let body: &[u8] = if body.is_empty() { b"null" } else { &body };
            return serde_json::from_slice(body).map_err(|source| CloudifyError::Decode {
                route: route.to_owned(),
                source,
            });
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let message = parsed
            .as_ref()
            .and_then(|b| b.message.clone().or_else(|| b.detail.clone()));
        if status == StatusCode::UNAUTHORIZED {
            let message = message.unwrap_or_else(|| "unauthorized".to_owned());
            self.note_auth(Some(&message));
            return Err(CloudifyError::Unauthorized {
                route: route.to_owned(),
                message,
            });
        }
        match parsed {
            Some(b) if b.error_code.is_some() || message.is_some() => Err(CloudifyError::Api {
                route: route.to_owned(),
                status: status.as_u16(),
                code: b.error_code.unwrap_or_default(),
                message: message.unwrap_or_default(),
            }),
            _ => Err(CloudifyError::Http {
                route: route.to_owned(),
                status: status.as_u16(),
                content_type,
                excerpt: excerpt(&body),
            }),
        }
    }

    /// The answer's body, read chunk by chunk and refused once it passes
    /// [`ClientSettings::max_response_bytes`]: only the cap, never the whole answer, is ever held
    /// in memory. A Content-Length above the cap is refused before any of the body is read.
    async fn read_body(
        &self,
        route: &str,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, CloudifyError> {
        let limit = self.settings.max_response_bytes;
        let too_large = || CloudifyError::TooLarge {
            route: route.to_owned(),
            limit,
        };
        let announced = resp.content_length();
        if announced.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let capacity = usize::try_from(announced.unwrap_or(0).min(limit)).unwrap_or(0);
        let mut body = Vec::with_capacity(capacity);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(route, e))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, route: &str, e: reqwest::Error) -> CloudifyError {
        if e.is_timeout() {
            CloudifyError::Timeout {
                route: route.to_owned(),
                timeout: self.settings.request_timeout,
            }
        } else {
            CloudifyError::Transport {
                route: route.to_owned(),
                source: e,
            }
        }
    }
}

/// The error of a redirect, which is never followed: where it pointed, as sent (at most 300
/// characters).
fn redirect(route: &str, resp: &reqwest::Response) -> CloudifyError {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(300)
                .collect()
        })
        .unwrap_or_default();
    CloudifyError::Redirect {
        route: route.to_owned(),
        status: resp.status().as_u16(),
        location,
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(200).collect()
}
