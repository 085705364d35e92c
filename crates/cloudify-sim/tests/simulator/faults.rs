//! `/_sim/faults` and `/_sim/requests` over real HTTP.

use std::time::{Duration, Instant};

use crate::support::{assert_error, start_default};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn down_answers_maintenance_mode_until_cleared() {
    let sim = start_default().await;
    let api = &sim.api;
    api.set_faults(json!({"down": true})).await;
    assert_error(&api.get("/ok").await, 503, "maintenance_mode_active");
    assert_error(
        &api.get("/deployments").await,
        503,
        "maintenance_mode_active",
    );
    assert_error(
        &api.scale(
            "k8s-pool-a",
            json!({"scalable_entity_name": "workers"}),
            true,
        )
        .await,
        503,
        "maintenance_mode_active",
    );
    // /_sim stays reachable, and shows what is set.
    let (status, faults) = api.call(Method::GET, "/_sim/faults", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(faults["down"], true);
    let (status, cleared) = api.call(Method::DELETE, "/_sim/faults", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cleared["down"], false);
    api.get_ok("/deployments").await;
}

#[tokio::test]
async fn error_rate_and_latency() {
    let sim = start_default().await;
    let api = &sim.api;
    api.set_faults(json!({"error_rate": 1.0})).await;
    for _ in 0..3 {
        assert_error(&api.get("/deployments").await, 500, "internal_server_error");
    }
    api.set_faults(json!({"error_rate": 0.0, "latency_ms": 150}))
        .await;
    let t = Instant::now();
    api.get_ok("/deployments").await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    let (status, _) = api
        .call(
            Method::POST,
            "/_sim/faults",
            Some(json!({"error_rate": 2.0})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn requests_are_counted_per_templated_route() {
    let sim = start_default().await;
    let api = &sim.api;
    api.get_ok("/deployments").await;
    api.get_ok("/deployments/k8s-pool-a").await;
    api.get_ok("/deployments/k8s-pool-b").await;
    api.get_ok("/node-instances?_size=1").await;
    api.scale_ok("k8s-pool-a", json!({"scalable_entity_name": "workers"}))
        .await;
    let _ = api.get("/deployments/missing").await;
    let (_, log) = api.call(Method::GET, "/_sim/requests", None).await;
    let routes = &log["routes"];
    assert_eq!(routes["GET /api/v3.1/deployments"], 1, "{log}");
    assert_eq!(routes["GET /api/v3.1/deployments/{id}"], 3, "{log}");
    assert_eq!(routes["GET /api/v3.1/node-instances"], 1, "{log}");
    assert_eq!(routes["POST /api/v3.1/executions"], 1, "{log}");
    assert_eq!(log["total"], 6, "/_sim calls are not counted: {log}");
    let (status, _) = api.call(Method::DELETE, "/_sim/requests", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, log) = api.call(Method::GET, "/_sim/requests", None).await;
    assert_eq!(log["total"], 0);
}

#[tokio::test]
async fn the_typed_control_client_sets_faults_and_reads_counts() {
    let sim = start_default().await;
    let control = sim.handle.control();
    let set = control
        .set_faults(&cloudify_sim::FaultsPatch {
            down: Some(true),
            latency_ms: Some(20),
            ..Default::default()
        })
        .await
        .expect("set");
    assert!(set.down);
    assert_eq!(set.latency_ms, 20);
    assert_eq!(control.faults().await.expect("get"), set);
    assert_error(&sim.api.get("/ok").await, 503, "maintenance_mode_active");
    // A patch only replaces what it names.
    let set = control
        .set_faults(&cloudify_sim::FaultsPatch {
            down: Some(false),
            ..Default::default()
        })
        .await
        .expect("set");
    assert_eq!((set.down, set.latency_ms), (false, 20));
    // The simulator's refusal reaches the caller as a status with its body.
    let refused = control
        .set_faults(&cloudify_sim::FaultsPatch {
            error_rate: Some(2.0),
            ..Default::default()
        })
        .await
        .expect_err("error_rate 2.0 is refused");
    assert!(
        matches!(&refused, cloudify_sim::ControlError::Status { status: 400, body, .. } if body.contains("error_rate")),
        "{refused}"
    );
    assert_eq!(
        control.clear_faults().await.expect("clear"),
        Default::default()
    );
    sim.api.get_ok("/deployments").await;
    let log = control.requests().await.expect("requests");
    assert_eq!(
        log.routes.get("GET /api/v3.1/deployments"),
        Some(&1),
        "{log:?}"
    );
    control.reset_requests().await.expect("reset");
    assert_eq!(control.requests().await.expect("requests").total, 0);
    // A simulator that is gone is a transport error, not a panic.
    sim.handle.shutdown().await;
    assert!(matches!(
        control.faults().await,
        Err(cloudify_sim::ControlError::Http { .. })
    ));
}
