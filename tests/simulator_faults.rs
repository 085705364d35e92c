//! `/_sim/faults` and `/_sim/requests` over real HTTP, and the `simulator` command line.

mod simulator_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use simulator_support::{Api, assert_error, start_default};

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

/// Kills the child on drop so a failing assertion does not leak the process.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn simulator_command_prints_its_url_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_autoscaler-cloudify"))
            .args(["simulator", "--listen", "127.0.0.1:0", "--instances", "7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("a line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL printed")
        .to_string();
    let api = Api::new(&url);
    let (status, _) = api.anonymous().get("/ok").await;
    assert_eq!(status, StatusCode::OK);
    let props = api.group("k8s-pool-a", "workers").await;
    assert_eq!(props["current_instances"], 7);
    assert_eq!(props["max_instances"], 10);
}
