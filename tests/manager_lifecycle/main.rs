//! Contract test of the deployment-lifecycle calls (`cloudify::deployments`, issues 22 and 23)
//! against the REAL Cloudify Manager: blueprint upload (a `.tar.gz` of
//! `tests/manager/blueprints`), deployment creation with labels and inputs and the refusals a
//! controller decides on (404 blueprint, unknown input, 409, environment not ready), `install`,
//! `unavailable_workflow_error`, outputs and capabilities, a deployment update of an input,
//! `dependent_exists_error`, `uninstall`, `DELETE` and the 404 after it. The same calls against
//! the simulator: `tests/provider/deployment_lifecycle.rs`.
//!
//! Uses the manager the environment names (`. /work/wt/manager-env.sh`, or
//! `eval "$(tests/manager/manager.sh env)"`); without `CLOUDIFY_MANAGER_URL` it prints why it is
//! skipped and passes, unless `MANAGER_CONTRACT_REQUIRED=1` (the manager tier) asks for it. Its
//! deployments and blueprint carry the prefix `pools-contract-`, so it never touches another
//! test's.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use autoscaler_cloudify::cloudify::deployments::{
    DeploymentLifecycle, DeploymentState, InstallationStatus, NewDeployment, Refusal, Workflow,
};
use autoscaler_cloudify::cloudify::{Auth, ClientSettings, Cloudify, CloudifyClient};
use serde_json::{Map, Value, json};

const PREFIX: &str = "pools-contract";

/// A client of the manager the environment names, or `None` (skip) after saying why.
fn manager(test: &str) -> Option<CloudifyClient> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(url) = var("CLOUDIFY_MANAGER_URL") else {
        let how = "CLOUDIFY_MANAGER_URL is not set: source /work/wt/manager-env.sh or \
                   eval \"$(tests/manager/manager.sh env)\"";
        assert!(
            var("MANAGER_CONTRACT_REQUIRED").as_deref() != Some("1"),
            "{test}: the manager tier asked for this test but {how}"
        );
        eprintln!("manager_lifecycle: skipped {test}: {how}");
        return None;
    };
    let auth = match var("CLOUDIFY_MANAGER_TOKEN") {
        Some(t) => Auth::Token(t),
        None => Auth::Basic {
            username: var("CLOUDIFY_MANAGER_USER").unwrap_or_else(|| "admin".into()),
            password: var("CLOUDIFY_MANAGER_PASSWORD").unwrap_or_else(|| "admin".into()),
        },
    };
    let ca_cert_pem = url
        .starts_with("https")
        .then(|| var("CLOUDIFY_MANAGER_CA_CERT"))
        .flatten()
        .map(|p| std::fs::read(p).expect("CLOUDIFY_MANAGER_CA_CERT"));
    let settings = ClientSettings {
        name: "main".into(),
        url,
        tenant: var("CLOUDIFY_MANAGER_TENANT").unwrap_or_else(|| "default_tenant".into()),
        auth,
        ca_cert_pem,
        insecure_skip_verify: false,
        request_timeout: Duration::from_secs(30),
        max_response_bytes: autoscaler_cloudify::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
    };
    Some(CloudifyClient::new(settings, None).expect("client"))
}

/// Polls `check` until `Some`, at most `limit` (the real manager's workflows take seconds).
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The deployment once no execution of it is queued or running.
async fn quiet(c: &CloudifyClient, id: &str) -> DeploymentState {
    eventually(
        &format!("{id} is quiet"),
        Duration::from_secs(240),
        || async {
            let executions = c.deployment_executions(id).await.expect("executions");
            executions.iter().all(|e| e.is_ended()).then_some(())?;
            c.deployment_state(id).await.expect("GET deployment")
        },
    )
    .await
}

/// `tests/manager/blueprints` as a `.tar.gz` whose top directory holds the blueprint files (what
/// the manager expects; `tar` is on every machine this tier runs on).
fn blueprint_archive() -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manager/blueprints");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("bp.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(src.parent().expect("parent"))
        .arg("blueprints")
        .status()
        .expect("tar");
    assert!(status.success(), "tar failed");
    std::fs::read(&archive).expect("archive")
}

fn inputs(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Uninstalls and deletes a deployment a previous run left behind.
async fn remove_leftover(c: &CloudifyClient, id: &str) {
    let Some(state) = c.deployment_state(id).await.expect("GET deployment") else {
        return;
    };
    quiet(c, id).await;
    if state.installation_status == InstallationStatus::Active
        || c.delete_deployment(id, false).await.is_err()
    {
        if c.start_workflow(id, Workflow::Uninstall).await.is_ok() {
            quiet(c, id).await;
        }
        c.delete_deployment(id, true)
            .await
            .expect("delete leftover");
    }
    eventually("leftover gone", Duration::from_secs(60), || async {
        c.deployment_state(id)
            .await
            .expect("GET")
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_deployment_lives_and_dies_on_the_real_manager() {
    let test = "a_pool_deployment_lives_and_dies_on_the_real_manager";
    let Some(c) = manager(test) else { return };
    let started = Instant::now();
    let blueprint = format!("{PREFIX}-worker-pool");
    let id = format!("{PREFIX}-a");

    // Upload once; a second upload of the id is a conflict.
    if c.blueprint(&blueprint)
        .await
        .expect("GET blueprint")
        .is_none()
    {
        let up = c
            .upload_blueprint(&blueprint, "worker-pool.yaml", blueprint_archive())
            .await
            .expect("upload");
        assert_eq!(up.id, blueprint);
    }
    let bp = eventually("blueprint uploaded", Duration::from_secs(120), || async {
        let bp = c.blueprint(&blueprint).await.expect("GET blueprint")?;
        assert!(!bp.is_failed(), "upload failed: {bp:?}");
        bp.is_uploaded().then_some(bp)
    })
    .await;
    assert!(bp.is_uploaded());
    let err = c
        .upload_blueprint(&blueprint, "worker-pool.yaml", blueprint_archive())
        .await
        .expect_err("the id is taken");
    assert_eq!(Refusal::of(&err), Refusal::AlreadyExists, "{err}");
    eprintln!("{test}: blueprint ready after {:?}", started.elapsed());

    remove_leftover(&c, &id).await;
    let pool = |blueprint_id: &str, given: Value| NewDeployment {
        id: id.clone(),
        blueprint_id: blueprint_id.into(),
        inputs: inputs(given),
        labels: vec![
            ("k8s-cluster".into(), PREFIX.into()),
            ("k8s-nodepool-uid".into(), "pools-contract-uid".into()),
        ],
    };
    let err = c
        .create_deployment(&pool(&format!("{PREFIX}-nope"), json!({})))
        .await
        .expect_err("no such blueprint");
    assert_eq!(Refusal::of(&err), Refusal::NotFound, "{err}");
    let err = c
        .create_deployment(&pool(&blueprint, json!({"bogus": 1})))
        .await
        .expect_err("unknown input");
    assert_eq!(Refusal::of(&err), Refusal::Invalid, "{err}");
    assert_eq!(err.code(), Some("unknown_deployment_input_error"));

    let given = json!({"initial_workers": 1, "cluster_name": PREFIX, "max_workers": 5});
    let created = c
        .create_deployment(&pool(&blueprint, given.clone()))
        .await
        .expect("create");
    assert_eq!(created.installation_status, InstallationStatus::Inactive);
    assert!(created.create_execution.is_some(), "{created:?}");
    // Right after the PUT the environment is being created: install is refused, not queued.
    match c.start_workflow(&id, Workflow::Install).await {
        Err(e) => assert_eq!(Refusal::of(&e), Refusal::EnvironmentNotReady, "{e}"),
        Ok(_) => eprintln!("{test}: the environment was ready at once (fast manager)"),
    }
    let err = c
        .create_deployment(&pool(&blueprint, given))
        .await
        .expect_err("exists");
    assert_eq!(Refusal::of(&err), Refusal::AlreadyExists, "{err}");
    let ready = quiet(&c, &id).await;
    assert!(
        ready.has_label("k8s-nodepool-uid", "pools-contract-uid"),
        "{ready:?}"
    );
    assert_eq!(ready.inputs.get("max_workers"), Some(&json!(5)));
    assert_eq!(
        ready.inputs.get("min_workers"),
        Some(&json!(0)),
        "defaults merged"
    );
    eprintln!("{test}: environment created after {:?}", started.elapsed());

    if ready.installation_status != InstallationStatus::Active {
        c.start_workflow(&id, Workflow::Install)
            .await
            .expect("install");
    }
    let installed = quiet(&c, &id).await;
    assert_eq!(installed.installation_status, InstallationStatus::Active);
    let vms = c
        .node_instances(std::slice::from_ref(&id), &["worker_host".into()])
        .await
        .expect("instances");
    assert_eq!(vms.len(), 1);
    assert!(vms.iter().all(|i| i.state == "started"));
    eprintln!("{test}: installed after {:?}", started.elapsed());
    let err = c
        .start_workflow(&id, Workflow::Install)
        .await
        .expect_err("everything is started");
    assert_eq!(Refusal::of(&err), Refusal::WorkflowUnavailable, "{err}");

    let outputs = c.outputs(&id).await.expect("outputs");
    assert_eq!(
        outputs.get("node_group"),
        Some(&json!(format!("{id}/workers")))
    );
    c.capabilities(&id).await.expect("capabilities");

    let update = c
        .start_update(&id, &inputs(json!({"max_workers": 7})))
        .await
        .expect("update");
    assert_eq!(update.new_inputs.get("max_workers"), Some(&json!(7)));
    assert_eq!(update.old_inputs.get("max_workers"), Some(&json!(5)));
    let done = eventually("update ends", Duration::from_secs(240), || async {
        let u = c.deployment_update(&update.id).await.expect("GET update");
        u.is_ended().then_some(u)
    })
    .await;
    assert_eq!(done.state, "successful", "{done:?}");
    let updated = quiet(&c, &id).await;
    assert_eq!(updated.inputs.get("max_workers"), Some(&json!(7)));
    eprintln!("{test}: updated after {:?}", started.elapsed());

    let err = c
        .delete_deployment(&id, false)
        .await
        .expect_err("live instances");
    assert_eq!(Refusal::of(&err), Refusal::DependentsExist, "{err}");
    c.start_workflow(&id, Workflow::Uninstall)
        .await
        .expect("uninstall");
    let uninstalled = quiet(&c, &id).await;
    assert_eq!(
        uninstalled.installation_status,
        InstallationStatus::Inactive
    );
    eprintln!("{test}: uninstalled after {:?}", started.elapsed());
    c.delete_deployment(&id, false).await.expect("delete");
    eventually("deployment gone", Duration::from_secs(120), || async {
        c.deployment_state(&id)
            .await
            .expect("GET")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        c.deployments_by_id(std::slice::from_ref(&id))
            .await
            .expect("list")
            .is_empty()
    );
    eprintln!("{test}: deleted after {:?}", started.elapsed());
}
