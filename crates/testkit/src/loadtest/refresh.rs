//! The Refresh phase of the load test (issue #13): CA calls `Refresh` at the start of every loop
//! under its `grpc_timeout`, so it must answer at once whatever the manager does, while freshness
//! comes from the background refresher. This phase starts a provider with a production-like
//! refresh block (`interval`, `max_age` = interval / 2) and plays CA's loop (Refresh, then the
//! snapshot age from `/readyz`, then NodeGroups and one TargetSize per group) every
//! `--refresh-ca-period` while the simulated manager is healthy, down, slow and failing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::SimulatorHandle;
use serde::Serialize;

use super::{Args, BoxError, Latency, connect, start_server, summarize};

/// What the phase measured under one manager condition.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    /// `healthy`, `down`, `latency 2 s`, `30 % errors`.
    pub condition: String,
    /// The simulator faults of the condition.
    pub faults: serde_json::Value,
    /// The provider's `refresh.interval`, ms.
    pub refresh_interval_ms: u64,
    /// Refresh RPC latency (CA's 5 s deadline).
    pub refresh: Latency,
    /// Refresh RPCs that failed.
    pub refresh_errors: usize,
    /// Snapshot age CA sees right after each Refresh (from `/readyz`), in µs like the latencies.
    pub snapshot_age: Latency,
}

/// The conditions, in order; each is cleared before the next.
fn conditions() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("healthy", serde_json::json!({})),
        ("down", serde_json::json!({"down": true})),
        ("latency 2 s", serde_json::json!({"latency_ms": 2000})),
        ("30 % errors", serde_json::json!({"error_rate": 0.3})),
    ]
}

/// `/readyz`'s `snapshot_age_seconds`, if the provider answers.
async fn snapshot_age(http: &reqwest::Client, server: SocketAddr) -> Option<Duration> {
    let v: serde_json::Value = http
        .get(format!("http://{server}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["detail"]["snapshot_age_seconds"]
        .as_f64()
        .map(Duration::from_secs_f64)
}

/// Waits until the provider serves a snapshot fetched after `since` (its age is below the time
/// since then): the refresh a Refresh RPC asked for has landed.
pub async fn wait_rebuilt(
    http: &reqwest::Client,
    server: SocketAddr,
    since: Instant,
) -> Result<(), BoxError> {
    loop {
        if snapshot_age(http, server)
            .await
            .is_some_and(|age| age < since.elapsed())
        {
            return Ok(());
        }
        if since.elapsed() > Duration::from_secs(120) {
            return Err("the refresh asked for by Refresh did not land within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn faults(
    http: &reqwest::Client,
    sim: &str,
    body: &serde_json::Value,
) -> Result<(), BoxError> {
    let r = if body.as_object().is_some_and(|o| o.is_empty()) {
        http.delete(format!("{sim}/_sim/faults")).send().await?
    } else {
        http.post(format!("{sim}/_sim/faults"))
            .json(body)
            .send()
            .await?
    };
    if !r.status().is_success() {
        return Err(format!("simulator faults: {}", r.status()).into());
    }
    Ok(())
}

/// Runs every condition against a fresh provider on the same simulator.
pub async fn run(
    args: &Args,
    bin: &PathBuf,
    sim: &SimulatorHandle,
    groups: &[String],
) -> Result<Vec<ConditionReport>, BoxError> {
    let interval = args.refresh_interval;
    let refresh = format!(
        "{{interval: {}ms, max_age: {}ms}}",
        interval.as_millis(),
        (interval / 2).as_millis()
    );
    let server = start_server(bin, sim, &refresh)?;
    let channel = connect(server.addr, Duration::from_secs(30)).await?;
    let mut client = CloudProviderClient::new(channel);
    let http = reqwest::Client::new();
    let sim_url = sim.url();
    // Ready: the first snapshot is in.
    let t = Instant::now();
    while snapshot_age(&http, server.http).await.is_none()
        || client.refresh(proto::RefreshRequest {}).await.is_err()
    {
        if t.elapsed() > Duration::from_secs(120) {
            return Err("provider of the Refresh phase not ready within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    for (name, body) in conditions() {
        eprintln!("   Refresh phase: {name}");
        faults(&http, &sim_url, &body).await?;
        let (mut lat, mut ages, mut errors) = (Vec::new(), Vec::new(), 0);
        for _ in 0..args.refresh_loops {
            let start = Instant::now();
            let mut req = tonic::Request::new(proto::RefreshRequest {});
            req.set_timeout(Duration::from_secs(5));
            if client.refresh(req).await.is_err() {
                errors += 1;
            }
            lat.push(start.elapsed().as_secs_f64() * 1e6);
            if let Some(age) = snapshot_age(&http, server.http).await {
                ages.push(age.as_secs_f64() * 1e6);
            }
            // The rest of CA's reads, so the phase is a loop and not a Refresh benchmark.
            let _ = client.node_groups(proto::NodeGroupsRequest {}).await;
            for g in groups {
                let _ = client
                    .node_group_target_size(proto::NodeGroupTargetSizeRequest { id: g.clone() })
                    .await;
            }
            tokio::time::sleep(args.refresh_ca_period.saturating_sub(start.elapsed())).await;
        }
        faults(&http, &sim_url, &serde_json::json!({})).await?;
        // Let the snapshot catch up before the next condition starts.
        let t = Instant::now();
        while snapshot_age(&http, server.http)
            .await
            .is_none_or(|age| age > interval * 2)
        {
            if t.elapsed() > Duration::from_secs(120) {
                return Err(format!("no fresh snapshot 120 s after {name}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out.push(ConditionReport {
            condition: name.to_owned(),
            faults: body,
            refresh_interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            refresh: summarize(lat),
            refresh_errors: errors,
            snapshot_age: summarize(ages),
        });
    }
    Ok(out)
}

/// Prints the phase as a table.
pub fn print(reports: &[ConditionReport]) {
    let Some(first) = reports.first() else {
        return;
    };
    println!(
        "Refresh phase (refresh.interval {} ms, max_age {} ms):",
        first.refresh_interval_ms,
        first.refresh_interval_ms / 2
    );
    println!(
        "{:<14} {:>6} {:>12} {:>12} {:>12} {:>7} {:>14} {:>14}",
        "manager",
        "calls",
        "Refresh p50",
        "Refresh p99",
        "Refresh max",
        "errors",
        "snap age p50",
        "snap age p99"
    );
    for r in reports {
        println!(
            "{:<14} {:>6} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>7} {:>11.2} s {:>11.2} s",
            r.condition,
            r.refresh.calls,
            r.refresh.p50_us / 1000.0,
            r.refresh.p99_us / 1000.0,
            r.refresh.max_us / 1000.0,
            r.refresh_errors,
            r.snapshot_age.p50_us / 1e6,
            r.snapshot_age.p99_us / 1e6
        );
    }
}
