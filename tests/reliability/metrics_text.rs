//! Reliability suite: text from Cloudify in `/metrics` (issue 20 item 13, issue 24 item 5). A
//! group or deployment name is whatever the manager says it is; in a label value it must be
//! escaped as the text format requires, or one `"` breaks the scrape and a newline forges
//! samples. Checked by parsing the whole exposition strictly.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::reliability_support::*;
use autoscaler_cloudify::app::start;
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::nodegroup::ServiceSettings;
use cloudify_sim::Timing;

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
    let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), PASSWORD.to_owned())]);
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let config = Config::from_yaml(&provider_yaml(&sim.url(), "1h", "0s", ""), &overrides, &env)
        .expect("config");
    let app = start(&config, ServiceSettings::default())
        .await
        .expect("provider");
    tokio::time::timeout(Duration::from_secs(10), app.inventory.wait_ready())
        .await
        .expect("first snapshot");
    let group = format!("k8s-pool-a/{hostile}");
    assert!(
        app.inventory
            .snapshot()
            .groups
            .iter()
            .any(|g| g.id == group),
        "the group is served under its name as Cloudify gives it"
    );
    let text = reqwest::get(format!("http://{}/metrics", app.http_addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("/metrics: {e}"));
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
