//! Reliability suite, part 4 (issue #7): bad input from Cloudify. A property-based fuzz of the
//! decoding of Cloudify answers (arbitrary JSON, structure-aware mutations of real answers,
//! truncated bodies) and of the snapshot build on whatever decodes; then the test kit's hostile
//! manager (crates/testkit/src/hostile.rs, in front of the simulator) answering HTML, garbage, wrong
//! types and missing fields: every such answer must become a typed error and the last good
//! snapshot must stay in place.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use autoscaler_cloudify::app::start;
use autoscaler_cloudify::cloudify::models::ListPage;
use autoscaler_cloudify::cloudify::{CloudifyError, Deployment, Execution, Node, NodeInstance};
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::inventory::{SourceData, build_snapshot};
use autoscaler_cloudify::nodegroup::ServiceSettings;
use cloudify_sim::Timing;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use serde_json::Value;
use testkit::reliability::hostile::{HostileManager, Rule};
use testkit::reliability::*;

pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("id"),
            Just("items"),
            Just("started"),
            Just("scale"),
            Just("-1"),
            Just("workers")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("items".to_owned()),
            Just("metadata".to_owned()),
            Just("pagination".to_owned()),
            Just("total".to_owned()),
            Just("id".to_owned()),
            Just("scaling_groups".to_owned()),
            Just("properties".to_owned()),
            Just("planned_instances".to_owned()),
            Just("runtime_properties".to_owned()),
            Just("parameters".to_owned()),
            Just("delta".to_owned()),
            Just("status".to_owned()),
            "[a-z_]{1,10}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value at a random path of `v` with `with` (structure-aware mutation).
pub(crate) fn mutate(v: &mut Value, mut path: Vec<usize>, with: Value) {
    let Some(step) = path.pop() else {
        *v = with;
        return;
    };
    match v {
        Value::Array(a) if !a.is_empty() => {
            let i = step % a.len();
            mutate(&mut a[i], path, with);
        }
        Value::Object(m) if !m.is_empty() => {
            let k = m.keys().nth(step % m.len()).cloned().unwrap_or_default();
            if let Some(x) = m.get_mut(&k) {
                mutate(x, path, with);
            }
        }
        _ => *v = with,
    }
}

/// Decodes `body` as every answer type and builds a snapshot from whatever decoded.
fn decode_everything(body: &[u8]) -> (usize, usize) {
    let mut ok = 0;
    let mut err = 0;
    let mut count = |r: bool| if r { ok += 1 } else { err += 1 };
    let deployments = serde_json::from_slice::<ListPage<Deployment>>(body);
    count(deployments.is_ok());
    let nodes = serde_json::from_slice::<ListPage<Node>>(body);
    count(nodes.is_ok());
    let instances = serde_json::from_slice::<ListPage<NodeInstance>>(body);
    count(instances.is_ok());
    let executions = serde_json::from_slice::<ListPage<Execution>>(body);
    count(executions.is_ok());
    let one = serde_json::from_slice::<Execution>(body);
    count(one.is_ok());
    if let Ok(e) = &one {
        let _ = (
            e.delta(),
            e.scaled_group(),
            e.include_instances(),
            e.is_waiting(),
        );
    }
    let data = SourceData {
        source: 0,
        name: "main".into(),
        tenant: "default_tenant".into(),
        discovered: deployments.map(|p| p.items).unwrap_or_default(),
        static_deployments: Vec::new(),
        nodes: nodes.map(|p| p.items).unwrap_or_default(),
        instances: instances.map(|p| p.items).unwrap_or_default(),
        active: executions.map(|p| p.items).unwrap_or_default(),
        failed: one.into_iter().collect(),
        ended: Vec::new(),
        modifications: Vec::new(),
    };
    let cfg = test_config("http://127.0.0.1:1").node_groups;
    let snap = build_snapshot(Instant::now(), SystemTime::now(), &[data], &cfg, false);
    for g in &snap.groups {
        let _ = g.cloudify_target();
        for i in &g.instances {
            let _ = snap.lookup(&i.provider_id, i.node_name.as_deref().unwrap_or(""));
        }
    }
    (ok, err)
}

pub(crate) fn test_config(url: &str) -> Config {
    loopback_config(
        // `full_every: 0s`: every refresh reads every route, so each bad answer is met.
        &provider_yaml(url, "1h", "0s, full_every: 0s", "")
            .replace("request_timeout: 10s", "request_timeout: 3s"),
        Overrides::default(),
    )
}

/// Real answers of the simulator for every route the refresh reads.
async fn real_bodies() -> Vec<Vec<u8>> {
    let sim = start_sim(scenario(Timing::instant()).with_instances(20)).await;
    let ctl = SimCtl::new(&sim.url());
    let mut out = Vec::new();
    for path in [
        "/deployments?_include=id,labels,scaling_groups",
        "/nodes?deployment_id=k8s-pool-a",
        "/node-instances?deployment_id=k8s-pool-a&node_id=workers_host",
        "/executions?workflow_id=scale",
    ] {
        out.push(serde_json::to_vec(&ctl.get(path).await).expect("encode"));
    }
    // An execution list with content.
    let r = ctl
        .http
        .post(format!("{}/api/v3.1/executions", sim.url()))
        .basic_auth("admin", Some(PASSWORD))
        .header("Tenant", "default_tenant")
        .json(
            &serde_json::json!({"deployment_id": "k8s-pool-a", "workflow_id": "scale",
            "parameters": {"scalable_entity_name": "workers", "delta": 1}}),
        )
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success());
    out.push(serde_json::to_vec(&ctl.get("/executions?workflow_id=scale").await).expect("enc"));
    out
}

#[test]
fn fuzz_cloudify_answer_decoding() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bodies = rt.block_on(real_bodies());
    let cases = if soak() { 20_000 } else { 2_000 };
    let started = Instant::now();
    let totals = Mutex::new((0usize, 0usize, 0usize));
    let run = |name: &str, strategy: BoxedStrategy<Vec<u8>>| {
        let mut runner = TestRunner::new(PtConfig {
            cases,
            failure_persistence: None,
            ..PtConfig::default()
        });
        runner
            .run(&strategy, |body| {
                let (ok, err) = decode_everything(&body);
                let mut t = totals.lock().expect("lock");
                t.0 += 1;
                t.1 += ok;
                t.2 += err;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    };
    run(
        "arbitrary JSON",
        arb_json()
            .prop_map(|v| serde_json::to_vec(&v).expect("encode"))
            .boxed(),
    );
    run(
        "arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..512).boxed(),
    );
    let b = bodies.clone();
    run(
        "mutated real answers",
        (
            0..b.len(),
            proptest::collection::vec(any::<usize>(), 0..6),
            arb_json(),
        )
            .prop_map(move |(i, path, with)| {
                let mut v: Value = serde_json::from_slice(&b[i]).expect("json");
                mutate(&mut v, path, with);
                serde_json::to_vec(&v).expect("encode")
            })
            .boxed(),
    );
    let b = bodies.clone();
    // Truncated real answers: must be errors, never a (partial or empty) success.
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let truncated = (0..b.len(), any::<prop::sample::Index>());
    runner
        .run(&truncated, |(i, at)| {
            let body = &b[i];
            let cut = at.index(body.len().max(1));
            let part = &body[..cut.min(body.len().saturating_sub(1))];
            prop_assert!(serde_json::from_slice::<ListPage<Deployment>>(part).is_err());
            prop_assert!(serde_json::from_slice::<ListPage<NodeInstance>>(part).is_err());
            prop_assert!(serde_json::from_slice::<ListPage<Execution>>(part).is_err());
            decode_everything(part);
            totals.lock().expect("lock").0 += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("truncated: {e}"));
    let (n, ok, err) = *totals.lock().expect("lock");
    figure(
        "fuzz/cloudify-decode",
        &format!(
            "{n} bodies (arbitrary JSON, arbitrary bytes, mutated real answers, truncated real \
             answers; {cases} each) in {:.1} s: {ok} decodes, {err} typed errors, 0 panics; \
             every truncated body was an error",
            started.elapsed().as_secs_f64()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_become_typed_errors_and_keep_the_last_snapshot() {
    let sim = start_sim(scenario(Timing::instant())).await;
    let hostile = HostileManager::start(&sim.url()).await;

    let settings = ServiceSettings {
        refresh_max_age: Duration::ZERO,
        ..ServiceSettings::default()
    };
    let app = start(&test_config(&hostile.url()), settings)
        .await
        .expect("provider");
    tokio::time::timeout(Duration::from_secs(10), app.inventory.wait_ready())
        .await
        .expect("first snapshot");
    let good = app.inventory.snapshot();
    let shape = |s: &autoscaler_cloudify::inventory::Snapshot| -> Vec<(String, Vec<String>)> {
        s.groups
            .iter()
            .map(|g| {
                (
                    g.id.clone(),
                    g.instances.iter().map(|i| i.provider_id.clone()).collect(),
                )
            })
            .collect()
    };
    let good_shape = shape(&good);
    assert_eq!(good.instance_count(), 2);

    let truncated = {
        let v = SimCtl::new(&sim.url())
            .get("/node-instances?deployment_id=k8s-pool-a")
            .await;
        let s = v.to_string();
        s[..s.len() / 2].to_owned()
    };
    let html =
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let bodies: Vec<(&str, u16, &str, String)> = vec![
        ("HTML page, 200", 200, "text/html", html.into()),
        ("HTML page, 502", 502, "text/html", html.into()),
        (
            "garbage, 200",
            200,
            "application/json",
            "\u{1}garbage{{{".into(),
        ),
        ("empty body, 200", 200, "application/json", String::new()),
        ("null, 200", 200, "application/json", "null".into()),
        ("{} (no items), 200", 200, "application/json", "{}".into()),
        ("[] (array), 200", 200, "application/json", "[]".into()),
        (
            "items not a list",
            200,
            "application/json",
            r#"{"items":{"a":1}}"#.into(),
        ),
        (
            "items of wrong type",
            200,
            "application/json",
            r#"{"items":[1,"x",null]}"#.into(),
        ),
        (
            "items missing id",
            200,
            "application/json",
            r#"{"items":[{"unexpected":true}],"metadata":{"pagination":{"total":1}}}"#.into(),
        ),
        (
            "id of wrong type",
            200,
            "application/json",
            r#"{"items":[{"id":42,"state":"started"}],"metadata":{"pagination":{"total":1}}}"#
                .into(),
        ),
        ("truncated JSON", 200, "application/json", truncated),
        (
            "error JSON, 500",
            500,
            "application/json",
            r#"{"message":"boom","error_code":"internal_server_error"}"#.into(),
        ),
    ];
    let routes = [
        "/api/v3.1/executions",
        "/api/v3.1/searches/deployments",
        "/api/v3.1/nodes",
        "/api/v3.1/node-instances",
    ];
    let mut rows: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for route in routes {
        for (name, status, ct, body) in &bodies {
            hostile.add(Rule::any(route).respond(*status, ct, body.clone()));
            let r = app.inventory.refresh().await;
            let kind = match &r {
                Ok(_) => "accepted".to_owned(),
                Err(e) => match e.cloudify() {
                    Some(CloudifyError::Decode { .. }) => "Decode".into(),
                    Some(CloudifyError::Http { status, .. }) => format!("Http {status}"),
                    Some(CloudifyError::Api { status, .. }) => format!("Api {status}"),
                    Some(other) => format!("{other}"),
                    None => format!("{e}"),
                },
            };
            let kept = shape(&app.inventory.snapshot()) == good_shape;
            rows.push(format!("{route} {name}: {kind}, snapshot kept={kept}"));
            if r.is_ok() || !kept {
                failures.push(format!("{route} / {name}: {kind}, kept={kept}"));
            }
            // Restore the good snapshot for the next case.
            hostile.clear_rules();
            app.inventory.refresh().await.expect("good refresh");
        }
    }
    let st = app.inventory.status();
    figure(
        "bad-input-cloudify",
        &format!(
            "{} malformed answers ({} kinds x {} routes): {} typed errors with the last \
             snapshot kept, {} failures {failures:?}",
            rows.len(),
            bodies.len(),
            routes.len(),
            rows.len() - failures.len(),
            failures.len()
        ),
    );
    for r in &rows {
        eprintln!("  {r}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(st.last_error.is_none());
    app.shutdown().await;
}
