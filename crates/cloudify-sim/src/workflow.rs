//! The `scale` workflow (`cloudify.plugins.workflows.scale_entity` + the manager's deployment
//! modification), run by one tokio task per deployment that starts queued executions in FIFO
//! order, one at a time, as the manager's dequeue loop does.

use std::sync::Arc;

use serde_json::Value;

use super::shared::Shared;
use super::state::{ExecStatus, Model, ModificationStatus, now_stamp};

mod lifecycle;
mod plan;

use plan::{Plan, parse_params, plan_scale, rollback_modification};

const SCALE_OUT_STATES: &[&str] = &[
    "initializing",
    "creating",
    "created",
    "configuring",
    "configured",
    "starting",
    "started",
];
const SCALE_IN_STATES: &[&str] = &["stopping", "stopped", "deleting", "deleted"];

/// Starts the FIFO runner of a deployment unless it is already running. Called with the model
/// locked, right after an execution was stored.
pub(crate) fn ensure_runner(
    shared: &Arc<Shared>,
    model: &mut Model,
    tenant: Arc<str>,
    deployment: Arc<str>,
) {
    if model.runners.insert((tenant.clone(), deployment.clone())) {
        tokio::spawn(run_queue(shared.clone(), tenant, deployment));
    }
}

/// Runs a `force=true` execution beside the deployment's queue.
pub(crate) fn spawn_forced(shared: &Arc<Shared>, id: String) {
    let shared = shared.clone();
    tokio::spawn(async move {
        if shared.wait_while_held().await && shared.pause(shared.timing.execution_start_ms).await {
            run_execution(&shared, &id).await;
        }
    });
}

async fn run_queue(shared: Arc<Shared>, tenant: Arc<str>, deployment: Arc<str>) {
    loop {
        let next = {
            let mut model = shared.model();
            let next = model.deployment_index(&tenant, &deployment).and_then(|di| {
                model
                    .deployment_executions(di)
                    .find(|e| {
                        !e.forced && matches!(e.status, ExecStatus::Pending | ExecStatus::Queued)
                    })
                    .map(|e| e.id.clone())
            });
            if next.is_none() {
                // Under the same lock as `ensure_runner`, so no execution can slip in unseen.
                model.runners.remove(&(tenant.clone(), deployment.clone()));
            }
            next
        };
        let Some(id) = next else { return };
        if !shared.wait_while_held().await {
            return;
        }
        {
            let mut model = shared.model();
            if let Some(e) = model.execution_mut(&id)
                && e.status == ExecStatus::Queued
            {
                e.status = ExecStatus::Pending;
            }
        }
        if !shared.pause(shared.timing.execution_start_ms).await {
            return;
        }
        run_execution(&shared, &id).await;
    }
}

/// A workflow failure: the Python exception type and message, rendered in `error` the way a
/// manager stores a workflow traceback.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    message: String,
}

impl Failure {
    fn value(message: impl Into<String>) -> Failure {
        Failure {
            kind: "ValueError",
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            kind: "RuntimeError",
            message: message.into(),
        }
    }
    fn text(&self) -> String {
        format!(
            "Traceback (most recent call last):\n  File \"/opt/mgmtworker/env/lib/python3.11/\
             site-packages/cloudify/plugins/workflows.py\", in scale_entity\n{}: {}\n",
            self.kind, self.message
        )
    }
}

fn finish(model: &mut Model, id: &str, status: ExecStatus, error: Option<&Failure>) {
    if let Some(e) = model.execution_mut(id) {
        e.status = status;
        e.ended_at = Some(now_stamp());
        if let Some(f) = error {
            e.error = f.text();
        }
    }
}

/// Runs one execution from `pending` to an end state.
pub(crate) async fn run_execution(shared: &Arc<Shared>, id: &str) {
    let is_scale = shared
        .model()
        .execution(id)
        .is_some_and(|e| e.workflow_id == "scale");
    if !is_scale {
        lifecycle::run(shared, id).await;
        return;
    }
    let Some((params, window)) = mark_started(shared, id) else {
        return; // cancelled while waiting
    };
    // A manager's `scale` is `started` before the workflow has validated its parameters and
    // started its deployment modification: `planned_instances` does not show it yet.
    if window > 0 && !shared.pause(window).await {
        return;
    }
    let Some(run) = start_scale(shared, id, &params) else {
        return;
    };
    if walk_lifecycle(shared, id, &run).await {
        complete_scale(&mut shared.model(), id, &run);
    }
}

/// A scale whose deployment modification has started: what walking its instances through
/// their lifecycle states needs.
#[derive(Debug)]
struct ScaleRun {
    di: usize,
    group: String,
    /// The group instances being added (scale-out) or removed (scale-in).
    gids: Vec<String>,
    scale_out: bool,
    ignore_failure: bool,
    /// The injected failure this execution took (`fail_next_executions`), if any.
    injected: Option<String>,
    rollback_if_failed: bool,
}

impl ScaleRun {
    fn new(plan: Plan, injected: Option<String>, rollback_if_failed: bool) -> Option<ScaleRun> {
        let (di, group, gids, scale_out, ignore_failure) = match plan {
            Plan::Out { di, group, gids } => (di, group, gids, true, false),
            Plan::In {
                di,
                group,
                gids,
                ignore_failure,
            } => (di, group, gids, false, ignore_failure),
            Plan::Noop => return None,
        };
        Some(ScaleRun {
            di,
            group,
            gids,
            scale_out,
            ignore_failure,
            injected,
            rollback_if_failed,
        })
    }

    /// The lifecycle states every instance walks through, one `step_ms` each.
    fn states(&self) -> &'static [&'static str] {
        if self.scale_out {
            SCALE_OUT_STATES
        } else {
            SCALE_IN_STATES
        }
    }
}

/// `pending` → `started`; returns the execution's parameters and the `started_window_ms`
/// fault in force, or `None` if the execution is no longer pending (cancelled while waiting).
fn mark_started(shared: &Shared, id: &str) -> Option<(Value, u64)> {
    let mut model = shared.model();
    let params = match model.execution_mut(id) {
        Some(e) if e.status == ExecStatus::Pending => {
            e.status = ExecStatus::Started;
            e.started_at = Some(now_stamp());
            e.parameters.clone()
        }
        _ => return None,
    };
    Some((params, shared.faults().started_window_ms))
}

/// Under one lock: takes an injected failure, validates the parameters and starts the
/// modification. Returns the scale to walk, or `None` when the execution already ended here
/// (cancelled before its modification started, invalid parameters, a zero delta).
fn start_scale(shared: &Shared, id: &str, params: &Value) -> Option<ScaleRun> {
    let mut model = shared.model();
    match model.execution(id).map(|e| e.status) {
        Some(ExecStatus::Started) => {}
        Some(status) if is_cancelling(status) => {
            // Cancelled before its modification started: nothing changed.
            finish(&mut model, id, ExecStatus::Cancelled, None);
            return None;
        }
        _ => return None,
    }
    // Taken before validation: an execution that fails on its parameters uses up the fault.
    let injected = shared.faults().take_failure();
    let outcome = parse_params(params)
        .and_then(|p| plan_scale(&mut model, id, &p).map(|plan| (plan, p.rollback_if_failed)));
    let run = match outcome {
        Err(f) => {
            finish(&mut model, id, ExecStatus::Failed, Some(&f));
            return None;
        }
        Ok((Plan::Noop, _)) => {
            // "delta parameter is 0, so no scaling will take place."
            let (status, failure) = noop_outcome(injected);
            finish(&mut model, id, status, failure.as_ref());
            return None;
        }
        Ok((plan, rollback_if_failed)) => ScaleRun::new(plan, injected, rollback_if_failed)?,
    };
    if let Some(e) = model.execution_mut(id) {
        e.total_operations = (run.states().len() * run.gids.len()) as u64;
    }
    Some(run)
}

/// How a zero-delta scale ends: `terminated`, or `failed` with the injected failure (as a
/// scale-out's, `create`) when one was taken.
fn noop_outcome(injected: Option<String>) -> (ExecStatus, Option<Failure>) {
    match injected {
        Some(reason) => (ExecStatus::Failed, Some(injected_failure(reason, true))),
        None => (ExecStatus::Terminated, None),
    }
}

fn is_cancelling(status: ExecStatus) -> bool {
    matches!(
        status,
        ExecStatus::Cancelling | ExecStatus::ForceCancelling | ExecStatus::KillCancelling
    )
}

/// Whether an injected failure strikes at this lifecycle state: a scale-out fails at `create`,
/// a scale-in at `delete` (after `stop` ran: without rollback its victims stay `stopped`
/// under a started modification, as on a manager), unless it ignores failures.
fn fails_at(state: &str, scale_out: bool, ignore_failure: bool) -> bool {
    if scale_out {
        state == "creating"
    } else {
        state == "deleting" && !ignore_failure
    }
}

/// Walks the scale's instances through its lifecycle states, one `step_ms` each. True when
/// every state was reached; false when the execution ended on the way (cancelled, failed by
/// an injected failure) or the simulator is shutting down.
async fn walk_lifecycle(shared: &Shared, id: &str, run: &ScaleRun) -> bool {
    for &state in run.states() {
        if !shared.pause(shared.timing.step_ms).await {
            return false;
        }
        let mut model = shared.model();
        if model.execution(id).is_some_and(|e| is_cancelling(e.status)) {
            // A cancelled scale leaves its modification started, as on a manager.
            finish(&mut model, id, ExecStatus::Cancelled, None);
            return false;
        }
        if let Some(reason) = &run.injected
            && fails_at(state, run.scale_out, run.ignore_failure)
        {
            if run.rollback_if_failed {
                let restore: &[String] = if run.scale_out { &[] } else { &run.gids };
                rollback_modification(&mut model, run.di, restore);
            }
            let failure = injected_failure(reason.clone(), run.scale_out);
            finish(&mut model, id, ExecStatus::Failed, Some(&failure));
            return false;
        }
        model.set_group_instances_state(run.di, &run.group, &run.gids, state);
        if state == "started" {
            for gid in &run.gids {
                model.set_started_runtime(run.di, &run.group, gid);
            }
        }
        if let Some(e) = model.execution_mut(id) {
            e.finished_operations += run.gids.len() as u64;
        }
    }
    true
}

/// Ends a scale that walked every state: a scale-in's victims are deleted,
/// `current_instances` becomes `planned_instances`, the modification finishes and the
/// execution terminates.
fn complete_scale(model: &mut Model, id: &str, run: &ScaleRun) {
    if !run.scale_out {
        model.remove_group_instances(run.di, &run.group, &run.gids);
    }
    if let Some(g) = model.deployments[run.di].group_mut(&run.group) {
        g.current = g.planned;
    }
    model.end_modification(run.di, ModificationStatus::Finished);
    finish(model, id, ExecStatus::Terminated, None);
}

fn injected_failure(reason: String, scale_out: bool) -> Failure {
    let operation = if scale_out { "create" } else { "delete" };
    Failure::runtime(format!(
        "Workflow failed: Task failed 'cloudify_openstack.nova_plugin.server.{operation}' -> {reason}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_rendered_as_a_workflow_traceback() {
        assert_eq!(
            Failure::value("bad").text(),
            "Traceback (most recent call last):\n  File \"/opt/mgmtworker/env/lib/python3.11/\
             site-packages/cloudify/plugins/workflows.py\", in scale_entity\nValueError: bad\n"
        );
    }

    #[test]
    fn injected_failures_strike_at_create_or_at_delete() {
        for state in SCALE_OUT_STATES {
            assert_eq!(
                fails_at(state, true, false),
                *state == "creating",
                "{state}"
            );
            assert_eq!(fails_at(state, true, true), *state == "creating", "{state}");
        }
        for state in SCALE_IN_STATES {
            assert_eq!(
                fails_at(state, false, false),
                *state == "deleting",
                "{state}"
            );
            assert!(!fails_at(state, false, true), "{state}");
        }
        assert_eq!(
            injected_failure("boom".into(), false).message,
            "Workflow failed: Task failed 'cloudify_openstack.nova_plugin.server.delete' -> boom"
        );
    }

    #[test]
    fn a_zero_delta_scale_fails_only_with_an_injected_failure() {
        assert!(matches!(noop_outcome(None), (ExecStatus::Terminated, None)));
        let (status, failure) = noop_outcome(Some("boom".into()));
        assert_eq!(status, ExecStatus::Failed);
        assert_eq!(
            failure.expect("the injected failure").message,
            "Workflow failed: Task failed 'cloudify_openstack.nova_plugin.server.create' -> boom"
        );
    }

    #[test]
    fn a_run_counts_one_operation_per_instance_and_state() {
        let out = ScaleRun::new(
            Plan::Out {
                di: 0,
                group: "workers".into(),
                gids: vec!["a".into(), "b".into()],
            },
            None,
            true,
        )
        .expect("a run");
        assert!(out.scale_out && !out.ignore_failure);
        assert_eq!(out.states().len() * out.gids.len(), 14);
        let scale_in = ScaleRun::new(
            Plan::In {
                di: 0,
                group: "workers".into(),
                gids: vec!["a".into()],
                ignore_failure: true,
            },
            Some("boom".into()),
            false,
        )
        .expect("a run");
        assert_eq!(scale_in.states(), SCALE_IN_STATES);
        assert!(ScaleRun::new(Plan::Noop, None, true).is_none());
    }
}
