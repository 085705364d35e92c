//! The Cloudify REST client over real HTTP: pagination, typed errors (JSON and non-JSON), timeouts,
//! read-only retries, and the hard back-off after a 401.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autoscaler_cloudify::cloudify::{
    Auth, ClientSettings, Cloudify, CloudifyClient, CloudifyError, ScaleRequest,
};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::any;
use cloudify_sim::{Scenario, Simulator, Timing};

fn settings(url: &str, password: &str) -> ClientSettings {
    ClientSettings {
        name: "main".into(),
        url: url.into(),
        tenant: "default_tenant".into(),
        auth: Auth::Basic {
            username: "admin".into(),
            password: password.into(),
        },
        ca_cert_pem: None,
        insecure_skip_verify: false,
        request_timeout: Duration::from_millis(500),
        max_response_bytes: autoscaler_cloudify::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
    }
}

async fn sim_requests(url: &str) -> cloudify_sim::RequestLog {
    cloudify_sim::SimControl::new(url)
        .requests()
        .await
        .expect("sim requests")
}

/// `GET /api/v3.1/node-instances` calls the simulator has answered.
async fn instance_pages(url: &str) -> u64 {
    let log = sim_requests(url).await;
    log.routes
        .get("GET /api/v3.1/node-instances")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn pages_through_instances_one_call_per_thousand() {
    let scenario = Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_instances(2500);
    let sim = Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim");
    let c = CloudifyClient::new(settings(&sim.url(), "admin"), None).expect("client");
    let deps = vec!["k8s-pool-a".to_owned()];
    let nodes = c.nodes(&deps).await.expect("nodes");
    let vm: Vec<String> = nodes
        .iter()
        .filter(|n| n.is_compute())
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(vm, vec!["workers_host".to_owned()]);
    let before = instance_pages(&sim.url()).await;
    let instances = c.node_instances(&deps, &vm).await.expect("instances");
    assert_eq!(instances.len(), 2500);
    assert!(
        instances.iter().all(|i| i.node_id == "workers_host"),
        "filtered to the VM node"
    );
    let after = instance_pages(&sim.url()).await;
    assert_eq!(after - before, 3, "2500 instances = 3 pages of 1000");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_set_that_changes_between_pages_is_read_again() {
    let scenario = Scenario::default_demo()
        .with_timing(Timing::instant())
        .with_instances(2500);
    let sim = Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim");
    let c = CloudifyClient::new(settings(&sim.url(), "admin"), None).expect("client");
    let deps = vec!["k8s-pool-a".to_owned()];
    let vm = vec!["workers_host".to_owned()];
    // The second page comes as if an instance had been inserted ahead of it: one row is
    // skipped and the total grows. One pass would miss an instance (issue 11).
    sim.control()
        .set_faults(&cloudify_sim::FaultsPatch {
            churn_next_pages: Some(1),
            ..Default::default()
        })
        .await
        .expect("faults");
    let before = instance_pages(&sim.url()).await;
    let instances = c.node_instances(&deps, &vm).await.expect("instances");
    let ids: std::collections::BTreeSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), 2500, "every instance once");
    assert_eq!(instances.len(), 2500, "no repeats");
    let after = instance_pages(&sim.url()).await;
    assert_eq!(after - before, 6, "the moved pass, then a clean one");
    sim.shutdown().await;
}

#[tokio::test]
async fn json_errors_are_typed() {
    let sim = Simulator::start(
        Scenario::default_demo().with_timing(Timing::instant()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let c = CloudifyClient::new(settings(&sim.url(), "admin"), None).expect("client");
    match c.execution("does-not-exist").await {
        Err(CloudifyError::Api {
            status: 404, code, ..
        }) => assert_eq!(code, "not_found_error"),
        other => panic!("expected a typed 404, got {other:?}"),
    }
    let e = c
        .start_scale(&ScaleRequest::scale_out("nope", "g", 1, false))
        .await
        .expect_err("unknown deployment");
    assert!(e.code().is_some(), "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_401_stops_all_calls_for_the_backoff_period() {
    let sim = Simulator::start(
        Scenario::default_demo(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let c = CloudifyClient::new(settings(&sim.url(), "wrong"), None).expect("client");
    let e = c
        .deployments_by_id(&["k8s-pool-a".into()])
        .await
        .expect_err("401");
    assert!(matches!(e, CloudifyError::Unauthorized { .. }), "{e}");
    let total = sim_requests(&sim.url()).await.total;
    for _ in 0..10 {
        let e = c
            .deployments_by_id(&["k8s-pool-a".into()])
            .await
            .expect_err("backing off");
        assert!(matches!(e, CloudifyError::AuthBackoff { .. }), "{e}");
    }
    assert_eq!(
        sim_requests(&sim.url()).await.total,
        total,
        "no further login attempt reaches Cloudify (it locks accounts after 4 failures)"
    );
    assert!(c.auth_problem().is_some());
    sim.shutdown().await;
}

/// A proxy in front of the manager answering HTML error pages, counting hits.
async fn html_proxy(status: StatusCode, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let app = Router::new().fallback(any(move || {
        let h = Arc::clone(&h);
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            (
                status,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn html_error_pages_are_typed_and_only_reads_are_retried() {
    let (url, hits) = html_proxy(StatusCode::BAD_GATEWAY, Duration::ZERO).await;
    let c = CloudifyClient::new(settings(&url, "admin"), None).expect("client");
    match c.execution("x").await {
        Err(CloudifyError::Http {
            status: 502,
            content_type,
            excerpt,
            ..
        }) => {
            assert_eq!(content_type, "text/html");
            assert!(excerpt.contains("Bad Gateway"), "{excerpt}");
        }
        other => panic!("expected a non-JSON error, got {other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3, "a read is tried 3 times");
    hits.store(0, Ordering::SeqCst);
    let e = c
        .start_scale(&ScaleRequest::scale_out("d", "g", 1, false))
        .await
        .expect_err("502");
    assert!(e.is_unavailable());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a scale is never retried (it could scale twice)"
    );
}

#[tokio::test]
async fn every_call_has_a_timeout() {
    let (url, _) = html_proxy(StatusCode::OK, Duration::from_secs(5)).await;
    let c = CloudifyClient::new(settings(&url, "admin"), None).expect("client");
    let started = std::time::Instant::now();
    let e = c.cancel_execution("x").await.expect_err("timeout");
    assert!(matches!(e, CloudifyError::Timeout { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
