//! What the pool controller does next, decided from what it observed: the pool (spec, status,
//! deletion) and Cloudify (the deployment and its executions). Pure, so every branch is a unit
//! test; `controller` carries the decision out.
//!
//! Cloudify is the source of truth, the status only remembers what Cloudify cannot tell (the
//! backoff, which generation an update was for), so a provider restarted mid-install reads the
//! running `install` from Cloudify and waits for it instead of starting another.
//!
//! Deletion: the pool is served with `max = 0` while it is deleting (see `registry`), so CA
//! cannot scale it up again; the controller waits until no Kubernetes Node of the pool is
//! registered (CA's scale-down removes them, or the operator scales the pool to zero first),
//! then uninstalls and deletes the deployment. A deployment without this pool's uid label was
//! not created by it and is never uninstalled or deleted.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::crd::{CloudifyNodePoolSpec, CloudifyNodePoolStatus, ExecutionRef, PoolCondition};
use crate::cloudify::deployments::{DeploymentState, InstallationStatus, NewDeployment};
use crate::cloudify::{Execution, ExecutionStatus};

/// The deployment label that proves a deployment was created by the pool with that uid.
pub const UID_LABEL: &str = "k8s-nodepool-uid";
/// The deployment label naming the pool (for people and searches).
pub const NAME_LABEL: &str = "k8s-nodepool";
/// Lifecycle workflows the controller follows (scales are CA's business).
const LIFECYCLE: &[&str] = &[
    "create_deployment_environment",
    "install",
    "uninstall",
    "update",
    "delete_deployment_environment",
];
/// Requeue while Cloudify works.
const PROGRESS: Duration = Duration::from_secs(5);
/// Requeue of a settled pool (sizes in the status, drift).
const SETTLED: Duration = Duration::from_secs(60);
/// Requeue while Nodes of a deleting pool are registered.
const NODES_WAIT: Duration = Duration::from_secs(15);

/// Everything a decision is made from.
#[derive(Debug)]
pub struct Observed<'a> {
    /// Pool name.
    pub name: &'a str,
    /// Pool uid: the value of [`UID_LABEL`].
    pub uid: &'a str,
    /// `metadata.generation`.
    pub generation: i64,
    /// The spec.
    pub spec: &'a CloudifyNodePoolSpec,
    /// The status as stored.
    pub status: &'a CloudifyNodePoolStatus,
    /// `deletionTimestamp` is set.
    pub deleting: bool,
    /// The spec's manager names no configured entry, or its tenant differs: why.
    pub misconfigured: Option<String>,
    /// Labels every deployment of this cluster carries (discovery), besides the pool's own.
    pub cluster_labels: &'a [(String, String)],
    /// The node group id CA knows the pool by.
    pub group_id: &'a str,
    /// The deployment, `None` when it does not exist.
    pub deployment: Option<&'a DeploymentState>,
    /// Its executions, newest first.
    pub executions: &'a [Execution],
    /// Kubernetes Nodes of the pool that are registered.
    pub nodes_registered: usize,
    /// `(current, target)` sizes from the inventory, when it serves the pool.
    pub sizes: Option<(i32, i32)>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The Cloudify call (or Kubernetes change) to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the deployment.
    Create(NewDeployment),
    /// Queue `install`.
    Install,
    /// Queue `uninstall`.
    Uninstall,
    /// Start a deployment update with these inputs.
    Update(Map<String, Value>),
    /// Delete the deployment (uninstall first if Cloudify says instances are live).
    Delete,
    /// Remove the finalizer: nothing of the pool is left in Cloudify (or nothing was ours).
    RemoveFinalizer,
    /// Nothing to call: Cloudify is working, or the pool is settled or failed for good.
    None,
}

/// An Event to record on the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Text.
    pub message: String,
}

/// What to do, the status to write, and when to look again.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The call to make.
    pub action: Action,
    /// The new status.
    pub status: CloudifyNodePoolStatus,
    /// An Event, when something worth telling happened.
    pub note: Option<Note>,
    /// When to reconcile again.
    pub requeue: Duration,
}

/// Backoff after `failures` failures in a row: 10 s doubling, at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    let secs = 10u64.saturating_mul(1 << (failures.clamp(1, 6) - 1));
    Duration::from_secs(secs.min(300))
}

/// The last non-empty line of Cloudify's error (a traceback's cause).
pub fn last_line(error: &str) -> String {
    error
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no error text")
        .chars()
        .take(300)
        .collect()
}

/// Sets condition `type_` in `conditions`, keeping its transition time when the status is
/// unchanged.
pub fn set_condition(
    conditions: &mut Vec<PoolCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" };
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = stamp;
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(PoolCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: stamp,
            observed_generation: generation,
        }),
    }
}

/// Whether condition `type_` is `True`.
pub fn condition_true(status: &CloudifyNodePoolStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

struct Draft<'a> {
    o: &'a Observed<'a>,
    status: CloudifyNodePoolStatus,
    note: Option<Note>,
}

impl Draft<'_> {
    fn cond(&mut self, type_: &str, value: bool, reason: &str, message: &str) {
        set_condition(
            &mut self.status.conditions,
            type_,
            value,
            reason,
            message,
            self.o.generation,
            self.o.now,
        );
    }

    fn done(self, action: Action, phase: &str, requeue: Duration) -> Decision {
        let mut status = self.status;
        status.phase = phase.into();
        Decision {
            action,
            status,
            note: self.note,
            requeue,
        }
    }

    fn fail(mut self, reason: &'static str, message: String, requeue: Duration) -> Decision {
        self.cond("Failed", true, reason, &message);
        self.cond("Ready", false, reason, &message);
        if self.status.phase != "Failed" || self.note.is_none() {
            self.note = Some(Note {
                warning: true,
                reason,
                message,
            });
        }
        self.done(Action::None, "Failed", requeue)
    }

    /// Records a newly seen failure of `e` (once per execution) and returns the wait before a
    /// retry; `None` when the retry is due.
    fn failed_execution(&mut self, e: &Execution, reason: &'static str) -> Option<Duration> {
        let error = last_line(e.error.as_deref().unwrap_or(""));
        let known = self
            .status
            .last_execution
            .as_ref()
            .is_some_and(|l| l.id == e.id && l.status == "failed");
        if !known {
            self.status.failures = self.status.failures.saturating_add(1);
            let wait = backoff(self.status.failures);
            self.status.retry_after = Some(
                (self.o.now + chrono::Duration::from_std(wait).unwrap_or_default())
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            self.status.last_execution = Some(ExecutionRef {
                id: e.id.clone(),
                workflow: e.workflow_id.clone(),
                status: e.status.as_str().to_owned(),
                error: Some(error.clone()),
            });
            let message = format!(
                "{} {} failed (attempt {}), retrying in {}s: {error}",
                e.workflow_id,
                e.id,
                self.status.failures,
                wait.as_secs()
            );
            self.cond("Failed", true, reason, &message);
            self.note = Some(Note {
                warning: true,
                reason,
                message,
            });
        }
        self.retry_wait()
    }

    /// Time left before the recorded retry instant.
    fn retry_wait(&self) -> Option<Duration> {
        let at = self.status.retry_after.as_deref()?;
        let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        (at > self.o.now).then(|| (at - self.o.now).to_std().unwrap_or(PROGRESS))
    }

    fn follow(&mut self, e: &Execution) {
        self.status.last_execution = Some(ExecutionRef {
            id: e.id.clone(),
            workflow: e.workflow_id.clone(),
            status: e.status.as_str().to_owned(),
            error: e.error.as_deref().filter(|s| !s.is_empty()).map(last_line),
        });
    }
}

/// Decides the next step for one pool.
pub fn decide(o: &Observed<'_>) -> Decision {
    let mut d = draft(o);
    let deployment_id = d.status.deployment_id.clone();
    if let Some(why) = &o.misconfigured {
        if o.deleting && o.deployment.is_none() {
            return d.done(Action::RemoveFinalizer, "Deleting", PROGRESS);
        }
        return d.fail("InvalidManager", why.clone(), SETTLED);
    }
    let Some(dep) = o.deployment else {
        return without_deployment(d, deployment_id);
    };
    let active = o.executions.iter().find(|e| !e.is_ended());
    if dep.environment_pending() {
        return d.done(Action::None, "Creating", PROGRESS);
    }
    if !dep.has_label(UID_LABEL, o.uid) {
        return not_owned(d, &deployment_id);
    }
    d.cond("Created", true, "DeploymentCreated", &deployment_id);
    let latest = o
        .executions
        .iter()
        .find(|e| LIFECYCLE.contains(&e.workflow_id.as_str()));
    if let Some(e) = active.filter(|e| LIFECYCLE.contains(&e.workflow_id.as_str())) {
        d.follow(e);
    }
    if o.deleting {
        return deleting(d, dep, active, latest);
    }
    if dep.blueprint_id != o.spec.blueprint_id {
        // Only without the CRD's CEL rules (an old API server) can the spec get here.
        return d.fail(
            "ImmutableFieldChanged",
            format!(
                "blueprintId {} differs from the deployment's {}: create another pool",
                o.spec.blueprint_id, dep.blueprint_id
            ),
            SETTLED,
        );
    }
    if let Some(e) = active {
        return d.done(Action::None, phase_while(e, dep), PROGRESS);
    }
    if dep.installation_status != InstallationStatus::Active {
        return not_installed(d, latest);
    }
    installed(d, dep, latest)
}

/// The draft of the new status: what this reconcile observed (generation, deployment and
/// group ids, sizes) is recorded whatever the decision.
fn draft<'a>(o: &'a Observed<'a>) -> Draft<'a> {
    let mut d = Draft {
        o,
        status: o.status.clone(),
        note: None,
    };
    d.status.observed_generation = o.generation;
    d.status.deployment_id = o.spec.deployment_for(o.name);
    d.status.node_group_id = o.group_id.into();
    if let Some((current, target)) = o.sizes {
        d.status.current_size = Some(current);
        d.status.target_size = Some(target);
    }
    d
}

/// No deployment: a deleting pool is done; otherwise create it (labelled with the cluster's
/// labels and the pool's name and UID, which later prove it ours), unless a failure's backoff
/// is still running.
fn without_deployment(mut d: Draft<'_>, deployment_id: String) -> Decision {
    let o = d.o;
    if o.deleting {
        d.cond("Deleting", true, "DeploymentGone", "the deployment is gone");
        return d.done(Action::RemoveFinalizer, "Deleting", PROGRESS);
    }
    if let Some(wait) = d.retry_wait() {
        return d.done(Action::None, "Failed", wait);
    }
    let mut labels: Vec<(String, String)> = o.cluster_labels.to_vec();
    labels.push((NAME_LABEL.into(), o.name.into()));
    labels.push((UID_LABEL.into(), o.uid.into()));
    d.cond(
        "Created",
        false,
        "Creating",
        "creating the Cloudify deployment",
    );
    // Executions of an earlier deployment of this id are gone with it.
    d.status.last_execution = None;
    d.done(
        Action::Create(NewDeployment {
            id: deployment_id,
            blueprint_id: o.spec.blueprint_id.clone(),
            inputs: o.spec.deployment_inputs(),
            labels,
        }),
        "Creating",
        PROGRESS,
    )
}

/// A deployment of the pool's id that does not carry the pool's UID label was not created by
/// it: never touched, never deleted.
fn not_owned(mut d: Draft<'_>, deployment_id: &str) -> Decision {
    let uid = d.o.uid;
    if d.o.deleting {
        // Never ours: leave it as it is.
        d.note = Some(Note {
            warning: true,
            reason: "DeploymentNotOwned",
            message: format!(
                "deployment {deployment_id} does not carry {UID_LABEL}={uid}: left in Cloudify"
            ),
        });
        return d.done(Action::RemoveFinalizer, "Deleting", PROGRESS);
    }
    d.fail(
        "DeploymentNotOwned",
        format!(
            "deployment {deployment_id} exists and was not created by this pool (no label \
             {UID_LABEL}={uid}); choose another deploymentId"
        ),
        SETTLED,
    )
}

/// The phase while execution `e` runs on the deployment: what it is doing to the pool (any
/// other workflow on an installed deployment leaves the pool Ready).
fn phase_while(e: &Execution, dep: &DeploymentState) -> &'static str {
    match e.workflow_id.as_str() {
        "update" => "Updating",
        "install" | "create_deployment_environment" => "Installing",
        _ if dep.installation_status == InstallationStatus::Active => "Ready",
        _ => "Installing",
    }
}

/// A deployment of ours, idle and not installed: install it, unless our install is queued
/// but not listed yet, or a failed install's backoff is still running.
fn not_installed(mut d: Draft<'_>, latest: Option<&Execution>) -> Decision {
    let o = d.o;
    // An install this pool queued that Cloudify does not list (yet): never a second one.
    if let Some(last) = &o.status.last_execution
        && last.workflow == "install"
        && last.status != "failed"
        && !o.executions.iter().any(|e| e.id == last.id)
    {
        return d.done(Action::None, "Installing", PROGRESS);
    }
    d.cond(
        "Installed",
        false,
        "NotInstalled",
        "install has not completed",
    );
    d.cond("Ready", false, "NotInstalled", "install has not completed");
    if let Some(e) =
        latest.filter(|e| e.workflow_id == "install" && e.status == ExecutionStatus::Failed)
        && let Some(wait) = d.failed_execution(e, "InstallFailed")
    {
        return d.done(Action::None, "Failed", wait);
    }
    d.done(Action::Install, "Installing", PROGRESS)
}

/// An installed, idle deployment of ours: the failures are over; inputs that differ from the
/// spec's start an update (once per generation: a failed one waits for a spec change),
/// otherwise the pool is Ready.
fn installed(mut d: Draft<'_>, dep: &DeploymentState, latest: Option<&Execution>) -> Decision {
    let o = d.o;
    d.status.retry_after = None;
    d.status.failures = 0;
    d.cond(
        "Installed",
        true,
        "Installed",
        "the deployment is installed",
    );
    let desired = o.spec.deployment_inputs();
    let changed: Map<String, Value> = desired
        .into_iter()
        .filter(|(k, v)| dep.inputs.get(k) != Some(v))
        .collect();
    if !changed.is_empty() {
        return update_inputs(d, changed, latest);
    }
    d.cond("Failed", false, "Ready", "");
    d.cond("Ready", true, "Ready", "served to CA as a node group");
    if o.status.phase != "Ready" {
        d.note = Some(Note {
            warning: false,
            reason: "Ready",
            message: format!("node group {} is ready", o.group_id),
        });
    }
    // Until the inventory serves the group (the refresh after Ready), look again soon for sizes.
    let requeue = if o.sizes.is_some() { SETTLED } else { PROGRESS };
    d.done(Action::None, "Ready", requeue)
}

/// Inputs `changed` differ from the deployment's: update them, unless the update of this very
/// generation failed (retrying it would fail the same way until the user changes the spec).
fn update_inputs(
    mut d: Draft<'_>,
    changed: Map<String, Value>,
    latest: Option<&Execution>,
) -> Decision {
    let generation = d.o.generation;
    let failed_update =
        latest.filter(|e| e.workflow_id == "update" && e.status == ExecutionStatus::Failed);
    if d.status.update_generation == Some(generation)
        && let Some(e) = failed_update
    {
        let message = format!(
            "the deployment update {} failed: {}; change the spec to try again",
            e.id,
            last_line(e.error.as_deref().unwrap_or(""))
        );
        d.follow(e);
        return d.fail("UpdateFailed", message, SETTLED);
    }
    let keys: Vec<&str> = changed.keys().map(String::as_str).collect();
    d.note = Some(Note {
        warning: false,
        reason: "Updating",
        message: format!("updating inputs {}", keys.join(", ")),
    });
    d.status.update_generation = Some(generation);
    d.done(Action::Update(changed), "Updating", PROGRESS)
}

/// The steps of a deleting pool whose deployment is ours.
fn deleting(
    mut d: Draft<'_>,
    dep: &DeploymentState,
    active: Option<&Execution>,
    latest: Option<&Execution>,
) -> Decision {
    let nodes = d.o.nodes_registered;
    if nodes > 0 {
        let message = format!(
            "{nodes} Node(s) of the pool are still registered: the pool is served with max 0 \
             until CA scales them down (or scale the pool to zero)"
        );
        d.cond("Deleting", true, "WaitingForNodes", &message);
        return d.done(Action::None, "Deleting", NODES_WAIT);
    }
    if active.is_some() {
        return d.done(Action::None, "Deleting", PROGRESS);
    }
    if let Some(e) =
        latest.filter(|e| e.workflow_id == "uninstall" && e.status == ExecutionStatus::Failed)
        && let Some(wait) = d.failed_execution(e, "UninstallFailed")
    {
        return d.done(Action::None, "Deleting", wait);
    }
    if dep.installation_status == InstallationStatus::Active {
        d.cond(
            "Deleting",
            true,
            "Uninstalling",
            "uninstalling the deployment",
        );
        return d.done(Action::Uninstall, "Deleting", PROGRESS);
    }
    d.cond(
        "Deleting",
        true,
        "DeletingDeployment",
        "deleting the deployment",
    );
    d.done(Action::Delete, "Deleting", PROGRESS)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> CloudifyNodePoolSpec {
        serde_json::from_value(json!({
            "blueprintId": "bp", "minSize": 0, "maxSize": 3,
            "compute": {"flavor": "m1.small"},
        }))
        .expect("spec")
    }

    fn dep(status: InstallationStatus, inputs: Value, uid: &str) -> DeploymentState {
        serde_json::from_value(json!({
            "id": "np-a", "blueprint_id": "bp",
            "installation_status": match status {
                InstallationStatus::Active => "active", _ => "inactive" },
            "latest_execution_status": "completed",
            "latest_execution_workflow_id": "install",
            "inputs": inputs,
            "labels": [{"key": UID_LABEL, "value": uid}],
        }))
        .expect("deployment")
    }

    fn exec(id: &str, workflow: &str, status: &str, error: &str) -> Execution {
        serde_json::from_value(json!({"id": id, "workflow_id": workflow, "status": status,
            "error": error, "deployment_id": "np-a"}))
        .expect("execution")
    }

    struct World {
        spec: CloudifyNodePoolSpec,
        status: CloudifyNodePoolStatus,
        deployment: Option<DeploymentState>,
        executions: Vec<Execution>,
        deleting: bool,
        nodes: usize,
        generation: i64,
        now: DateTime<Utc>,
    }

    impl World {
        fn new() -> World {
            World {
                spec: spec(),
                status: CloudifyNodePoolStatus::default(),
                deployment: None,
                executions: Vec::new(),
                deleting: false,
                nodes: 0,
                generation: 1,
                now: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                    .expect("time")
                    .with_timezone(&Utc),
            }
        }

        fn decide(&self) -> Decision {
            let labels = vec![("k8s-cluster".to_string(), "demo".to_string())];
            decide(&Observed {
                name: "a",
                uid: "uid-a",
                generation: self.generation,
                spec: &self.spec,
                status: &self.status,
                deleting: self.deleting,
                misconfigured: None,
                cluster_labels: &labels,
                group_id: "np-a/workers",
                deployment: self.deployment.as_ref(),
                executions: &self.executions,
                nodes_registered: self.nodes,
                sizes: None,
                now: self.now,
            })
        }

        /// Applies a decision's status, as the controller writes it.
        fn step(&mut self) -> Decision {
            let d = self.decide();
            self.status = d.status.clone();
            d
        }
    }

    #[test]
    fn a_new_pool_creates_a_labelled_deployment_with_its_inputs() {
        let d = World::new().decide();
        let Action::Create(new) = d.action else {
            panic!("{:?}", d.action)
        };
        assert_eq!(new.id, "np-a");
        assert_eq!(new.blueprint_id, "bp");
        assert_eq!(Value::Object(new.inputs), json!({"flavor": "m1.small"}));
        assert!(new.labels.contains(&(UID_LABEL.into(), "uid-a".into())));
        assert!(new.labels.contains(&("k8s-cluster".into(), "demo".into())));
        assert_eq!(d.status.phase, "Creating");
    }

    #[test]
    fn install_runs_once_and_a_restarted_controller_waits_for_the_running_one() {
        let mut w = World::new();
        w.deployment = Some(dep(
            InstallationStatus::Inactive,
            json!({"flavor": "m1.small"}),
            "uid-a",
        ));
        assert_eq!(w.step().action, Action::Install);
        // A new process (empty status) finds the install running in Cloudify: it waits.
        w.status = CloudifyNodePoolStatus::default();
        w.executions = vec![exec("e2", "install", "started", "")];
        let d = w.step();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.status.phase, "Installing");
        assert_eq!(d.status.last_execution.expect("followed").id, "e2");
    }

    #[test]
    fn an_install_it_queued_that_cloudify_does_not_list_yet_is_not_queued_again() {
        let mut w = World::new();
        w.deployment = Some(dep(InstallationStatus::Inactive, json!({}), "uid-a"));
        w.status.last_execution = Some(ExecutionRef {
            id: "e9".into(),
            workflow: "install".into(),
            status: "pending".into(),
            error: None,
        });
        assert_eq!(w.decide().action, Action::None);
        w.executions = vec![exec("e9", "install", "terminated", "")];
        w.deployment = Some(dep(
            InstallationStatus::Active,
            json!({"flavor": "m1.small"}),
            "uid-a",
        ));
        let d = w.decide();
        assert_eq!((d.action, d.status.phase.as_str()), (Action::None, "Ready"));
        assert_eq!(d.requeue, PROGRESS, "sizes are not known yet");
    }

    #[test]
    fn a_failed_install_is_a_condition_and_an_event_and_is_retried_after_a_backoff() {
        let mut w = World::new();
        w.deployment = Some(dep(InstallationStatus::Inactive, json!({}), "uid-a"));
        w.executions = vec![exec(
            "e1",
            "install",
            "failed",
            "Traceback\nRuntimeError: quota\n",
        )];
        let d = w.step();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.status.phase, "Failed");
        assert_eq!(d.requeue, Duration::from_secs(10));
        let note = d.note.expect("an event");
        assert!(note.warning && note.reason == "InstallFailed");
        assert!(
            note.message.contains("RuntimeError: quota"),
            "{}",
            note.message
        );
        assert!(condition_true(&d.status, "Failed"));
        // Seen again before the backoff ends: no second event, no install.
        let again = w.step();
        assert_eq!(again.action, Action::None);
        assert!(again.note.is_none());
        assert_eq!(again.status.failures, 1);
        // After it: install again.
        w.now += chrono::Duration::seconds(11);
        assert_eq!(w.step().action, Action::Install);
        // The second failure doubles the wait.
        w.executions
            .insert(0, exec("e3", "install", "failed", "boom"));
        let d = w.step();
        assert_eq!(d.requeue, Duration::from_secs(20));
        assert_eq!(d.status.failures, 2);
    }

    #[test]
    fn an_installed_pool_is_ready_and_an_input_change_is_a_deployment_update() {
        let mut w = World::new();
        w.deployment = Some(dep(
            InstallationStatus::Active,
            json!({"flavor": "m1.small", "other": 1}),
            "uid-a",
        ));
        let d = w.step();
        assert_eq!((d.action, d.status.phase.as_str()), (Action::None, "Ready"));
        assert!(condition_true(&d.status, "Ready") && condition_true(&d.status, "Installed"));
        w.spec.compute.flavor = Some("m1.large".into());
        w.generation = 2;
        let d = w.step();
        assert_eq!(
            d.action,
            Action::Update(match json!({"flavor": "m1.large"}) {
                Value::Object(m) => m,
                _ => Map::new(),
            })
        );
        assert_eq!(d.status.update_generation, Some(2));
        // The update failed: a condition, and no retry for this generation.
        w.executions = vec![exec("u1", "update", "failed", "bad flavor")];
        let d = w.step();
        assert_eq!(d.action, Action::None);
        assert!(condition_true(&d.status, "Failed"));
        assert_eq!(d.note.expect("event").reason, "UpdateFailed");
        // A new spec generation tries again.
        w.generation = 3;
        assert!(matches!(w.step().action, Action::Update(_)));
    }

    #[test]
    fn a_deployment_it_did_not_create_is_refused_and_never_deleted() {
        let mut w = World::new();
        w.deployment = Some(dep(InstallationStatus::Active, json!({}), "someone-else"));
        let d = w.step();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.note.expect("event").reason, "DeploymentNotOwned");
        w.deleting = true;
        assert_eq!(w.step().action, Action::RemoveFinalizer);
    }

    #[test]
    fn deletion_waits_for_nodes_then_uninstalls_then_deletes_then_lets_go() {
        let mut w = World::new();
        w.deleting = true;
        w.nodes = 2;
        w.deployment = Some(dep(InstallationStatus::Active, json!({}), "uid-a"));
        let d = w.step();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.requeue, NODES_WAIT);
        assert!(
            d.status
                .conditions
                .iter()
                .any(|c| c.reason == "WaitingForNodes")
        );
        w.nodes = 0;
        assert_eq!(w.step().action, Action::Uninstall);
        w.executions = vec![exec("x", "uninstall", "started", "")];
        assert_eq!(w.step().action, Action::None);
        w.executions = vec![exec("x", "uninstall", "failed", "stuck")];
        assert_eq!(
            w.step().action,
            Action::None,
            "backoff after a failed uninstall"
        );
        w.now += chrono::Duration::seconds(11);
        assert_eq!(w.step().action, Action::Uninstall);
        w.executions = vec![exec("y", "uninstall", "terminated", "")];
        w.deployment = Some(dep(InstallationStatus::Inactive, json!({}), "uid-a"));
        assert_eq!(w.step().action, Action::Delete);
        w.deployment = None;
        assert_eq!(w.step().action, Action::RemoveFinalizer);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert!(backoff(40).as_secs() <= 300);
    }
}
