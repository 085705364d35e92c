//! The deployment-lifecycle calls (`cloudify::deployments`) over real HTTP against the
//! simulator: blueprint upload, creation and its environment, install, the refusals a
//! controller decides on (404, 409, environment not ready, workflow unavailable, dependents),
//! outputs, an input update, uninstall, delete and the 404 after it, and an injected install
//! failure followed by a successful retry. The same calls against a real manager:
//! `tests/manager_lifecycle/main.rs`.

use std::future::Future;
use std::time::Duration;

use autoscaler_cloudify::cloudify::deployments::{
    DeploymentLifecycle, DeploymentState, InstallationStatus, NewDeployment, Refusal, Workflow,
};
use autoscaler_cloudify::cloudify::{
    Auth, ClientSettings, Cloudify, CloudifyClient, ExecutionStatus,
};
use cloudify_sim::{FaultsPatch, Scenario, SimControl, Simulator, Timing};
use serde_json::{Map, Value, json};

fn client(url: &str) -> CloudifyClient {
    CloudifyClient::new(
        ClientSettings {
            name: "main".into(),
            url: url.into(),
            tenant: "default_tenant".into(),
            auth: Auth::Basic {
                username: "admin".into(),
                password: "admin".into(),
            },
            ca_cert_pem: None,
            insecure_skip_verify: false,
            request_timeout: Duration::from_secs(5),
            max_response_bytes: autoscaler_cloudify::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
        },
        None,
    )
    .expect("client")
}

/// Polls `check` until it answers `Some`, at most ~10 s (a bound for a stuck workflow, not a
/// speed assertion: the simulator runs with instant timing).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..1000 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

async fn state(c: &CloudifyClient, id: &str) -> DeploymentState {
    c.deployment_state(id)
        .await
        .expect("GET deployment")
        .expect("the deployment exists")
}

async fn quiet(c: &CloudifyClient, id: &str) -> DeploymentState {
    eventually("the deployment is quiet", || async {
        let executions = c.deployment_executions(id).await.expect("executions");
        executions.iter().all(|e| e.is_ended()).then_some(())?;
        Some(state(c, id).await)
    })
    .await
}

fn inputs(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn pool(id: &str) -> NewDeployment {
    NewDeployment {
        id: id.into(),
        blueprint_id: "pool-bp".into(),
        inputs: inputs(json!({"initial_workers": 2, "flavor": "m1.small"})),
        labels: vec![
            ("k8s-cluster".into(), "demo".into()),
            ("k8s-nodepool-uid".into(), "uid-1".into()),
        ],
    }
}

async fn start() -> (cloudify_sim::SimulatorHandle, CloudifyClient, SimControl) {
    let scenario = Scenario::default_demo().with_timing(Timing::instant());
    let sim = Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim");
    let c = client(&sim.url());
    let control = SimControl::new(&sim.url());
    (sim, c, control)
}

#[tokio::test]
async fn a_deployment_is_created_installed_updated_uninstalled_and_deleted() {
    let (sim, c, control) = start().await;
    let bp = c
        .upload_blueprint("pool-bp", "pool.yaml", b"not really a tarball".to_vec())
        .await
        .expect("upload");
    assert!(bp.is_uploaded(), "{bp:?}");
    let again = c
        .upload_blueprint("pool-bp", "pool.yaml", b"x".to_vec())
        .await
        .expect_err("the id is taken");
    assert_eq!(Refusal::of(&again), Refusal::AlreadyExists);
    assert!(c.blueprint("nope").await.expect("GET blueprint").is_none());

    let mut missing = pool("np-x");
    missing.blueprint_id = "nope".into();
    let err = c
        .create_deployment(&missing)
        .await
        .expect_err("no blueprint");
    assert_eq!(Refusal::of(&err), Refusal::NotFound, "{err}");

    // Held: the environment is still being created when install is asked for.
    control
        .set_faults(&FaultsPatch {
            hold_executions: Some(true),
            ..FaultsPatch::default()
        })
        .await
        .expect("hold");
    let created = c.create_deployment(&pool("np-a")).await.expect("create");
    assert_eq!(created.installation_status, InstallationStatus::Inactive);
    assert!(created.environment_pending(), "{created:?}");
    let err = c
        .create_deployment(&pool("np-a"))
        .await
        .expect_err("exists");
    assert_eq!(Refusal::of(&err), Refusal::AlreadyExists);
    let err = c
        .start_workflow("np-a", Workflow::Install)
        .await
        .expect_err("environment not ready");
    assert_eq!(Refusal::of(&err), Refusal::EnvironmentNotReady, "{err}");
    control.clear_faults().await.expect("release");

    let ready = quiet(&c, "np-a").await;
    assert!(ready.has_label("k8s-nodepool-uid", "uid-1"), "{ready:?}");
    assert_eq!(ready.inputs.get("flavor"), Some(&json!("m1.small")));
    assert_eq!(ready.installation_status, InstallationStatus::Inactive);

    let install = c
        .start_workflow("np-a", Workflow::Install)
        .await
        .expect("install");
    assert_eq!(install.workflow_id, "install");
    let installed = quiet(&c, "np-a").await;
    assert_eq!(installed.installation_status, InstallationStatus::Active);
    let instances = c
        .node_instances(&["np-a".into()], &["workers_host".into()])
        .await
        .expect("instances");
    assert_eq!(instances.len(), 2);
    assert!(
        instances
            .iter()
            .all(|i| i.state == "started" && i.runtime_str("hostname").is_some())
    );
    let err = c
        .start_workflow("np-a", Workflow::Install)
        .await
        .expect_err("everything is started");
    assert_eq!(Refusal::of(&err), Refusal::WorkflowUnavailable);

    let outputs = c.outputs("np-a").await.expect("outputs");
    assert_eq!(outputs.get("node_group"), Some(&json!("np-a/workers")));
    assert!(
        c.capabilities("np-a")
            .await
            .expect("capabilities")
            .is_empty()
    );

    let update = c
        .start_update("np-a", &inputs(json!({"flavor": "m1.large"})))
        .await
        .expect("update");
    assert_eq!(update.new_inputs.get("flavor"), Some(&json!("m1.large")));
    let done = eventually("the update ends", || async {
        let u = c.deployment_update(&update.id).await.expect("GET update");
        u.is_ended().then_some(u)
    })
    .await;
    assert_eq!(done.state, "successful");
    let updated = quiet(&c, "np-a").await;
    assert_eq!(updated.inputs.get("flavor"), Some(&json!("m1.large")));
    assert_eq!(updated.inputs.get("initial_workers"), Some(&json!(2)));

    let err = c
        .delete_deployment("np-a", false)
        .await
        .expect_err("live instances");
    assert_eq!(Refusal::of(&err), Refusal::DependentsExist, "{err}");
    c.start_workflow("np-a", Workflow::Uninstall)
        .await
        .expect("uninstall");
    let uninstalled = quiet(&c, "np-a").await;
    assert_eq!(
        uninstalled.installation_status,
        InstallationStatus::Inactive
    );
    let err = c
        .start_workflow("np-a", Workflow::Uninstall)
        .await
        .expect_err("nothing live");
    assert_eq!(Refusal::of(&err), Refusal::WorkflowUnavailable);
    c.delete_deployment("np-a", false).await.expect("delete");
    eventually("the deployment is gone", || async {
        c.deployment_state("np-a")
            .await
            .expect("GET deployment")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        c.deployments_by_id(&["np-a".into()])
            .await
            .expect("list")
            .is_empty()
    );
    // The id can be used again.
    c.create_deployment(&pool("np-a")).await.expect("recreate");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_failed_install_leaves_the_deployment_inactive_and_a_retry_installs_it() {
    let (sim, c, control) = start().await;
    c.upload_blueprint("pool-bp", "pool.yaml", b"archive".to_vec())
        .await
        .expect("upload");
    c.create_deployment(&pool("np-f")).await.expect("create");
    quiet(&c, "np-f").await;
    control
        .set_faults(&FaultsPatch {
            fail_next_executions: Some(1),
            fail_reason: Some("Quota exceeded for instances".into()),
            ..FaultsPatch::default()
        })
        .await
        .expect("fault");
    let failed = c
        .start_workflow("np-f", Workflow::Install)
        .await
        .expect("install");
    let after = quiet(&c, "np-f").await;
    assert_eq!(after.installation_status, InstallationStatus::Inactive);
    let execution = c.execution(&failed.id).await.expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Failed);
    assert!(
        execution
            .error
            .as_deref()
            .is_some_and(|e| e.contains("Quota exceeded")),
        "{execution:?}"
    );
    c.start_workflow("np-f", Workflow::Install)
        .await
        .expect("retry");
    assert_eq!(
        quiet(&c, "np-f").await.installation_status,
        InstallationStatus::Active
    );
    sim.shutdown().await;
}
