//! The Refresh RPC never waits on Cloudify, and freshness comes from the background refresher
//! (issue #13): a refresh starts at once after an accepted mutation and after a scale execution
//! ends, with the periodic refresh switched off (1 h) so only those triggers can explain it.

use std::time::{Duration, Instant};

use autoscaler_cloudify::nodegroup::{LeaderTerm, Leadership, NotLeader};
use autoscaler_cloudify::proto;
use cloudify_sim::{Scenario, Timing};
use testkit::env::*;

/// Before #13 the RPC waited up to its budget (deadline − 500 ms, 4 s without a deadline) for a
/// refresh: with 3 s of manager latency it took ~3 s. Now it answers from the snapshot.
#[tokio::test]
async fn refresh_does_not_wait_for_a_slow_manager() {
    let mut env = start_default().await;
    env.faults(serde_json::json!({"latency_ms": 3000})).await;
    let before = env.request_total().await;
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
    while env.request_total().await == before {
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

/// A leadership gate the test sets by hand (the Lease is tested in tests/reliability/ha_lease.rs).
struct ManualGate(std::sync::Mutex<Result<LeaderTerm, NotLeader>>);

impl Leadership for ManualGate {
    fn check(&self) -> Result<LeaderTerm, NotLeader> {
        self.0
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// A follower refuses every mutation with UNAVAILABLE naming the leader, before any Cloudify
/// call; a new leader decides on a snapshot fetched after its term began, so what the previous
/// leader queued counts (without the catch-up, IncreaseSize(8) below would pass 2 + 8 <= 10 on
/// the stale snapshot and scale to 17).
#[tokio::test]
async fn mutations_follow_the_leadership_gate() {
    let mut env = start_with(
        Scenario::default_demo()
            .with_timing(Timing::instant())
            .with_seed(7),
        TEST_CONFIG,
    )
    .await;
    let gate = std::sync::Arc::new(ManualGate(std::sync::Mutex::new(Err(NotLeader {
        holder: Some("replica-b-1234".into()),
        reason: "another replica holds the lease".into(),
    }))));
    assert!(env.app.service.set_leadership(gate.clone()));
    let posts = env.route_count("POST /api/v3.1/executions").await;
    for e in [
        env.increase(WORKERS, 1).await.expect_err("follower"),
        env.delete(WORKERS, &["whatever"])
            .await
            .expect_err("follower"),
    ] {
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("replica-b-1234"), "{}", e.message());
    }
    assert_eq!(env.route_count("POST /api/v3.1/executions").await, posts);
    assert_eq!(env.target(WORKERS).await, 2, "reads still answer");

    // The previous leader queued +7 just before it lost the lease; this replica's snapshot is
    // older (periodic refresh off).
    env.faults(serde_json::json!({"hold_executions": true}))
        .await;
    let r = env
        .http
        .post(format!("{}/api/v3.1/executions", env.sim.url()))
        .basic_auth("admin", Some("admin"))
        .header("Tenant", "default_tenant")
        .json(
            &serde_json::json!({"deployment_id": "k8s-pool-a", "workflow_id": "scale",
            "parameters": {"scalable_entity_name": "workers", "delta": 7}, "queue": true}),
        )
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "{}", r.status());
    *gate.0.lock().expect("gate") = Ok(LeaderTerm {
        since: Some(std::time::Instant::now()),
        expires: None,
    });
    let e = env.increase(WORKERS, 8).await.expect_err("above max");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(env.target(WORKERS).await, 9);
    env.clear_faults().await;
    env.wait_executions_done().await;
    env.shutdown().await;
}
