//! Reliability suite, part 1 (issue #7): the real binary (`autoscaler-cloudify serve`, spawned as
//! a child process with its output captured) against the simulator, under manager outages,
//! restarts mid-scale and authentication failures. Figures go to `target/reliability/figures.txt`
//! and `docs/reliability.md`. `RELIABILITY_SOAK=1` runs the long variants (60 s outage phases,
//! 5 min of wrong-password back-off).

use std::time::{Duration, Instant};

use autoscaler_cloudify::proto;
use cloudify_sim::Timing;
use serde_json::json;
use testkit::reliability::*;
use tonic::Code;

/// Reads every 2 s while the manager misbehaves; checks every answer against CA's deadline.
async fn play_ca(
    c: &mut proto::cloud_provider_client::CloudProviderClient<tonic::transport::Channel>,
    known: &mut Vec<String>,
    for_how_long: Duration,
    reads: &mut Latencies,
    refreshes: &mut Latencies,
) {
    let end = Instant::now() + for_how_long;
    while Instant::now() < end {
        let loop_start = Instant::now();
        let seen = ca_loop(c, known, reads, refreshes).await;
        if !seen.is_empty() {
            *known = seen;
        }
        let pause = Duration::from_secs(2).saturating_sub(loop_start.elapsed());
        tokio::time::sleep(pause).await;
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Manager outage: `down` (503 maintenance mode), then 30 % 500s, then 2 s latency on every call,
/// while a client plays CA's loop every 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_outage_reads_from_snapshot_and_mutations_fail_fast() {
    let phase = if soak() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(15)
    };
    let sub_phase = if soak() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    };
    let dir = workdir("outage");
    // Scale-outs take ~2 s, so one started before the outage completes during it.
    let sim = start_sim(scenario(Timing {
        execution_start_ms: 0,
        step_ms: 300,
    }))
    .await;
    let ctl = SimCtl::new(&sim.url());
    let cfg = write(
        dir.path(),
        "provider.yaml",
        &provider_yaml(&sim.url(), "2s", "1s", ""),
    );
    let mut p = Proc::serve(
        dir.path(),
        "outage",
        &cfg,
        &[],
        &[("CLOUDIFY_PASSWORD", PASSWORD)],
    );
    let ready_after = p.wait_ready(Duration::from_secs(30)).await;
    let mut c = p.client().await;
    let mut known = Vec::new();
    let (mut warm_reads, mut warm_refreshes) = (Latencies::default(), Latencies::default());
    play_ca(
        &mut c,
        &mut known,
        Duration::from_secs(4),
        &mut warm_reads,
        &mut warm_refreshes,
    )
    .await;
    let before = p.proc_stats();
    assert_eq!(target(&mut c, WORKERS).await, 2);

    // A scale-out accepted right before the manager goes down.
    increase(&mut c, WORKERS, 2).await.expect("increase");
    assert_eq!(target(&mut c, WORKERS).await, 4);
    let executions_before = ctl.scale_executions().await.len();
    assert_eq!(executions_before, 1);

    // ---- phase 1: down ----
    ctl.faults(json!({"down": true})).await;
    let down_at = Instant::now();
    let (mut reads, mut refreshes) = (Latencies::default(), Latencies::default());
    let mut mutations = Latencies::default();
    let mut first = true;
    while down_at.elapsed() < phase {
        play_ca(
            &mut c,
            &mut known,
            Duration::from_secs(2),
            &mut reads,
            &mut refreshes,
        )
        .await;
        if first {
            first = false;
            // Mutations: refused quickly with UNAVAILABLE, nothing changes.
            let t = Instant::now();
            let r = increase(&mut c, WORKERS, 1).await;
            mutations.add(t.elapsed(), r.as_ref().map_err(|s| s.code()));
            assert_eq!(r.expect_err("increase must fail").code(), Code::Unavailable);
            let victim = known.first().cloned().expect("a known node");
            let t = Instant::now();
            let r = delete(&mut c, WORKERS, vec![node(&victim, "")]).await;
            mutations.add(t.elapsed(), r.as_ref().map_err(|s| s.code()));
            assert_eq!(r.expect_err("delete must fail").code(), Code::Unavailable);
            let t = Instant::now();
            let r = c
                .node_group_decrease_target_size(req(proto::NodeGroupDecreaseTargetSizeRequest {
                    id: WORKERS.into(),
                    delta: -1,
                }))
                .await;
            mutations.add(t.elapsed(), r.as_ref().map(|_| ()).map_err(|s| s.code()));
            let code = r.expect_err("decrease must fail").code();
            assert!(
                matches!(code, Code::Unavailable | Code::FailedPrecondition),
                "decrease during outage: {code:?}"
            );
            assert_eq!(target(&mut c, WORKERS).await, 4, "target changed");
        }
    }
    let (code, ready) = p.readyz().await.expect("readyz");
    let age = ready["detail"]["snapshot_age_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    let metrics = p.metrics().await;
    let metric_age = metric(&metrics, "autoscaler_cloudify_snapshot_age_seconds").unwrap_or(0.0);
    figure(
        "outage/down",
        &format!(
            "{}s down: reads {} | refresh {} | mutations {} | readyz {code} age {age:.1}s \
             metrics age {metric_age:.1}s error={}",
            phase.as_secs(),
            reads.summary(),
            refreshes.summary(),
            mutations.summary(),
            ready["detail"]["last_refresh_error"]
        ),
    );
    assert!(reads.errors.is_empty(), "reads failed: {:?}", reads.errors);
    assert!(
        refreshes.errors.is_empty(),
        "Refresh failed: {:?}",
        refreshes.errors
    );
    assert!(reads.max() < CA_DEADLINE && refreshes.max() < CA_DEADLINE);
    assert!(
        mutations.max() < Duration::from_secs(2),
        "mutations not fast"
    );
    assert!(
        age >= phase.as_secs_f64() - 4.0,
        "readyz snapshot age {age} after {phase:?} down"
    );
    assert!(
        metric_age >= phase.as_secs_f64() - 4.0,
        "metric age {metric_age}"
    );
    assert_eq!(ready["detail"]["cloudify_reachable"], json!(false));
    assert!(!ready["detail"]["last_refresh_error"].is_null());

    // ---- recovery ----
    ctl.clear_faults().await;
    let recovered_at = Instant::now();
    let caught_up = loop {
        let _ = refresh(&mut c).await;
        let inst = instances(&mut c, WORKERS).await;
        let running = inst.iter().filter(|i| state_of(i) == 1).count();
        let (_, r) = p.readyz().await.expect("readyz");
        let age = r["detail"]["snapshot_age_seconds"].as_f64().unwrap_or(99.0);
        if running == 4 && age < 3.0 && r["detail"]["last_refresh_error"].is_null() {
            break recovered_at.elapsed();
        }
        assert!(
            recovered_at.elapsed() < Duration::from_secs(20),
            "no catch-up after recovery: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(target(&mut c, WORKERS).await, 4);
    assert_eq!(
        ctl.scale_executions().await.len(),
        executions_before,
        "an execution was sent during the outage"
    );
    figure(
        "outage/recovery",
        &format!(
            "caught up {:.0} ms after the manager came back (4 running, age < 3 s)",
            ms(caught_up)
        ),
    );

    // ---- phase 2: 30 % 500s ----
    ctl.faults(json!({"error_rate": 0.3})).await;
    let (mut reads, mut refreshes) = (Latencies::default(), Latencies::default());
    let mut mutations = Latencies::default();
    let mut accepted = 0;
    let start = Instant::now();
    while start.elapsed() < sub_phase {
        play_ca(
            &mut c,
            &mut known,
            Duration::from_secs(2),
            &mut reads,
            &mut refreshes,
        )
        .await;
        if accepted < 3 && mutations.samples.len() < 6 {
            let t = Instant::now();
            let r = increase(&mut c, WORKERS, 1).await;
            mutations.add(t.elapsed(), r.as_ref().map_err(|s| s.code()));
            match r {
                Ok(()) => accepted += 1,
                Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
            }
        }
    }
    ctl.clear_faults().await;
    let execs = ctl.scale_executions().await.len();
    figure(
        "outage/errors30",
        &format!(
            "{}s of 30% 500s: reads {} | refresh {} | IncreaseSize {} accepted={accepted} \
             executions_created={}",
            sub_phase.as_secs(),
            reads.summary(),
            refreshes.summary(),
            mutations.summary(),
            execs - executions_before
        ),
    );
    assert!(reads.errors.is_empty() && refreshes.errors.is_empty());
    assert!(reads.max() < CA_DEADLINE && refreshes.max() < CA_DEADLINE);
    assert_eq!(
        execs - executions_before,
        accepted,
        "executions in Cloudify must equal accepted IncreaseSize calls"
    );
    let _ = refresh(&mut c).await;
    assert_eq!(target(&mut c, WORKERS).await, 4 + accepted as i32);

    // ---- phase 3: 2 s latency on every call ----
    let executions_before = execs;
    ctl.faults(json!({"latency_ms": 2000})).await;
    let (mut reads, mut refreshes) = (Latencies::default(), Latencies::default());
    let mut mutations = Latencies::default();
    let start = Instant::now();
    while start.elapsed() < sub_phase {
        play_ca(
            &mut c,
            &mut known,
            Duration::from_secs(2),
            &mut reads,
            &mut refreshes,
        )
        .await;
        if mutations.samples.is_empty() {
            let t = Instant::now();
            let r = increase(&mut c, WORKERS, 1).await;
            mutations.add(t.elapsed(), r.as_ref().map_err(|s| s.code()));
        }
    }
    let (_, ready) = p.readyz().await.expect("readyz");
    ctl.clear_faults().await;
    let accepted_slow = usize::from(mutations.errors.is_empty());
    figure(
        "outage/latency2s",
        &format!(
            "{}s of 2 s latency: reads {} | refresh {} | IncreaseSize {} | readyz age {:.1}s",
            sub_phase.as_secs(),
            reads.summary(),
            refreshes.summary(),
            mutations.summary(),
            ready["detail"]["snapshot_age_seconds"]
                .as_f64()
                .unwrap_or(-1.0)
        ),
    );
    assert!(reads.errors.is_empty() && refreshes.errors.is_empty());
    assert!(
        reads.pct(0.99) < Duration::from_millis(500),
        "reads waited on Cloudify"
    );
    assert!(refreshes.max() < CA_DEADLINE, "Refresh blew CA's deadline");
    assert!(mutations.max() < CA_DEADLINE);
    assert_eq!(
        ctl.scale_executions().await.len() - executions_before,
        accepted_slow
    );

    // ---- resources after all three phases ----
    ctl.wait_executions_done(Duration::from_secs(30)).await;
    play_ca(
        &mut c,
        &mut known,
        Duration::from_secs(4),
        &mut warm_reads,
        &mut warm_refreshes,
    )
    .await;
    let after = p.proc_stats();
    let expected = 4 + accepted + accepted_slow;
    assert_eq!(target(&mut c, WORKERS).await as usize, expected);
    assert_eq!(ctl.worker_vms().await.len(), expected);
    figure(
        "outage/resources",
        &format!(
            "ready after {:.0} ms; before: rss={} KiB threads={} fds={}; after: rss={} KiB \
             threads={} fds={}",
            ms(ready_after),
            before.rss_kib,
            before.threads,
            before.fds,
            after.rss_kib,
            after.threads,
            after.fds
        ),
    );
    assert!(
        after.threads <= before.threads + 4,
        "threads grew {before:?} -> {after:?}"
    );
    assert!(
        after.fds <= before.fds + 16,
        "fds grew {before:?} -> {after:?}"
    );
    assert!(
        after.rss_kib <= before.rss_kib * 2 + 32 * 1024,
        "memory grew {before:?} -> {after:?}"
    );
    let log = p.log();
    p.kill();
    assert_no_secrets("outage provider log", &log, &[PASSWORD]);
    assert!(!log.contains("panicked"), "provider panicked: {log}");
}

/// Restart mid-scale: kill -9 while one scale-out runs and a scale-out and a scale-in wait in
/// Cloudify's queue; a new process must report the same target and send nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_scale_keeps_target_and_sends_nothing_twice() {
    let dir = workdir("restart");
    let sim = start_sim(scenario(Timing {
        execution_start_ms: 0,
        step_ms: 500,
    }))
    .await;
    let ctl = SimCtl::new(&sim.url());
    let cfg = write(
        dir.path(),
        "provider.yaml",
        &provider_yaml(&sim.url(), "2s", "0s", ""),
    );
    let env = [("CLOUDIFY_PASSWORD", PASSWORD)];
    let mut a = Proc::serve(dir.path(), "restart-a", &cfg, &[], &env);
    a.wait_ready(Duration::from_secs(30)).await;
    let mut c = a.client().await;
    let victim = instances(&mut c, WORKERS)
        .await
        .into_iter()
        .map(|i| i.id)
        .find(|id| id.starts_with("cloudify://"))
        .expect("a running worker");
    let victim_vm = victim.rsplit('/').next().expect("vm id").to_owned();

    increase(&mut c, WORKERS, 2).await.expect("first scale-out");
    increase(&mut c, WORKERS, 1)
        .await
        .expect("second scale-out");
    delete(&mut c, WORKERS, vec![node(&victim, "")])
        .await
        .expect("scale-in");
    let before = target(&mut c, WORKERS).await;
    assert_eq!(before, 4);
    let statuses: Vec<String> = ctl
        .scale_executions()
        .await
        .iter()
        .map(|e| e["status"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(statuses.len(), 3);
    a.kill();
    let killed = Instant::now();

    let mut b = Proc::serve(dir.path(), "restart-b", &cfg, &[], &env);
    let ready_after = b.wait_ready(Duration::from_secs(30)).await;
    let mut c = b.client().await;
    let after = target(&mut c, WORKERS).await;
    let victim_state = instances(&mut c, WORKERS)
        .await
        .iter()
        .find(|i| i.id == victim)
        .map(state_of);
    // CA retries a DeleteNodes it did not see answered: it must not queue a second scale-in.
    let retry = delete(&mut c, WORKERS, vec![node(&victim, "")]).await;
    ctl.wait_executions_done(Duration::from_secs(60)).await;
    refresh(&mut c).await.expect("refresh");
    let execs = ctl.scale_executions().await;
    let vms = ctl.worker_vms().await;
    let final_target = target(&mut c, WORKERS).await;
    figure(
        "restart",
        &format!(
            "executions at kill {statuses:?}; restart ready {:.0} ms after kill; target before \
             {before} after {after}; victim state after restart {victim_state:?} (3=deleting); \
             retried DeleteNodes {:?}; executions total {}; final VMs {} target {final_target}",
            ms(killed.elapsed().min(ready_after + Duration::from_secs(1))),
            retry.as_ref().map_err(|s| s.code()),
            execs.len(),
            vms.len()
        ),
    );
    assert!(
        statuses.iter().any(|s| s == "started")
            && statuses
                .iter()
                .any(|s| matches!(s.as_str(), "queued" | "pending")),
        "kill did not happen mid-scale: {statuses:?}"
    );
    assert_eq!(after, before, "target changed across the restart");
    assert!(retry.is_ok(), "retried delete: {retry:?}");
    assert_eq!(execs.len(), 3, "an execution was sent twice: {execs:?}");
    assert!(
        execs.iter().all(|e| e["status"] == "terminated"),
        "{execs:?}"
    );
    assert!(!vms.contains(&victim_vm), "accepted delete did not happen");
    assert_eq!(vms.len(), 4);
    assert_eq!(final_target, 4);
    for p in [&a, &b] {
        assert_no_secrets("restart provider log", &p.log(), &[PASSWORD]);
    }
}

/// A wrong password: at most a few login attempts, a clear not-ready reason, the account is not
/// locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_backs_off_and_reports() {
    let window = if soak() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(20)
    };
    let dir = workdir("auth");
    let sim = start_sim(scenario(Timing::instant())).await;
    let ctl = SimCtl::new(&sim.url());
    let cfg = write(
        dir.path(),
        "provider.yaml",
        &provider_yaml(&sim.url(), "1s", "0s", ""),
    );
    let wrong = "Wrong-Pw-91ab2c-not-it";
    let mut p = Proc::serve(
        dir.path(),
        "auth",
        &cfg,
        &[],
        &[("CLOUDIFY_PASSWORD", wrong)],
    );
    p.wait_http(Duration::from_secs(30)).await;
    let mut c = p.client().await;
    let start = Instant::now();
    let mut refresh_codes = std::collections::BTreeMap::<String, u64>::new();
    let mut refresh_lat = Latencies::default();
    let mut last_ready = json!(null);
    while start.elapsed() < window {
        let t = Instant::now();
        let r = refresh(&mut c).await;
        refresh_lat.add(t.elapsed(), r.as_ref().map_err(|s| s.code()));
        let key = match &r {
            Ok(()) => "OK".to_owned(),
            Err(s) => format!("{:?}", s.code()),
        };
        *refresh_codes.entry(key).or_default() += 1;
        if let Some((code, body)) = p.readyz().await {
            assert_eq!(code, 503, "ready with a wrong password: {body}");
            last_ready = body;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let attempts = ctl.total().await;
    // The right password still works: the provider did not lock the account.
    let ok = ctl.get("/deployments?_size=1").await;
    let reason = last_ready["detail"]["auth_errors"].to_string()
        + &last_ready["detail"]["last_refresh_error"].to_string();
    figure(
        "auth/wrong-password",
        &format!(
            "{}s: {attempts} login attempts ({:.1}/min); Refresh {refresh_codes:?} {}; \
             readyz reason {reason}",
            window.as_secs(),
            attempts as f64 * 60.0 / window.as_secs_f64(),
            refresh_lat.summary()
        ),
    );
    assert!(ok["items"].is_array(), "account locked");
    // Back-off 1 min, doubling: t=0, 60, 180 s -> 3 attempts in 5 minutes.
    let allowed = 1 + window.as_secs() / 60;
    assert!(
        attempts <= allowed.min(4),
        "{attempts} login attempts in {window:?}"
    );
    assert!(
        reason.contains("401") || reason.contains("credentials"),
        "{reason}"
    );
    assert!(refresh_lat.max() < CA_DEADLINE);
    let log = p.log();
    p.kill();
    assert_no_secrets("auth provider log", &log, &[wrong, PASSWORD]);
    assert_no_secrets("auth readyz", &last_ready.to_string(), &[wrong]);
}

/// A token that expires: reported on /readyz, not retried in a loop, reads keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_reported_not_retried() {
    let dir = workdir("token");
    let sim = start_sim(scenario(Timing::instant())).await;
    let ctl = SimCtl::new(&sim.url());
    let token: serde_json::Value = ctl
        .http
        .post(format!("{}/api/v3.1/tokens", sim.url()))
        .basic_auth("admin", Some(PASSWORD))
        .json(&json!({"description": "reliability", "expiration_date": "+8s"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let value = token["value"].as_str().expect("token value").to_owned();
    let cfg = write(
        dir.path(),
        "provider.yaml",
        &provider_yaml(&sim.url(), "1s", "0s", ", token_env: CLOUDIFY_TOKEN"),
    );
    let mut p = Proc::serve(
        dir.path(),
        "token",
        &cfg,
        &[],
        &[("CLOUDIFY_TOKEN", value.as_str())],
    );
    p.wait_ready(Duration::from_secs(30)).await;
    let mut c = p.client().await;
    assert_eq!(target(&mut c, WORKERS).await, 2);
    // Wait for the expiry and the first 401.
    let end = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let _ = refresh(&mut c).await;
        if let Some((503, body)) = p.readyz().await {
            break body;
        }
        assert!(Instant::now() < end, "expiry never reported");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let at_expiry = ctl.total().await;
    let window = Duration::from_secs(15);
    let start = Instant::now();
    let mut reads = Latencies::default();
    while start.elapsed() < window {
        let r = refresh(&mut c).await;
        let t = Instant::now();
        let tr = c
            .node_group_target_size(req(proto::NodeGroupTargetSizeRequest {
                id: WORKERS.into(),
            }))
            .await;
        reads.add(t.elapsed(), tr.as_ref().map(|_| ()).map_err(|s| s.code()));
        assert!(
            r.is_ok(),
            "Refresh must keep answering from the snapshot: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let retries = ctl.total().await - at_expiry;
    figure(
        "auth/token-expiry",
        &format!(
            "readyz after expiry: {}; Cloudify calls in the {}s after: {retries}; reads {}",
            reason["detail"]["auth_errors"],
            window.as_secs(),
            reads.summary()
        ),
    );
    assert!(
        reason.to_string().contains("expired"),
        "reason does not say expired: {reason}"
    );
    assert!(
        retries <= 1,
        "{retries} calls with an expired token in {window:?}"
    );
    assert!(reads.errors.is_empty());
    let log = p.log();
    p.kill();
    let secret = value.rsplit('-').next().unwrap_or_default().to_owned();
    assert_no_secrets("token provider log", &log, &[&value, &secret]);
    assert_no_secrets("token readyz", &reason.to_string(), &[&value, &secret]);
}
