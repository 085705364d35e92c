//! Several managers at once, static groups with overrides, and Refresh under a slow manager.

use std::time::{Duration, Instant};

use crate::provider_support::*;
use autoscaler_cloudify::proto;
use cloudify_sim::{Scenario, Timing};

#[tokio::test]
async fn two_managers_get_prefixed_group_ids() {
    let demo = || Scenario::default_demo().with_timing(Timing::instant());
    let (mut env, other) = start_two_managers(
        demo(),
        demo(),
        "  groups:\n    \"west:k8s-pool-a/workers\": {max: 6}\n",
    )
    .await;
    let groups = env.groups().await;
    let ids: Vec<(String, i32)> = groups.iter().map(|g| (g.id.clone(), g.max_size)).collect();
    assert_eq!(
        ids,
        vec![
            ("east:k8s-pool-a/workers".to_owned(), 10),
            ("east:k8s-pool-b/gpu-workers".to_owned(), 4),
            ("west:k8s-pool-a/workers".to_owned(), 6),
            ("west:k8s-pool-b/gpu-workers".to_owned(), 4),
        ]
    );
    // A scale-up on the west group goes to the west manager only.
    env.increase("west:k8s-pool-a/workers", 1)
        .await
        .expect("increase");
    let west = other.control().requests().await.expect("sim requests");
    assert_eq!(
        west.routes.get("POST /api/v3.1/executions"),
        Some(&1),
        "{west:?}"
    );
    assert_eq!(env.route_count("POST /api/v3.1/executions").await, 0);
    let instances = env.nodes("west:k8s-pool-a/workers").await;
    let id = instances[0].id.clone();
    assert_eq!(env.group_for(&id, "").await, "west:k8s-pool-a/workers");
    env.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn refresh_never_blocks_past_the_deadline() {
    let mut env = start_default().await;
    env.faults(serde_json::json!({"latency_ms": 3000})).await;
    let mut req = tonic::Request::new(proto::RefreshRequest {});
    req.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let r = env.client.refresh(req).await;
    assert!(r.is_ok(), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    // Reads keep answering from the last snapshot meanwhile.
    assert_eq!(env.target(WORKERS).await, 2);
    env.clear_faults().await;
    env.shutdown().await;
}
