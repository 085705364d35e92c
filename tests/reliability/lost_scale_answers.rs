//! A scale Cloudify stored but whose answer was lost (issue 20 item 12): the POST reached the
//! manager, the execution was created, and the provider got a 502 from the proxy in front of it
//! or a body cut short. The provider must find out from Cloudify what happened before answering
//! (TargetSize then counts the stored scale) and never send it a second time when CA retries.
//! The manager is a hostile proxy in front of the simulator.

use std::time::Duration;

use crate::reliability_support::hostile::{HostileManager, Rule};
use crate::reliability_support::*;
use autoscaler_cloudify::app::App;
use autoscaler_cloudify::nodegroup::ServiceSettings;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::{SimulatorHandle, Timing};
use tonic::transport::Channel;

const EXECUTIONS: &str = "/api/v3.1/executions";

struct Env {
    sim: SimulatorHandle,
    hostile: HostileManager,
    app: App,
    client: CloudProviderClient<Channel>,
}

/// Workers: 2 instances, max 10; the provider talks to the simulator through a hostile manager.
async fn env() -> Env {
    let sim = start_sim(with_workers(scenario(Timing::instant()), 1, 10, 2)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let settings = ServiceSettings {
        verify_poll: Duration::from_millis(50),
        ..ServiceSettings::default()
    };
    let (app, client) = start_provider(&hostile.url(), settings).await;
    Env {
        sim,
        hostile,
        app,
        client,
    }
}

impl Env {
    /// The scale executions Cloudify holds, as `(delta, include_instances)`.
    async fn scales(&self) -> Vec<(i64, Vec<String>)> {
        SimCtl::new(&self.sim.url())
            .scale_executions()
            .await
            .iter()
            .map(|e| {
                let p = &e["parameters"];
                let include = p["include_instances"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                (p["delta"].as_i64().unwrap_or(1), include)
            })
            .collect()
    }

    async fn shutdown(self) {
        self.app.shutdown().await;
        self.sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_scale_out_stored_then_answered_502_counts_at_once_and_is_sent_once() {
    let mut env = env().await;
    env.hostile
        .add(Rule::post(EXECUTIONS).times(1).after_forwarding().html(502));
    let first = increase(&mut env.client, WORKERS, 1).await;
    assert_eq!(target(&mut env.client, WORKERS).await, 3, "{first:?}");
    assert!(first.is_ok(), "Cloudify stored it: accepted ({first:?})");
    assert_eq!(env.scales().await, [(1, Vec::new())]);
    env.shutdown().await;
}

#[tokio::test]
async fn a_scale_out_whose_answer_was_cut_short_counts_at_once_and_is_sent_once() {
    let mut env = env().await;
    env.hostile
        .add(Rule::post(EXECUTIONS).times(1).truncate(12));
    let first = increase(&mut env.client, WORKERS, 1).await;
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(target(&mut env.client, WORKERS).await, 3);
    assert_eq!(env.scales().await, [(1, Vec::new())]);
    env.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_an_answer_nobody_could_check_is_not_sent_twice() {
    let mut env = env().await;
    // The answer is lost, and so is the look-up that follows: the provider cannot tell.
    env.hostile
        .add(Rule::post(EXECUTIONS).times(1).after_forwarding().html(502));
    env.hostile.add(Rule::get(EXECUTIONS).html(503));
    let first = increase(&mut env.client, WORKERS, 1)
        .await
        .expect_err("nobody can tell whether it was stored");
    assert_eq!(first.code(), tonic::Code::Unavailable, "{first:?}");
    // CA retries the same increase; the manager answers again.
    env.hostile.clear_rules();
    increase(&mut env.client, WORKERS, 1)
        .await
        .expect("the retry is answered by the stored scale");
    assert_eq!(target(&mut env.client, WORKERS).await, 3);
    assert_eq!(
        env.scales().await,
        [(1, Vec::new())],
        "one scale-out for one asked"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_scale_in_stored_then_answered_502_is_accepted_and_sent_once() {
    let mut env = env().await;
    let ids: Vec<String> = instances(&mut env.client, WORKERS)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    env.hostile
        .add(Rule::post(EXECUTIONS).times(1).after_forwarding().html(502));
    let first = delete(&mut env.client, WORKERS, vec![node(&ids[0], "")]).await;
    assert!(first.is_ok(), "Cloudify stored it: accepted ({first:?})");
    assert_eq!(target(&mut env.client, WORKERS).await, 1);
    // CA repeats the call (it may, for a node already being deleted).
    delete(&mut env.client, WORKERS, vec![node(&ids[0], "")])
        .await
        .expect("a repeat");
    let scales = env.scales().await;
    assert_eq!(scales.len(), 1, "{scales:?}");
    assert_eq!(scales[0].0, -1);
    env.shutdown().await;
}

#[tokio::test]
async fn a_post_refused_with_a_definite_answer_is_not_looked_up() {
    let mut env = env().await;
    env.hostile.take_requests();
    env.hostile.add(Rule::post(EXECUTIONS).times(1).respond(
        400,
        "application/json",
        r#"{"message": "no", "error_code": "illegal_execution_parameters_error"}"#,
    ));
    let refused = increase(&mut env.client, WORKERS, 1)
        .await
        .expect_err("refused");
    assert_ne!(refused.code(), tonic::Code::Ok);
    assert_eq!(target(&mut env.client, WORKERS).await, 2);
    let looked_up = env
        .hostile
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == EXECUTIONS)
        .count();
    assert_eq!(looked_up, 0, "Cloudify said no: nothing to find out");
    increase(&mut env.client, WORKERS, 1)
        .await
        .expect("a retry");
    assert_eq!(env.scales().await, [(1, Vec::new())]);
    env.shutdown().await;
}
