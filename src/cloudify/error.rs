//! Errors of the Cloudify client.

use std::time::Duration;

use crate::observability::error_chain;

/// A byte count as an operator writes it: `16 MiB`, `512 KiB`, `1000 bytes`.
pub fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A failed Cloudify REST call.
#[derive(Debug, thiserror::Error)]
pub enum CloudifyError {
    /// No answer: connection refused, reset, DNS, TLS handshake.
    #[error("{route}: cannot reach Cloudify: {}", error_chain(.source))]
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
    /// Cloudify (or something in front of it) answered with a redirect. Redirects are never
    /// followed: the credentials would go along to wherever it points (issue 20).
    #[error(
        "{route}: Cloudify answered {status} redirecting to {location:?}; redirects are not \
         followed (the credentials would travel with them): set the manager's url to the \
         address that answers"
    )]
    Redirect {
        /// Method and templated path.
        route: String,
        /// HTTP status (301, 302, 303, 307, 308).
        status: u16,
        /// The `Location` header as sent (at most 300 characters).
        location: String,
    },
    /// The answer's body passed the configured cap; the rest was not read (issue 20).
    #[error(
        "{route}: Cloudify's answer is larger than {} (cloudify[].max_response_size); the rest \
         was not read",
        size_text(*.limit)
    )]
    TooLarge {
        /// Method and templated path.
        route: String,
        /// The cap in bytes.
        limit: u64,
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
