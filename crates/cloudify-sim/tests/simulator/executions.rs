//! Executions over real HTTP: POST validation and its error codes, per-deployment locking,
//! `queue=true` and FIFO start, `hold_executions`, cancellation, listing with filters.

use std::time::{Duration, Instant};

use crate::support::{Api, assert_error, start, start_default};
use cloudify_sim::{Scenario, Timing};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn workers(delta: i64) -> Value {
    json!({"scalable_entity_name": "workers", "delta": delta})
}

#[tokio::test]
async fn post_returns_201_with_merged_parameters() {
    let sim = start_default().await;
    let (status, e) = sim.api.scale("k8s-pool-a", workers(1), false).await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    assert_eq!(e["workflow_id"], "scale");
    assert_eq!(e["deployment_id"], "k8s-pool-a");
    assert!(matches!(e["status"].as_str(), Some("pending")), "{e}");
    let p = &e["parameters"];
    assert_eq!(p["scalable_entity_name"], "workers");
    assert_eq!(p["delta"], 1);
    for (name, default) in [
        ("scale_compute", json!(false)),
        ("include_instances", Value::Null),
        ("exclude_instances", Value::Null),
        ("ignore_failure", json!(false)),
        ("rollback_if_failed", json!(true)),
        ("abort_started", json!(false)),
    ] {
        assert_eq!(p[name], default, "{name}");
    }
    let id = e["id"].as_str().expect("id");
    let done = sim.api.wait_execution(id).await;
    assert_eq!(done["status"], "terminated");
    assert_eq!(done["status_display"], "completed");
    assert!(done["started_at"].is_string() && done["ended_at"].is_string());
    assert_eq!(done["error"], "");
}

#[tokio::test]
async fn invalid_requests_get_the_manager_error_codes() {
    let sim = start_default().await;
    let api = &sim.api;
    assert_error(
        &api.scale("k8s-pool-a", json!({"delta": 1}), false).await,
        400,
        "illegal_execution_parameters_error",
    );
    assert_error(
        &api.scale(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "count": 2}),
            false,
        )
        .await,
        400,
        "illegal_execution_parameters_error",
    );
    assert_error(
        &api.scale(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers", "delta": "many"}),
            false,
        )
        .await,
        400,
        "illegal_execution_parameters_error",
    );
    // Custom parameters are fine when allowed.
    let (status, _) = api
        .post(
            "/executions",
            json!({"deployment_id": "k8s-pool-a", "workflow_id": "scale",
                   "parameters": {"scalable_entity_name": "workers", "delta": 0, "why": "test"},
                   "allow_custom_parameters": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_error(
        &api.post(
            "/executions",
            json!({"deployment_id": "k8s-pool-a", "workflow_id": "heal"}),
        )
        .await,
        400,
        "nonexistent_workflow_error",
    );
    // Every instance is started: install's availability rule refuses it (nothing stored).
    assert_error(
        &api.post(
            "/executions",
            json!({"deployment_id": "k8s-pool-a", "workflow_id": "install"}),
        )
        .await,
        400,
        "unavailable_workflow_error",
    );
    assert_error(
        &api.scale("no-such-deployment", workers(1), false).await,
        404,
        "not_found_error",
    );
    // Nothing was stored for the rejected requests (the allowed one only).
    let list = api.get_ok("/executions?_include=id").await;
    assert_eq!(list["metadata"]["pagination"]["total"], 1);
}

async fn status_of(api: &Api, id: &str) -> String {
    api.get_ok(&format!("/executions/{id}")).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn busy_deployment_rejects_without_queue_and_queues_fifo_with_it() {
    let sim = start_default().await;
    let api = &sim.api;
    api.set_faults(json!({"hold_executions": true})).await;
    let (_, first) = api.scale("k8s-pool-a", workers(1), false).await;
    let first = first["id"].as_str().expect("id").to_string();
    assert_eq!(status_of(api, &first).await, "pending");
    // Held: nothing changes yet.
    assert_eq!(
        api.group("k8s-pool-a", "workers").await["planned_instances"],
        2
    );

    let busy = api.scale("k8s-pool-a", workers(1), false).await;
    assert_error(&busy, 400, "existing_running_execution_error");
    assert!(
        busy.1["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&first)
    );

    let (status, second) = api.scale("k8s-pool-a", workers(2), true).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["status"], "queued");
    let (_, third) = api.scale("k8s-pool-a", workers(-1), true).await;
    assert_eq!(third["status"], "queued");
    // Other deployments are not blocked.
    let (status, other) = api
        .scale(
            "k8s-pool-b",
            json!({"scalable_entity_name": "gpu-workers", "delta": 1}),
            false,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_eq!(other["status"], "pending");

    api.set_faults(json!({"hold_executions": false})).await;
    let ids = [
        first,
        second["id"].as_str().expect("id").to_string(),
        third["id"].as_str().expect("id").to_string(),
    ];
    let mut runs = Vec::new();
    for id in &ids {
        let e = api.wait_execution(id).await;
        assert_eq!(e["status"], "terminated", "{e}");
        runs.push((
            e["started_at"].as_str().unwrap_or_default().to_string(),
            e["ended_at"].as_str().unwrap_or_default().to_string(),
        ));
    }
    // FIFO, one at a time: each starts no earlier than the previous one ended.
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "{runs:?}");
    }
    assert_eq!(
        api.group("k8s-pool-a", "workers").await["current_instances"],
        4
    );
    let b = api.wait_execution(other["id"].as_str().expect("id")).await;
    assert_eq!(b["status"], "terminated");
    assert_eq!(
        api.group("k8s-pool-b", "gpu-workers").await["current_instances"],
        1
    );
}

#[tokio::test]
async fn cancel_queued_running_and_finished_executions() {
    let sim = start(
        Scenario::default_demo()
            .with_timing(Timing {
                execution_start_ms: 0,
                step_ms: 250,
            })
            .with_seed(9),
    )
    .await;
    let api = &sim.api;
    let running = api.scale_ok("k8s-pool-a", workers(2)).await;
    let queued = api.scale_ok("k8s-pool-a", workers(5)).await;
    assert_eq!(status_of(api, &queued).await, "queued");
    // A queued execution is killed at once and never runs.
    let (status, e) = api
        .post(
            &format!("/executions/{queued}"),
            json!({"action": "cancel"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(e["status"], "cancelled");
    // A running one goes through cancelling to cancelled.
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(api, &running).await != "started" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, e) = api
        .post(
            &format!("/executions/{running}"),
            json!({"action": "cancel"}),
        )
        .await;
    assert_eq!(e["status"], "cancelling");
    assert_eq!(api.wait_execution(&running).await["status"], "cancelled");
    assert_eq!(status_of(api, &queued).await, "cancelled");
    // The cancelled scale leaves its modification behind (planned 4, current 2), as a manager.
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(
        (
            props["current_instances"].as_i64(),
            props["planned_instances"].as_i64()
        ),
        (Some(2), Some(4))
    );
    // Ended executions cannot be cancelled; unknown actions and ids are rejected.
    assert_error(
        &api.post(
            &format!("/executions/{running}"),
            json!({"action": "cancel"}),
        )
        .await,
        400,
        "illegal_action_error",
    );
    assert_error(
        &api.post(
            &format!("/executions/{running}"),
            json!({"action": "explode"}),
        )
        .await,
        400,
        "bad_parameters_error",
    );
    assert_error(
        &api.post("/executions/nope", json!({"action": "cancel"}))
            .await,
        404,
        "not_found_error",
    );
}

#[tokio::test]
async fn list_executions_with_filters() {
    let sim = start_default().await;
    let api = &sim.api;
    let a = api.scale_ok("k8s-pool-a", workers(1)).await;
    api.wait_execution(&a).await;
    let failed = api.scale_ok("k8s-pool-a", workers(-10)).await;
    api.wait_execution(&failed).await;
    let b = api
        .scale_ok(
            "k8s-pool-b",
            json!({"scalable_entity_name": "gpu-workers", "delta": 1}),
        )
        .await;
    api.wait_execution(&b).await;
    let by_dep = api.get_ok("/executions?deployment_id=k8s-pool-a").await;
    assert_eq!(by_dep["metadata"]["pagination"]["total"], 2);
    let by_status = api
        .get_ok("/executions?status=failed&_include=id,status,error")
        .await;
    assert_eq!(by_status["items"][0]["id"], failed.as_str());
    assert!(
        by_status["items"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("illegal")
    );
    let either = api
        .get_ok("/executions?status=failed&status=terminated&workflow_id=scale&_include_system_workflows=false")
        .await;
    assert_eq!(either["metadata"]["pagination"]["total"], 3);
    let newest = api.get_ok("/executions?_sort=-created_at&_size=1").await;
    assert_eq!(newest["items"][0]["id"], b.as_str());
    assert_error(&api.get("/executions/nope").await, 404, "not_found_error");
    // Deployment summary fields follow the latest execution.
    let d = api.get_ok("/deployments/k8s-pool-a").await;
    assert_eq!(d["latest_execution"], failed.as_str());
    assert_eq!(d["latest_execution_status"], "failed");
}

#[tokio::test]
async fn forced_parallel_scale_fails_on_the_started_modification() {
    let sim = start(
        Scenario::default_demo()
            .with_timing(Timing {
                execution_start_ms: 0,
                step_ms: 250,
            })
            .with_seed(5),
    )
    .await;
    let api = &sim.api;
    let first = api.scale_ok("k8s-pool-a", workers(1)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(api, &first).await != "started" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, forced) = api
        .post(
            "/executions",
            json!({"deployment_id": "k8s-pool-a", "workflow_id": "scale",
                   "parameters": workers(1), "force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let forced = api.wait_execution(forced["id"].as_str().expect("id")).await;
    assert_eq!(forced["status"], "failed");
    assert!(
        forced["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ExistingStartedDeploymentModificationError")
    );
    assert_eq!(api.wait_execution(&first).await["status"], "terminated");
    assert_eq!(
        api.group("k8s-pool-a", "workers").await["current_instances"],
        3
    );
}
