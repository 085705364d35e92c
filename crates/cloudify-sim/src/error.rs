//! The simulator's one error type: REST errors rendered as Cloudify renders them, plus the few
//! things that can go wrong while starting up.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Everything that can go wrong inside the simulator.
///
/// REST variants carry the message text a real manager would send; [`SimError::error_code`] and
/// [`SimError::status`] give the `error_code` and HTTP status of the matching Cloudify
/// `ManagerException` (`manager_rest/manager_exceptions.py`).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// 400 `bad_parameters_error`: a malformed body, query parameter or filter key.
    #[error("{0}")]
    BadParameters(String),
    /// 400 `no_such_include_field_error`: `_include` named a field the resource does not have.
    #[error("{0}")]
    NoSuchIncludeField(String),
    /// 400 `invalid_filter_rule`: a `filter_rules` entry is malformed.
    #[error("The filter rule {rule} is not in the right format. {reason}")]
    InvalidFilterRule {
        /// The offending rule, echoed back as `err_filter_rule`.
        rule: Value,
        /// Why it is wrong, echoed back as `err_reason`.
        reason: String,
    },
    /// 400 `illegal_execution_parameters_error`: undeclared, missing or mistyped workflow parameters.
    #[error("{0}")]
    IllegalExecutionParameters(String),
    /// 400 `nonexistent_workflow_error`: the deployment has no such workflow.
    #[error("{0}")]
    NonexistentWorkflow(String),
    /// 400 `existing_running_execution_error`: the deployment is busy and `queue` was not set.
    #[error("{0}")]
    ExistingRunningExecution(String),
    /// 400 `illegal_action_error`: e.g. cancelling an execution that already ended.
    #[error("{0}")]
    IllegalAction(String),
    /// 401 `unauthorized_error`: no, wrong or expired credentials, or a locked account.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden_error`: missing or unknown tenant, or a tenant the user is not in.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found_error`: no such resource, or no such route.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed_error`: the route exists, but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 500 `internal_server_error` (also what `error_rate` fault injection answers).
    #[error("{0}")]
    Internal(String),
    /// 503 `maintenance_mode_active` (what the `down` fault answers).
    #[error("{0}")]
    MaintenanceMode(String),
    /// The scenario file could not be read.
    #[error("cannot read scenario file {path}")]
    ScenarioRead {
        /// The file that was asked for.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The scenario YAML did not parse.
    #[error("invalid scenario YAML")]
    ScenarioParse(#[source] serde_saphyr::Error),
    /// The scenario parsed but makes no sense (unknown tenant, duplicate ids, min > max, ...).
    #[error("invalid scenario: {0}")]
    ScenarioInvalid(String),
    /// The listen address could not be bound, or the server failed.
    #[error("simulator I/O error on {addr}")]
    Io {
        /// The address being served.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl SimError {
    /// The Cloudify `error_code` string for this error.
    pub fn error_code(&self) -> &'static str {
        match self {
            SimError::BadParameters(_) => "bad_parameters_error",
            SimError::NoSuchIncludeField(_) => "no_such_include_field_error",
            SimError::InvalidFilterRule { .. } => "invalid_filter_rule",
            SimError::IllegalExecutionParameters(_) => "illegal_execution_parameters_error",
            SimError::NonexistentWorkflow(_) => "nonexistent_workflow_error",
            SimError::ExistingRunningExecution(_) => "existing_running_execution_error",
            SimError::IllegalAction(_) => "illegal_action_error",
            SimError::Unauthorized(_) => "unauthorized_error",
            SimError::Forbidden(_) => "forbidden_error",
            SimError::NotFound(_) => "not_found_error",
            SimError::MethodNotAllowed(_) => "method_not_allowed_error",
            SimError::MaintenanceMode(_) => "maintenance_mode_active",
            SimError::Internal(_)
            | SimError::ScenarioRead { .. }
            | SimError::ScenarioParse(_)
            | SimError::ScenarioInvalid(_)
            | SimError::Io { .. } => "internal_server_error",
        }
    }

    /// The HTTP status a manager answers with for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            SimError::BadParameters(_)
            | SimError::NoSuchIncludeField(_)
            | SimError::InvalidFilterRule { .. }
            | SimError::IllegalExecutionParameters(_)
            | SimError::NonexistentWorkflow(_)
            | SimError::ExistingRunningExecution(_)
            | SimError::IllegalAction(_) => StatusCode::BAD_REQUEST,
            SimError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            SimError::Forbidden(_) => StatusCode::FORBIDDEN,
            SimError::NotFound(_) => StatusCode::NOT_FOUND,
            SimError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            SimError::MaintenanceMode(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `404 not_found_error` with the manager's wording for a missing resource.
    pub(crate) fn not_found(kind: &str, id: &str) -> SimError {
        SimError::NotFound(format!("Requested `{kind}` with ID `{id}` was not found"))
    }

    /// The JSON body a manager sends for this error.
    pub fn body(&self) -> Value {
        let message = self.to_string();
        match self {
            SimError::InvalidFilterRule { rule, reason } => json!({
                "message": message,
                "error_code": self.error_code(),
                "server_traceback": null,
                "err_filter_rule": rule,
                "err_reason": reason,
            }),
            // Maintenance mode and unhandled errors carry a traceback string on a real
            // manager; clients only display it.
            SimError::MaintenanceMode(_) | SimError::Internal(_) => json!({
                "message": message,
                "error_code": self.error_code(),
                "server_traceback": format!("Traceback (most recent call last):\n  (simulated)\n{message}"),
            }),
            _ => json!({
                "message": message,
                "error_code": self.error_code(),
                "server_traceback": null,
            }),
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}
