//! The load balancer's address, from the deployment's capabilities or outputs into
//! `status.loadBalancer.ingress`: the blueprint contract's `ingress` value, checked the way the
//! API server checks it (an invalid IP or hostname would fail the whole status patch).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use serde_json::{Map, Value};

/// The capability (first) or output (then) an LB blueprint publishes its address in.
pub const INGRESS_KEY: &str = "ingress";

/// What the deployment says about its address.
#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    /// The address is known: the ingress list for the status (never empty).
    Known(Vec<LoadBalancerIngress>),
    /// No address yet (the value is absent, empty or null: a runtime property not set yet).
    NotYet,
    /// The blueprint published something unusable (the Warning's text).
    Invalid(String),
}

/// A DNS-1123 subdomain, the API server's rule for `ingress[].hostname`.
fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// One entry: `"203.0.113.7"`, `"lb.example.com"` or `{ip, hostname, ip_mode}`; `None` when it
/// carries nothing yet.
fn entry(v: &Value) -> Result<Option<LoadBalancerIngress>, String> {
    let (ip, hostname, ip_mode) = match v {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => {
            let s = s.trim().to_owned();
            if s.parse::<IpAddr>().is_ok() {
                (Some(s), None, None)
            } else {
                (None, Some(s), None)
            }
        }
        Value::Object(o) => (
            text(o.get("ip")),
            text(o.get("hostname")),
            text(o.get("ip_mode")),
        ),
        other => {
            return Err(format!(
                "{other} is neither an address nor {{ip, hostname}}"
            ));
        }
    };
    if let Some(ip) = &ip
        && ip.parse::<IpAddr>().is_err()
    {
        return Err(format!("ip {ip:?} is not an IP address"));
    }
    if let Some(h) = &hostname
        && !is_hostname(h)
    {
        return Err(format!(
            "hostname {h:?} is not a DNS name (lower case, e.g. lb-1.example.com)"
        ));
    }
    if let Some(m) = &ip_mode
        && !matches!(m.as_str(), "VIP" | "Proxy")
    {
        return Err(format!("ip_mode {m:?}: expected VIP or Proxy"));
    }
    if ip.is_none() && hostname.is_none() {
        return Ok(None);
    }
    Ok(Some(LoadBalancerIngress {
        // ipMode is only valid with an ip (API validation).
        ip_mode: ip_mode.filter(|_| ip.is_some()),
        ip,
        hostname,
        ports: None,
    }))
}

/// The address from the deployment's capabilities, else its outputs (either map may be missing:
/// a blueprint may declare only one of them).
pub fn address(
    capabilities: Option<&Map<String, Value>>,
    outputs: Option<&Map<String, Value>>,
) -> Address {
    let value = capabilities
        .and_then(|c| c.get(INGRESS_KEY))
        .or_else(|| outputs.and_then(|o| o.get(INGRESS_KEY)));
    let Some(value) = value else {
        return Address::Invalid(format!(
            "the deployment has no capability or output named {INGRESS_KEY:?} (the blueprint \
             contract: docs/configuration.md, Load balancers)"
        ));
    };
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        match entry(item) {
            Ok(Some(i)) => out.push(i),
            Ok(None) => {}
            Err(why) => return Address::Invalid(format!("{INGRESS_KEY}: {why}")),
        }
    }
    if out.is_empty() {
        Address::NotYet
    } else {
        Address::Known(out)
    }
}

/// The Service's current ingress list (empty when it has none).
pub fn current(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
}

/// Whether the status must be patched to show `wanted`: compares what this controller writes
/// (ip, hostname, ipMode), so a field another writer added does not cause a patch loop.
pub fn differs(current: &[LoadBalancerIngress], wanted: &[LoadBalancerIngress]) -> bool {
    let key = |i: &LoadBalancerIngress| (i.ip.clone(), i.hostname.clone(), i.ip_mode.clone());
    current.len() != wanted.len() || current.iter().zip(wanted).any(|(a, b)| key(a) != key(b))
}

/// Words for an Event: `203.0.113.7, lb.example.com`.
pub fn describe(ingress: &[LoadBalancerIngress]) -> String {
    ingress
        .iter()
        .map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), Some(h)) => format!("{ip} ({h})"),
            (Some(ip), None) => ip.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) => "-".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
