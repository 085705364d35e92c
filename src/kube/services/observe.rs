//! Cloudify's view of a Service's deployment, read through the deployment-lifecycle client and
//! turned into the plan's [`Observed`]: two reads per look (the executions, then the deployment:
//! [`read_with_executions`]), nothing else on the way to a decision.

use crate::cloudify::CloudifyError;
use crate::cloudify::Execution;
use crate::cloudify::deployments::{
    CREATE_ENVIRONMENT, DeploymentLifecycle, DeploymentState as CloudifyDeployment,
    ExecutionSummary, InstallationStatus, read_with_executions,
};

use super::plan::{DeploymentState, Observed, Run, RunStatus};

/// The plan's view of a deployment from what Cloudify answered. The environment's creation is
/// a system workflow, which execution listings leave out: it comes from the deployment's own
/// `latest_execution*` fields while it is the latest execution.
pub fn observed(deployment: CloudifyDeployment, executions: &[Execution]) -> Observed {
    let mut runs: Vec<Run> = executions
        .iter()
        .map(|e| Run {
            id: e.id.clone(),
            workflow: e.workflow_id.clone(),
            status: RunStatus::from_cloudify(e.status.as_str()),
            error: e.error.clone().unwrap_or_default(),
        })
        .collect();
    let environment_latest =
        deployment.latest_execution_workflow_id.as_deref() == Some(CREATE_ENVIRONMENT);
    if environment_latest && !runs.iter().any(|r| r.workflow == CREATE_ENVIRONMENT) {
        let status = match deployment.latest_execution_status {
            ExecutionSummary::InProgress => Some(RunStatus::Active),
            ExecutionSummary::Failed => Some(RunStatus::Failed),
            ExecutionSummary::Cancelled => Some(RunStatus::Cancelled),
            ExecutionSummary::Completed | ExecutionSummary::Unknown => None,
        };
        if let Some(status) = status {
            runs.insert(
                0,
                Run {
                    id: deployment
                        .latest_execution
                        .clone()
                        .or(deployment.create_execution.clone())
                        .unwrap_or_default(),
                    workflow: CREATE_ENVIRONMENT.into(),
                    status,
                    error: String::new(),
                },
            );
        }
    }
    Observed::Present(DeploymentState {
        inputs: deployment.inputs,
        installed: deployment.installation_status == InstallationStatus::Active,
        runs,
    })
}

/// Reads the deployment `id` and its executions ([`read_with_executions`]: an update ending
/// between the two reads shows its new inputs, so it is never started twice; seen on the
/// simulator, e2e phase 3).
pub async fn read(manager: &dyn DeploymentLifecycle, id: &str) -> Result<Observed, CloudifyError> {
    Ok(match read_with_executions(manager, id).await? {
        Some((deployment, executions)) => observed(deployment, &executions),
        None => Observed::Absent,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::cloudify::deployments::doubles::EndsBetweenReads;
    use crate::kube::services::plan::{self, Step};
    use crate::kube::services::spec::Desired;

    fn inputs(backends: usize) -> Map<String, Value> {
        let list: Vec<Value> = (0..backends)
            .map(|i| json!({"node": format!("n{i}"), "address": format!("10.0.0.{i}")}))
            .collect();
        match json!({"backends": list}) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn execution(id: &str, workflow: &str, status: &str) -> Execution {
        Execution {
            id: id.into(),
            workflow_id: workflow.into(),
            status: crate::cloudify::ExecutionStatus::parse(status),
            ..Execution::default()
        }
    }

    #[tokio::test]
    async fn an_update_ending_between_the_reads_is_not_started_again() {
        let deployment = |backends| CloudifyDeployment {
            id: "lb".into(),
            installation_status: InstallationStatus::Active,
            inputs: inputs(backends),
            ..CloudifyDeployment::default()
        };
        let executions = |update| {
            vec![
                execution("u1", "update", update),
                execution("i1", "install", "terminated"),
            ]
        };
        let manager = EndsBetweenReads::new(
            (deployment(1), executions("started")),
            (deployment(2), executions("terminated")),
        );
        let observed = read(&manager, "lb").await.expect("read");
        let desired = Desired {
            inputs: inputs(2),
            usable_ports: 1,
            backend_count: 2,
            warnings: Vec::new(),
        };
        let step = plan::ensure(true, &desired, &observed, None);
        assert!(
            !matches!(step, Step::Update { .. }),
            "the update carrying these inputs was running: {step:?}"
        );
    }

    #[test]
    fn a_pending_environment_shows_as_its_execution() {
        let d = CloudifyDeployment {
            latest_execution: Some("c1".into()),
            latest_execution_workflow_id: Some(CREATE_ENVIRONMENT.into()),
            latest_execution_status: ExecutionSummary::InProgress,
            ..CloudifyDeployment::default()
        };
        let Observed::Present(state) = observed(d, &[]) else {
            panic!("present");
        };
        assert_eq!(state.runs.len(), 1);
        assert_eq!(
            (state.runs[0].workflow.as_str(), state.runs[0].status),
            (CREATE_ENVIRONMENT, RunStatus::Active)
        );
    }
}
