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
    /// 409 `conflict_error`: a deployment or blueprint with this id exists.
    #[error("{0}")]
    Conflict(String),
    /// 400 `unknown_deployment_input_error`: inputs the blueprint does not declare.
    #[error("{0}")]
    UnknownDeploymentInput(String),
    /// 400 `missing_required_deployment_input_error`: a declared input without default is absent.
    #[error("{0}")]
    MissingRequiredDeploymentInput(String),
    /// 400 `deployment_creation_error`: e.g. a workflow of a deployment whose environment
    /// creation failed.
    #[error("{0}")]
    DeploymentCreation(String),
    /// 400 `deployment_environment_creation_pending_error`: its creation has not started yet.
    #[error("{0}")]
    EnvironmentCreationPending(String),
    /// 400 `deployment_environment_creation_in_progress_error`: its creation is running.
    #[error("{0}")]
    EnvironmentCreationInProgress(String),
    /// 400 `unavailable_workflow_error`: the workflow's availability rule refuses it now
    /// (`install` with every instance started, `uninstall` with none live).
    #[error("{0}")]
    UnavailableWorkflow(String),
    /// 400 `dependent_exists_error`: a delete while executions run or instances are live.
    #[error("{0}")]
    DependentExists(String),
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
            SimError::Conflict(_) => "conflict_error",
            SimError::UnknownDeploymentInput(_) => "unknown_deployment_input_error",
            SimError::MissingRequiredDeploymentInput(_) => {
                "missing_required_deployment_input_error"
            }
            SimError::DeploymentCreation(_) => "deployment_creation_error",
            SimError::EnvironmentCreationPending(_) => {
                "deployment_environment_creation_pending_error"
            }
            SimError::EnvironmentCreationInProgress(_) => {
                "deployment_environment_creation_in_progress_error"
            }
            SimError::UnavailableWorkflow(_) => "unavailable_workflow_error",
            SimError::DependentExists(_) => "dependent_exists_error",
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
            | SimError::IllegalAction(_)
            | SimError::UnknownDeploymentInput(_)
            | SimError::MissingRequiredDeploymentInput(_)
            | SimError::DeploymentCreation(_)
            | SimError::EnvironmentCreationPending(_)
            | SimError::EnvironmentCreationInProgress(_)
            | SimError::UnavailableWorkflow(_)
            | SimError::DependentExists(_) => StatusCode::BAD_REQUEST,
            SimError::Conflict(_) => StatusCode::CONFLICT,
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
