//! A scale Cloudify stored but whose answer was lost (issue 20 item 12): the POST reached the
//! manager, the execution was created, and the provider got a 502 from the proxy in front of it
//! or a body cut short. The provider must find out from Cloudify what happened before answering
//! (TargetSize then counts the stored scale) and never send it a second time when CA retries.
//! The manager is a hostile proxy in front of the simulator.

use crate::reliability_support::hostile::Rule;
use crate::reliability_support::*;

const EXECUTIONS: &str = "/api/v3.1/executions";

/// Workers: 2 instances, max 10; the provider talks to the simulator through a hostile manager.
async fn env() -> BehindHostile {
    BehindHostile::start(2).await
}

/// The scale executions Cloudify holds, as `(delta, include_instances)`.
async fn scales(env: &BehindHostile) -> Vec<(i64, Vec<String>)> {
    SimCtl::new(&env.sim.url())
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

#[tokio::test]
async fn a_scale_out_stored_then_answered_502_counts_at_once_and_is_sent_once() {
    let mut env = env().await;
    env.hostile
        .add(Rule::post(EXECUTIONS).times(1).after_forwarding().html(502));
    let first = increase(&mut env.client, WORKERS, 1).await;
    assert_eq!(target(&mut env.client, WORKERS).await, 3, "{first:?}");
    assert!(first.is_ok(), "Cloudify stored it: accepted ({first:?})");
    assert_eq!(scales(&env).await, [(1, Vec::new())]);
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
    assert_eq!(scales(&env).await, [(1, Vec::new())]);
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
        scales(&env).await,
        [(1, Vec::new())],
        "one scale-out for one asked"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_scale_in_stored_then_answered_502_is_accepted_and_sent_once() {
    let mut env = env().await;
    let ids = env.worker_ids().await;
    env.hostile
        .add(Rule::post(EXECUTIONS).times(1).after_forwarding().html(502));
    let first = delete(&mut env.client, WORKERS, vec![node(&ids[0], "")]).await;
    assert!(first.is_ok(), "Cloudify stored it: accepted ({first:?})");
    assert_eq!(target(&mut env.client, WORKERS).await, 1);
    // CA repeats the call (it may, for a node already being deleted).
    delete(&mut env.client, WORKERS, vec![node(&ids[0], "")])
        .await
        .expect("a repeat");
    let scales = scales(&env).await;
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
    assert_eq!(scales(&env).await, [(1, Vec::new())]);
    env.shutdown().await;
}
