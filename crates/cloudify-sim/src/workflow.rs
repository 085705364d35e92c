//! The `scale` workflow (`cloudify.plugins.workflows.scale_entity` + the manager's deployment
//! modification), run by one tokio task per deployment that starts queued executions in FIFO
//! order, one at a time, as the manager's dequeue loop does.

use std::sync::Arc;

use serde_json::Value;

use super::shared::Shared;
use super::state::{ExecStatus, Members, Model, ModificationStatus, now_stamp};

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
/// manager stores it: a workflow's own exception as the last frames of its traceback (no
/// "Traceback" header), a failed operation as its "Task failed" summary first.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    message: String,
    /// The line of `cloudify/plugins/workflows.py` (cloudify-common 7.0.5) that raised it.
    line: u32,
    /// For a failed operation: the task name and `<node instance>:<operation>`.
    task: Option<(&'static str, String)>,
}

/// The first line of `scale_entity`, named by failures the manager has no line for.
const SCALE_ENTITY_LINE: u32 = 606;

impl Failure {
    fn value(message: impl Into<String>) -> Failure {
        Failure {
            kind: "ValueError",
            message: message.into(),
            line: SCALE_ENTITY_LINE,
            task: None,
        }
    }
    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            kind: "RuntimeError",
            message: message.into(),
            line: SCALE_ENTITY_LINE,
            task: None,
        }
    }
    /// The same failure, raised at `line` of `workflows.py`.
    fn at(mut self, line: u32) -> Failure {
        self.line = line;
        self
    }
    fn text(&self) -> String {
        let frame = format!(
            "File \"/opt/mgmtworker/env/lib/python3.11/site-packages/cloudify/plugins/\
             workflows.py\", line {}, in scale_entity\n  raise {}(\n",
            self.line,
            self.kind.rsplit('.').next().unwrap_or(self.kind)
        );
        match &self.task {
            None => format!("{frame}{}: {}\n", self.kind, self.message),
            Some((task, target)) => {
                let short = self.kind.rsplit('.').next().unwrap_or(self.kind);
                let function = task.rsplit('.').next().unwrap_or(task);
                format!(
                    "Task failed: {task} ({target}): {short} `{msg}`\n\
                     Traceback of {task} ({target}) (most recent call last):\n\
                     File \"/opt/mgmtworker/env/plugins/openstack/nova_plugin/server.py\", in {function}\n\
                     {kind}: {msg}\n",
                    msg = self.message,
                    kind = self.kind,
                )
            }
        }
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
    let Some((params, window)) = mark_started(shared, id) else {
        return; // cancelled while waiting
    };
    // A manager's `scale` is `started` before the workflow has validated its parameters and
    // started its deployment modification: `planned_instances` does not show it yet.
    if window > 0 && !shared.pause(window).await {
        return;
    }
    // Taken once, by the first attempt that gets to validation (an abort_started makes two).
    let mut injected = None;
    let run = loop {
        match start_scale(shared, id, &params, &mut injected) {
            Start::Run(run) => break run,
            Start::Ended => return,
            Start::Aborted => {
                if !shared.pause(shared.timing.step_ms).await {
                    return;
                }
            }
        }
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
            Plan::Noop | Plan::Aborted => return None,
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

/// What one attempt to start a scale came to.
enum Start {
    /// The modification started: walk it.
    Run(ScaleRun),
    /// The execution ended here (cancelled before its modification started, invalid
    /// parameters, a zero delta).
    Ended,
    /// `abort_started` rolled back a left-over modification: try again a step later.
    Aborted,
}

/// Under one lock: takes an injected failure (once: `injected` keeps it across attempts),
/// validates the parameters and starts the modification.
fn start_scale(
    shared: &Shared,
    id: &str,
    params: &Value,
    injected: &mut Option<Option<String>>,
) -> Start {
    let mut model = shared.model();
    match model.execution(id).map(|e| e.status) {
        Some(ExecStatus::Started) => {}
        Some(status) if is_cancelling(status) => {
            // Cancelled before its modification started: nothing changed.
            finish(&mut model, id, ExecStatus::Cancelled, None);
            return Start::Ended;
        }
        _ => return Start::Ended,
    }
    // Taken before validation: an execution that fails on its parameters uses up the fault.
    let injected = injected
        .get_or_insert_with(|| shared.faults().take_failure())
        .clone();
    let outcome = parse_params(params)
        .and_then(|p| plan_scale(&mut model, id, &p).map(|plan| (plan, p.rollback_if_failed)));
    let run = match outcome {
        Err(f) => {
            finish(&mut model, id, ExecStatus::Failed, Some(&f));
            return Start::Ended;
        }
        Ok((Plan::Noop, _)) => {
            // "delta parameter is 0, so no scaling will take place."
            let (status, failure) = noop_outcome(injected);
            finish(&mut model, id, status, failure.as_ref());
            return Start::Ended;
        }
        Ok((Plan::Aborted, _)) => return Start::Aborted,
        Ok((plan, rollback_if_failed)) => match ScaleRun::new(plan, injected, rollback_if_failed) {
            Some(run) => run,
            None => return Start::Ended,
        },
    };
    if let Some(e) = model.execution_mut(id) {
        e.total_operations = (run.states().len() * run.gids.len()) as u64;
    }
    Start::Run(run)
}

/// How a zero-delta scale ends: `terminated`, or `failed` with the injected failure's reason
/// (a workflow failure: a zero delta runs no operation) when one was taken.
fn noop_outcome(injected: Option<String>) -> (ExecStatus, Option<Failure>) {
    match injected {
        Some(reason) => (ExecStatus::Failed, Some(Failure::runtime(reason))),
        None => (ExecStatus::Terminated, None),
    }
}

fn is_cancelling(status: ExecStatus) -> bool {
    matches!(
        status,
        ExecStatus::Cancelling | ExecStatus::ForceCancelling | ExecStatus::KillCancelling
    )
}

/// Whether an injected failure strikes at this lifecycle state: a scale-out's VM fails in its
/// `create` (it is `creating` when the execution fails, as on a manager), a scale-in's in its
/// `delete` (after `stop` ran: without rollback its victims stay `stopped` under a started
/// modification, as on a manager), unless the scale ignores failures.
fn fails_at(state: &str, scale_out: bool, ignore_failure: bool) -> bool {
    if scale_out {
        state == "created"
    } else {
        state == "deleting" && !ignore_failure
    }
}

/// Which members a lifecycle step moves. A manager walks each node instance on its own, in
/// dependency order: a port (no operation, the VM depends on it) is `started` before its VM
/// leaves `uninitialized`, and on a scale-in it goes after its VM. So on a scale-out the ports
/// take every state at the first step and the VMs walk; on a scale-in the VMs walk and the
/// ports follow at the last step (`deleted`).
fn step_members(scale_out: bool, state: &'static str, first: bool) -> Vec<(Members, &'static str)> {
    let mut moves = vec![(Members::Vms, state)];
    if scale_out && first {
        moves.push((Members::Others, "started"));
    } else if !scale_out && state == "deleted" {
        moves.push((Members::Others, "deleted"));
    }
    moves
}

/// The first VM of the scale: the instance a failed operation names.
fn first_vm_id(model: &Model, run: &ScaleRun) -> String {
    run.gids
        .first()
        .and_then(|gid| {
            model.deployments[run.di]
                .group(&run.group)?
                .instances
                .get(gid)
        })
        .and_then(|keys| keys.first())
        .and_then(|key| model.instances.get(key))
        .map(|inst| inst.id.clone())
        .unwrap_or_default()
}

/// Walks the scale's instances through its lifecycle states, one `step_ms` each. True when
/// every state was reached; false when the execution ended on the way (cancelled, failed by
/// an injected failure) or the simulator is shutting down.
async fn walk_lifecycle(shared: &Shared, id: &str, run: &ScaleRun) -> bool {
    for (i, &state) in run.states().iter().enumerate() {
        if !shared.pause(shared.timing.step_ms).await {
            return false;
        }
        // The guard must not live across the rollback's pause (the runner task is `Send`).
        let failure = {
            let mut model = shared.model();
            if model.execution(id).is_some_and(|e| is_cancelling(e.status)) {
                // A cancelled scale leaves its modification started, as on a manager.
                finish(&mut model, id, ExecStatus::Cancelled, None);
                return false;
            }
            match &run.injected {
                Some(reason) if fails_at(state, run.scale_out, run.ignore_failure) => {
                    let vm = first_vm_id(&model, run);
                    if run.rollback_if_failed && run.scale_out {
                        // A manager uninstalls the half-created VMs first: they show
                        // `uninitialized` again for a moment, the execution still `started`,
                        // before their rows go.
                        model.set_members_state(
                            run.di,
                            &run.group,
                            &run.gids,
                            Members::Vms,
                            "uninitialized",
                        );
                    }
                    Some(injected_failure(reason.clone(), run.scale_out, &vm))
                }
                _ => {
                    for (members, member_state) in step_members(run.scale_out, state, i == 0) {
                        model.set_members_state(
                            run.di,
                            &run.group,
                            &run.gids,
                            members,
                            member_state,
                        );
                    }
                    if state == "started" {
                        for gid in &run.gids {
                            model.set_started_runtime(run.di, &run.group, gid);
                        }
                    }
                    if let Some(e) = model.execution_mut(id) {
                        e.finished_operations += run.gids.len() as u64;
                    }
                    None
                }
            }
        };
        let Some(failure) = failure else { continue };
        if run.rollback_if_failed && run.scale_out && !shared.pause(shared.timing.step_ms).await {
            return false;
        }
        let mut model = shared.model();
        if run.rollback_if_failed {
            let restore: &[String] = if run.scale_out { &[] } else { &run.gids };
            rollback_modification(&mut model, run.di, restore);
        }
        finish(&mut model, id, ExecStatus::Failed, Some(&failure));
        return false;
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

/// The failure of the VM operation an injected fault strikes (`create` on a scale-out,
/// `delete` on a scale-in), as the manager reports a failed task: the plugin's
/// NonRecoverableError with the fault's reason.
fn injected_failure(reason: String, scale_out: bool, vm: &str) -> Failure {
    let (task, operation) = if scale_out {
        ("nova_plugin.server.create", "create")
    } else {
        ("nova_plugin.server.delete", "delete")
    };
    Failure {
        kind: "cloudify.exceptions.NonRecoverableError",
        message: reason,
        line: SCALE_ENTITY_LINE,
        task: Some((
            task,
            format!("{vm}:cloudify.interfaces.lifecycle.{operation}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_rendered_as_the_last_frame_of_a_workflow_traceback() {
        // The manager stores no "Traceback" header: the frame that raised, then the exception.
        assert_eq!(
            Failure::value("bad").at(665).text(),
            "File \"/opt/mgmtworker/env/lib/python3.11/site-packages/cloudify/plugins/\
             workflows.py\", line 665, in scale_entity\n  raise ValueError(\nValueError: bad\n"
        );
    }

    #[test]
    fn an_injected_failure_is_a_failed_task_of_the_vm() {
        let text = injected_failure("Quota exceeded".into(), true, "workers_host_ab12cd").text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Task failed: nova_plugin.server.create (workers_host_ab12cd:cloudify.interfaces.\
             lifecycle.create): NonRecoverableError `Quota exceeded`"
        );
        assert!(
            lines[1].starts_with("Traceback of nova_plugin.server.create (workers_host_ab12cd:")
        );
        assert_eq!(
            lines.last().copied(),
            Some("cloudify.exceptions.NonRecoverableError: Quota exceeded")
        );
        let scale_in = injected_failure("boom".into(), false, "vm_1").text();
        assert!(
            scale_in.starts_with(
                "Task failed: nova_plugin.server.delete (vm_1:cloudify.interfaces.lifecycle.delete)"
            ),
            "{scale_in}"
        );
    }

    #[test]
    fn injected_failures_strike_while_creating_or_at_delete() {
        for state in SCALE_OUT_STATES {
            // Failing as `created` is reached leaves the VM `creating`, as a failed create does.
            assert_eq!(fails_at(state, true, false), *state == "created", "{state}");
            assert_eq!(fails_at(state, true, true), *state == "created", "{state}");
        }
        for state in SCALE_IN_STATES {
            assert_eq!(
                fails_at(state, false, false),
                *state == "deleting",
                "{state}"
            );
            assert!(!fails_at(state, false, true), "{state}");
        }
    }

    #[test]
    fn ports_start_before_their_vm_and_go_after_it() {
        assert_eq!(
            step_members(true, "initializing", true),
            [(Members::Vms, "initializing"), (Members::Others, "started")]
        );
        assert_eq!(
            step_members(true, "creating", false),
            [(Members::Vms, "creating")]
        );
        assert_eq!(
            step_members(false, "stopping", true),
            [(Members::Vms, "stopping")]
        );
        assert_eq!(
            step_members(false, "deleted", false),
            [(Members::Vms, "deleted"), (Members::Others, "deleted")]
        );
    }

    #[test]
    fn a_zero_delta_scale_fails_only_with_an_injected_failure() {
        assert!(matches!(noop_outcome(None), (ExecStatus::Terminated, None)));
        let (status, failure) = noop_outcome(Some("boom".into()));
        assert_eq!(status, ExecStatus::Failed);
        let failure = failure.expect("the injected failure");
        assert_eq!(
            (failure.kind, failure.message.as_str()),
            ("RuntimeError", "boom")
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
