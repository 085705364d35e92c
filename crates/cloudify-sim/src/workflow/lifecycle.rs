//! The lifecycle workflows of a deployment, run by the same per-deployment FIFO runner as
//! `scale`: `create_deployment_environment` (groups, nodes and `uninitialized` instances),
//! `install` (every instance walks `initializing` … `started`), `uninstall` (live instances walk
//! `stopping` … `deleted`; the rows stay, as on a manager), `update` (the new inputs take
//! effect) and `delete_deployment_environment` (the deployment disappears). Each step lasts
//! `timing.step_ms`; `fail_next_executions` fails one (install at `creating`, uninstall at
//! `deleting`), `hold_executions` keeps them queued, cancel ends them between steps.

use std::sync::Arc;

use super::{Failure, SCALE_IN_STATES, SCALE_OUT_STATES, finish, is_cancelling};
use crate::shared::Shared;
use crate::state::{CREATE_ENVIRONMENT, DELETE_ENVIRONMENT, ExecStatus, Model, UPDATE, now_stamp};

/// Runs one lifecycle execution from `pending` to an end state.
pub(super) async fn run(shared: &Arc<Shared>, id: &str) {
    let Some((workflow, di)) = mark_started(shared, id) else {
        return;
    };
    match workflow.as_str() {
        "install" => walk(shared, id, di, true).await,
        "uninstall" => walk(shared, id, di, false).await,
        _ => single_step(shared, id, di, &workflow).await,
    }
}

/// `pending` → `started`, after the dequeue-time checks a manager makes (`render_message`): an
/// `install` queued behind another that installed everything fails here ("Error dequeueing
/// execution: Workflow not available: install"). Returns the workflow and the deployment.
fn mark_started(shared: &Shared, id: &str) -> Option<(String, usize)> {
    let mut model = shared.model();
    let (workflow, tenant, deployment) = match model.execution(id) {
        Some(e) if e.status == ExecStatus::Pending => (
            e.workflow_id.clone(),
            e.tenant.clone(),
            e.deployment_id.clone(),
        ),
        _ => return None,
    };
    let di = model.deployment_index(&tenant, &deployment)?;
    if matches!(workflow.as_str(), "install" | "uninstall")
        && let Err(e) = model.check_lifecycle_workflow(di, &workflow)
    {
        let error = format!("Error dequeueing execution: {e}");
        if let Some(exec) = model.execution_mut(id) {
            exec.status = ExecStatus::Failed;
            exec.error = error;
            exec.ended_at = Some(now_stamp());
        }
        return None;
    }
    let exec = model.execution_mut(id)?;
    exec.status = ExecStatus::Started;
    exec.started_at = Some(now_stamp());
    Some((workflow, di))
}

/// Ends a cancelled execution; true if it was being cancelled.
fn cancelled(model: &mut Model, id: &str) -> bool {
    if model.execution(id).is_some_and(|e| is_cancelling(e.status)) {
        finish(model, id, ExecStatus::Cancelled, None);
        return true;
    }
    false
}

/// `install` (`forward`) or `uninstall`: every instance concerned walks the states together.
async fn walk(shared: &Shared, id: &str, di: usize, forward: bool) {
    let (states, keys) = begin_walk(&mut shared.model(), id, di, forward);
    let injected = shared.faults().take_failure();
    for &state in states {
        if !shared.pause(shared.timing.step_ms).await {
            return;
        }
        let mut model = shared.model();
        if cancelled(&mut model, id) {
            return;
        }
        if let Some(reason) = &injected
            && fault_strikes_at(state, forward)
        {
            fail_walk(&mut model, id, forward, reason);
            return;
        }
        move_instances_to(&mut model, id, di, &keys, state, forward);
    }
    let mut model = shared.model();
    if forward {
        model.deployments[di].life.installed = true;
    }
    finish(&mut model, id, ExecStatus::Terminated, None);
}

/// Before the first step: which states the walk goes through, which instances walk them, and
/// the execution's operation count (states × instances). An uninstall marks the deployment not
/// installed before its first step; an install marks it installed only when it terminates.
fn begin_walk(
    model: &mut Model,
    id: &str,
    di: usize,
    forward: bool,
) -> (&'static [&'static str], Vec<u64>) {
    let keys = instances_to_walk(model, di, forward);
    if !forward {
        model.deployments[di].life.installed = false;
    }
    let states = if forward {
        SCALE_OUT_STATES
    } else {
        SCALE_IN_STATES
    };
    if let Some(e) = model.execution_mut(id) {
        e.total_operations = (states.len() * keys.len()) as u64;
    }
    (states, keys)
}

/// The deployment's instances an install (those not yet `started`) or an uninstall (those
/// alive: neither `uninitialized` nor `deleted`) concerns.
fn instances_to_walk(model: &Model, di: usize, forward: bool) -> Vec<u64> {
    let d = &model.deployments[di];
    model
        .instances_by_deployment
        .get(&(d.tenant.clone(), d.id.clone()))
        .map(|keys| {
            keys.iter()
                .copied()
                .filter(|k| {
                    model.instances.get(k).is_some_and(|i| {
                        if forward {
                            i.state != "started"
                        } else {
                            !matches!(i.state, "uninitialized" | "deleted")
                        }
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The state at which an injected failure ends the walk: the VM's `create` (install) or
/// `delete` (uninstall) operation, where an OpenStack plugin fails on a manager.
fn fault_strikes_at(state: &str, forward: bool) -> bool {
    if forward {
        state == "creating"
    } else {
        state == "deleting"
    }
}

/// Fails the execution with the error a manager reports for a failed server task.
fn fail_walk(model: &mut Model, id: &str, forward: bool, reason: &str) {
    let operation = if forward { "create" } else { "delete" };
    let failure = Failure::runtime(format!(
        "Workflow failed: Task failed 'cloudify_openstack.nova_plugin.server.{operation}' \
         -> {reason}"
    ));
    finish(model, id, ExecStatus::Failed, Some(&failure));
}

/// One step of the walk: every walking instance enters `state` (a new version each, as the
/// manager bumps it), an install reaching `started` fills the groups' runtime properties, and
/// the execution counts the step's operations as finished.
fn move_instances_to(
    model: &mut Model,
    id: &str,
    di: usize,
    keys: &[u64],
    state: &'static str,
    forward: bool,
) {
    for key in keys {
        if let Some(inst) = model.instances.get_mut(key) {
            inst.state = state;
            inst.version += 1;
        }
    }
    if forward && state == "started" {
        let groups: Vec<(String, Vec<String>)> = model.deployments[di]
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.instances.keys().cloned().collect()))
            .collect();
        for (group, gids) in groups {
            for gid in gids {
                model.set_started_runtime(di, &group, &gid);
            }
        }
    }
    if let Some(e) = model.execution_mut(id) {
        e.finished_operations += keys.len() as u64;
    }
}

/// The workflows that take one step: environment creation and deletion, and updates.
async fn single_step(shared: &Shared, id: &str, di: usize, workflow: &str) {
    if workflow == UPDATE
        && let Some(u) = shared.model().update_of_execution(id)
    {
        u.state = "executing_workflow";
    }
    if !shared.pause(shared.timing.step_ms).await {
        return;
    }
    let mut model = shared.model();
    if cancelled(&mut model, id) {
        return;
    }
    if workflow != DELETE_ENVIRONMENT
        && let Some(reason) = shared.faults().take_failure()
    {
        if let Some(u) = model.update_of_execution(id) {
            u.state = "failed";
        }
        let failure = Failure::runtime(format!("Workflow failed: {workflow}: {reason}"));
        finish(&mut model, id, ExecStatus::Failed, Some(&failure));
        return;
    }
    match workflow {
        CREATE_ENVIRONMENT => {
            if let Err(e) = model.create_environment(di) {
                let failure = Failure::runtime(e.to_string());
                finish(&mut model, id, ExecStatus::Failed, Some(&failure));
                return;
            }
        }
        UPDATE => {
            let new_inputs = model.update_of_execution(id).map(|u| {
                u.state = "successful";
                u.new_inputs.clone()
            });
            if let Some(inputs) = new_inputs {
                model.deployments[di].life.inputs = inputs;
            }
        }
        DELETE_ENVIRONMENT => {
            // The execution goes with the deployment, as on a manager.
            model.purge_deployment(di);
            return;
        }
        _ => {
            let failure = Failure::value(format!("unknown workflow {workflow}"));
            finish(&mut model, id, ExecStatus::Failed, Some(&failure));
            return;
        }
    }
    finish(&mut model, id, ExecStatus::Terminated, None);
}
