//! One step of a Service's load-balancer lifecycle, as a pure function of the Service's ownership,
//! its desired inputs and what Cloudify says about its deployment. The controller takes the step,
//! then looks again: a reconcile never waits for an execution, so one slow install never holds
//! up another Service, and everything is rebuilt from Kubernetes and Cloudify after a restart.
//!
//! ```text
//!   ensure:  finalizer ─▶ create ─▶ (environment) ─▶ install ─▶ read address ─▶ status
//!                                                  ▲  inputs differ, quiet: update ─┘
//!   cleanup: uninstall ─▶ delete ─▶ (gone) ─▶ clear status (type change) ─▶ drop finalizer
//! ```
//!
//! Changes are queued and coalesced by construction: while any execution runs on the deployment
//! the step is `Wait`; once it is quiet, one update carries whatever the inputs are *then*, however
//! many changes came in meanwhile (a Cloudify `update` does not check for running executions, so
//! waiting for quiet is the controller's job). A failed execution is reported once (a Warning, and
//! the Service backs off), then retried.

use serde_json::{Map, Value};

use super::spec::{Desired, changed_inputs};

/// How an execution of the deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// `pending`, `queued`, `started`, `scheduled` or one of the cancelling states.
    Active,
    /// `terminated`.
    Terminated,
    /// `failed`.
    Failed,
    /// `cancelled`.
    Cancelled,
}

impl RunStatus {
    /// From Cloudify's execution status.
    pub fn from_cloudify(status: &str) -> RunStatus {
        match status {
            "terminated" => RunStatus::Terminated,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => RunStatus::Active,
        }
    }
}

/// An execution of the deployment, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Execution id.
    pub id: String,
    /// `create_deployment_environment`, `install`, `update`, `uninstall`,
    /// `delete_deployment_environment`, ...
    pub workflow: String,
    /// Where it stands.
    pub status: RunStatus,
    /// Cloudify's error text of a failed execution.
    pub error: String,
}

/// The deployment as Cloudify shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentState {
    /// Its inputs (with the blueprint's defaults).
    pub inputs: Map<String, Value>,
    /// `installation_status: active`: every node instance is `started`.
    pub installed: bool,
    /// Its executions, system workflows included, newest first.
    pub runs: Vec<Run>,
}

/// What Cloudify holds under the Service's deployment id.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// No such deployment (404).
    Absent,
    /// The deployment.
    Present(DeploymentState),
}

/// Which Warning reason a failed execution is reported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Creating or installing (`SyncLoadBalancerFailed`).
    Sync,
    /// A deployment update (`UpdateLoadBalancerFailed`).
    Update,
    /// Uninstalling or deleting (`DeleteLoadBalancerFailed`).
    Delete,
}

impl FailureKind {
    /// The upstream Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::Sync => "SyncLoadBalancerFailed",
            FailureKind::Update => "UpdateLoadBalancerFailed",
            FailureKind::Delete => "DeleteLoadBalancerFailed",
        }
    }
}

/// The next thing to do for a Service.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Add the finalizer (and record the deployment's place): before any Cloudify call.
    AddFinalizer,
    /// `PUT /deployments/{id}` with the inputs and labels (also over a failed create, which
    /// Cloudify then replaces).
    Create,
    /// Run `install` (queued).
    Install,
    /// A deployment update with the desired inputs; these inputs differ (empty: a retry of a
    /// failed update whose inputs had already been taken).
    Update {
        /// The input names that differ.
        changed: Vec<String>,
    },
    /// Installed and up to date: read the address and put it into the status.
    ReadAddress,
    /// An execution runs on the deployment: look again soon.
    Wait {
        /// Its workflow.
        workflow: String,
    },
    /// An execution failed and was not reported yet: a Warning, then back off; the step after
    /// it retries.
    ReportFailure {
        /// The failed execution.
        run: Run,
        /// Which reason.
        kind: FailureKind,
    },
    /// No port of the Service can be served: nothing is created or changed.
    NoUsablePorts,
    /// Run `uninstall` (queued).
    Uninstall,
    /// `DELETE /deployments/{id}`.
    Delete,
    /// Deleted: Cloudify is removing the deployment.
    WaitGone,
    /// The deployment is gone: clear the status if asked, drop the finalizer.
    RemoveFinalizer,
}

impl Step {
    /// The phase this step puts the load balancer in (the `phase` label of the LB metrics).
    pub fn phase(&self) -> &'static str {
        match self {
            Step::AddFinalizer | Step::Create => "creating",
            Step::Install => "installing",
            Step::Update { .. } => "updating",
            Step::ReadAddress => "active",
            Step::Wait { workflow } => match workflow.as_str() {
                "create_deployment_environment" => "creating",
                "install" => "installing",
                "update" => "updating",
                "uninstall" => "uninstalling",
                "delete_deployment_environment" => "deleting",
                _ => "busy",
            },
            Step::ReportFailure { .. } => "failed",
            Step::NoUsablePorts => "invalid",
            Step::Uninstall => "uninstalling",
            Step::Delete | Step::WaitGone | Step::RemoveFinalizer => "deleting",
        }
    }
}

/// Every phase [`Step::phase`] names, for metrics that start at 0.
pub use crate::observability::metrics::LB_PHASES as PHASES;

const LIFECYCLE: [&str; 3] = ["install", "update", "uninstall"];

fn newest<'a>(runs: &'a [Run], workflows: &[&str]) -> Option<&'a Run> {
    runs.iter()
        .find(|r| workflows.contains(&r.workflow.as_str()))
}

fn failed(r: &Run) -> bool {
    matches!(r.status, RunStatus::Failed | RunStatus::Cancelled)
}

/// A failed run: reported first (`reported` is the id reported last), retried with `retry` after.
fn report_or(run: &Run, kind: FailureKind, reported: Option<&str>, retry: Step) -> Step {
    if reported == Some(run.id.as_str()) {
        retry
    } else {
        Step::ReportFailure {
            run: run.clone(),
            kind,
        }
    }
}

/// The next step for a Service that is ours and not being deleted. `reported` is the failed
/// execution reported last for this Service.
pub fn ensure(
    has_finalizer: bool,
    desired: &Desired,
    observed: &Observed,
    reported: Option<&str>,
) -> Step {
    if !has_finalizer {
        return Step::AddFinalizer;
    }
    let d = match observed {
        Observed::Absent if desired.usable_ports == 0 => return Step::NoUsablePorts,
        Observed::Absent => return Step::Create,
        Observed::Present(d) => d,
    };
    if let Some(env) = newest(&d.runs, &["create_deployment_environment"])
        && failed(env)
    {
        return report_or(env, FailureKind::Sync, reported, Step::Create);
    }
    if let Some(active) = d.runs.iter().find(|r| r.status == RunStatus::Active) {
        return Step::Wait {
            workflow: active.workflow.clone(),
        };
    }
    if desired.usable_ports == 0 {
        return Step::NoUsablePorts;
    }
    let changed = changed_inputs(&desired.inputs, &d.inputs);
    let last = newest(&d.runs, &LIFECYCLE);
    if let Some(run) = last.filter(|r| failed(r) && r.workflow == "update") {
        return report_or(run, FailureKind::Update, reported, Step::Update { changed });
    }
    if !d.installed {
        if let Some(run) = last.filter(|r| failed(r) && r.workflow == "install") {
            let retry = if changed.is_empty() {
                Step::Install
            } else {
                Step::Update { changed }
            };
            return report_or(run, FailureKind::Sync, reported, retry);
        }
        // Inputs that changed since the create go in before the install, which then builds the
        // load balancer as the Service is now.
        return if changed.is_empty() {
            Step::Install
        } else {
            Step::Update { changed }
        };
    }
    if changed.is_empty() {
        Step::ReadAddress
    } else {
        Step::Update { changed }
    }
}

/// The next step for a Service whose load balancer must go (deleted, or no longer a
/// LoadBalancer).
pub fn cleanup(observed: &Observed, reported: Option<&str>) -> Step {
    let d = match observed {
        Observed::Absent => return Step::RemoveFinalizer,
        Observed::Present(d) => d,
    };
    if let Some(active) = d.runs.iter().find(|r| r.status == RunStatus::Active) {
        return if active.workflow == "delete_deployment_environment" {
            Step::WaitGone
        } else {
            Step::Wait {
                workflow: active.workflow.clone(),
            }
        };
    }
    if let Some(run) = newest(&d.runs, &["delete_deployment_environment"])
        && failed(run)
    {
        return report_or(run, FailureKind::Delete, reported, Step::Delete);
    }
    let last = newest(&d.runs, &LIFECYCLE);
    if let Some(run) = last.filter(|r| failed(r) && r.workflow == "uninstall") {
        return report_or(run, FailureKind::Delete, reported, Step::Uninstall);
    }
    // Anything installed, even in part (a failed install, an update): uninstall first. Cloudify
    // answers `unavailable_workflow_error` when nothing is left to uninstall; the controller
    // then deletes.
    let touched = last.is_some_and(|r| r.workflow != "uninstall");
    if d.installed || touched {
        Step::Uninstall
    } else {
        Step::Delete
    }
}
