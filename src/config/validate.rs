//! Turning [`RawConfig`] plus [`Overrides`] into a validated [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawCloudify, RawConfig, RawGroup, RawOptions, RawTemplate};
use super::*;
use crate::cloudify::{Auth, ClientSettings};

/// Formats a key path, quoting segments that are not plain identifiers:
/// `key_path(&["node_groups", "groups", "a/b", "min"])` = `node_groups.groups."a/b".min`.
pub fn key_path(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                (*s).to_owned()
            } else {
                format!("{s:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

pub(super) fn parse_yaml(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        key: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim())
        .map_err(|_| ConfigError::invalid(key, format!("invalid duration {text:?}")))
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("invalid address {text:?} (expected host:port, e.g. 0.0.0.0:8086)"),
        )
    })
}

fn read_secret_file(key: &str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {path:?}: {e}")))
}

pub(super) fn build(
    mut raw: RawConfig,
    ov: &Overrides,
    env: &dyn Env,
) -> Result<Config, ConfigError> {
    // Flags first, so validation reports the value actually used.
    if ov.cloudify_url.is_some() || ov.cloudify_tenant.is_some() || ov.cloudify_username.is_some() {
        if raw.cloudify.is_empty() {
            raw.cloudify.push(RawCloudify::default());
        }
        let first = &mut raw.cloudify[0];
        if let Some(u) = &ov.cloudify_url {
            first.url = Some(u.clone());
        }
        if let Some(t) = &ov.cloudify_tenant {
            first.tenant = Some(t.clone());
        }
        if let Some(u) = &ov.cloudify_username {
            first.username = Some(u.clone());
        }
    }
    if !ov.nodes.is_empty() {
        raw.node_groups.static_groups = ov.nodes.clone();
    }
    if !ov.auto_discovery.is_empty() {
        raw.node_groups.auto_discovery = ov.auto_discovery.clone();
    }

    let grpc_listen = socket_addr(
        if ov.listen.is_some() {
            "--listen"
        } else {
            "grpc.listen"
        },
        ov.listen
            .as_deref()
            .or(raw.grpc.listen.as_deref())
            .unwrap_or("0.0.0.0:8086"),
    )?;
    let http_listen = socket_addr(
        if ov.http_listen.is_some() {
            "--http-listen"
        } else {
            "http.listen"
        },
        ov.http_listen
            .as_deref()
            .or(raw.http.listen.as_deref())
            .unwrap_or("0.0.0.0:8087"),
    )?;

    let tls_raw = raw.grpc.tls.clone().unwrap_or_default();
    let cert = ov.tls_cert.clone().or(tls_raw.cert_file);
    let key = ov.tls_key.clone().or(tls_raw.key_file);
    let client_ca = ov.tls_client_ca.clone().or(tls_raw.client_ca_file);
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            cert_file: PathBuf::from(c),
            key_file: PathBuf::from(k),
            client_ca_file: client_ca.map(PathBuf::from),
        }),
        (None, None) if client_ca.is_none() => None,
        (None, _) => {
            return Err(ConfigError::invalid(
                "grpc.tls.cert_file",
                "missing (key_file/client_ca_file need a server certificate)",
            ));
        }
        (Some(_), None) => return Err(ConfigError::invalid("grpc.tls.key_file", "missing")),
    };
    let insecure = ov.insecure || raw.grpc.insecure.unwrap_or(false);

    let log_format = match ov
        .log_format
        .as_deref()
        .or(raw.log.format.as_deref())
        .unwrap_or("text")
    {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::invalid(
                "log.format",
                format!("unknown format {other:?} (text or json)"),
            ));
        }
    };
    let log_level = ov
        .log_level
        .clone()
        .or(raw.log.level.clone())
        .unwrap_or_else(|| "info".into());

    let refresh_interval = match (&ov.refresh_interval, &raw.refresh.interval) {
        (Some(v), _) => duration("--refresh-interval", v)?,
        (None, Some(v)) => duration("refresh.interval", v)?,
        (None, None) => Duration::from_secs(10),
    };
    if refresh_interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "refresh.interval",
            "must be at least 100ms",
        ));
    }
    let refresh_max_age = match &raw.refresh.max_age {
        Some(v) => duration("refresh.max_age", v)?,
        None => Duration::from_secs(5),
    };

    let mut cloudify = Vec::new();
    for (i, c) in raw.cloudify.iter().enumerate() {
        cloudify.push(cloudify_entry(i, c, env)?);
    }
    for i in 0..cloudify.len() {
        if cloudify[..i].iter().any(|c| c.name == cloudify[i].name) {
            return Err(ConfigError::invalid(
                format!("cloudify[{i}].name"),
                format!("duplicate name {:?}", cloudify[i].name),
            ));
        }
    }

    let node_groups = node_groups(&raw, &cloudify)?;
    let gpu_label = raw
        .gpu_label
        .clone()
        .unwrap_or_else(|| "cloudify.co/gpu-type".into());

    Ok(Config {
        grpc_listen,
        tls,
        insecure,
        http_listen,
        log_format,
        log_level,
        refresh_interval,
        refresh_max_age,
        cloudify,
        node_groups,
        gpu_label,
    })
}

fn cloudify_entry(i: usize, c: &RawCloudify, env: &dyn Env) -> Result<ClientSettings, ConfigError> {
    let k = |f: &str| format!("cloudify[{i}].{f}");
    let url = c.url.clone().ok_or_else(|| {
        ConfigError::invalid(
            k("url"),
            "missing (the manager URL, e.g. https://cfy.example)",
        )
    })?;
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(ConfigError::invalid(
                k("url"),
                format!("invalid URL {url:?} (http:// or https://)"),
            ));
        }
    }
    let token = match (&c.token_env, &c.token_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                k("token_env"),
                "set token_env or token_file, not both",
            ));
        }
        (Some(var), None) => Some(env.var(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            ConfigError::invalid(
                k("token_env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, Some(path)) => Some(read_secret_file(&k("token_file"), path)?),
        (None, None) => None,
    };
    let auth = match token {
        Some(t) => Auth::Token(t),
        None => {
            let password = match (&c.password_env, &c.password_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        k("password_env"),
                        "set password_env or password_file, not both",
                    ));
                }
                (None, Some(path)) => read_secret_file(&k("password_file"), path)?,
                (var, None) => {
                    let var = var.clone().unwrap_or_else(|| "CLOUDIFY_PASSWORD".into());
                    env.var(&var).ok_or_else(|| {
                        ConfigError::invalid(
                            k("password_env"),
                            format!("environment variable {var} is not set (or use password_file / token_env)"),
                        )
                    })?
                }
            };
            Auth::Basic {
                username: c.username.clone().unwrap_or_else(|| "admin".into()),
                password,
            }
        }
    };
    let ca_cert_pem = match &c.ca_cert_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            ConfigError::invalid(k("ca_cert_file"), format!("cannot read {p:?}: {e}"))
        })?),
        None => None,
    };
    let request_timeout = match &c.request_timeout {
        Some(t) => duration(&k("request_timeout"), t)?,
        None => Duration::from_secs(10),
    };
    if request_timeout.is_zero() {
        return Err(ConfigError::invalid(
            k("request_timeout"),
            "must be positive",
        ));
    }
    Ok(ClientSettings {
        name: c.name.clone().unwrap_or_else(|| {
            if i == 0 {
                "main".into()
            } else {
                format!("cloudify{i}")
            }
        }),
        url,
        tenant: c.tenant.clone().unwrap_or_else(|| "default_tenant".into()),
        auth,
        ca_cert_pem,
        insecure_skip_verify: c.insecure_skip_verify.unwrap_or(false),
        request_timeout,
    })
}

/// Splits `[<name>:]<deployment>/<group>` into (source index, deployment, group).
fn parse_group_id(
    key: &str,
    id: &str,
    sources: &[ClientSettings],
) -> Result<(usize, String, String), ConfigError> {
    let (source, rest) = match id.split_once(':') {
        Some((name, rest)) => {
            let idx = sources.iter().position(|s| s.name == name).ok_or_else(|| {
                ConfigError::invalid(key, format!("{id:?}: no cloudify entry named {name:?}"))
            })?;
            (idx, rest)
        }
        None if sources.len() > 1 => {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{id:?}: several cloudify entries are configured; write <name>:<deployment>/<group>"
                ),
            ));
        }
        None => (0, id),
    };
    match rest.split_once('/') {
        Some((d, g)) if !d.is_empty() && !g.is_empty() && !g.contains('/') => {
            Ok((source, d.to_owned(), g.to_owned()))
        }
        _ => Err(ConfigError::invalid(
            key,
            format!("{id:?}: expected <deployment>/<group>"),
        )),
    }
}

fn node_groups(
    raw: &RawConfig,
    sources: &[ClientSettings],
) -> Result<NodeGroupsConfig, ConfigError> {
    let ng = &raw.node_groups;
    let mut static_groups = Vec::new();
    for (i, spec) in ng.static_groups.iter().enumerate() {
        let key = format!("node_groups.static[{i}]");
        let mut parts = spec.splitn(3, ':');
        let (Some(min), Some(max), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ConfigError::invalid(
                key,
                format!("{spec:?}: expected <min>:<max>:<deployment>/<group>"),
            ));
        };
        let min: i32 = min.parse().map_err(|_| {
            ConfigError::invalid(&key, format!("{spec:?}: min {min:?} is not a number"))
        })?;
        let max: i32 = max.parse().map_err(|_| {
            ConfigError::invalid(&key, format!("{spec:?}: max {max:?} is not a number"))
        })?;
        if min < 0 || max < min {
            return Err(ConfigError::invalid(
                key,
                format!("{spec:?}: need 0 <= min <= max"),
            ));
        }
        let (source, deployment, group) = parse_group_id(&key, id, sources)?;
        static_groups.push(StaticGroup {
            source,
            deployment,
            group,
            min,
            max,
        });
    }
    let mut discovery = Vec::new();
    for (i, spec) in ng.auto_discovery.iter().enumerate() {
        let key = format!("node_groups.auto_discovery[{i}]");
        let rest = spec.strip_prefix("cloudify:").ok_or_else(|| {
            ConfigError::invalid(
                &key,
                format!("{spec:?}: expected cloudify:label=<key>=<value>[,label=…]"),
            )
        })?;
        let mut labels = Vec::new();
        for part in rest.split(',') {
            let kv = part.trim().strip_prefix("label=").ok_or_else(|| {
                ConfigError::invalid(
                    &key,
                    format!("{spec:?}: {part:?} does not start with label="),
                )
            })?;
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => labels.push((k.to_owned(), v.to_owned())),
                _ => {
                    return Err(ConfigError::invalid(
                        &key,
                        format!("{spec:?}: {part:?} is not label=<key>=<value>"),
                    ));
                }
            }
        }
        discovery.push(Discovery { labels });
    }
    let unbounded_max = match ng.unbounded_max {
        None => 100,
        Some(v) if (1..=i64::from(i32::MAX)).contains(&v) => v as i32,
        Some(v) => {
            return Err(ConfigError::invalid(
                "node_groups.unbounded_max",
                format!("{v} is not a positive size"),
            ));
        }
    };
    let defaults = group_settings(&["node_groups", "defaults"], &ng.defaults)?;
    let mut groups = BTreeMap::new();
    for (id, g) in &ng.groups {
        if !sources.is_empty() {
            parse_group_id(&key_path(&["node_groups", "groups", id]), id, sources)?;
        }
        groups.insert(
            id.clone(),
            group_settings(&["node_groups", "groups", id], g)?,
        );
    }
    Ok(NodeGroupsConfig {
        static_groups,
        discovery,
        unbounded_max,
        defaults,
        groups,
    })
}

fn group_settings(base: &[&str], g: &RawGroup) -> Result<GroupSettings, ConfigError> {
    let key = |f: &[&str]| {
        let mut v = base.to_vec();
        v.extend_from_slice(f);
        key_path(&v)
    };
    let size = |f: &str, v: Option<i64>| -> Result<Option<i32>, ConfigError> {
        match v {
            None => Ok(None),
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as i32)),
            Some(n) => Err(ConfigError::invalid(
                key(&[f]),
                format!("{n} is not a valid size"),
            )),
        }
    };
    let min = size("min", g.min)?;
    let max = size("max", g.max)?;
    if let (Some(a), Some(b)) = (min, max)
        && a > b
    {
        return Err(ConfigError::invalid(
            key(&["min"]),
            format!("{a} is above max {b}"),
        ));
    }
    let provider_id_template = match &g.provider_id_template {
        Some(t) => Some(
            ProviderIdTemplate::parse(t)
                .map_err(|e| ConfigError::invalid(key(&["provider_id_template"]), e))?,
        ),
        None => None,
    };
    if let Some(p) = &g.node_name_property
        && p.is_empty()
    {
        return Err(ConfigError::invalid(
            key(&["node_name_property"]),
            "must not be empty",
        ));
    }
    if let Some(p) = g.price_per_hour
        && !(p.is_finite() && p >= 0.0)
    {
        return Err(ConfigError::invalid(
            key(&["price_per_hour"]),
            format!("{p} is not a price"),
        ));
    }
    let template = match &g.template {
        Some(t) => Some(template(&key, t)?),
        None => None,
    };
    let options = match &g.options {
        Some(o) => Some(options(&key, o)?),
        None => None,
    };
    Ok(GroupSettings {
        min,
        max,
        provider_id_template,
        node_name_property: g.node_name_property.clone(),
        price_per_hour: g.price_per_hour,
        template,
        options,
    })
}

fn quantity(key: &str, v: &serde_yaml::Value) -> Result<String, ConfigError> {
    let text = match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        _ => {
            return Err(ConfigError::invalid(
                key,
                "expected a quantity such as \"4\", \"3800m\" or \"16Gi\"",
            ));
        }
    };
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    const SUFFIXES: [&str; 15] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n",
    ];
    if num.is_empty() || num.parse::<f64>().is_err() || !SUFFIXES.contains(&suffix) {
        return Err(ConfigError::invalid(
            key,
            format!("invalid quantity {text:?}"),
        ));
    }
    Ok(t.to_owned())
}

fn template(key: &dyn Fn(&[&str]) -> String, t: &RawTemplate) -> Result<TemplateSpec, ConfigError> {
    let mut capacity = BTreeMap::new();
    for (k, v) in &t.capacity {
        capacity.insert(k.clone(), quantity(&key(&["template", "capacity", k]), v)?);
    }
    let mut allocatable = BTreeMap::new();
    for (k, v) in &t.allocatable {
        allocatable.insert(
            k.clone(),
            quantity(&key(&["template", "allocatable", k]), v)?,
        );
    }
    let mut taints = Vec::new();
    for (i, taint) in t.taints.iter().enumerate() {
        let idx = format!("taints[{i}]");
        if taint.key.is_empty() {
            return Err(ConfigError::invalid(
                key(&["template", &idx, "key"]),
                "must not be empty",
            ));
        }
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&taint.effect.as_str()) {
            return Err(ConfigError::invalid(
                key(&["template", &idx, "effect"]),
                format!(
                    "{:?} is not NoSchedule, PreferNoSchedule or NoExecute",
                    taint.effect
                ),
            ));
        }
        taints.push(TaintSpec {
            key: taint.key.clone(),
            value: taint.value.clone(),
            effect: taint.effect.clone(),
        });
    }
    Ok(TemplateSpec {
        labels: t.labels.clone(),
        taints,
        capacity,
        allocatable,
    })
}

fn options(key: &dyn Fn(&[&str]) -> String, o: &RawOptions) -> Result<OptionsSpec, ConfigError> {
    let threshold = |f: &str, v: Option<f64>| -> Result<Option<f64>, ConfigError> {
        match v {
            Some(x) if !(0.0..=1.0).contains(&x) => Err(ConfigError::invalid(
                key(&["options", f]),
                format!("{x} is not between 0 and 1"),
            )),
            other => Ok(other),
        }
    };
    let dur = |f: &str, v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
        v.as_deref()
            .map(|t| duration(&key(&["options", f]), t))
            .transpose()
    };
    Ok(OptionsSpec {
        scale_down_utilization_threshold: threshold(
            "scale_down_utilization_threshold",
            o.scale_down_utilization_threshold,
        )?,
        scale_down_gpu_utilization_threshold: threshold(
            "scale_down_gpu_utilization_threshold",
            o.scale_down_gpu_utilization_threshold,
        )?,
        scale_down_unneeded_time: dur("scale_down_unneeded_time", &o.scale_down_unneeded_time)?,
        scale_down_unready_time: dur("scale_down_unready_time", &o.scale_down_unready_time)?,
        max_node_provision_time: dur("max_node_provision_time", &o.max_node_provision_time)?,
        zero_or_max_node_scaling: o.zero_or_max_node_scaling,
        ignore_daemonsets_utilization: o.ignore_daemonsets_utilization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "admin".to_owned())])
    }

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, &Overrides::default(), &env())
    }

    #[test]
    fn full_example_loads() {
        let c = load(
            r#"
cloudify: [{url: "http://127.0.0.1:8100"}]
node_groups:
  static: ["1:10:k8s-pool-a/workers"]
  auto_discovery: ["cloudify:label=k8s-cluster=demo,label=pool=gpu"]
  groups:
    "k8s-pool-a/workers":
      price_per_hour: 0.12
      template: {capacity: {cpu: "4", memory: 16Gi, pods: 110}, taints: [{key: a, value: b, effect: NoSchedule}]}
      options: {scale_down_unneeded_time: 20s, scale_down_utilization_threshold: 0.4}
"#,
        )
        .expect("valid");
        assert_eq!(c.node_groups.static_groups[0].max, 10);
        assert_eq!(c.node_groups.discovery[0].labels.len(), 2);
        let g = c.node_groups.settings_for("k8s-pool-a/workers");
        assert_eq!(
            g.options.and_then(|o| o.scale_down_unneeded_time),
            Some(Duration::from_secs(20))
        );
        assert_eq!(c.cloudify[0].name, "main");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(
            "cloudify: [{url: \"http://x\"}]\nnode_groups: {groups: {\"a/b\": {options: {scale_down_unneeded_time: 2x}}}}",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "node_groups.groups.\"a/b\".options.scale_down_unneeded_time: invalid duration \"2x\""
        );
        let e = load("refresh: {interval: soon}").unwrap_err().to_string();
        assert_eq!(e, "refresh.interval: invalid duration \"soon\"");
        let e = load("grpc: {listne: x}").unwrap_err().to_string();
        assert!(e.contains("listne"), "{e}");
        let e = load("node_groups: {static: [\"a:1:x/y\"]}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("node_groups.static[0]"), "{e}");
        let e = Config::from_yaml(
            "cloudify: [{url: \"http://x\"}]",
            &Overrides::default(),
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("CLOUDIFY_PASSWORD"), "{e}");
    }

    #[test]
    fn several_managers_need_prefixed_ids() {
        let y = "cloudify: [{name: a, url: \"http://x\"}, {name: b, url: \"http://y\"}]\nnode_groups: {static: [\"0:3:d/g\"]}";
        assert!(load(y).unwrap_err().to_string().contains("<name>:"));
        let y = "cloudify: [{name: a, url: \"http://x\"}, {name: b, url: \"http://y\"}]\nnode_groups: {static: [\"0:3:b:d/g\"]}";
        assert_eq!(
            load(y).expect("valid").node_groups.static_groups[0].source,
            1
        );
    }
}
