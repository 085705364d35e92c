//! Reliability suite: text from Cloudify in `/metrics` (issue 20 item 13, issue 24 item 5). A
//! group or deployment name is whatever the manager says it is; in a label value it must be
//! escaped as the text format requires, or one `"` breaks the scrape and a newline forges
//! samples. Checked by parsing the whole exposition strictly.

use std::time::Duration;

use autoscaler_cloudify::config::Overrides;
use autoscaler_cloudify::nodegroup::ServiceSettings;
use cloudify_sim::Timing;
use testkit::reliability::*;

/// One sample: metric name, labels in order, value.
type Sample = (String, Vec<(String, String)>, String);

/// Parses an OpenMetrics/Prometheus text exposition strictly: every line is a comment or one
/// sample, label values are quoted with only `\\`, `\"` and `\n` escapes. The error names the line.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        out.push(parse_sample(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let key = &rest[..eq];
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad label name {key:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
            if !rest.starts_with('}') && !rest.contains('=') {
                return Err("label list not closed".into());
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = value.split(' ').next().unwrap_or_default();
    if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
        return Err(format!("bad value {value:?}"));
    }
    Ok((name.to_owned(), labels, value.to_owned()))
}

/// `/metrics` of the provider at `addr`: the text, and its samples parsed strictly.
async fn scrape(addr: std::net::SocketAddr) -> (String, Vec<Sample>) {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("/metrics: {e}"));
    (text, samples)
}

/// The scale-ins counted so far, whatever their result (`scale_executions_total`, down).
async fn scale_ins_counted(addr: std::net::SocketAddr) -> u64 {
    let (_, samples) = scrape(addr).await;
    samples
        .iter()
        .filter(|(name, labels, _)| {
            name == "autoscaler_cloudify_scale_executions_total"
                && labels.iter().any(|(k, v)| k == "direction" && v == "down")
        })
        .filter_map(|(_, _, value)| value.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Issue 20 item 13: a scaling group named with a quote, a backslash and a newline followed by a
/// sample of our own. Before the fix the target-size line broke the scrape (and the newline
/// started a forged `autoscaler_cloudify_ready 0` line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_names_from_cloudify_are_escaped_in_metrics() {
    let hostile = "wo\"rk\\ers\nautoscaler_cloudify_ready 0\n# forged";
    let mut s = scenario(Timing::instant());
    for d in &mut s.deployments {
        for g in &mut d.scaling_groups {
            if g.name == "workers" {
                g.name = hostile.to_owned();
            }
        }
    }
    let sim = start_sim(s).await;
    let config = loopback_config(
        &provider_yaml(&sim.url(), "1h", "0s", ""),
        Overrides::default(),
    );
    let app = start_inprocess(&config, ServiceSettings::default()).await;
    let group = format!("k8s-pool-a/{hostile}");
    assert!(
        app.inventory
            .snapshot()
            .groups
            .iter()
            .any(|g| g.id == group),
        "the group is served under its name as Cloudify gives it"
    );
    let (_, samples) = scrape(app.http_addr).await;
    let target: Vec<&Sample> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "autoscaler_cloudify_target_size" && l == &[("group".to_owned(), group.clone())]
        })
        .collect();
    assert_eq!(target.len(), 1, "the group's target, under its exact name");
    let ready: Vec<&Sample> = samples
        .iter()
        .filter(|(n, _, _)| n == "autoscaler_cloudify_ready")
        .collect();
    assert_eq!(ready.len(), 1, "no forged sample: {ready:?}");
    assert_eq!(ready[0].2, "1");
    app.shutdown().await;
}

/// Issue 24 item 5: every label value of `/metrics` comes from a closed vocabulary (an RPC name, a
/// gRPC code, a route template, an HTTP status, a result word), except a group's id, which
/// Cloudify names. Checked after scale-outs, a scale-in, refused calls and failed refreshes,
/// with the manager answering an execution status no Cloudify has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_label_value_is_from_a_closed_vocabulary() {
    use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
    use testkit::reliability::hostile::{HostileManager, Rule};

    let sim = start_sim(with_workers(scenario(Timing::instant()), 1, 10, 3)).await;
    let hostile = HostileManager::start(&sim.url()).await;
    let config = loopback_config(
        &provider_yaml(&hostile.url(), "1h", "0s", ""),
        Overrides::default(),
    );
    let settings = ServiceSettings {
        verify_poll: Duration::from_millis(50),
        refresh_max_age: Duration::ZERO,
        ..ServiceSettings::default()
    };
    let app = start_inprocess(&config, settings).await;
    let mut ca = CloudProviderClient::connect(format!("http://{}", app.grpc.addr))
        .await
        .expect("connect");
    increase(&mut ca, WORKERS, 1).await.expect("scale-out");
    let _ = increase(&mut ca, WORKERS, 100).await;
    let _ = increase(&mut ca, "no/such-group", 1).await;
    SimCtl::new(&sim.url())
        .wait_executions_done(Duration::from_secs(20))
        .await;
    app.inventory.refresh().await.expect("refresh");
    let victim = instances(&mut ca, WORKERS).await[0].id.clone();
    delete(&mut ca, WORKERS, vec![node(&victim, "")])
        .await
        .expect("scale-in");
    // A status no Cloudify has, on every execution the provider reads from now on.
    let forged = hostile.add(
        Rule::get("/api/v3.1/executions/")
            .mutate_json(|v| v["status"] = serde_json::json!("exploded\"} 1\nforged 1")),
    );
    hostile.add(Rule::get("/api/v3.1/nodes").html(502));
    let _ = app.inventory.refresh().await;
    // Until the scale-in's check has read a forged status (not a fixed sleep: issue 24).
    eventually(
        Duration::from_secs(20),
        "a forged execution status read",
        || async {
            let seen = hostile.requests();
            if seen.iter().any(|r| r.rule == Some(forged)) {
                Ok(())
            } else {
                Err(seen.len())
            }
        },
    )
    .await;
    hostile.clear_rules();
    SimCtl::new(&sim.url())
        .wait_executions_done(Duration::from_secs(20))
        .await;
    // And until the scale-in's end is counted (every label combination is exported from the
    // start at 0, so the line alone proves nothing).
    eventually(Duration::from_secs(20), "the scale-in counted", || async {
        match scale_ins_counted(app.http_addr).await {
            0 => Err(0),
            n => Ok(n),
        }
    })
    .await;

    let (text, samples) = scrape(app.http_addr).await;
    let rpc = |v: &str| v.chars().all(|c| c.is_ascii_alphabetic()) && !v.is_empty();
    let route = |v: &str| {
        let (method, path) = v.split_once(' ').unwrap_or_default();
        ["GET", "POST"].contains(&method)
            && path.starts_with('/')
            && path
                .chars()
                .all(|c| c.is_ascii_lowercase() || "/-{}".contains(c))
    };
    let mut odd = Vec::new();
    for (name, labels, _) in &samples {
        for (key, value) in labels {
            let v = value.as_str();
            let ok = match key.as_str() {
                "method" => rpc(v),
                "code" => rpc(v),
                "route" => route(v),
                "status" => v == "error" || (v.len() == 3 && v.parse::<u16>().is_ok()),
                "direction" => ["up", "down", "cancel"].contains(&v),
                "result" => [
                    "accepted",
                    "rejected",
                    "error",
                    "terminated",
                    "failed",
                    "cancelled",
                    "mismatch",
                    "other",
                    "ok",
                    "inconsistent",
                ]
                .contains(&v),
                "action" => [
                    "added",
                    "removed",
                    "create",
                    "install",
                    "update",
                    "uninstall",
                    "delete",
                    "status",
                ]
                .contains(&v),
                "phase" => autoscaler_cloudify::observability::metrics::LB_PHASES.contains(&v),
                "port" => ["grpc", "http"].contains(&v),
                "version" => v == env!("CARGO_PKG_VERSION"),
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                "group" => true,
                _ => false,
            };
            if !ok {
                odd.push(format!("{name}{{{key}={value:?}}}"));
            }
        }
    }
    assert!(
        odd.is_empty(),
        "label values outside their vocabulary: {odd:?}"
    );
    assert!(
        text.contains("autoscaler_cloudify_scale_executions_total{direction=\"down\""),
        "the scale-in's counter is exported"
    );
    app.shutdown().await;
}
