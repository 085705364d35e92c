//! Reliability suite, part 2 (issue #7): the provider in-process (the same `app::start` wiring the
//! binary uses, real gRPC and HTTP sockets) against the simulator, for the high-count cases:
//! concurrency on one group, failed executions, bad input from CA, and a property-based fuzz of
//! the gRPC requests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::reliability_support::*;
use autoscaler_cloudify::app::{App, start};
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::nodegroup::ServiceSettings;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::{Scenario, SimulatorHandle, Timing};
use prost::Message;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

struct Env {
    sim: SimulatorHandle,
    ctl: SimCtl,
    app: App,
    client: CloudProviderClient<Channel>,
}

fn config(url: &str) -> Config {
    let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), PASSWORD.to_owned())]);
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    // Background refresh off (1 h): the tests decide when CA's Refresh happens.
    let yaml = provider_yaml(url, "1h", "0s", "").replace(
        "node_groups:\n",
        "node_groups:\n  defaults:\n    options: {scale_down_unneeded_time: 20s}\n",
    );
    Config::from_yaml(&yaml, &overrides, &env).expect("valid test config")
}

async fn start_env(s: Scenario) -> Env {
    count_worker_panics();
    let sim = start_sim(s).await;
    let settings = ServiceSettings {
        verify_poll: Duration::from_millis(50),
        refresh_max_age: Duration::ZERO,
        ..ServiceSettings::default()
    };
    let app = start(&config(&sim.url()), settings)
        .await
        .expect("provider starts");
    tokio::time::timeout(Duration::from_secs(10), app.inventory.wait_ready())
        .await
        .expect("first snapshot");
    let client = CloudProviderClient::connect(format!("http://{}", app.grpc.addr))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let ctl = SimCtl::new(&sim.url());
    Env {
        sim,
        ctl,
        app,
        client,
    }
}

/// Samples TargetSize until stopped; returns the largest value seen.
fn sample_max_target(
    client: CloudProviderClient<Channel>,
    stop: Arc<AtomicUsize>,
) -> (tokio::task::JoinHandle<usize>, Arc<AtomicI32>) {
    let max = Arc::new(AtomicI32::new(i32::MIN));
    let m = Arc::clone(&max);
    let task = tokio::spawn(async move {
        let mut c = client;
        let mut n = 0;
        while stop.load(Ordering::SeqCst) == 0 {
            if let Ok(r) = c
                .node_group_target_size(req(proto::NodeGroupTargetSizeRequest {
                    id: WORKERS.into(),
                }))
                .await
            {
                m.fetch_max(r.into_inner().target_size, Ordering::SeqCst);
                n += 1;
            }
            // CA refreshes too while mutations run.
            if n % 10 == 0 {
                let _ = c.refresh(req(proto::RefreshRequest {})).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    });
    (task, max)
}

/// The provider's metrics once `ready` holds for them (polled every 20 ms, at most 20 s).
async fn wait_metrics(env: &Env, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = env.app.metrics.encode();
        if ready(&metrics) || Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CA's Refresh, then a fresh snapshot: the RPC only asks the background refresher (issue #13),
/// and these checks read right after it.
async fn ca_refresh(c: &mut CloudProviderClient<Channel>, app: &App) {
    refresh(c).await.expect("refresh");
    let _ = app.inventory.refresh().await;
}

fn quick() -> Timing {
    // Short but non-zero: executions sit in pending/started long enough to race with refreshes.
    Timing {
        execution_start_ms: 30,
        step_ms: 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_increases_stop_exactly_at_max() {
    let mut env = start_env(with_workers(scenario(quick()), 1, 10, 2)).await;
    let stop = Arc::new(AtomicUsize::new(0));
    let (sampler, max_seen) = sample_max_target(env.client.clone(), Arc::clone(&stop));
    let started = Instant::now();
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let mut c = env.client.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                (increase(&mut c, WORKERS, 1).await, t.elapsed())
            })
        })
        .collect();
    let mut codes = BTreeMap::<String, usize>::new();
    let mut lat = Latencies::default();
    for call in calls {
        let (r, d) = call.await.expect("task");
        lat.add(d, r.as_ref().map(|_| ()).map_err(|s| s.code()));
        let k = r.map_or_else(|s| format!("{:?}", s.code()), |_| "OK".into());
        *codes.entry(k).or_default() += 1;
    }
    let burst = started.elapsed();
    env.ctl.wait_executions_done(Duration::from_secs(30)).await;
    refresh(&mut env.client).await.expect("refresh");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(1, Ordering::SeqCst);
    let samples = sampler.await.expect("sampler");
    let max = max_seen.load(Ordering::SeqCst);
    let execs = env.ctl.scale_executions().await;
    let vms = env.ctl.worker_vms().await;
    let props = env.ctl.workers_props().await;
    let final_target = target(&mut env.client, WORKERS).await;
    figure(
        "concurrency/increase",
        &format!(
            "100 x IncreaseSize(1) on max 10 start 2 in {:.0} ms: {codes:?}; latency {}; \
             executions {}; Cloudify instances {} (current_instances {}); max TargetSize seen \
             {max} over {samples} samples; final target {final_target}",
            ms(burst),
            lat.summary(),
            execs.len(),
            vms.len(),
            props["current_instances"]
        ),
    );
    assert_eq!(codes.get("OK"), Some(&8), "{codes:?}");
    assert_eq!(codes.get("ResourceExhausted"), Some(&92), "{codes:?}");
    assert_eq!(execs.len(), 8);
    assert_eq!(vms.len(), 10);
    assert_eq!(props["current_instances"], json!(10));
    assert!(max <= 10, "TargetSize reached {max}");
    assert_eq!(final_target, 10);
    assert_eq!(worker_panics(), 0);
    drop(env.sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_become_one_execution_naming_exactly_those_instances() {
    let mut env = start_env(with_workers(scenario(quick()), 1, 20, 12)).await;
    let all = instances(&mut env.client, WORKERS).await;
    assert_eq!(all.len(), 12);
    let victims: Vec<String> = all.iter().take(10).map(|i| i.id.clone()).collect();
    let victim_vms: BTreeSet<String> = victims
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or("").to_owned())
        .collect();
    let survivors: BTreeSet<String> = all
        .iter()
        .skip(10)
        .map(|i| i.id.rsplit('/').next().unwrap_or("").to_owned())
        .collect();
    let started = Instant::now();
    let calls: Vec<_> = victims
        .iter()
        .map(|v| {
            let mut c = env.client.clone();
            let v = v.clone();
            tokio::spawn(async move { delete(&mut c, WORKERS, vec![node(&v, "")]).await })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        call.await.expect("task").expect("delete accepted");
        ok += 1;
    }
    let burst = started.elapsed();
    assert_eq!(target(&mut env.client, WORKERS).await, 2);
    env.ctl.wait_executions_done(Duration::from_secs(30)).await;
    let execs = env.ctl.scale_executions().await;
    let named: BTreeSet<String> = execs
        .iter()
        .flat_map(|e| {
            e["parameters"]["include_instances"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let deltas: Vec<i64> = execs
        .iter()
        .filter_map(|e| e["parameters"]["delta"].as_i64())
        .collect();
    let vms: BTreeSet<String> = env.ctl.worker_vms().await.into_iter().collect();
    refresh(&mut env.client).await.expect("refresh");
    let final_target = target(&mut env.client, WORKERS).await;
    // The provider's own check after each execution: wait until every one is checked.
    let metrics = wait_metrics(&env, |m| {
        m.lines()
            .filter(|l| {
                l.starts_with("autoscaler_cloudify_scale_executions_total")
                    && l.contains("direction=\"down\"")
                    && (l.contains("result=\"terminated\"") || l.contains("result=\"mismatch\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            >= execs.len() as f64
    })
    .await;
    let mismatches = metrics
        .lines()
        .find(|l| l.starts_with("autoscaler_cloudify_scale_down_mismatches_total"))
        .unwrap_or("")
        .to_owned();
    figure(
        "concurrency/delete",
        &format!(
            "10 concurrent DeleteNodes(1) of 12: {ok} accepted in {:.0} ms; {} execution(s) \
             deltas {deltas:?}; named == victims: {}; remaining VMs == the 2 others: {}; \
             final target {final_target}; {mismatches}",
            ms(burst),
            execs.len(),
            named == victim_vms,
            vms == survivors
        ),
    );
    assert!(execs.len() <= 3, "{} executions", execs.len());
    assert_eq!(deltas.iter().sum::<i64>(), -10);
    assert_eq!(named, victim_vms);
    assert_eq!(vms, survivors);
    assert_eq!(final_target, 2);
    assert!(mismatches.ends_with(" 0"), "{mismatches}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_increases_and_deletes_end_consistent() {
    let mut env = start_env(with_workers(scenario(quick()), 1, 12, 6)).await;
    let victims: Vec<String> = instances(&mut env.client, WORKERS)
        .await
        .into_iter()
        .take(5)
        .map(|i| i.id)
        .collect();
    let stop = Arc::new(AtomicUsize::new(0));
    let (sampler, max_seen) = sample_max_target(env.client.clone(), Arc::clone(&stop));
    let mut tasks = Vec::new();
    for i in 0..15 {
        let mut c = env.client.clone();
        let v = victims.get(i / 3).cloned();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0
                && let Some(v) = v
            {
                ("delete", delete(&mut c, WORKERS, vec![node(&v, "")]).await)
            } else {
                ("increase", increase(&mut c, WORKERS, 1).await)
            }
        }));
    }
    let mut accepted = BTreeMap::<&str, i32>::new();
    let mut refused = BTreeMap::<String, i32>::new();
    for t in tasks {
        let (kind, r) = t.await.expect("task");
        match r {
            Ok(()) => *accepted.entry(kind).or_default() += 1,
            Err(s) => *refused.entry(format!("{kind}:{:?}", s.code())).or_default() += 1,
        }
    }
    env.ctl.wait_executions_done(Duration::from_secs(30)).await;
    refresh(&mut env.client).await.expect("refresh");
    stop.store(1, Ordering::SeqCst);
    sampler.await.expect("sampler");
    let max = max_seen.load(Ordering::SeqCst);
    let vms = env.ctl.worker_vms().await;
    let props = env.ctl.workers_props().await;
    let final_target = target(&mut env.client, WORKERS).await;
    let expected = 6 + accepted.get("increase").copied().unwrap_or(0)
        - accepted.get("delete").copied().unwrap_or(0);
    figure(
        "concurrency/race",
        &format!(
            "10 IncreaseSize(1) + 5 DeleteNodes(1) at once on 6 (max 12): accepted {accepted:?} \
             refused {refused:?}; final target {final_target}, Cloudify VMs {}, \
             current_instances {}, expected {expected}; max target seen {max}",
            vms.len(),
            props["current_instances"]
        ),
    );
    assert_eq!(final_target, expected);
    assert_eq!(vms.len() as i32, expected);
    assert_eq!(props["current_instances"], json!(expected));
    assert!(max <= 12, "target reached {max}");
    for v in &victims {
        let vm = v.rsplit('/').next().unwrap_or("");
        assert!(
            !vms.iter().any(|x| x == vm),
            "deleted node {vm} still there"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_executions_reach_ca_and_are_not_forgotten() {
    let mut env = start_env(scenario(quick())).await;
    let c = &mut env.client;
    // ---- quota error on scale-out ----
    env.ctl
        .faults(json!({"fail_next_executions": 1,
            "fail_reason": "Quota exceeded for instances: Requested 2, but already used 10 of 10 instances"}))
        .await;
    increase(c, WORKERS, 2).await.expect("accepted");
    env.ctl.wait_executions_done(Duration::from_secs(30)).await;
    ca_refresh(c, &env.app).await;
    let inst = instances(c, WORKERS).await;
    let errored: Vec<&proto::Instance> = inst
        .iter()
        .filter(|i| i.status.as_ref().is_some_and(|s| s.error_info.is_some()))
        .collect();
    let props = env.ctl.workers_props().await;
    let t_failed = target(c, WORKERS).await;
    let info = errored
        .first()
        .and_then(|i| i.status.clone())
        .and_then(|s| s.error_info)
        .expect("error info");
    assert_eq!(errored.len(), 2, "{inst:?}");
    assert!(errored.iter().all(|i| state_of(i) == 2), "creating");
    assert_eq!(info.instance_error_class, 1, "OutOfResources");
    assert!(!info.error_code.is_empty());
    assert!(info.error_message.contains("Quota exceeded"));
    // Cloudify's error is a Python traceback; CA gets its last line only.
    assert!(
        !info.error_message.contains("Traceback") && !info.error_message.contains('\n'),
        "{:?}",
        info.error_message
    );
    assert_eq!(props["planned_instances"], json!(2), "rolled back");
    assert_eq!(
        t_failed, 4,
        "2 real + 2 failed records until CA deletes them"
    );
    // CA backs off and deletes the failed instances as fake nodes: no Cloudify execution.
    let posts = env.ctl.route("POST /api/v3.1/executions").await;
    let fakes = errored.iter().map(|i| node(&i.id, "")).collect();
    delete(c, WORKERS, fakes).await.expect("fake nodes deleted");
    let t_after = target(c, WORKERS).await;
    ca_refresh(c, &env.app).await;
    let t_after_refresh = target(c, WORKERS).await;
    let left = instances(c, WORKERS).await;
    assert_eq!(env.ctl.route("POST /api/v3.1/executions").await, posts);
    assert_eq!(t_after, 2);
    assert_eq!(t_after_refresh, 2, "failed records came back");
    assert_eq!(left.len(), 2);

    // ---- generic failure: class Other ----
    env.ctl
        .faults(json!({"fail_next_executions": 1, "fail_reason": "Nova: no valid host"}))
        .await;
    increase(c, WORKERS, 1).await.expect("accepted");
    env.ctl.wait_executions_done(Duration::from_secs(30)).await;
    ca_refresh(c, &env.app).await;
    let other = instances(c, WORKERS)
        .await
        .into_iter()
        .filter_map(|i| i.status.and_then(|s| s.error_info).map(|e| (i.id, e)))
        .collect::<Vec<_>>();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].1.instance_error_class, 99);
    delete(c, WORKERS, vec![node(&other[0].0, "")])
        .await
        .expect("fake deleted");

    // ---- scale-in failure: the instance stays reported ----
    let victim = instances(c, WORKERS).await[0].id.clone();
    env.ctl
        .faults(json!({"fail_next_executions": 1, "fail_reason": "Nova: delete timed out"}))
        .await;
    delete(c, WORKERS, vec![node(&victim, "")])
        .await
        .expect("accepted");
    env.ctl.wait_executions_done(Duration::from_secs(30)).await;
    ca_refresh(c, &env.app).await;
    let after = instances(c, WORKERS).await;
    let vms = env.ctl.worker_vms().await;
    let t = target(c, WORKERS).await;
    let victim_state = after.iter().find(|i| i.id == victim).map(state_of);
    // The provider's verification poll notices the failure.
    let metrics = wait_metrics(&env, |m| {
        m.lines().any(|l| {
            l.contains("scale_executions_total") && l.contains("down") && l.contains("failed")
        })
    })
    .await;
    let failed_metric = metrics
        .lines()
        .find(|l| {
            l.contains("scale_executions_total") && l.contains("down") && l.contains("failed")
        })
        .unwrap_or("")
        .to_owned();
    figure(
        "failed-executions",
        &format!(
            "quota: {} instances creating+errorInfo class {} code {:?}, target {t_failed} -> \
             {t_after} after CA deletes the fakes (planned {}); other error class 99; scale-in \
             failure: victim still reported (state {victim_state:?}), target {t} == Cloudify VMs \
             {}; metric `{failed_metric}`",
            errored.len(),
            info.instance_error_class,
            info.error_code,
            props["planned_instances"],
            vms.len()
        ),
    );
    assert!(
        victim_state.is_some(),
        "failed scale-in forgot the instance"
    );
    assert_eq!(t as usize, vms.len());
    assert!(!failed_metric.is_empty(), "scale-in failure not counted");
}

/// Every malformed CA request gets the right status, nothing reaches Cloudify, nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_ca_gets_the_right_status_and_sends_nothing() {
    let mut s = scenario(Timing::instant());
    for d in &mut s.deployments {
        for g in &mut d.scaling_groups {
            if g.name == "gpu-workers" {
                g.current = 1;
                g.default = Some(1);
            }
        }
    }
    let mut env = start_env(s).await;
    let c = &mut env.client;
    let worker = instances(c, WORKERS).await[0].id.clone();
    let gpu_node = instances(c, GPU).await[0].id.clone();
    let requests_before = env.ctl.total().await;
    let mb = "x".repeat(1 << 20);
    let big_labels: std::collections::HashMap<String, String> =
        [("huge".to_owned(), mb.clone())].into_iter().collect();
    let unknown_nodes: Vec<proto::ExternalGrpcNode> = (0..10_000)
        .map(|i| {
            node(
                &format!("cloudify://default_tenant/k8s-pool-a/nope_{i}"),
                "",
            )
        })
        .collect();

    let mut results: Vec<(&str, Code, Code)> = Vec::new();
    macro_rules! case {
        ($name:expr, $want:expr, $call:expr) => {{
            let got = match $call.await {
                Ok(_) => Code::Ok,
                Err(s) => s.code(),
            };
            results.push(($name, $want, got));
        }};
    }
    for id in [
        "nope/none",
        "",
        "k8s-pool-a",
        "k8s-pool-a/workers/",
        "\u{0}\u{ffff}",
    ] {
        case!(
            "TargetSize unknown",
            Code::NotFound,
            c.node_group_target_size(req(proto::NodeGroupTargetSizeRequest { id: id.into() }))
        );
        case!(
            "Nodes unknown",
            Code::NotFound,
            c.node_group_nodes(req(proto::NodeGroupNodesRequest { id: id.into() }))
        );
        case!(
            "IncreaseSize unknown",
            Code::NotFound,
            c.node_group_increase_size(req(proto::NodeGroupIncreaseSizeRequest {
                id: id.into(),
                delta: 1
            }))
        );
        case!(
            "DeleteNodes unknown group",
            Code::NotFound,
            c.node_group_delete_nodes(req(proto::NodeGroupDeleteNodesRequest {
                id: id.into(),
                nodes: vec![node(&worker, "")]
            }))
        );
        case!(
            "DecreaseTargetSize unknown",
            Code::NotFound,
            c.node_group_decrease_target_size(req(proto::NodeGroupDecreaseTargetSizeRequest {
                id: id.into(),
                delta: -1
            }))
        );
        case!(
            "TemplateNodeInfo unknown",
            Code::NotFound,
            c.node_group_template_node_info(req(proto::NodeGroupTemplateNodeInfoRequest {
                id: id.into()
            }))
        );
        case!(
            "GetOptions unknown",
            Code::NotFound,
            c.node_group_get_options(req(proto::NodeGroupAutoscalingOptionsRequest {
                id: id.into(),
                defaults: None
            }))
        );
    }
    for (delta, want) in [
        (0, Code::InvalidArgument),
        (-1, Code::InvalidArgument),
        (i32::MIN, Code::InvalidArgument),
        (9, Code::ResourceExhausted),
        (i32::MAX, Code::ResourceExhausted),
    ] {
        case!("IncreaseSize delta", want, increase(c, WORKERS, delta));
    }
    for (delta, want) in [
        (0, Code::InvalidArgument),
        (3, Code::InvalidArgument),
        (i32::MAX, Code::InvalidArgument),
        (-1, Code::FailedPrecondition),
        (i32::MIN, Code::FailedPrecondition),
    ] {
        case!(
            "DecreaseTargetSize delta",
            want,
            c.node_group_decrease_target_size(req(proto::NodeGroupDecreaseTargetSizeRequest {
                id: WORKERS.into(),
                delta
            }))
        );
    }
    case!(
        "DeleteNodes empty",
        Code::InvalidArgument,
        delete(c, WORKERS, vec![])
    );
    case!(
        "DeleteNodes 10k unknown",
        Code::InvalidArgument,
        delete(c, WORKERS, unknown_nodes)
    );
    case!(
        "DeleteNodes node of another group",
        Code::InvalidArgument,
        delete(c, WORKERS, vec![node(&gpu_node, "")])
    );
    case!(
        "DeleteNodes one good + one foreign",
        Code::InvalidArgument,
        delete(c, WORKERS, vec![node(&worker, ""), node(&gpu_node, "")])
    );
    case!(
        "DeleteNodes control plane",
        Code::InvalidArgument,
        delete(c, WORKERS, vec![node("", "k8s-control-plane")])
    );
    case!(
        "DeleteNodes empty ids",
        Code::InvalidArgument,
        delete(c, WORKERS, vec![node("", "")])
    );
    let both: Vec<proto::ExternalGrpcNode> = instances(c, WORKERS)
        .await
        .iter()
        .map(|i| node(&i.id, ""))
        .collect();
    case!(
        "DeleteNodes below min",
        Code::FailedPrecondition,
        delete(c, WORKERS, both)
    );
    let mut labelled = node("cloudify://default_tenant/k8s-pool-a/nope", "");
    labelled.labels = big_labels.clone();
    case!(
        "DeleteNodes 1 MiB labels unknown node",
        Code::InvalidArgument,
        delete(c, WORKERS, vec![labelled])
    );
    let mut labelled = node(&worker, "");
    labelled.labels = big_labels.clone();
    labelled.annotations = big_labels.clone();
    case!(
        "NodeGroupForNode 2 MiB labels",
        Code::Ok,
        c.node_group_for_node(req(proto::NodeGroupForNodeRequest {
            node: Some(labelled)
        }))
    );
    let mut huge = node(&worker, "");
    huge.labels = (0..5)
        .map(|i| (format!("k{i}"), mb.clone()))
        .collect::<std::collections::HashMap<_, _>>();
    case!(
        "NodeGroupForNode 5 MiB message (over the 4 MiB limit)",
        Code::OutOfRange,
        c.node_group_for_node(req(proto::NodeGroupForNodeRequest { node: Some(huge) }))
    );
    let requests_after = env.ctl.total().await;

    // Duplicates last: it is the one case that legitimately scales in (one instance, once).
    case!(
        "DeleteNodes same node 3x",
        Code::Ok,
        delete(
            c,
            WORKERS,
            vec![node(&worker, ""), node(&worker, ""), node(&worker, "")]
        )
    );
    env.ctl.wait_executions_done(Duration::from_secs(30)).await;
    let execs = env.ctl.scale_executions().await;
    let alive = c
        .node_groups(req(proto::NodeGroupsRequest {}))
        .await
        .is_ok();

    let wrong: Vec<_> = results.iter().filter(|(_, w, g)| w != g).collect();
    let codes: BTreeMap<String, usize> = results.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(format!("{:?}", r.2)).or_default() += 1;
        m
    });
    figure(
        "bad-input-ca",
        &format!(
            "{} malformed requests: {codes:?}; wrong codes {wrong:?}; Cloudify requests \
             during the malformed ones: {}; duplicate node x3 -> {} execution(s) with delta {}; \
             worker panics {}; server alive {alive}",
            results.len(),
            requests_after - requests_before,
            execs.len(),
            execs
                .first()
                .map(|e| e["parameters"]["delta"].clone())
                .unwrap_or_default(),
            worker_panics()
        ),
    );
    assert!(wrong.is_empty(), "wrong status codes: {wrong:#?}");
    assert_eq!(
        requests_after, requests_before,
        "malformed input reached Cloudify"
    );
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0]["parameters"]["delta"], json!(-1));
    assert!(alive);
    assert_eq!(worker_panics(), 0);
}

/// Property-based fuzz of the gRPC requests: arbitrary ids, deltas and node lists (mixed with
/// real ones) over a real socket. Invariants: only the documented status codes, target always
/// within [min, max], no panic.
#[test]
fn fuzz_grpc_requests() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(start_env(with_workers(
        scenario(Timing::instant()),
        1,
        10,
        3,
    )));
    let real: Vec<String> = rt.block_on(async {
        let mut c = env.client.clone();
        instances(&mut c, WORKERS)
            .await
            .into_iter()
            .map(|i| i.id)
            .collect()
    });
    let cases = if soak() { 5000 } else { 1000 };
    let ids = prop_oneof![
        3 => any::<String>(),
        1 => Just(WORKERS.to_owned()),
        1 => Just(GPU.to_owned()),
        1 => "[a-z0-9/:_-]{0,40}",
    ];
    let real_ids = real.clone();
    let provider_ids = prop_oneof![
        3 => any::<String>(),
        1 => proptest::sample::select(real_ids),
        1 => "cloudify://[a-z_]{0,20}/[a-z0-9-]{0,20}/[a-z0-9_]{0,20}",
    ];
    let nodes = proptest::collection::vec((provider_ids, any::<String>()), 0..20);
    let strategy = (0u8..8, ids, any::<i32>(), nodes, any::<Vec<u8>>());
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let codes = std::sync::Mutex::new(BTreeMap::<String, u64>::new());
    let allowed = [
        Code::Ok,
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::ResourceExhausted,
        Code::Unimplemented,
    ];
    let started = Instant::now();
    let result = runner.run(&strategy, |(op, id, delta, nodes, raw)| {
        // Raw bytes through prost: the server's first step for every request.
        let _ = proto::NodeGroupDeleteNodesRequest::decode(raw.as_slice());
        let _ = proto::NodeGroupForNodeRequest::decode(raw.as_slice());
        let _ = proto::NodeGroupAutoscalingOptionsRequest::decode(raw.as_slice());
        let _ = proto::PricingPodPriceRequest::decode(raw.as_slice());
        let code = rt.block_on(async {
            let mut c = env.client.clone();
            let nodes: Vec<proto::ExternalGrpcNode> =
                nodes.iter().map(|(p, n)| node(p, n)).collect();
            let r = match op {
                0 => c
                    .node_group_target_size(req(proto::NodeGroupTargetSizeRequest { id }))
                    .await
                    .map(|_| ()),
                1 => c
                    .node_group_nodes(req(proto::NodeGroupNodesRequest { id }))
                    .await
                    .map(|_| ()),
                2 => increase(&mut c, &id, delta).await,
                3 => c
                    .node_group_decrease_target_size(req(
                        proto::NodeGroupDecreaseTargetSizeRequest { id, delta },
                    ))
                    .await
                    .map(|_| ()),
                4 => delete(&mut c, &id, nodes).await,
                5 => c
                    .node_group_for_node(req(proto::NodeGroupForNodeRequest {
                        node: nodes.into_iter().next(),
                    }))
                    .await
                    .map(|_| ()),
                6 => c
                    .node_group_template_node_info(req(proto::NodeGroupTemplateNodeInfoRequest {
                        id,
                    }))
                    .await
                    .map(|_| ()),
                _ => c
                    .node_group_get_options(req(proto::NodeGroupAutoscalingOptionsRequest {
                        id,
                        defaults: None,
                    }))
                    .await
                    .map(|_| ()),
            };
            let code = r.map_or_else(|s| s.code(), |_| Code::Ok);
            let t = target(&mut c, WORKERS).await;
            (code, t)
        });
        *codes
            .lock()
            .expect("lock")
            .entry(format!("{:?}", code.0))
            .or_default() += 1;
        prop_assert!(allowed.contains(&code.0), "unexpected status {:?}", code.0);
        prop_assert!(
            (1..=10).contains(&code.1),
            "target {} out of [1, 10]",
            code.1
        );
        Ok(())
    });
    let execs = rt.block_on(async {
        env.ctl.wait_executions_done(Duration::from_secs(30)).await;
        env.ctl.scale_executions().await.len()
    });
    let codes = codes.into_inner().expect("codes");
    figure(
        "fuzz/grpc",
        &format!(
            "{cases} proptest cases in {:.1} s: status codes {codes:?}; Cloudify executions \
             started by valid inputs {execs}; worker panics {}",
            started.elapsed().as_secs_f64(),
            worker_panics()
        ),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(worker_panics(), 0);
    rt.block_on(async move {
        env.app.shutdown().await;
        env.sim.shutdown().await;
    });
}
