//! `POST /executions` and `POST /executions/{id}`: body and parameter validation, the
//! per-deployment concurrency check (`existing_running_execution_error` vs `queued`), and
//! cancellation. What happens once an execution runs is in `workflow.rs`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::error::SimError;
use super::query::parse_bool;
use super::state::{ExecStatus, Execution, Model, now_stamp};

/// The `scale` workflow's parameter declaration (7.x `types.yaml`), as rendered in a
/// deployment's `workflows` and used to validate and default `POST /executions` parameters.
pub(crate) fn scale_workflow_parameters() -> Value {
    json!({
        "scalable_entity_name": {
            "description": "Which node/group to scale. Note that the parameter specified should denote the node/group name and NOT the node/group instance id."
        },
        "delta": {
            "description": "How many node/group instances should be added/removed. A positive number denotes increase of instances. A negative number denotes decrease of instances.",
            "default": 1,
            "type": "integer"
        },
        "scale_compute": {
            "description": "If a node name is passed as the `scalable_entity_name` parameter and that node is contained (transitively) within a compute node and this property is 'true', operate on the compute node instead of the specified node.",
            "default": false
        },
        "include_instances": {
            "description": "Instances to include when scaling down (only valid with a negative delta).",
            "default": null
        },
        "exclude_instances": {
            "description": "Instances to exclude when scaling down (only valid with a negative delta).",
            "default": null
        },
        "ignore_failure": {
            "description": "Ignore operation failures while uninstalling node instances in scale down workflow",
            "default": false,
            "type": "boolean"
        },
        "rollback_if_failed": {
            "description": "If this is False then no rollback will be triggered when an error occurs during the workflow, otherwise the rollback will be triggered.",
            "default": true
        },
        "abort_started": {
            "description": "Abort any started deployment modification before starting this scale.",
            "default": false,
            "type": "boolean"
        }
    })
}

/// A validated `POST /executions` request.
#[derive(Debug)]
pub(crate) struct NewExecution {
    pub deployment_id: String,
    pub workflow_id: String,
    pub parameters: Map<String, Value>,
    pub allow_custom_parameters: bool,
    pub force: bool,
    pub dry_run: bool,
    pub queue: bool,
}

fn body_bool(body: &Map<String, Value>, name: &str) -> Result<bool, SimError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // The Python client sends these as "true"/"false" strings.
        Some(Value::String(s)) => parse_bool(s)
            .ok_or_else(|| SimError::BadParameters(format!("{name} must be <true/false>"))),
        Some(_) => Err(SimError::BadParameters(format!(
            "{name} must be <true/false>"
        ))),
    }
}

fn body_string(body: &Map<String, Value>, name: &str) -> Result<String, SimError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(SimError::BadParameters(format!(
            "Missing {name} in json request body"
        ))),
        Some(other) => Err(SimError::BadParameters(format!(
            "{name} parameter is expected to be of type str but is of type {}",
            json_type(other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Parses the JSON body of `POST /executions`.
pub(crate) fn parse_new_execution(body: &[u8]) -> Result<NewExecution, SimError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| SimError::BadParameters(format!("Failed to parse JSON body: {e}")))?;
    let Value::Object(body) = value else {
        return Err(SimError::BadParameters(
            "Request body must be a JSON object".into(),
        ));
    };
    let deployment_id = body_string(&body, "deployment_id")?;
    let workflow_id = body_string(&body, "workflow_id")?;
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Err(SimError::BadParameters(
                "parameters: expected a dict".into(),
            ));
        }
    };
    Ok(NewExecution {
        deployment_id,
        workflow_id,
        parameters,
        allow_custom_parameters: body_bool(&body, "allow_custom_parameters")?,
        force: body_bool(&body, "force")?,
        dry_run: body_bool(&body, "dry_run")?,
        queue: body_bool(&body, "queue")?,
    })
}

fn integer_like(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => s.trim().parse::<i64>().is_ok(),
        _ => false,
    }
}

fn boolean_like(v: &Value) -> bool {
    match v {
        Value::Bool(_) => true,
        Value::String(s) => parse_bool(s).is_some(),
        _ => false,
    }
}

/// Checks parameters against the workflow declaration and merges the defaults in
/// (`Execution.merge_workflow_parameters`).
fn merge_parameters(
    workflow_id: &str,
    declared: &Map<String, Value>,
    given: Map<String, Value>,
    allow_custom: bool,
) -> Result<Map<String, Value>, SimError> {
    let undeclared: Vec<&String> = given
        .keys()
        .filter(|k| !declared.contains_key(*k))
        .collect();
    if !undeclared.is_empty() && !allow_custom {
        let names: Vec<&str> = undeclared.iter().map(|s| s.as_str()).collect();
        return Err(SimError::IllegalExecutionParameters(format!(
            "Workflow \"{workflow_id}\" does not have the following parameters declared: {}. \
             Remove these parameters or use the flag for allowing custom parameters",
            names.join(",")
        )));
    }
    let missing: Vec<&str> = declared
        .iter()
        .filter(|(name, decl)| decl.get("default").is_none() && !given.contains_key(*name))
        .map(|(name, _)| name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(SimError::IllegalExecutionParameters(format!(
            "Workflow \"{workflow_id}\" must be provided with the following parameters to execute: {}",
            missing.join(",")
        )));
    }
    // Every mistyped parameter, one line each in declaration order, as the manager's
    // `Execution._validate_parameters` words it (without the offending value).
    let mut wrong = Vec::new();
    for (name, decl) in declared {
        let Some(value) = given.get(name) else {
            continue;
        };
        let declared_type = decl.get("type").and_then(Value::as_str);
        let ok = match declared_type {
            Some("integer") => integer_like(value),
            Some("boolean") => boolean_like(value),
            _ => true,
        };
        if !ok {
            wrong.push(format!(
                "Parameter \"{name}\" must be of type {}",
                declared_type.unwrap_or("any")
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(SimError::IllegalExecutionParameters(wrong.join("\n")));
    }
    let mut merged = Map::new();
    for (name, decl) in declared {
        let value = given
            .get(name)
            .cloned()
            .or_else(|| decl.get("default").cloned())
            .unwrap_or(Value::Null);
        merged.insert(name.clone(), value);
    }
    for (name, value) in given {
        merged.entry(name).or_insert(value);
    }
    Ok(merged)
}

/// Validates a new execution against the model and stores it (`pending` or `queued`).
/// Returns the execution id; the caller starts the runner.
pub(crate) fn create_execution(
    model: &mut Model,
    tenant: &str,
    username: &str,
    request: NewExecution,
) -> Result<String, SimError> {
    let di = model
        .deployment_index(tenant, &request.deployment_id)
        .ok_or_else(|| SimError::not_found("Deployment", &request.deployment_id))?;
    if request.workflow_id != "scale" {
        return Err(SimError::NonexistentWorkflow(format!(
            "Workflow {} does not exist in the deployment {}",
            request.workflow_id, request.deployment_id
        )));
    }
    let declared = match scale_workflow_parameters() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let parameters = merge_parameters(
        &request.workflow_id,
        &declared,
        request.parameters,
        request.allow_custom_parameters,
    )?;
    // Listed as the manager's `Execution.__repr__` renders them.
    let blocking: Vec<String> = model
        .deployment_executions(di)
        .filter(|e| e.status.is_active() || e.status == ExecStatus::Queued)
        .map(|e| {
            format!(
                "<Execution id=`{}` tenant=`{}` status=`{}` workflow_id=`{}`>",
                e.id,
                e.tenant,
                e.status.as_str(),
                e.workflow_id
            )
        })
        .collect();
    let status = if blocking.is_empty() || request.force {
        ExecStatus::Pending
    } else if request.queue {
        ExecStatus::Queued
    } else {
        return Err(SimError::ExistingRunningExecution(format!(
            "The following executions are currently running for this deployment: [{}]. \
             To execute this workflow anyway, pass \"force=true\" as a query parameter to this request",
            blocking.join(", ")
        )));
    };
    let deployment = &model.deployments[di];
    let execution = Execution {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: deployment.tenant.clone(),
        deployment_id: deployment.id.clone(),
        blueprint_id: deployment.blueprint_id.clone(),
        workflow_id: request.workflow_id,
        status,
        error: String::new(),
        parameters: Value::Object(parameters),
        created_at: now_stamp(),
        started_at: None,
        ended_at: None,
        created_by: username.to_string(),
        is_dry_run: request.dry_run,
        allow_custom_parameters: request.allow_custom_parameters,
        forced: request.force && !blocking.is_empty(),
        total_operations: 0,
        finished_operations: 0,
    };
    let id = execution.id.clone();
    model.push_execution(execution);
    Ok(id)
}

/// `(tenant, deployment)` of an execution, for starting its runner.
pub(crate) fn execution_owner(model: &Model, id: &str) -> Option<(Arc<str>, Arc<str>, bool)> {
    model
        .execution(id)
        .map(|e| (e.tenant.clone(), e.deployment_id.clone(), e.forced))
}

/// `POST /executions/{id}` `{action}`: cancel, force-cancel or kill.
pub(crate) fn apply_action(
    model: &mut Model,
    tenant: &str,
    id: &str,
    body: &[u8],
) -> Result<(), SimError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| SimError::BadParameters(format!("Failed to parse JSON body: {e}")))?;
    let action = value
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::BadParameters("Missing action in json request body".into()))?
        .to_string();
    let execution = model
        .execution_mut(id)
        .filter(|e| &*e.tenant == tenant)
        .ok_or_else(|| SimError::not_found("Execution", id))?;
    let status = execution.status;
    match action.as_str() {
        "cancel" | "force-cancel" | "kill" => {
            if status.is_end() {
                return Err(SimError::IllegalAction(format!(
                    "Can't {action} execution {id} because it's in status {}",
                    status.as_str()
                )));
            }
            // A queued or not yet started execution is simply killed (the manager turns a
            // cancel of a queued execution into a kill); a running one is asked to stop and
            // the runner notices between lifecycle steps.
            if matches!(status, ExecStatus::Queued | ExecStatus::Pending) {
                execution.status = ExecStatus::Cancelled;
                execution.ended_at = Some(now_stamp());
            } else {
                execution.status = match action.as_str() {
                    "cancel" if status == ExecStatus::Started => ExecStatus::Cancelling,
                    "force-cancel" => ExecStatus::ForceCancelling,
                    "kill" => ExecStatus::KillCancelling,
                    _ => status,
                };
            }
            Ok(())
        }
        "resume" | "force-resume" | "requeue" => Err(SimError::IllegalAction(format!(
            "Cannot {action} execution {id} in status {}: the simulator does not resume executions",
            status.as_str()
        ))),
        other => Err(SimError::BadParameters(format!(
            "Unknown action `{other}`. Valid actions are: cancel, force-cancel, kill, resume, \
             force-resume, requeue"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Map<String, Value> {
        match scale_workflow_parameters() {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn defaults_are_merged() {
        let merged = merge_parameters(
            "scale",
            &declared(),
            params(json!({"scalable_entity_name": "workers"})),
            false,
        )
        .expect("valid");
        assert_eq!(merged["delta"], json!(1));
        assert_eq!(merged["rollback_if_failed"], json!(true));
        assert_eq!(merged["include_instances"], Value::Null);
    }

    #[test]
    fn missing_undeclared_and_mistyped_parameters_are_illegal() {
        for bad in [
            json!({}),
            json!({"scalable_entity_name": "w", "bogus": 1}),
            json!({"scalable_entity_name": "w", "delta": "two"}),
            json!({"scalable_entity_name": "w", "delta": 1.5}),
            json!({"scalable_entity_name": "w", "abort_started": "maybe"}),
        ] {
            let err = merge_parameters("scale", &declared(), params(bad.clone()), false)
                .expect_err("must be rejected");
            assert_eq!(
                err.error_code(),
                "illegal_execution_parameters_error",
                "{bad}"
            );
        }
        merge_parameters(
            "scale",
            &declared(),
            params(json!({"scalable_entity_name": "w", "bogus": 1})),
            true,
        )
        .expect("custom parameters allowed");
    }

    #[test]
    fn body_booleans_accept_python_strings() {
        let req = parse_new_execution(
            br#"{"deployment_id":"d","workflow_id":"scale","parameters":null,"queue":"true","force":"false","scheduled_time":null}"#,
        )
        .expect("valid");
        assert!(req.queue && !req.force);
        let err = parse_new_execution(b"{not json").expect_err("bad json");
        assert_eq!(err.error_code(), "bad_parameters_error");
    }
}
