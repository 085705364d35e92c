//! The `load_balancers:` section (issue 23): the service controller's class, blueprints per
//! manager/tenant, backend address type and pacing. Off by default; when on, every blueprint
//! names a configured `cloudify` entry, so a typo fails at start instead of at the first Service.

use std::time::Duration;

use super::error::ConfigError;
use super::fields::duration;
use super::model::{BackendAddressType, LB_CONTRACT_INPUTS, LbBlueprint, LoadBalancersConfig};
use super::raw::RawLoadBalancers;
use crate::cloudify::ClientSettings;

/// Service port protocols Kubernetes knows.
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// Cloudify deployment ids: at most 256 of `[A-Za-z0-9-._]` (the manager's create check); the
/// controller appends a 36-character Service UID to the prefix.
const MAX_DEPLOYMENT_ID: usize = 256;
const UID_LEN: usize = 36;

pub(super) fn load_balancers(
    raw: &RawLoadBalancers,
    cloudify: &[ClientSettings],
) -> Result<LoadBalancersConfig, ConfigError> {
    let d = LoadBalancersConfig::default();
    let k = |f: &str| format!("load_balancers.{f}");
    let class = match &raw.class {
        Some(c) => super::fields::label_key(&k("class"), c)?,
        None => d.class.clone(),
    };
    let cluster_name = cluster_name(raw.cluster_name.clone().unwrap_or(d.cluster_name))?;
    let deployment_prefix =
        deployment_prefix(raw.deployment_prefix.clone().unwrap_or(d.deployment_prefix))?;
    let blueprints = blueprints(raw, cloudify)?;
    let enabled = raw.enabled.unwrap_or(d.enabled);
    if enabled && blueprints.is_empty() {
        return Err(ConfigError::invalid(
            k("blueprints"),
            "empty: name the LB blueprint of at least one cloudify entry, e.g. \
             {main: {blueprint_id: k8s-lb-haproxy}}",
        ));
    }
    let default_blueprint = default_blueprint(raw, &blueprints, cloudify)?;
    let address_type = address_type(raw.address_type.as_deref())?;
    let concurrency = concurrency(raw.concurrency, d.concurrency)?;
    Ok(LoadBalancersConfig {
        enabled,
        class,
        class_less: raw.class_less.unwrap_or(d.class_less),
        cluster_name,
        deployment_prefix,
        default_blueprint,
        blueprints,
        address_type,
        exclude_not_ready: raw.exclude_not_ready.unwrap_or(d.exclude_not_ready),
        poll_interval: positive(&k("poll_interval"), &raw.poll_interval, d.poll_interval)?,
        resync_interval: positive(
            &k("resync_interval"),
            &raw.resync_interval,
            d.resync_interval,
        )?,
        concurrency,
    })
}

/// `load_balancers.cluster_name`: it goes into a Cloudify label value on every LB deployment,
/// so it must be one (1-256 printable characters, no double quote).
fn cluster_name(cluster_name: String) -> Result<String, ConfigError> {
    if cluster_name.is_empty()
        || cluster_name.len() > 256
        || cluster_name.chars().any(|c| c.is_control() || c == '"')
    {
        return Err(ConfigError::invalid(
            "load_balancers.cluster_name",
            format!(
                "{cluster_name:?} is not a Cloudify label value (1-256 printable characters, no '\"')"
            ),
        ));
    }
    Ok(cluster_name)
}

/// `load_balancers.deployment_prefix`: with the Service UID after it, it must still be a
/// Cloudify deployment id, so the manager's create check cannot refuse it later.
fn deployment_prefix(deployment_prefix: String) -> Result<String, ConfigError> {
    if deployment_prefix.is_empty()
        || deployment_prefix.len() + UID_LEN > MAX_DEPLOYMENT_ID
        || !deployment_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::invalid(
            "load_balancers.deployment_prefix",
            format!(
                "{deployment_prefix:?}: 1-{} of letters, digits, '-', '_' and '.' (Cloudify's \
                 deployment ids; the Service UID follows)",
                MAX_DEPLOYMENT_ID - UID_LEN
            ),
        ));
    }
    Ok(deployment_prefix)
}

/// The index in `blueprints` of the one a Service without a manager annotation gets:
/// `load_balancers.default_manager`'s, or the first cloudify entry's.
fn default_blueprint(
    raw: &RawLoadBalancers,
    blueprints: &[LbBlueprint],
    cloudify: &[ClientSettings],
) -> Result<usize, ConfigError> {
    match &raw.default_manager {
        None => Ok(0),
        Some(name) => blueprints
            .iter()
            .position(|b| cloudify[b.source].name == *name)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "load_balancers.default_manager",
                    format!("{name:?} has no entry in load_balancers.blueprints"),
                )
            }),
    }
}

/// `load_balancers.address_type`: which node address the backends get (the Kubernetes
/// address type names; InternalIP when unset).
fn address_type(raw: Option<&str>) -> Result<BackendAddressType, ConfigError> {
    match raw {
        None | Some("InternalIP") => Ok(BackendAddressType::InternalIp),
        Some("ExternalIP") => Ok(BackendAddressType::ExternalIp),
        Some(other) => Err(ConfigError::invalid(
            "load_balancers.address_type",
            format!("{other:?}: expected InternalIP or ExternalIP"),
        )),
    }
}

/// `load_balancers.concurrency`: how many Services are worked on at once, 1 to 256.
fn concurrency(raw: Option<i64>, default: u16) -> Result<u16, ConfigError> {
    match raw {
        None => Ok(default),
        Some(n) if (1..=256).contains(&n) => Ok(n as u16),
        Some(n) => Err(ConfigError::invalid(
            "load_balancers.concurrency",
            format!("{n} is not between 1 and 256"),
        )),
    }
}

/// A pacing interval: a zero one would spin the controller's loop.
fn positive(key: &str, v: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(t) => match duration(key, t)? {
            z if z.is_zero() => Err(ConfigError::invalid(key, "must be positive")),
            t => Ok(t),
        },
    }
}

/// `load_balancers.blueprints`, keyed by `cloudify[].name`, in the order of the cloudify entries.
fn blueprints(
    raw: &RawLoadBalancers,
    cloudify: &[ClientSettings],
) -> Result<Vec<LbBlueprint>, ConfigError> {
    let mut out = Vec::new();
    for (name, b) in &raw.blueprints {
        let k = |f: &str| super::fields::key_path(&["load_balancers", "blueprints", name, f]);
        let source = cloudify
            .iter()
            .position(|c| c.name == *name)
            .ok_or_else(|| {
                let names: Vec<&str> = cloudify.iter().map(|c| c.name.as_str()).collect();
                ConfigError::invalid(
                    super::fields::key_path(&["load_balancers", "blueprints", name]),
                    format!("no cloudify entry is named {name:?} (configured: {names:?})"),
                )
            })?;
        let blueprint_id = b
            .blueprint_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::invalid(
                    k("blueprint_id"),
                    "missing (the uploaded LB blueprint's id)",
                )
            })?;
        let protocols = b.protocols.clone().unwrap_or_else(|| vec!["TCP".into()]);
        if protocols.is_empty() {
            return Err(ConfigError::invalid(
                k("protocols"),
                "empty: list what the blueprint implements, e.g. [TCP]",
            ));
        }
        for p in &protocols {
            if !PROTOCOLS.contains(&p.as_str()) {
                return Err(ConfigError::invalid(
                    k("protocols"),
                    format!("{p:?}: expected TCP, UDP or SCTP (as Service ports write them)"),
                ));
            }
        }
        if let Some(taken) = b
            .inputs
            .keys()
            .find(|i| LB_CONTRACT_INPUTS.contains(&i.as_str()))
        {
            return Err(ConfigError::invalid(
                k("inputs"),
                format!("{taken:?} is set by the controller from the Service; remove it here"),
            ));
        }
        out.push(LbBlueprint {
            source,
            blueprint_id,
            protocols,
            inputs: b.inputs.clone(),
        });
    }
    out.sort_by_key(|b| b.source);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::{Config, ConfigError, Overrides};

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        let env = BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "pw".to_owned())]);
        Config::from_yaml(yaml, &Overrides::default(), &env)
    }

    const TWO: &str = "cloudify: [{name: a, url: \"http://a\"}, {name: b, url: \"http://b\"}]\n";

    #[test]
    fn off_by_default_with_upstream_like_defaults() {
        let c = load(TWO).expect("valid");
        let lb = &c.load_balancers;
        assert!(!lb.enabled && !lb.class_less && lb.blueprints.is_empty());
        assert_eq!(lb.class, "autoscaler-cloudify.io/cloudify");
        assert_eq!(lb.address_type.as_str(), "InternalIP");
    }

    #[test]
    fn blueprints_are_per_cloudify_entry_and_the_default_manager_is_chosen_by_name() {
        let c = load(&format!(
            "{TWO}load_balancers: {{enabled: true, default_manager: b, blueprints: {{\
             b: {{blueprint_id: lb-b, protocols: [TCP, UDP], inputs: {{flavor: m1.small}}}}, \
             a: {{blueprint_id: lb-a}}}}}}"
        ))
        .expect("valid");
        let lb = &c.load_balancers;
        let ids: Vec<(usize, &str)> = lb
            .blueprints
            .iter()
            .map(|b| (b.source, b.blueprint_id.as_str()))
            .collect();
        assert_eq!(ids, [(0, "lb-a"), (1, "lb-b")], "in cloudify order");
        assert_eq!(lb.default_blueprint, 1, "b");
        assert_eq!(lb.blueprints[0].protocols, ["TCP"], "TCP unless told");
        assert_eq!(lb.blueprints[1].inputs["flavor"], "m1.small");
    }

    #[test]
    fn mistakes_name_the_key_and_what_to_do() {
        let cases = [
            (
                "load_balancers: {enabled: true}",
                "load_balancers.blueprints: empty: name the LB blueprint",
            ),
            (
                "load_balancers: {blueprints: {c: {blueprint_id: x}}}",
                "load_balancers.blueprints.c: no cloudify entry is named \"c\"",
            ),
            (
                "load_balancers: {blueprints: {a: {}}}",
                "load_balancers.blueprints.a.blueprint_id: missing",
            ),
            (
                "load_balancers: {blueprints: {a: {blueprint_id: x, protocols: [HTTP]}}}",
                "load_balancers.blueprints.a.protocols: \"HTTP\": expected TCP, UDP or SCTP",
            ),
            (
                "load_balancers: {blueprints: {a: {blueprint_id: x, inputs: {ports: []}}}}",
                "load_balancers.blueprints.a.inputs: \"ports\" is set by the controller",
            ),
            (
                "load_balancers: {default_manager: b, blueprints: {a: {blueprint_id: x}}}",
                "load_balancers.default_manager: \"b\" has no entry",
            ),
            (
                "load_balancers: {class: \"Not A Key\"}",
                "load_balancers.class: \"Not A Key\" is not a Kubernetes label key",
            ),
            (
                "load_balancers: {deployment_prefix: \"lb/\"}",
                "load_balancers.deployment_prefix: \"lb/\": 1-220 of letters",
            ),
            (
                "load_balancers: {address_type: Hostname}",
                "load_balancers.address_type: \"Hostname\": expected InternalIP or ExternalIP",
            ),
            (
                "load_balancers: {poll_interval: 0s}",
                "load_balancers.poll_interval: must be positive",
            ),
            (
                "load_balancers: {concurrency: 0}",
                "load_balancers.concurrency: 0 is not between 1 and 256",
            ),
            (
                "load_balancers: {blueprint: {}}",
                "load_balancers.blueprint: unknown field",
            ),
        ];
        for (yaml, want) in cases {
            let e = load(&format!("{TWO}{yaml}")).expect_err(yaml).to_string();
            assert!(e.starts_with(want) || e.contains(want), "{yaml}\n got: {e}");
        }
    }
}
