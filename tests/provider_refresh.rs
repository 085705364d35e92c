//! The Refresh RPC never waits on Cloudify, and freshness comes from the background refresher
//! (issue #13): a refresh starts at once after an accepted mutation and after a scale execution
//! ends, with the periodic refresh switched off (1 h) so only those triggers can explain it.

mod provider_support;

use std::time::{Duration, Instant};

use autoscaler_cloudify::proto;
use autoscaler_cloudify::simulator::{Scenario, Timing};
use provider_support::*;

/// Before #13 the RPC waited up to its budget (deadline − 500 ms, 4 s without a deadline) for a
/// refresh: with 3 s of manager latency it took ~3 s. Now it answers from the snapshot.
#[tokio::test]
async fn refresh_does_not_wait_for_a_slow_manager() {
    let mut env = start_default().await;
    env.faults(serde_json::json!({"latency_ms": 3000})).await;
    let before = env.route_count("GET /api/v3.1/executions").await;
    let started = Instant::now();
    env.client
        .refresh(proto::RefreshRequest {})
        .await
        .expect("Refresh answers from the snapshot");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "Refresh waited on the 3 s manager: {took:?}"
    );
    // ...and still asked for a refresh, which reaches the manager in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.route_count("GET /api/v3.1/executions").await == before {
        assert!(
            Instant::now() < deadline,
            "no background refresh was started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.clear_faults().await;
    env.shutdown().await;
}

/// An accepted IncreaseSize starts a refresh at once, and the end of its execution another, so
/// the new instances show as running without any Refresh RPC.
#[tokio::test]
async fn mutations_and_ended_executions_trigger_a_refresh() {
    let mut env = start_with(
        Scenario::default_demo()
            .with_timing(Timing {
                execution_start_ms: 100,
                step_ms: 100,
            })
            .with_seed(7),
        TEST_CONFIG,
    )
    .await;
    let fetched = env.app.inventory.snapshot().fetched_at;
    env.increase(WORKERS, 1).await.expect("accepted");
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.app.inventory.snapshot().fetched_at == fetched {
        assert!(Instant::now() < deadline, "no refresh after the mutation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The execution ends a few hundred ms later; only the trigger at its end can show 3 running.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = env.nodes(WORKERS).await;
        let running = nodes
            .iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.instance_state == 1))
            .count();
        if running == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new instance never seen running: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.wait_executions_done().await;
    env.shutdown().await;
}
