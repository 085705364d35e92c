//! Each scale-in is verified against what *it* removed (issue 20 item 11): two normal scale-ins a
//! few seconds apart must not raise a "removed other instances" error nor count a scale-down
//! mismatch, whatever order their checks run in. The manager here answers node-instance lists
//! slowly (a hostile manager in front of the simulator), so the second scale-in is sent while
//! the snapshot still predates the first, and its check runs after the first one's finished.

use std::time::{Duration, Instant};

use crate::reliability_support::hostile::{HostileManager, Rule};
use crate::reliability_support::*;
use autoscaler_cloudify::nodegroup::ServiceSettings;
use autoscaler_cloudify::observability::metrics::ScaleLabels;
use cloudify_sim::Timing;

/// Waits until `n` scale-ins were verified (terminated or mismatch), at most 30 s.
async fn wait_verified(app: &autoscaler_cloudify::app::App, n: u64) {
    let count = |result: &str| {
        app.metrics
            .scale_executions
            .get_or_create(&ScaleLabels {
                direction: "down".into(),
                result: result.into(),
            })
            .get()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("terminated") + count("mismatch") < n {
        assert!(Instant::now() < deadline, "scale-ins never verified");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_scale_ins_in_a_row_are_each_verified_against_their_own_removals() {
    let sim = start_sim(with_workers(scenario(Timing::instant()), 1, 10, 4)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let settings = ServiceSettings {
        verify_poll: Duration::from_millis(50),
        ..ServiceSettings::default()
    };
    let (app, mut client) = start_provider(&hostile.url(), settings).await;
    let ids: Vec<String> = instances(&mut client, WORKERS)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids.len(), 4);
    // From now on every node-instance list takes 1.5 s: the refresh the first scale-in asks
    // for, and each verification's read of what is left.
    hostile.add(Rule::get("/api/v3.1/node-instances").delay(Duration::from_millis(1500)));
    delete(&mut client, WORKERS, vec![node(&ids[0], "")])
        .await
        .expect("first scale-in");
    delete(&mut client, WORKERS, vec![node(&ids[1], "")])
        .await
        .expect("second scale-in");
    SimCtl::new(&sim.url())
        .wait_executions_done(Duration::from_secs(20))
        .await;
    wait_verified(&app, 2).await;
    assert_eq!(
        app.metrics.scale_down_mismatches.get(),
        0,
        "each scale-in removed exactly what it named"
    );
    let left = SimCtl::new(&sim.url()).worker_vms().await;
    assert_eq!(left.len(), 2, "{left:?}");
    app.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_scale_in_cloudify_ran_with_another_delta_is_a_mismatch() {
    // The positive control of the test above: the same path counts a real mismatch. The manager
    // reports the execution with delta -2 for one named group instance, as a scale-in that
    // takes one more instance than named would be stored.
    let sim = start_sim(with_workers(scenario(Timing::instant()), 1, 10, 4)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let settings = ServiceSettings {
        verify_poll: Duration::from_millis(50),
        ..ServiceSettings::default()
    };
    let (app, mut client) = start_provider(&hostile.url(), settings).await;
    let ids: Vec<String> = instances(&mut client, WORKERS)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    hostile.add(
        Rule::get("/api/v3.1/executions/")
            .mutate_json(|v| v["parameters"]["delta"] = serde_json::json!(-2)),
    );
    delete(&mut client, WORKERS, vec![node(&ids[0], "")])
        .await
        .expect("scale-in");
    wait_verified(&app, 1).await;
    assert_eq!(app.metrics.scale_down_mismatches.get(), 1);
    app.shutdown().await;
    sim.shutdown().await;
}
