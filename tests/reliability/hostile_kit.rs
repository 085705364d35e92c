//! The test kit's hostile manager (crates/testkit/src/hostile.rs) does what its rules say, in front of
//! the simulator: the other suites trust it to inject exactly the fault they ask for.

use std::time::Duration;

use cloudify_sim::Timing;
use serde_json::{Value, json};
use testkit::reliability::hostile::{HostileManager, Rule};
use testkit::reliability::*;

async fn get(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = http
        .get(url)
        .basic_auth("admin", Some(PASSWORD))
        .header("Tenant", "default_tenant")
        .send()
        .await
        .expect("answer");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, r.text().await.unwrap_or_default())
}

fn items(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).expect("JSON");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manager_follows_its_rules_and_logs_every_request() {
    let sim = start_sim(scenario(Timing::instant()).with_instances(5)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let other = HostileManager::start(&sim.url()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let api = format!("{}/api/v3.1", hostile.url());
    let page = |offset: usize| {
        format!("{api}/node-instances?deployment_id=k8s-pool-a&_sort=id&_size=2&_offset={offset}")
    };

    // Pass-through, then a manager that ignores `_offset`.
    let (status, _, second) = get(&http, &page(2)).await;
    assert_eq!(status, 200);
    let (_, _, first) = get(&http, &page(0)).await;
    assert_ne!(items(&first), items(&second));
    let n = hostile.add(Rule::get("/api/v3.1/node-instances").ignore_offset());
    assert_eq!(items(&get(&http, &page(2)).await.2), items(&first));
    hostile.clear_rules();

    // A replaced parameter: the client asks for 2 per page, the backend is asked for 1; the
    // log keeps what the client sent.
    hostile.add(Rule::get("/api/v3.1/node-instances").set_param("_size", "1"));
    assert_eq!(items(&get(&http, &page(0)).await.2), items(&first)[..1]);
    let last = hostile.requests().pop().expect("logged");
    assert_eq!(last.param("_size"), ["2"]);
    hostile.clear_rules();

    // A JSON mutation, used twice only.
    hostile.add(
        Rule::get("/api/v3.1/nodes")
            .times(2)
            .mutate_json(|v| v["items"] = json!([])),
    );
    for expect_empty in [true, true, false] {
        let (_, _, body) = get(&http, &format!("{api}/nodes?deployment_id=k8s-pool-a")).await;
        assert_eq!(items(&body).is_empty(), expect_empty);
    }

    // Canned answers, truncation, a huge body, a redirect, a delay and a stall.
    hostile.add(Rule::post("/api/v3.1/searches/").html(502));
    let r = http
        .post(format!("{api}/searches/deployments"))
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.text().await.expect("body").contains("nginx"));
    hostile.add(Rule::get("/api/v3.1/executions").truncate(7));
    assert_eq!(get(&http, &format!("{api}/executions")).await.2.len(), 7);
    hostile.add(Rule::get("/api/v3.1/deployments").huge(1 << 20));
    let (status, ct, body) = get(&http, &format!("{api}/deployments")).await;
    assert_eq!(
        (status, ct.as_str(), body.len()),
        (200, "application/json", 1 << 20)
    );
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "valid JSON");
    hostile.add(Rule::get("/api/v3.1/tokens").redirect_to(&other.url()));
    let (status, _, _) = get(&http, &format!("{api}/tokens?x=1")).await;
    assert_eq!(status, 302);
    let r = http
        .get(format!("{api}/tokens?x=1"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("{}/api/v3.1/tokens?x=1", other.url()).as_str())
    );
    hostile.add(Rule::get("/api/v3.1/version").stall());
    let stalled = http
        .get(format!("{api}/version"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(stalled.is_err_and(|e| e.is_timeout()));
    hostile.add(
        Rule::get("/api/v3.1/deployment-modifications")
            .delay(Duration::from_millis(200))
            .pass(),
    );
    let slow = http
        .get(format!("{api}/deployment-modifications"))
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(slow.is_err_and(|e| e.is_timeout()), "delayed past 50 ms");

    // gunicorn's request-line limit.
    hostile.limit_request_line(Some(200));
    let long = format!("{api}/nodes?{}", "deployment_id=abcdefgh&".repeat(10));
    let (status, _, body) = get(&http, &long).await;
    assert_eq!(status, 414);
    assert!(body.contains("Request Line is too large"), "{body}");
    hostile.limit_request_line(None);
    assert_eq!(get(&http, &long).await.0, 200);

    // The log: every request with its query, headers and answer.
    let seen = hostile.requests();
    let ignored: Vec<_> = seen.iter().filter(|s| s.rule == Some(n)).collect();
    assert_eq!(ignored.len(), 1);
    assert_eq!(
        ignored[0].param("_offset"),
        ["2"],
        "logged as the client sent it"
    );
    assert_eq!(
        ignored[0]
            .headers
            .get("tenant")
            .and_then(|v| v.to_str().ok()),
        Some("default_tenant")
    );
    assert!(
        seen.iter()
            .any(|s| s.path == "/api/v3.1/version" && s.status == 0)
    );
    let too_long = seen.iter().find(|s| s.status == 414).expect("refused");
    assert!(too_long.request_line > 200);
    assert!(
        other.requests().is_empty(),
        "the client followed no redirect"
    );
    assert_eq!(hostile.take_requests().len(), seen.len());
    assert!(hostile.requests().is_empty());
}
