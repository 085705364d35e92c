//! Errors of the Cloudify client.

use std::time::Duration;

/// The error and its causes on one line. reqwest's own text ("error sending request for url
/// ...") hides the reason an operator needs, e.g. `invalid peer certificate: UnknownIssuer` when
/// the configured CA does not match the manager's certificate, or `Connection refused`.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A failed Cloudify REST call.
#[derive(Debug, thiserror::Error)]
pub enum CloudifyError {
    /// No answer: connection refused, reset, DNS, TLS handshake.
    #[error("{route}: cannot reach Cloudify: {}", causes(.source))]
    Transport {
        /// Method and templated path.
        route: String,
        /// The underlying HTTP client error.
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the configured request timeout.
    #[error("{route}: Cloudify did not answer within {timeout:?}")]
    Timeout {
        /// Method and templated path.
        route: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// Cloudify rejected the credentials (HTTP 401). The client now backs off hard, because
    /// Cloudify locks an account after 4 failed logins.
    #[error("{route}: Cloudify rejected the credentials (401): {message}")]
    Unauthorized {
        /// Method and templated path.
        route: String,
        /// Cloudify's message.
        message: String,
    },
    /// A call refused locally during the back-off that follows a 401.
    #[error("not calling Cloudify for {remaining:?} after an authentication failure: {message}")]
    AuthBackoff {
        /// Time left in the back-off.
        remaining: Duration,
        /// The last 401 message.
        message: String,
    },
    /// Cloudify answered with its JSON error body `{message, error_code}`.
    #[error("{route}: Cloudify error {status} {code}: {message}")]
    Api {
        /// Method and templated path.
        route: String,
        /// HTTP status.
        status: u16,
        /// Cloudify `error_code`, e.g. `not_found_error`.
        code: String,
        /// Cloudify `message`.
        message: String,
    },
    /// A non-JSON error answer, e.g. an HTML page from a proxy in front of the manager.
    #[error("{route}: HTTP {status} ({content_type}): {excerpt}")]
    Http {
        /// Method and templated path.
        route: String,
        /// HTTP status.
        status: u16,
        /// The answer's content type.
        content_type: String,
        /// The start of the body.
        excerpt: String,
    },
    /// A success answer whose body could not be decoded.
    #[error("{route}: cannot decode Cloudify's answer: {source}")]
    Decode {
        /// Method and templated path.
        route: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The pages of a list do not add up (issue 20): a page that brings nothing new (a manager
    /// or proxy that ignores `_offset`), or an empty page before the total is reached. The
    /// refresh fails instead of looping for ever or dropping the items past the first page.
    #[error("{route}: the pages of the list make no sense: {problem}")]
    Paging {
        /// Method and templated path.
        route: String,
        /// What did not add up.
        problem: String,
    },
    /// The client could not be built (bad CA certificate, bad URL).
    #[error("invalid Cloudify client settings: {0}")]
    Settings(String),
}

impl CloudifyError {
    /// True when Cloudify could not be reached or is temporarily failing (worth a retry for reads,
    /// `UNAVAILABLE` for callers).
    pub fn is_unavailable(&self) -> bool {
        match self {
            CloudifyError::Transport { .. } | CloudifyError::Timeout { .. } => true,
            CloudifyError::Api { status, .. } | CloudifyError::Http { status, .. } => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }

    /// True for authentication problems (a 401 or the back-off after one).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            CloudifyError::Unauthorized { .. } | CloudifyError::AuthBackoff { .. }
        )
    }

    /// Cloudify's `error_code`, when the answer carried one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CloudifyError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}
