//! Validating a `scale` and starting its deployment modification, in `scale_entity`'s order:
//! read the parameters, find the scaling group, resolve the include/exclude hints, bound the
//! target size, clear (or refuse over) a started modification, then insert the new instances
//! or choose the victims and record the modification. Every refusal is a [`Failure`] the
//! execution ends with.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::Value;

use super::Failure;
use crate::query::parse_bool;
use crate::state::{
    Model, Modification, ModificationRecord, ModificationStatus, ScalingGroup, now_stamp,
};

/// Largest group the simulator will build (a manager would run out of memory or of its 36^6
/// instance-id space long before a delta of i64::MAX; the simulator refuses instead).
const MAX_GROUP_INSTANCES: i64 = 10_000_000;

/// What a validated scale will do.
#[derive(Debug)]
pub(super) enum Plan {
    Noop,
    /// `abort_started` rolled back a left-over started modification and nothing else happened
    /// yet: the runner lets a step pass (a manager's rollback and the next modification are two
    /// REST calls apart, and clients see `planned_instances` back at `current_instances` in
    /// between), then plans the scale again on what the rollback left.
    Aborted,
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

/// The `scale` workflow's parameters, read the way `scale_entity` reads them.
#[derive(Debug)]
pub(super) struct ScaleParams {
    entity: String,
    delta: i64,
    scale_compute: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    ignore_failure: bool,
    pub(super) rollback_if_failed: bool,
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

/// `include_instances`/`exclude_instances`: null → `[]`, a string → `[it]`, a list → its items
/// (non-strings stringified).
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

pub(super) fn parse_params(params: &Value) -> Result<ScaleParams, Failure> {
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
        .at(657)
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
pub(super) fn rollback_modification(model: &mut Model, di: usize, removing: &[String]) {
    let Some(modification) = model.end_modification(di, ModificationStatus::RolledBack) else {
        return;
    };
    model.remove_group_instances(di, &modification.group, &modification.added);
    model.set_group_instances_state(di, &modification.group, removing, "started");
    if let Some(g) = model.deployments[di].group_mut(&modification.group) {
        g.planned = g.current;
    }
}

/// Where a scale runs: the tenant and deployment of its execution, and the deployment's index
/// in [`Model::deployments`].
#[derive(Debug)]
struct ScaleSite {
    tenant: Arc<str>,
    deployment: Arc<str>,
    di: usize,
}

/// Validates the scale (in `scale_entity`'s order) and starts the deployment modification:
/// `planned_instances` set, new instances inserted `uninitialized`, victims chosen.
pub(super) fn plan_scale(
    model: &mut Model,
    exec_id: &str,
    p: &ScaleParams,
) -> Result<Plan, Failure> {
    let site = scale_site(model, exec_id)?;
    if p.delta == 0 {
        return Ok(Plan::Noop);
    }
    reject_hints_on_scale_out(p)?;
    let group = scaling_group(model, &site, &p.entity)?;
    validate_hints(model, &site, &group, p)?;
    let (include, exclude) = resolve_hints(model, &site, &group, p)?;
    let target = target_size(&group, p.delta)?;
    if clear_started_modification(model, &site, p.abort_started)? {
        // The rollback deleted the instances the old modification added: the next call takes
        // hints and victims from the group as it is then, as the manager resolves them after
        // its abort.
        return Ok(Plan::Aborted);
    }
    let creator = execution_creator(model, exec_id);
    let plan = if p.delta > 0 {
        Plan::Out {
            di: site.di,
            group: group.name.clone(),
            gids: add_new_instances(model, site.di, &group.name, &creator, p.delta)?,
        }
    } else {
        let wanted = usize::try_from(p.delta.unsigned_abs()).unwrap_or(usize::MAX);
        Plan::In {
            di: site.di,
            group: group.name.clone(),
            gids: choose_victims(&mut model.rng, &group, include, &exclude, wanted),
            ignore_failure: p.ignore_failure,
        }
    };
    start_modification(model, &site, exec_id, p, &creator, target, &plan);
    Ok(plan)
}

/// The deployment the execution scales. The execution vanishing or its deployment missing
/// cannot happen through the API (neither is ever deleted); they fail the execution rather
/// than panic the runner.
fn scale_site(model: &Model, exec_id: &str) -> Result<ScaleSite, Failure> {
    let Some((tenant, deployment)) = model
        .execution(exec_id)
        .map(|e| (e.tenant.clone(), e.deployment_id.clone()))
    else {
        return Err(Failure::runtime("execution vanished"));
    };
    let di = model
        .deployment_index(&tenant, &deployment)
        .ok_or_else(|| Failure::runtime(format!("Deployment {deployment} not found")))?;
    Ok(ScaleSite {
        tenant,
        deployment,
        di,
    })
}

/// `include_instances`/`exclude_instances` only steer which instances a scale-in removes; a
/// scale-out naming any is `scale_entity`'s ValueError.
fn reject_hints_on_scale_out(p: &ScaleParams) -> Result<(), Failure> {
    if p.delta > 0 && (!p.include.is_empty() || !p.exclude.is_empty()) {
        return Err(
            Failure::value("Instances cannot be included or excluded when scaling up.").at(665),
        );
    }
    Ok(())
}

/// The scaling group `scalable_entity_name` names, cloned. A manager can also scale a node;
/// the simulator cannot, and says so (RuntimeError) rather than pretend the node is unknown.
fn scaling_group(model: &Model, site: &ScaleSite, entity: &str) -> Result<ScalingGroup, Failure> {
    if let Some(group) = model.deployments[site.di].group(entity) {
        return Ok(group.clone());
    }
    let is_node = model.nodes.iter().any(|n| {
        *n.tenant == *site.tenant && *n.deployment_id == *site.deployment && n.id == entity
    });
    Err(if is_node {
        Failure::runtime(format!(
            "The simulator scales scaling groups only; {entity} is a node"
        ))
    } else {
        Failure::value(format!("No scalable entity named {entity} was found")).at(691)
    })
}

/// `validate_inclusions_and_exclusions`: every problem with the hints of a scale-in, joined in
/// one RuntimeError that ends listing the deployment's group instances and their members, in
/// the manager's words and order (hints naming nothing, then instances both included and
/// excluded, too many exclusions, hints with `scale_compute`).
fn validate_hints(
    model: &Model,
    site: &ScaleSite,
    group: &ScalingGroup,
    p: &ScaleParams,
) -> Result<(), Failure> {
    if p.include.is_empty() && p.exclude.is_empty() {
        return Ok(());
    }
    let resolve = |id: &str| hinted_group_instance(model, site, group, id);
    let mut message = String::new();
    for (list, what) in [(&p.include, "included"), (&p.exclude, "excluded")] {
        let missing = dedup(list.iter().filter(|id| resolve(id).is_none()).cloned());
        if !missing.is_empty() {
            message.push_str(&format!(
                "The following {what} instances did not exist: {}. ",
                missing.join(", ")
            ));
        }
    }
    let both = dedup(
        p.exclude
            .iter()
            .filter(|id| p.include.contains(id))
            .cloned(),
    );
    if !both.is_empty() {
        message.push_str(&format!(
            "The following instances were both excluded and included: {}. ",
            both.join(", ")
        ));
    }
    // The manager counts every group instance of the deployment (all its scaling groups)
    // against the excluded ones.
    let excluded_groups = dedup(p.exclude.iter().filter_map(|id| resolve(id))).len();
    let all_group_instances: usize = model.deployments[site.di]
        .groups
        .iter()
        .map(|g| g.instances.len())
        .sum();
    let planned = i64::try_from(all_group_instances)
        .unwrap_or(i64::MAX)
        .saturating_add(p.delta);
    if planned < i64::try_from(excluded_groups).unwrap_or(i64::MAX) {
        message.push_str(&format!(
            "Instances from too many different groups were excluded. Target number of group \
             instances was {planned}, but {excluded_groups} excluded groups."
        ));
    }
    if p.scale_compute {
        message.push_str(
            "Cannot include or exclude instances while scale_compute is True. Please specify \
             the desired compute instances and set scale_compute to False. ",
        );
    }
    if message.is_empty() {
        return Ok(());
    }
    message.push_str(&groups_and_members(model, site.di));
    Err(Failure::runtime(message).at(677))
}

/// "Groups and member instances were: <gid>: <port>, <vm>; ...": every group instance of the
/// deployment with its members, the port first as the manager lists them (node order: the VM
/// depends on its port).
fn groups_and_members(model: &Model, di: usize) -> String {
    let mut parts = Vec::new();
    for g in &model.deployments[di].groups {
        for (gid, keys) in &g.instances {
            let ids: Vec<&str> = keys
                .iter()
                .rev()
                .filter_map(|k| model.instances.get(k))
                .map(|i| i.id.as_str())
                .collect();
            parts.push(format!("{gid}: {}", ids.join(", ")));
        }
    }
    format!("Groups and member instances were: {}", parts.join("; "))
}

/// The group instance a hint names: a hint may be a group-instance id or the id of any member
/// node instance of one in this deployment.
fn hinted_group_instance(
    model: &Model,
    site: &ScaleSite,
    group: &ScalingGroup,
    id: &str,
) -> Option<String> {
    if group.instances.contains_key(id) {
        return Some(id.to_string());
    }
    let inst = model.instance_by_id(id)?;
    match &inst.group {
        Some((name, gid)) if **name == *group.name && *inst.deployment_id == *site.deployment => {
            Some(gid.clone())
        }
        _ => None,
    }
}

/// The include and exclude hints as group-instance ids, each list without repeats, in the
/// order given (validate_hints has refused hints naming nothing). A group instance both
/// included and excluded through different members (a VM included, its port excluded) is
/// refused too: unverified on a manager, whose check compares the ids as given.
fn resolve_hints(
    model: &Model,
    site: &ScaleSite,
    group: &ScalingGroup,
    p: &ScaleParams,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let resolve = |id: &str| hinted_group_instance(model, site, group, id);
    let unknown: Vec<&String> = p
        .include
        .iter()
        .chain(&p.exclude)
        .filter(|id| resolve(id).is_none())
        .collect();
    if !unknown.is_empty() {
        // Only after an abort_started rollback removed what a hint named.
        return Err(Failure::runtime(format!(
            "The following included instances did not exist: {}. {}",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            groups_and_members(model, site.di)
        ))
        .at(677));
    }
    let include: Vec<String> = dedup(p.include.iter().filter_map(|id| resolve(id)));
    let exclude: Vec<String> = dedup(p.exclude.iter().filter_map(|id| resolve(id)));
    let both: Vec<&String> = include.iter().filter(|g| exclude.contains(g)).collect();
    if !both.is_empty() {
        return Err(Failure::runtime(format!(
            "Instances {both:?} cannot be both included and excluded"
        )));
    }
    Ok((include, exclude))
}

/// The group's size once the scale is done (`planned_instances`). Refused: above the
/// simulator's cap, or below zero (the manager's ValueError). min/max are not checked, as on
/// a manager.
fn target_size(group: &ScalingGroup, delta: i64) -> Result<i64, Failure> {
    // Saturating: a delta near i64::MAX/MIN must fail the execution, not overflow.
    let target = group.current.saturating_add(delta);
    if target > MAX_GROUP_INSTANCES {
        return Err(Failure::runtime(format!(
            "Provided delta: {delta} would make {target} group instances; the simulator caps a \
             group at {MAX_GROUP_INSTANCES}"
        )));
    }
    if target < 0 {
        return Err(Failure::value(format!(
            "Provided delta: {delta} is illegal. current number of instances of entity {} is {}",
            group.name, group.current
        ))
        .at(707));
    }
    Ok(target)
}

/// A deployment holds one started modification at a time. One left by a failed, cancelled or
/// killed scale blocks the next scale (the REST client's error) unless it passes
/// `abort_started`, which rolls the old one back first. True when it rolled one back.
fn clear_started_modification(
    model: &mut Model,
    site: &ScaleSite,
    abort_started: bool,
) -> Result<bool, Failure> {
    let Some(started) = &model.deployments[site.di].modification else {
        return Ok(false);
    };
    if !abort_started {
        // Raised by the REST service (HTTP 400) and re-raised by the workflow's client.
        let id = model
            .modifications
            .get(started.record)
            .map(|r| r.id.clone())
            .unwrap_or_default();
        return Err(Failure {
            kind: "cloudify_rest_client.exceptions.ExistingStartedDeploymentModificationError",
            message: format!(
                "400: Cannot start deployment modification while there are existing started \
                 deployment modifications. Currently started deployment modifications: ['{id}']"
            ),
            line: 725,
            task: None,
        });
    }
    let removing = started.removing.clone();
    rollback_modification(model, site.di, &removing);
    Ok(true)
}

/// Who the new instances and the modification are created by: the user who started the
/// execution (`admin` should the execution have vanished).
fn execution_creator(model: &Model, exec_id: &str) -> Arc<str> {
    model
        .execution(exec_id)
        .map(|e| Arc::<str>::from(e.created_by.as_str()))
        .unwrap_or_else(|| Arc::from("admin"))
}

/// Inserts `count` group instances `uninitialized`, as the manager does when it starts a
/// scale-out's modification; returns their ids in insertion order.
fn add_new_instances(
    model: &mut Model,
    di: usize,
    group: &str,
    creator: &Arc<str>,
    count: i64,
) -> Result<Vec<String>, Failure> {
    let mut gids = Vec::new();
    for _ in 0..count {
        let gid = model
            .add_group_instance(di, group, creator, "uninitialized")
            .map_err(|e| Failure::runtime(e.to_string()))?;
        gids.push(gid);
    }
    Ok(gids)
}

/// The `wanted` group instances a scale-in removes: the include hints first (in order), then
/// instances neither included nor excluded, then excluded ones only if nothing else is left.
fn choose_victims(
    rng: &mut StdRng,
    group: &ScalingGroup,
    include: Vec<String>,
    exclude: &[String],
    wanted: usize,
) -> Vec<String> {
    let mut victims: Vec<String> = include.into_iter().take(wanted).collect();
    // Without hints the manager picks from a Python set: arbitrary. Random here, so a client
    // that forgets include_instances is caught.
    let mut rest: Vec<String> = group
        .instances
        .keys()
        .filter(|g| !victims.contains(g) && !exclude.contains(g))
        .cloned()
        .collect();
    rest.shuffle(rng);
    let mut excluded = exclude.to_vec();
    excluded.shuffle(rng);
    for gid in rest.into_iter().chain(excluded) {
        if victims.len() >= wanted {
            break;
        }
        victims.push(gid);
    }
    victims
}

/// Ids of the member node instances (VM, then port) of the given group instances.
fn member_instance_ids(model: &Model, di: usize, group: &str, gids: &[String]) -> Vec<String> {
    let Some(g) = model.deployments[di].group(group) else {
        return Vec::new();
    };
    gids.iter()
        .filter_map(|gid| g.instances.get(gid))
        .flatten()
        .filter_map(|k| model.instances.get(k))
        .map(|i| i.id.clone())
        .collect()
}

/// Starts the deployment modification of a scale that adds or removes instances: sets
/// `planned_instances` to `target`, appends the `GET /deployment-modifications` row and
/// marks the deployment's modification started.
fn start_modification(
    model: &mut Model,
    site: &ScaleSite,
    exec_id: &str,
    p: &ScaleParams,
    creator: &str,
    target: i64,
    plan: &Plan,
) {
    let (group_name, added, removing) = match plan {
        Plan::Out { group, gids, .. } => (group.clone(), gids.clone(), Vec::new()),
        Plan::In { group, gids, .. } => (group.clone(), Vec::new(), gids.clone()),
        Plan::Noop | Plan::Aborted => return,
    };
    let di = site.di;
    if let Some(g) = model.deployments[di].group_mut(&group_name) {
        g.planned = target;
    }
    let record = ModificationRecord {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: site.tenant.clone(),
        deployment_id: site.deployment.clone(),
        status: ModificationStatus::Started,
        created_at: now_stamp(),
        ended_at: None,
        modified_nodes: serde_json::json!({ group_name.as_str(): {
            "instances": target,
            "removed_ids_include_hint": p.include,
            "removed_ids_exclude_hint": p.exclude,
        }}),
        added_instances: member_instance_ids(model, di, &group_name, &added),
        removed_instances: member_instance_ids(model, di, &group_name, &removing),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scenario::Scenario;
    use crate::state::{ExecStatus, Execution};

    /// `pool` has `workers` (3 instances, min 2 / max 4) and a standalone VM node;
    /// `other` has a `workers` group of its own.
    fn model() -> Model {
        let scenario = Scenario::from_yaml_str(
            "seed: 7
deployments:
  - id: pool
    scaling_groups: [{name: workers, min: 2, max: 4, current: 3}]
    standalone_vms: 1
  - id: other
    scaling_groups: [{name: workers, current: 1}]
",
        )
        .expect("scenario");
        Model::from_scenario(&scenario).expect("model")
    }

    /// Stores a started `scale` execution of `deployment` by `alice`; returns its id.
    fn execution(model: &mut Model, deployment: &str) -> String {
        let id = format!("exec-{}", model.executions.len());
        model.push_execution(Execution::scale_for_test(
            &id,
            "default_tenant",
            deployment,
            "alice",
            ExecStatus::Started,
        ));
        id
    }

    fn params(v: Value) -> ScaleParams {
        parse_params(&v).expect("valid parameters")
    }

    fn group_of(model: &Model, di: usize) -> &ScalingGroup {
        model.deployments[di].group("workers").expect("workers")
    }

    /// Group-instance ids of `pool/workers`, in id order.
    fn gids(model: &Model) -> Vec<String> {
        group_of(model, 0).instances.keys().cloned().collect()
    }

    /// Member node-instance ids (VM, port) of a `pool/workers` group instance.
    fn members(model: &Model, gid: &str) -> Vec<String> {
        member_instance_ids(model, 0, "workers", &[gid.to_string()])
    }

    fn site(model: &Model, deployment: &str) -> ScaleSite {
        let di = model
            .deployment_index("default_tenant", deployment)
            .expect("deployment");
        ScaleSite {
            tenant: Arc::from("default_tenant"),
            deployment: Arc::from(deployment),
            di,
        }
    }

    /// Plans a scale of `pool` with `p`, expecting a failure; returns `(kind, message)`.
    fn refused(model: &mut Model, p: Value) -> (&'static str, String) {
        let id = execution(model, "pool");
        let f = plan_after_abort(model, &id, &params(p)).expect_err("refused");
        (f.kind, f.message)
    }

    /// plan_scale as the runner calls it: again after an `abort_started` rollback.
    fn plan_after_abort(model: &mut Model, id: &str, p: &ScaleParams) -> Result<Plan, Failure> {
        match plan_scale(model, id, p)? {
            Plan::Aborted => plan_scale(model, id, p),
            plan => Ok(plan),
        }
    }

    #[test]
    fn an_abort_returns_before_the_new_modification_with_planned_back_at_current() {
        let mut m = model();
        let first = execution(&mut m, "pool");
        let out = params(json!({"scalable_entity_name": "workers", "delta": 2}));
        assert!(matches!(
            plan_scale(&mut m, &first, &out),
            Ok(Plan::Out { .. })
        ));
        let second = execution(&mut m, "pool");
        let retry = params(json!({"scalable_entity_name": "workers", "delta": 1,
                                  "abort_started": true}));
        assert!(matches!(
            plan_scale(&mut m, &second, &retry),
            Ok(Plan::Aborted)
        ));
        let group = group_of(&m, 0);
        assert_eq!(
            (group.current, group.planned),
            (3, 3),
            "the window a client can see"
        );
        assert_eq!(m.modifications.len(), 1);
        assert!(matches!(
            plan_scale(&mut m, &second, &retry),
            Ok(Plan::Out { .. })
        ));
        assert_eq!(group_of(&m, 0).planned, 4);
    }

    #[test]
    fn zero_delta_is_a_noop_before_any_other_check() {
        let mut m = model();
        let id = execution(&mut m, "pool");
        let p =
            params(json!({"scalable_entity_name": "nope", "delta": 0, "include_instances": "x"}));
        assert!(matches!(plan_scale(&mut m, &id, &p), Ok(Plan::Noop)));
        assert!(m.deployments[0].modification.is_none());
        assert!(m.modifications.is_empty());
        assert_eq!(group_of(&m, 0).planned, 3);
    }

    #[test]
    fn a_vanished_execution_or_deployment_fails_the_scale() {
        let mut m = model();
        let p = params(json!({"scalable_entity_name": "workers", "delta": 0}));
        let f = plan_scale(&mut m, "missing", &p).expect_err("no execution");
        assert_eq!(
            (f.kind, f.message.as_str()),
            ("RuntimeError", "execution vanished")
        );
        let id = execution(&mut m, "ghost");
        let f = plan_scale(&mut m, &id, &p).expect_err("no deployment");
        assert_eq!(
            (f.kind, f.message.as_str()),
            ("RuntimeError", "Deployment ghost not found")
        );
    }

    #[test]
    fn scale_out_refuses_hints_before_looking_up_the_entity() {
        let mut m = model();
        for hints in [
            json!({"include_instances": "a"}),
            json!({"exclude_instances": ["b"]}),
        ] {
            let mut p = json!({"scalable_entity_name": "nope", "delta": 1});
            p.as_object_mut()
                .expect("object")
                .extend(hints.as_object().cloned().unwrap_or_default());
            assert_eq!(
                refused(&mut m, p),
                (
                    "ValueError",
                    "Instances cannot be included or excluded when scaling up.".to_string()
                )
            );
        }
    }

    #[test]
    fn a_node_and_an_unknown_name_fail_differently() {
        let mut m = model();
        assert_eq!(
            refused(&mut m, json!({"scalable_entity_name": "nope", "delta": 1})),
            (
                "ValueError",
                "No scalable entity named nope was found".to_string()
            )
        );
        for node in ["control_plane_host", "workers_host", "workers_port"] {
            assert_eq!(
                refused(&mut m, json!({"scalable_entity_name": node, "delta": 1})),
                (
                    "RuntimeError",
                    format!("The simulator scales scaling groups only; {node} is a node")
                )
            );
        }
    }

    #[test]
    fn scale_compute_refuses_hints_once_the_group_exists() {
        let mut m = model();
        let gid = gids(&m)[0].clone();
        let p = |entity: &str| {
            json!({"scalable_entity_name": entity, "delta": -1, "scale_compute": true,
                   "exclude_instances": [gid]})
        };
        assert_eq!(refused(&mut m, p("nope")).0, "ValueError");
        let (kind, message) = refused(&mut m, p("workers"));
        assert_eq!(kind, "RuntimeError");
        assert!(
            message.starts_with(
                "Cannot include or exclude instances while scale_compute is True. Please \
                 specify the desired compute instances and set scale_compute to False. \
                 Groups and member instances were: "
            ),
            "{message}"
        );
    }

    #[test]
    fn hints_name_group_instances_or_their_members_and_are_deduplicated() {
        let m = model();
        let g = gids(&m);
        let (a, b) = (&g[0], &g[1]);
        let [vm_a, port_b] = [members(&m, a)[0].clone(), members(&m, b)[1].clone()];
        let p = params(json!({"scalable_entity_name": "workers", "delta": -2,
                              "include_instances": [vm_a, a, port_b]}));
        let (include, exclude) =
            resolve_hints(&m, &site(&m, "pool"), group_of(&m, 0), &p).expect("resolved");
        assert_eq!(include, [a.clone(), b.clone()]);
        assert!(exclude.is_empty());
    }

    #[test]
    fn unknown_hints_are_listed_with_every_group_instance_and_its_members() {
        let mut m = model();
        // A member of the other deployment's `workers` group is not one of this group's.
        let foreign = member_instance_ids(&m, 1, "workers", &gids_of(&m, 1))[0].clone();
        let p = json!({"scalable_entity_name": "workers", "delta": -1,
                       "include_instances": ["bogus", "bogus"], "exclude_instances": [foreign]});
        let listing: Vec<String> = gids(&m)
            .iter()
            .map(|g| {
                let ids = members(&m, g);
                format!("{g}: {}, {}", ids[1], ids[0]) // the port first, as the manager lists
            })
            .collect();
        assert_eq!(
            refused(&mut m, p),
            (
                "RuntimeError",
                format!(
                    "The following included instances did not exist: bogus. The following \
                     excluded instances did not exist: {foreign}. Groups and member instances \
                     were: {}",
                    listing.join("; ")
                )
            )
        );
    }

    #[test]
    fn too_many_exclusions_count_the_group_instances_they_name() {
        let mut m = model(); // `workers` of `pool`: 3 group instances
        let g = gids(&m);
        let vm_a = members(&m, &g[0])[0].clone();
        let p = json!({"scalable_entity_name": "workers", "delta": -2,
                       "exclude_instances": [vm_a, g[0], g[1]]});
        let (kind, message) = refused(&mut m, p);
        assert_eq!(kind, "RuntimeError");
        assert!(
            message.starts_with(
                "Instances from too many different groups were excluded. Target number of \
                 group instances was 1, but 2 excluded groups.Groups and member instances were: "
            ),
            "{message}"
        );
        let both = json!({"scalable_entity_name": "workers", "delta": -1,
                          "include_instances": [g[2]], "exclude_instances": [g[2]]});
        let (_, message) = refused(&mut m, both);
        assert!(
            message.starts_with(&format!(
                "The following instances were both excluded and included: {}. ",
                g[2]
            )),
            "{message}"
        );
    }

    fn gids_of(model: &Model, di: usize) -> Vec<String> {
        group_of(model, di).instances.keys().cloned().collect()
    }

    #[test]
    fn a_group_instance_both_included_and_excluded_is_refused() {
        let mut m = model();
        let a = gids(&m)[0].clone();
        let vm_a = members(&m, &a)[0].clone();
        let p = json!({"scalable_entity_name": "workers", "delta": -1,
                       "include_instances": [a], "exclude_instances": [vm_a]});
        assert_eq!(
            refused(&mut m, p),
            (
                "RuntimeError",
                format!("Instances [{a:?}] cannot be both included and excluded")
            )
        );
    }

    #[test]
    fn target_size_ignores_min_and_max_but_not_zero_or_the_cap() {
        let m = model();
        let g = group_of(&m, 0); // current 3, min 2, max 4
        assert_eq!(target_size(g, -3).expect("below min"), 0);
        assert_eq!(target_size(g, 7).expect("above max"), 10);
        assert_eq!(
            target_size(g, MAX_GROUP_INSTANCES - 3).expect("at the cap"),
            MAX_GROUP_INSTANCES
        );
        let f = target_size(g, -4).expect_err("negative");
        assert_eq!(
            (f.kind, f.message.as_str(), f.line),
            (
                "ValueError",
                "Provided delta: -4 is illegal. current number of instances of entity workers is 3",
                707
            )
        );
        let f = target_size(g, i64::MAX).expect_err("over the cap");
        assert_eq!(
            (f.kind, f.message.as_str()),
            (
                "RuntimeError",
                "Provided delta: 9223372036854775807 would make 9223372036854775807 group \
                 instances; the simulator caps a group at 10000000"
            )
        );
        let f = target_size(g, i64::MIN).expect_err("saturates below zero");
        assert_eq!(f.kind, "ValueError");
    }

    #[test]
    fn scale_out_inserts_uninitialized_instances_and_starts_a_modification() {
        let mut m = model();
        let before = gids(&m);
        let id = execution(&mut m, "pool");
        let p = params(json!({"scalable_entity_name": "workers", "delta": 2}));
        let Ok(Plan::Out {
            di,
            group,
            gids: added,
        }) = plan_scale(&mut m, &id, &p)
        else {
            panic!("a scale-out plan");
        };
        assert_eq!((di, group.as_str(), added.len()), (0, "workers", 2));
        assert!(added.iter().all(|g| !before.contains(g)));
        let g = group_of(&m, 0);
        assert_eq!((g.current, g.planned, g.instances.len()), (3, 5, 5));
        let new_members = member_instance_ids(&m, 0, "workers", &added);
        assert_eq!(new_members.len(), 4);
        for member in &new_members {
            let inst = m.instance_by_id(member).expect("inserted");
            assert_eq!((inst.state, &*inst.created_by), ("uninitialized", "alice"));
        }
        let record = m.modifications.last().expect("a modification row");
        assert_eq!(record.status, ModificationStatus::Started);
        assert_eq!(record.added_instances, new_members);
        assert!(record.removed_instances.is_empty());
        assert_eq!(
            (record.execution_id.as_str(), record.created_by.as_str()),
            (id.as_str(), "alice")
        );
        assert_eq!(
            record.modified_nodes,
            json!({"workers": {"instances": 5, "removed_ids_include_hint": [],
                               "removed_ids_exclude_hint": []}})
        );
        let started = m.deployments[0].modification.as_ref().expect("started");
        assert_eq!((started.added.clone(), started.removing.len()), (added, 0));
    }

    #[test]
    fn delta_counts_group_instances_whatever_the_hints_name() {
        // A group instance with two VMs (issue 20): naming both with delta -2 removes it and one
        // more nobody named; with delta -1 only it.
        let scenario = Scenario::from_yaml_str(
            "seed: 3\ndeployments: [{id: pool, scaling_groups: [{name: workers, current: 3, \
             extra_vms: [storage]}]}]",
        )
        .expect("scenario");
        for (delta, removed) in [(-2, 2), (-1, 1)] {
            let mut m = Model::from_scenario(&scenario).expect("model");
            let a = gids(&m)[0].clone();
            let both = [members(&m, &a)[0].clone(), members(&m, &a)[2].clone()];
            let id = execution(&mut m, "pool");
            let p = params(json!({"scalable_entity_name": "workers", "delta": delta,
                                  "include_instances": both}));
            let Ok(Plan::In { gids: victims, .. }) = plan_scale(&mut m, &id, &p) else {
                panic!("a scale-in plan");
            };
            assert_eq!(victims.len(), removed, "delta {delta}");
            assert_eq!(victims[0], a, "the named one first");
        }
    }

    #[test]
    fn scale_in_takes_the_included_first_and_spares_the_excluded() {
        let mut m = model();
        let g = gids(&m);
        let vm_a = members(&m, &g[0])[0].clone();
        let id = execution(&mut m, "pool");
        let p = params(json!({"scalable_entity_name": "workers", "delta": -2,
                              "include_instances": [vm_a], "exclude_instances": [g[1]],
                              "ignore_failure": true}));
        let Ok(Plan::In {
            gids: victims,
            ignore_failure,
            ..
        }) = plan_scale(&mut m, &id, &p)
        else {
            panic!("a scale-in plan");
        };
        assert_eq!(victims, [g[0].clone(), g[2].clone()]);
        assert!(ignore_failure);
        let group = group_of(&m, 0);
        // Nothing is removed yet: the walk through `stopping` ... `deleted` does that.
        assert_eq!(
            (group.current, group.planned, group.instances.len()),
            (3, 1, 3)
        );
        let record = m.modifications.last().expect("a modification row");
        assert_eq!(
            record.removed_instances,
            member_instance_ids(&m, 0, "workers", &victims)
        );
        assert!(record.added_instances.is_empty());
        // The hints are recorded as given, not as resolved.
        assert_eq!(
            record.modified_nodes,
            json!({"workers": {"instances": 1, "removed_ids_include_hint": [vm_a],
                               "removed_ids_exclude_hint": [g[1]]}})
        );
        assert_eq!(
            m.deployments[0]
                .modification
                .as_ref()
                .expect("started")
                .removing,
            victims
        );
    }

    #[test]
    fn excluded_instances_are_removed_only_when_nothing_else_is_left() {
        let mut m = model();
        let g = gids(&m);
        let group = group_of(&m, 0).clone();
        let exclude = [g[0].clone(), g[1].clone()];
        let victims = choose_victims(&mut m.rng, &group, Vec::new(), &exclude, 1);
        assert_eq!(victims, [g[2].clone()]);
        let victims = choose_victims(&mut m.rng, &group, Vec::new(), &exclude, 2);
        assert_eq!(victims[0], g[2]);
        assert!(exclude.contains(&victims[1]));
        let mut all = choose_victims(&mut m.rng, &group, Vec::new(), &[], 3);
        all.sort();
        assert_eq!(all, g);
        let include = vec![g[1].clone(), g[0].clone()];
        assert_eq!(
            choose_victims(&mut m.rng, &group, include, &[], 1),
            [g[1].clone()]
        );
    }

    #[test]
    fn a_started_modification_blocks_the_next_scale_unless_aborted() {
        let mut m = model();
        let first = execution(&mut m, "pool");
        let out = params(json!({"scalable_entity_name": "workers", "delta": 2}));
        let Ok(Plan::Out { gids: added, .. }) = plan_scale(&mut m, &first, &out) else {
            panic!("a scale-out plan");
        };
        let started_id = m.modifications[0].id.clone();
        assert_eq!(
            refused(
                &mut m,
                json!({"scalable_entity_name": "workers", "delta": 1})
            ),
            (
                "cloudify_rest_client.exceptions.ExistingStartedDeploymentModificationError",
                format!(
                    "400: Cannot start deployment modification while there are existing \
                     started deployment modifications. Currently started deployment \
                     modifications: ['{started_id}']"
                )
            )
        );
        let second = execution(&mut m, "pool");
        let retry = params(json!({"scalable_entity_name": "workers", "delta": 1,
                                  "abort_started": true}));
        assert!(matches!(
            plan_after_abort(&mut m, &second, &retry),
            Ok(Plan::Out { .. })
        ));
        assert_eq!(m.modifications[0].status, ModificationStatus::RolledBack);
        assert!(m.modifications[0].ended_at.is_some());
        assert_eq!(m.modifications[1].status, ModificationStatus::Started);
        let group = group_of(&m, 0);
        assert!(added.iter().all(|g| !group.instances.contains_key(g)));
        assert_eq!(
            (group.current, group.planned, group.instances.len()),
            (3, 4, 4)
        );
    }

    #[test]
    fn aborting_a_started_scale_in_restores_its_victims() {
        let mut m = model();
        let first = execution(&mut m, "pool");
        let scale_in = params(json!({"scalable_entity_name": "workers", "delta": -1}));
        let Ok(Plan::In {
            di,
            group,
            gids: victims,
            ..
        }) = plan_scale(&mut m, &first, &scale_in)
        else {
            panic!("a scale-in plan");
        };
        m.set_group_instances_state(di, &group, &victims, "stopped");
        let pool = site(&m, "pool");
        assert!(clear_started_modification(&mut m, &pool, true).expect("rolled back"));
        assert!(m.deployments[0].modification.is_none());
        for member in member_instance_ids(&m, 0, "workers", &victims) {
            assert_eq!(m.instance_by_id(&member).expect("kept").state, "started");
        }
        assert_eq!(group_of(&m, 0).planned, 3);
    }

    #[test]
    fn parameters_are_read_as_scale_entity_reads_them() {
        let p = params(json!({"scalable_entity_name": "workers"}));
        assert_eq!(p.delta, 1);
        assert!(p.rollback_if_failed && !p.abort_started && !p.ignore_failure && !p.scale_compute);
        let p = params(
            json!({"scalable_entity_name": 5, "delta": " -2 ", "abort_started": "True",
                              "rollback_if_failed": 0, "include_instances": "a",
                              "exclude_instances": ["b", 3]}),
        );
        assert_eq!((p.entity.as_str(), p.delta), ("5", -2));
        assert!(p.abort_started && !p.rollback_if_failed);
        assert_eq!(
            (p.include, p.exclude),
            (
                vec!["a".to_string()],
                vec!["b".to_string(), "3".to_string()]
            )
        );
        for (delta, shown) in [
            (json!("two"), "\"two\""),
            (json!(1.5), "1.5"),
            (json!([1]), "[1]"),
        ] {
            let f = parse_params(&json!({"delta": delta})).expect_err("not a number");
            assert_eq!(
                (f.kind, f.message),
                (
                    "ValueError",
                    format!("The delta parameter must be a number. Got: {shown}")
                )
            );
        }
    }

    #[test]
    fn a_scale_in_that_aborts_a_scale_out_chooses_among_the_instances_left() {
        for seed in 0..8 {
            let mut m = model();
            m.rng = rand::SeedableRng::seed_from_u64(seed);
            let existing = gids(&m);
            let first = execution(&mut m, "pool");
            let out = params(json!({"scalable_entity_name": "workers", "delta": 2}));
            assert!(matches!(
                plan_scale(&mut m, &first, &out),
                Ok(Plan::Out { .. })
            ));
            let second = execution(&mut m, "pool");
            let scale_in = params(json!({"scalable_entity_name": "workers", "delta": -2,
                                         "abort_started": true}));
            let Ok(Plan::In { gids: victims, .. }) = plan_after_abort(&mut m, &second, &scale_in)
            else {
                panic!("a scale-in plan");
            };
            assert_eq!(victims.len(), 2);
            assert!(
                victims.iter().all(|v| existing.contains(v)),
                "seed {seed}: victims {victims:?} must be among {existing:?}"
            );
            let record = m.modifications.last().expect("row");
            assert_eq!(record.removed_instances.len(), 4, "seed {seed}");
        }
    }

    #[test]
    fn a_hint_naming_an_instance_the_abort_removes_is_unknown() {
        let mut m = model();
        let first = execution(&mut m, "pool");
        let out = params(json!({"scalable_entity_name": "workers", "delta": 1}));
        let Ok(Plan::Out { gids: added, .. }) = plan_scale(&mut m, &first, &out) else {
            panic!("a scale-out plan");
        };
        let (kind, message) = refused(
            &mut m,
            json!({"scalable_entity_name": "workers", "delta": -1, "abort_started": true,
                   "include_instances": [added[0]]}),
        );
        assert_eq!(kind, "RuntimeError");
        assert!(
            message.starts_with(&format!(
                "The following included instances did not exist: {}. ",
                added[0]
            )),
            "{message}"
        );
        // As on a manager, the abort already happened: the scale-out is rolled back.
        assert!(m.deployments[0].modification.is_none());
        assert_eq!(m.modifications[0].status, ModificationStatus::RolledBack);
    }
}
