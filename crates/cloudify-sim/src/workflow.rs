//! The `scale` workflow (`cloudify.plugins.workflows.scale_entity` + the manager's deployment
//! modification), run by one tokio task per deployment that starts queued executions in FIFO
//! order, one at a time, as the manager's dequeue loop does.

use std::sync::Arc;

use rand::seq::SliceRandom;
use serde_json::Value;

use super::query::parse_bool;
use super::shared::Shared;
use super::state::{
    ExecStatus, Model, Modification, ModificationRecord, ModificationStatus, now_stamp,
};

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

/// Largest group the simulator will build (a manager would run out of memory or of its 36^6
/// instance-id space long before a delta of i64::MAX; the simulator refuses instead).
const MAX_GROUP_INSTANCES: i64 = 10_000_000;

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

/// What a validated scale will do.
enum Plan {
    Noop,
    Out {
        di: usize,
        group: String,
        gids: Vec<String>,
    },
    In {
        di: usize,
        group: String,
        gids: Vec<String>,
        ignore_failure: bool,
    },
}

struct ScaleParams {
    entity: String,
    delta: i64,
    scale_compute: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    ignore_failure: bool,
    rollback_if_failed: bool,
    abort_started: bool,
}

fn truthy(v: Option<&Value>, default: bool) -> bool {
    match v {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => parse_bool(s).unwrap_or(!s.is_empty()),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// `include_instances`/`exclude_instances`: null → [], a string → [it], a list → its items.
fn id_list(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(other) => vec![other.to_string()],
    }
}

fn parse_params(params: &Value) -> Result<ScaleParams, Failure> {
    let delta = match params.get("delta") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        None | Some(Value::Null) => Some(1),
        _ => None,
    }
    .ok_or_else(|| {
        Failure::value(format!(
            "The delta parameter must be a number. Got: {}",
            params.get("delta").cloned().unwrap_or(Value::Null)
        ))
    })?;
    let entity = match params.get("scalable_entity_name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok(ScaleParams {
        entity,
        delta,
        scale_compute: truthy(params.get("scale_compute"), false),
        include: id_list(params.get("include_instances")),
        exclude: id_list(params.get("exclude_instances")),
        ignore_failure: truthy(params.get("ignore_failure"), false),
        rollback_if_failed: truthy(params.get("rollback_if_failed"), true),
        abort_started: truthy(params.get("abort_started"), false),
    })
}

/// Undoes a started modification: drops the instances it added, restores the ones it was
/// removing, and resets `planned_instances` (the manager's `rollback_deployment_modification`).
fn rollback_modification(model: &mut Model, di: usize, removing: &[String]) {
    let Some(modification) = model.end_modification(di, ModificationStatus::RolledBack) else {
        return;
    };
    model.remove_group_instances(di, &modification.group, &modification.added);
    model.set_group_instances_state(di, &modification.group, removing, "started");
    if let Some(g) = model.deployments[di].group_mut(&modification.group) {
        g.planned = g.current;
    }
}

/// Validates the scale (in `scale_entity`'s order) and starts the deployment modification:
/// `planned_instances` set, new instances inserted `uninitialized`, victims chosen.
fn plan_scale(model: &mut Model, exec_id: &str, p: &ScaleParams) -> Result<Plan, Failure> {
    let Some((tenant, dep)) = model
        .execution(exec_id)
        .map(|e| (e.tenant.clone(), e.deployment_id.clone()))
    else {
        return Err(Failure::runtime("execution vanished"));
    };
    let di = model
        .deployment_index(&tenant, &dep)
        .ok_or_else(|| Failure::runtime(format!("Deployment {dep} not found")))?;
    if p.delta == 0 {
        return Ok(Plan::Noop);
    }
    if p.delta > 0 && (!p.include.is_empty() || !p.exclude.is_empty()) {
        return Err(Failure::value(
            "Instances cannot be included or excluded when scaling up.",
        ));
    }
    let Some(group) = model.deployments[di].group(&p.entity).cloned() else {
        let is_node = model
            .nodes
            .iter()
            .any(|n| *n.tenant == *tenant && *n.deployment_id == *dep && n.id == p.entity);
        return Err(if is_node {
            Failure::runtime(format!(
                "The simulator scales scaling groups only; {} is a node",
                p.entity
            ))
        } else {
            Failure::value(format!("No scalable entity named {} was found", p.entity))
        });
    };
    if p.scale_compute && (!p.include.is_empty() || !p.exclude.is_empty()) {
        return Err(Failure::runtime(
            "Cannot include or exclude instances while scale_compute is True. Please specify \
             the desired compute node instances.",
        ));
    }
    // Hints may name a group instance or any member node instance of one.
    let resolve = |id: &str| -> Option<String> {
        if group.instances.contains_key(id) {
            return Some(id.to_string());
        }
        let inst = model.instance_by_id(id)?;
        match &inst.group {
            Some((name, gid)) if **name == *group.name && *inst.deployment_id == *dep => {
                Some(gid.clone())
            }
            _ => None,
        }
    };
    let unknown: Vec<&String> = p
        .include
        .iter()
        .chain(&p.exclude)
        .filter(|id| resolve(id).is_none())
        .collect();
    if !unknown.is_empty() {
        let available: Vec<&String> = group.instances.keys().take(20).collect();
        return Err(Failure::runtime(format!(
            "Node instances or groups {unknown:?} do not exist in scaling group {}. \
             Available group instances (first 20): {available:?}",
            group.name
        )));
    }
    let include: Vec<String> = dedup(p.include.iter().filter_map(|id| resolve(id)));
    let exclude: Vec<String> = dedup(p.exclude.iter().filter_map(|id| resolve(id)));
    let both: Vec<&String> = include.iter().filter(|g| exclude.contains(g)).collect();
    if !both.is_empty() {
        return Err(Failure::runtime(format!(
            "Instances {both:?} cannot be both included and excluded"
        )));
    }
    // Saturating: a delta near i64::MAX/MIN must fail the execution, not overflow.
    let target = group.current.saturating_add(p.delta);
    if target > MAX_GROUP_INSTANCES {
        return Err(Failure::runtime(format!(
            "Provided delta: {} would make {} group instances; the simulator caps a group at \
             {MAX_GROUP_INSTANCES}",
            p.delta, target
        )));
    }
    if target >= 0 && i64::try_from(exclude.len()).unwrap_or(i64::MAX) > target {
        return Err(Failure::runtime(format!(
            "Cannot exclude {} group instances: only {target} will remain",
            exclude.len()
        )));
    }
    if target < 0 {
        return Err(Failure::value(format!(
            "Provided delta: {} is illegal. current number of instances of entity {} is {}",
            p.delta, group.name, group.current
        )));
    }
    if model.deployments[di].modification.is_some() {
        if !p.abort_started {
            return Err(Failure {
                kind: "cloudify_rest_client.exceptions.ExistingStartedDeploymentModificationError",
                message: format!(
                    "Cannot start deployment modification while there are existing started \
                     deployment modifications. Deployment: {dep}"
                ),
            });
        }
        let removing = model.deployments[di]
            .modification
            .as_ref()
            .map(|m| m.removing.clone())
            .unwrap_or_default();
        rollback_modification(model, di, &removing);
    }
    let creator = model
        .execution(exec_id)
        .map(|e| Arc::<str>::from(e.created_by.as_str()))
        .unwrap_or_else(|| Arc::from("admin"));
    let plan = if p.delta > 0 {
        let mut gids = Vec::new();
        for _ in 0..p.delta {
            let gid = model
                .add_group_instance(di, &group.name, &creator, "uninitialized")
                .map_err(|e| Failure::runtime(e.to_string()))?;
            gids.push(gid);
        }
        Plan::Out {
            di,
            group: group.name.clone(),
            gids,
        }
    } else {
        let wanted = usize::try_from(p.delta.unsigned_abs()).unwrap_or(usize::MAX);
        let mut victims: Vec<String> = include.into_iter().take(wanted).collect();
        // Without hints the manager picks from a Python set: arbitrary. Random here, so a
        // client that forgets include_instances is caught.
        let mut rest: Vec<String> = group
            .instances
            .keys()
            .filter(|g| !victims.contains(g) && !exclude.contains(g))
            .cloned()
            .collect();
        rest.shuffle(&mut model.rng);
        let mut excluded = exclude.clone();
        excluded.shuffle(&mut model.rng);
        for gid in rest.into_iter().chain(excluded) {
            if victims.len() >= wanted {
                break;
            }
            victims.push(gid);
        }
        Plan::In {
            di,
            group: group.name.clone(),
            gids: victims,
            ignore_failure: p.ignore_failure,
        }
    };
    let (group_name, added, removing) = match &plan {
        Plan::Out { group, gids, .. } => (group.clone(), gids.clone(), Vec::new()),
        Plan::In { group, gids, .. } => (group.clone(), Vec::new(), gids.clone()),
        Plan::Noop => return Ok(Plan::Noop),
    };
    if let Some(g) = model.deployments[di].group_mut(&group_name) {
        g.planned = target;
    }
    let members = |model: &Model, gids: &[String]| -> Vec<String> {
        let Some(g) = model.deployments[di].group(&group_name) else {
            return Vec::new();
        };
        gids.iter()
            .filter_map(|gid| g.instances.get(gid))
            .flatten()
            .filter_map(|k| model.instances.get(k))
            .map(|i| i.id.clone())
            .collect()
    };
    let record = ModificationRecord {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: tenant.clone(),
        deployment_id: dep.clone(),
        status: ModificationStatus::Started,
        created_at: now_stamp(),
        ended_at: None,
        modified_nodes: serde_json::json!({ group_name.as_str(): {
            "instances": target,
            "removed_ids_include_hint": p.include,
            "removed_ids_exclude_hint": p.exclude,
        }}),
        added_instances: members(model, &added),
        removed_instances: members(model, &removing),
        execution_id: exec_id.to_owned(),
        created_by: creator.to_string(),
    };
    model.modifications.push(record);
    model.deployments[di].modification = Some(Modification {
        group: group_name,
        added,
        removing,
        record: model.modifications.len() - 1,
    });
    Ok(plan)
}

fn dedup(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
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
    let started = {
        let mut model = shared.model();
        let params = match model.execution_mut(id) {
            Some(e) if e.status == ExecStatus::Pending => {
                e.status = ExecStatus::Started;
                e.started_at = Some(now_stamp());
                e.parameters.clone()
            }
            _ => return, // cancelled while waiting
        };
        (params, shared.faults().started_window_ms)
    };
    // A manager's `scale` is `started` before the workflow has validated its parameters and
    // started its deployment modification: `planned_instances` does not show it yet.
    let (params, window) = started;
    if window > 0 && !shared.pause(window).await {
        return;
    }
    let (plan, injected, rollback) = {
        let mut model = shared.model();
        match model.execution(id).map(|e| e.status) {
            Some(ExecStatus::Started) => {}
            Some(
                ExecStatus::Cancelling | ExecStatus::ForceCancelling | ExecStatus::KillCancelling,
            ) => {
                // Cancelled before its modification started: nothing changed.
                return finish(&mut model, id, ExecStatus::Cancelled, None);
            }
            _ => return,
        }
        let injected = shared.faults().take_failure();
        let parsed = match parse_params(&params) {
            Ok(p) => p,
            Err(f) => return finish(&mut model, id, ExecStatus::Failed, Some(&f)),
        };
        match plan_scale(&mut model, id, &parsed) {
            Err(f) => return finish(&mut model, id, ExecStatus::Failed, Some(&f)),
            Ok(Plan::Noop) => {
                // "delta parameter is 0, so no scaling will take place."
                let status = if injected.is_some() {
                    ExecStatus::Failed
                } else {
                    ExecStatus::Terminated
                };
                let failure = injected.map(|r| injected_failure(r, true));
                return finish(&mut model, id, status, failure.as_ref());
            }
            Ok(plan) => (plan, injected, parsed.rollback_if_failed),
        }
    };
    let (di, group, gids, states, scale_out, ignore_failure) = match &plan {
        Plan::Out { di, group, gids } => (*di, group, gids, SCALE_OUT_STATES, true, false),
        Plan::In {
            di,
            group,
            gids,
            ignore_failure,
        } => (*di, group, gids, SCALE_IN_STATES, false, *ignore_failure),
        Plan::Noop => return,
    };
    {
        let mut model = shared.model();
        if let Some(e) = model.execution_mut(id) {
            e.total_operations = (states.len() * gids.len()) as u64;
        }
    }
    for &state in states {
        if !shared.pause(shared.timing.step_ms).await {
            return;
        }
        let mut model = shared.model();
        let status = model.execution(id).map(|e| e.status);
        if matches!(
            status,
            Some(ExecStatus::Cancelling | ExecStatus::ForceCancelling | ExecStatus::KillCancelling)
        ) {
            // A cancelled scale leaves its modification started, as on a manager.
            return finish(&mut model, id, ExecStatus::Cancelled, None);
        }
        // A scale-in fails at `delete`, after `stop` ran: without rollback its victims stay
        // `stopped` under a started modification, as on a manager.
        let fails_here = injected.is_some()
            && if scale_out {
                state == "creating"
            } else {
                state == "deleting" && !ignore_failure
            };
        if fails_here {
            if rollback {
                rollback_modification(&mut model, di, if scale_out { &[] } else { gids });
            }
            let failure = injected.clone().map(|r| injected_failure(r, scale_out));
            return finish(&mut model, id, ExecStatus::Failed, failure.as_ref());
        }
        model.set_group_instances_state(di, group, gids, state);
        if state == "started" {
            for gid in gids {
                model.set_started_runtime(di, group, gid);
            }
        }
        if let Some(e) = model.execution_mut(id) {
            e.finished_operations += gids.len() as u64;
        }
    }
    let mut model = shared.model();
    if !scale_out {
        model.remove_group_instances(di, group, gids);
    }
    if let Some(g) = model.deployments[di].group_mut(group) {
        g.current = g.planned;
    }
    model.end_modification(di, ModificationStatus::Finished);
    finish(&mut model, id, ExecStatus::Terminated, None);
}

fn injected_failure(reason: String, scale_out: bool) -> Failure {
    let operation = if scale_out { "create" } else { "delete" };
    Failure::runtime(format!(
        "Workflow failed: Task failed 'cloudify_openstack.nova_plugin.server.{operation}' -> {reason}"
    ))
}
