//! Each scale-in is verified against what *it* removed (issue 20 item 11): two normal scale-ins a
//! few seconds apart must not raise a "removed other instances" error nor count a scale-down
//! mismatch, whatever order their checks run in. The manager here answers node-instance lists
//! slowly (a hostile manager in front of the simulator), so the second scale-in is sent while
//! the snapshot still predates the first, and its check runs after the first one's finished.

use std::time::{Duration, Instant};

use crate::reliability_support::hostile::Rule;
use crate::reliability_support::*;
use autoscaler_cloudify::observability::metrics::{ScaleDirection, ScaleLabels, ScaleResult};

/// Waits until `n` scale-ins were verified (terminated or mismatch), at most 30 s.
async fn wait_verified(app: &autoscaler_cloudify::app::App, n: u64) {
    let count = |result: ScaleResult| {
        app.metrics
            .scale_executions
            .get_or_create(&ScaleLabels {
                direction: ScaleDirection::Down,
                result,
            })
            .get()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(ScaleResult::Terminated) + count(ScaleResult::Mismatch) < n {
        assert!(Instant::now() < deadline, "scale-ins never verified");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_scale_ins_in_a_row_are_each_verified_against_their_own_removals() {
    let mut env = BehindHostile::start(4).await;
    let ids = env.worker_ids().await;
    assert_eq!(ids.len(), 4);
    // From now on every node-instance list takes 1.5 s: the refresh the first scale-in asks
    // for, and each verification's read of what is left.
    env.hostile
        .add(Rule::get("/api/v3.1/node-instances").delay(Duration::from_millis(1500)));
    delete(&mut env.client, WORKERS, vec![node(&ids[0], "")])
        .await
        .expect("first scale-in");
    delete(&mut env.client, WORKERS, vec![node(&ids[1], "")])
        .await
        .expect("second scale-in");
    let ctl = SimCtl::new(&env.sim.url());
    ctl.wait_executions_done(Duration::from_secs(20)).await;
    wait_verified(&env.app, 2).await;
    assert_eq!(
        env.app.metrics.scale_down_mismatches.get(),
        0,
        "each scale-in removed exactly what it named"
    );
    let left = ctl.worker_vms().await;
    assert_eq!(left.len(), 2, "{left:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn a_scale_in_cloudify_ran_with_another_delta_is_a_mismatch() {
    // The positive control of the test above: the same path counts a real mismatch. The manager
    // reports the execution with delta -2 for one named group instance, as a scale-in that
    // takes one more instance than named would be stored.
    let mut env = BehindHostile::start(4).await;
    let ids = env.worker_ids().await;
    env.hostile.add(
        Rule::get("/api/v3.1/executions/")
            .mutate_json(|v| v["parameters"]["delta"] = serde_json::json!(-2)),
    );
    delete(&mut env.client, WORKERS, vec![node(&ids[0], "")])
        .await
        .expect("scale-in");
    wait_verified(&env.app, 1).await;
    assert_eq!(env.app.metrics.scale_down_mismatches.get(), 1);
    env.shutdown().await;
}
