//! Turning [`RawConfig`] plus [`Overrides`] into a validated [`Config`], one named step per part
//! of the file. Node groups are validated in `groups.rs`, single values in `fields.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env::Env;
use super::error::ConfigError;
use super::fields::RawSwitch;
use super::fields::{byte_size, duration, read_secret_file, socket_addr};
use super::model::{
    Config, GrpcConnections, LeaseConfig, LeaseMode, NodeControllerConfig, Overrides, TlsFiles,
};
use super::raw::{RawCloudify, RawConfig};
use crate::cloudify::{Auth, ClientSettings};
use crate::observability::LogFormat;
use crate::observability::http::HttpConnections;

pub(super) fn parse_yaml(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    // YAML 1.2 booleans only (`insecure: yes` is an error, as it was with serde_yaml), and a one-line
    // message: it ends up in a log line, where a rendered snippet would be split apart.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    };
    let mut key = String::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            key = e.path().to_string();
            // The inner error, not a new one: the YAML crate adds the line and column to it.
            e.into_inner()
        })
    })
    .map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        key,
        message: e.to_string(),
    })
}

pub(super) fn build(
    mut raw: RawConfig,
    ov: &Overrides,
    env: &dyn Env,
) -> Result<Config, ConfigError> {
    // Flags first, so validation reports the value actually used.
    apply_overrides(&mut raw, ov);
    let (grpc_listen, http_listen) = listen_addresses(&raw, ov)?;
    let tls = tls_files(&raw, ov)?;
    let (grpc_connections, http_connections) = connections(&raw)?;
    let (log_format, log_level) = logging(&raw, ov, env)?;
    let (refresh_interval, refresh_max_age) = refresh_periods(&raw, ov)?;
    let refresh_full_every = match &raw.refresh.full_every {
        Some(v) => duration("refresh.full_every", v)?,
        None => Duration::from_secs(5 * 60),
    };
    let cloudify = cloudify_entries(&raw, env).map_err(|e| match &ov.cloudify_url {
        Some(_) => e.given_by_flag("cloudify[0].url", "--cloudify-url"),
        None => e,
    })?;
    let node_groups = super::groups::node_groups(&raw, &cloudify).map_err(|mut e| {
        if !ov.nodes.is_empty() {
            e = e.given_by_flag("node_groups.static", "--nodes");
        }
        if !ov.auto_discovery.is_empty() {
            e = e.given_by_flag("node_groups.auto_discovery", "--node-group-auto-discovery");
        }
        e
    })?;
    super::answer_size::check(&node_groups, &cloudify)?;
    let node_controller = node_controller(&raw.node_controller, ov.node_controller)?;
    let lease = lease(&raw.lease, ov)?;
    let load_balancers = super::load_balancers::load_balancers(&raw.load_balancers, &cloudify)?;
    Ok(Config {
        grpc_listen,
        tls,
        insecure: ov.insecure || raw.grpc.insecure.unwrap_or(false),
        grpc_connections,
        http_listen,
        http_connections,
        log_format,
        log_level,
        refresh_interval,
        refresh_max_age,
        refresh_full_every,
        cloudify,
        node_groups,
        gpu_label: raw
            .gpu_label
            .unwrap_or_else(|| "cloudify.co/gpu-type".into()),
        node_controller,
        lease,
        load_balancers,
        pools: super::model::PoolsConfig {
            flavors: flavors(&raw.pools.flavors)?,
            enabled: raw.pools.enabled.unwrap_or(false),
            cluster_labels: raw
                .pools
                .cluster_labels
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
        },
    })
}

/// Writes the flags that stand for file keys into the raw file: `--cloudify-*` into the first
/// `cloudify` entry (created when the file has none), `--nodes` and
/// `--node-group-auto-discovery` in place of the file's lists.
fn apply_overrides(raw: &mut RawConfig, ov: &Overrides) {
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
}

/// The gRPC and HTTP listen addresses; an error names the flag when the flag gave the value.
fn listen_addresses(
    raw: &RawConfig,
    ov: &Overrides,
) -> Result<(SocketAddr, SocketAddr), ConfigError> {
    let address = |flag: &str,
                   flag_value: &Option<String>,
                   key: &str,
                   file_value: &Option<String>,
                   default: &str| {
        match (flag_value, file_value) {
            (Some(v), _) => socket_addr(flag, v),
            (None, Some(v)) => socket_addr(key, v),
            (None, None) => socket_addr(key, default),
        }
    };
    Ok((
        address(
            "--listen",
            &ov.listen,
            "grpc.listen",
            &raw.grpc.listen,
            "0.0.0.0:8086",
        )?,
        address(
            "--http-listen",
            &ov.http_listen,
            "http.listen",
            &raw.http.listen,
            "0.0.0.0:8087",
        )?,
    ))
}

/// The gRPC port's certificate files: none, server TLS (certificate and key), or mTLS (plus the
/// client CA). A key or client CA without a certificate is an error, not plaintext.
fn tls_files(raw: &RawConfig, ov: &Overrides) -> Result<Option<TlsFiles>, ConfigError> {
    let file = raw.grpc.tls.clone().unwrap_or_default();
    let cert = ov.tls_cert.clone().or(file.cert_file);
    let key = ov.tls_key.clone().or(file.key_file);
    let client_ca = ov.tls_client_ca.clone().or(file.client_ca_file);
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(TlsFiles {
            cert_file: PathBuf::from(c),
            key_file: PathBuf::from(k),
            client_ca_file: client_ca.map(PathBuf::from),
        })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, _) => Err(ConfigError::invalid(
            "grpc.tls.cert_file",
            "missing (key_file/client_ca_file need a server certificate)",
        )),
        (Some(_), None) => Err(ConfigError::invalid("grpc.tls.key_file", "missing")),
    }
}

/// How both ports treat their connections: drain, keepalive, header timeout, limits (issue 20).
fn connections(raw: &RawConfig) -> Result<(GrpcConnections, HttpConnections), ConfigError> {
    let positive = |key: &str, v: &Option<String>, default: Duration| match v {
        None => Ok(default),
        Some(text) => match duration(key, text)? {
            d if d.is_zero() => Err(ConfigError::invalid(key, "must be positive")),
            d => Ok(d),
        },
    };
    let limit = |key: &str, v: Option<i64>, default: usize| match v {
        None => Ok(default),
        Some(n) if (1..=100_000).contains(&n) => Ok(n as usize),
        Some(n) => Err(ConfigError::invalid(
            key,
            format!("{n} is not between 1 and 100000"),
        )),
    };
    let (g, h) = (GrpcConnections::default(), HttpConnections::default());
    let grpc = GrpcConnections {
        // Zero is allowed: close at once, without waiting for calls in flight.
        drain_timeout: match &raw.grpc.drain_timeout {
            Some(v) => duration("grpc.drain_timeout", v)?,
            None => g.drain_timeout,
        },
        keepalive_interval: positive(
            "grpc.keepalive_interval",
            &raw.grpc.keepalive_interval,
            g.keepalive_interval,
        )?,
        keepalive_timeout: positive(
            "grpc.keepalive_timeout",
            &raw.grpc.keepalive_timeout,
            g.keepalive_timeout,
        )?,
        max_connections: limit(
            "grpc.max_connections",
            raw.grpc.max_connections,
            g.max_connections,
        )?,
    };
    let http = HttpConnections {
        header_read_timeout: positive(
            "http.header_read_timeout",
            &raw.http.header_read_timeout,
            h.header_read_timeout,
        )?,
        max_connections: limit(
            "http.max_connections",
            raw.http.max_connections,
            h.max_connections,
        )?,
    };
    Ok((grpc, http))
}

/// Log format and level. The level is checked here (the flag's value was checked by clap
/// already) because tracing would read a bad directive as a target and log less than asked for,
/// or nothing; `RUST_LOG`, which wins over both, is checked too.
fn logging(
    raw: &RawConfig,
    ov: &Overrides,
    env: &dyn Env,
) -> Result<(LogFormat, String), ConfigError> {
    let format = match (ov.log_format, raw.log.format.as_deref()) {
        (Some(f), _) => f,
        (None, Some(text)) => text
            .parse()
            .map_err(|problem: String| ConfigError::invalid("log.format", problem))?,
        (None, None) => LogFormat::Text,
    };
    let (key, level) = match (&ov.log_level, &raw.log.level) {
        (Some(l), _) => ("--log-level", l.clone()),
        (None, Some(l)) => ("log.level", l.clone()),
        (None, None) => ("log.level", "info".to_owned()),
    };
    crate::observability::parse_log_filter(&level)
        .map_err(|problem| ConfigError::invalid(key, format!("invalid filter: {problem}")))?;
    if let Some(rust_log) = env.var("RUST_LOG") {
        crate::observability::parse_log_filter(&rust_log).map_err(|problem| {
            ConfigError::invalid("RUST_LOG", format!("invalid filter: {problem}"))
        })?;
    }
    Ok((format, level))
}

/// The background refresh period (at least 100 ms, so a typo cannot hammer Cloudify) and the
/// snapshot age above which CA's `Refresh` RPC refreshes.
fn refresh_periods(raw: &RawConfig, ov: &Overrides) -> Result<(Duration, Duration), ConfigError> {
    let interval = match (&ov.refresh_interval, &raw.refresh.interval) {
        (Some(v), _) => duration("--refresh-interval", v)?,
        (None, Some(v)) => duration("refresh.interval", v)?,
        (None, None) => Duration::from_secs(10),
    };
    if interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "refresh.interval",
            "must be at least 100ms",
        ));
    }
    let max_age = match &raw.refresh.max_age {
        Some(v) => duration("refresh.max_age", v)?,
        None => Duration::from_secs(5),
    };
    Ok((interval, max_age))
}

/// Every `cloudify` entry, validated; names must be unique because group ids are prefixed with
/// them when there are several.
fn cloudify_entries(raw: &RawConfig, env: &dyn Env) -> Result<Vec<ClientSettings>, ConfigError> {
    let mut entries: Vec<ClientSettings> = Vec::new();
    for (i, c) in raw.cloudify.iter().enumerate() {
        let entry = cloudify_entry(i, c, env)?;
        if entries.iter().any(|e| e.name == entry.name) {
            return Err(ConfigError::invalid(
                format!("cloudify[{i}].name"),
                format!("duplicate name {:?}", entry.name),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// One `cloudify` entry: its URL, credentials, CA certificate and request timeout.
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
    let auth = auth(i, c, env)?;
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
    // At least 64 KiB (a single execution answer with its parameters), at most 1 GiB.
    let max_response_bytes = match &c.max_response_size {
        Some(v) => byte_size(&k("max_response_size"), v, 64 << 10, 1 << 30)?,
        None => crate::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
    };
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
        max_response_bytes,
    })
}

/// The credentials of entry `i`: a token (from `token_env` or `token_file`) wins; otherwise basic
/// auth with the password from `password_file`, `password_env` or `CLOUDIFY_PASSWORD`. Naming two
/// sources of one secret is an error rather than a silent pick.
fn auth(i: usize, c: &RawCloudify, env: &dyn Env) -> Result<Auth, ConfigError> {
    let k = |f: &str| format!("cloudify[{i}].{f}");
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
    if let Some(t) = token {
        return Ok(Auth::Token(t));
    }
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
                    format!(
                        "environment variable {var} is not set (or use password_file / token_env)"
                    ),
                )
            })?
        }
    };
    Ok(Auth::Basic {
        username: c.username.clone().unwrap_or_else(|| "admin".into()),
        password,
    })
}

/// The `node_controller:` section, with `--node-controller` over its `enabled`.
fn node_controller(
    raw: &super::raw::RawNodeController,
    flag: Option<bool>,
) -> Result<NodeControllerConfig, ConfigError> {
    let d = NodeControllerConfig::default();
    let max_deletions_per_refresh = match raw.max_deletions_per_refresh {
        None => d.max_deletions_per_refresh,
        Some(n) if (0..=10_000).contains(&n) => n as usize,
        Some(n) => {
            return Err(ConfigError::invalid(
                "node_controller.max_deletions_per_refresh",
                format!("{n} is not between 0 and 10000"),
            ));
        }
    };
    let min_node_age = match &raw.min_node_age {
        Some(v) => duration("node_controller.min_node_age", v)?,
        None => d.min_node_age,
    };
    for (i, p) in raw.managed_provider_id_prefixes.iter().enumerate() {
        // A prefix without a path after the scheme would claim every Node of that cloud.
        if p.trim().is_empty() || p.ends_with("://") {
            return Err(ConfigError::invalid(
                format!("node_controller.managed_provider_id_prefixes[{i}]"),
                format!("{p:?} is too broad (give at least <scheme>://<something>)"),
            ));
        }
    }
    Ok(NodeControllerConfig {
        enabled: flag.or(raw.enabled).unwrap_or(d.enabled),
        max_deletions_per_refresh,
        min_node_age,
        managed_provider_id_prefixes: raw.managed_provider_id_prefixes.clone(),
    })
}

/// The `lease:` section, with `--leader-elect`, `--lease-name` and `--lease-namespace` over it.
fn lease(raw: &super::raw::RawLease, ov: &Overrides) -> Result<LeaseConfig, ConfigError> {
    let d = LeaseConfig::default();
    let mode = match (ov.leader_elect, &raw.enabled) {
        (Some(mode), _) => mode,
        (None, Some(RawSwitch::Bool(true))) => LeaseMode::On,
        (None, Some(RawSwitch::Bool(false))) => LeaseMode::Off,
        (None, Some(RawSwitch::Text(s))) => {
            <LeaseMode as clap::ValueEnum>::from_str(s.trim(), false).map_err(|_| {
                ConfigError::invalid(
                    "lease.enabled",
                    format!("expected auto, true or false, got {s:?}"),
                )
            })?
        }
        (None, None) => d.mode,
    };
    let secs =
        |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            let Some(text) = v else { return Ok(default) };
            let t = duration(key, text)?;
            if t.subsec_nanos() != 0 || t.is_zero() {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be a positive whole number of seconds, got {text:?}"),
                ));
            }
            Ok(t)
        };
    let duration_ = secs("lease.duration", &raw.duration, d.duration)?;
    let renew_deadline = secs(
        "lease.renew_deadline",
        &raw.renew_deadline,
        d.renew_deadline,
    )?;
    let renew_period = secs("lease.renew_period", &raw.renew_period, d.renew_period)?;
    if renew_deadline >= duration_ {
        return Err(ConfigError::invalid(
            "lease.renew_deadline",
            "must be less than lease.duration (the leader must stop mutating before another \
             replica can take the lease)",
        ));
    }
    if renew_period >= renew_deadline {
        return Err(ConfigError::invalid(
            "lease.renew_period",
            "must be less than lease.renew_deadline (a failed renewal needs a retry before the \
             deadline)",
        ));
    }
    let name = ov
        .lease_name
        .clone()
        .or_else(|| raw.name.clone())
        .unwrap_or(d.name);
    if name.is_empty() {
        return Err(ConfigError::invalid("lease.name", "must not be empty"));
    }
    let namespace = ov
        .lease_namespace
        .clone()
        .or_else(|| raw.namespace.clone())
        .filter(|n| !n.is_empty());
    let leader_label = match raw.leader_label.as_deref() {
        None | Some("") => None,
        Some(key) => Some(super::fields::label_key("lease.leader_label", key)?),
    };
    Ok(LeaseConfig {
        mode,
        name,
        namespace,
        duration: duration_,
        renew_deadline,
        renew_period,
        leader_label,
    })
}

/// `pools.flavors`, every quantity checked as a template's capacity is.
fn flavors(
    raw: &std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, super::fields::RawQuantity>,
    >,
) -> Result<
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    ConfigError,
> {
    let mut out = std::collections::BTreeMap::new();
    for (flavor, resources) in raw {
        let mut capacity = std::collections::BTreeMap::new();
        for (name, q) in resources {
            let key = super::fields::key_path(&["pools", "flavors", flavor, name]);
            capacity.insert(name.clone(), super::fields::quantity(&key, q)?);
        }
        out.insert(flavor.clone(), capacity);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::raw::{RawGrpc, RawLog, RawRefresh, RawTls};
    use super::*;

    fn flags() -> Overrides {
        Overrides::default()
    }

    fn err(r: Result<impl std::fmt::Debug, ConfigError>) -> String {
        r.expect_err("an error").to_string()
    }

    #[test]
    fn cloudify_flags_fill_the_first_entry_and_list_flags_replace_the_file() {
        let mut raw = RawConfig::default();
        raw.node_groups.static_groups = vec!["0:1:a/b".into()];
        let ov = Overrides {
            cloudify_url: Some("http://cfy".into()),
            nodes: vec!["1:2:c/d".into()],
            ..flags()
        };
        apply_overrides(&mut raw, &ov);
        assert_eq!(raw.cloudify.len(), 1, "an entry is created for the flag");
        assert_eq!(raw.cloudify[0].url.as_deref(), Some("http://cfy"));
        assert_eq!(raw.node_groups.static_groups, vec!["1:2:c/d".to_owned()]);

        let mut raw = RawConfig::default();
        apply_overrides(&mut raw, &flags());
        assert!(raw.cloudify.is_empty(), "no flag, no entry");
    }

    #[test]
    fn listen_errors_name_the_flag_or_the_key_that_gave_the_value() {
        let mut raw = RawConfig::default();
        let (grpc, http) = listen_addresses(&raw, &flags()).expect("defaults");
        assert_eq!((grpc.port(), http.port()), (8086, 8087));
        raw.grpc = RawGrpc {
            listen: Some("nowhere".into()),
            ..RawGrpc::default()
        };
        assert!(err(listen_addresses(&raw, &flags())).starts_with("grpc.listen: "));
        let ov = Overrides {
            http_listen: Some("8087".into()),
            ..flags()
        };
        raw.grpc.listen = None;
        assert!(err(listen_addresses(&raw, &ov)).starts_with("--http-listen: "));
    }

    #[test]
    fn tls_needs_a_certificate_for_a_key_or_a_client_ca() {
        let mut raw = RawConfig::default();
        assert!(tls_files(&raw, &flags()).expect("plaintext").is_none());
        raw.grpc.tls = Some(RawTls {
            client_ca_file: Some("ca.pem".into()),
            ..RawTls::default()
        });
        assert_eq!(
            err(tls_files(&raw, &flags())),
            "grpc.tls.cert_file: missing (key_file/client_ca_file need a server certificate)"
        );
        let ov = Overrides {
            tls_cert: Some("c.pem".into()),
            ..flags()
        };
        assert_eq!(err(tls_files(&raw, &ov)), "grpc.tls.key_file: missing");
        let ov = Overrides {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..flags()
        };
        let tls = tls_files(&raw, &ov).expect("mTLS").expect("some");
        assert_eq!(tls.client_ca_file, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn connection_settings_default_and_are_checked() {
        let mut raw = RawConfig::default();
        let (grpc, http) = connections(&raw).expect("defaults");
        assert_eq!(grpc, GrpcConnections::default());
        assert_eq!(grpc.read_idle(), Duration::from_secs(20));
        assert_eq!(http, HttpConnections::default());
        raw.grpc.drain_timeout = Some("0s".into());
        raw.http.max_connections = Some(8);
        let (grpc, http) = connections(&raw).expect("valid");
        assert_eq!(grpc.drain_timeout, Duration::ZERO, "zero: close at once");
        assert_eq!(http.max_connections, 8);
        raw.grpc.keepalive_timeout = Some("0s".into());
        assert_eq!(
            err(connections(&raw)),
            "grpc.keepalive_timeout: must be positive"
        );
        raw.grpc.keepalive_timeout = None;
        raw.grpc.max_connections = Some(0);
        assert_eq!(
            err(connections(&raw)),
            "grpc.max_connections: 0 is not between 1 and 100000"
        );
    }

    #[test]
    fn log_format_and_level_are_checked() {
        let none = BTreeMap::new();
        let mut raw = RawConfig::default();
        assert_eq!(
            logging(&raw, &flags(), &none).expect("defaults"),
            (LogFormat::Text, "info".to_owned())
        );
        raw.log = RawLog {
            format: Some("yaml".into()),
            level: None,
        };
        assert_eq!(
            err(logging(&raw, &flags(), &none)),
            "log.format: unknown format \"yaml\" (text or json)"
        );
        let ov = Overrides {
            log_format: Some(LogFormat::Json),
            log_level: Some("info,x=loud".into()),
            ..flags()
        };
        assert!(err(logging(&raw, &ov, &none)).starts_with("--log-level: invalid filter"));
        // A word that is no level parses as a tracing *target* and would turn logging off
        // (issue 21): refused from the file and from RUST_LOG alike.
        raw.log = RawLog {
            format: None,
            level: Some("infoo".into()),
        };
        assert!(
            err(logging(&raw, &flags(), &none))
                .starts_with("log.level: invalid filter: \"infoo\" is not a level")
        );
        raw.log.level = None;
        let env = BTreeMap::from([("RUST_LOG".to_owned(), "debugg".to_owned())]);
        assert!(err(logging(&raw, &flags(), &env)).starts_with("RUST_LOG: invalid filter"));
    }

    #[test]
    fn refresh_interval_has_a_floor_and_the_flag_wins() {
        let raw = RawConfig {
            refresh: RawRefresh {
                interval: Some("10ms".into()),
                max_age: Some("2s".into()),
                full_every: None,
            },
            ..RawConfig::default()
        };
        assert_eq!(
            err(refresh_periods(&raw, &flags())),
            "refresh.interval: must be at least 100ms"
        );
        let ov = Overrides {
            refresh_interval: Some("30s".into()),
            ..flags()
        };
        assert_eq!(
            refresh_periods(&raw, &ov).expect("valid"),
            (Duration::from_secs(30), Duration::from_secs(2))
        );
    }

    fn entry(name: Option<&str>) -> RawCloudify {
        RawCloudify {
            name: name.map(str::to_owned),
            url: Some("http://cfy".into()),
            ..RawCloudify::default()
        }
    }

    fn password() -> BTreeMap<String, String> {
        BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "pw".to_owned())])
    }

    #[test]
    fn entries_get_default_names_which_must_be_unique() {
        let mut raw = RawConfig {
            cloudify: vec![entry(None), entry(None)],
            ..RawConfig::default()
        };
        let names: Vec<String> = cloudify_entries(&raw, &password())
            .expect("valid")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["main", "cloudify1"]);
        raw.cloudify = vec![entry(Some("a")), entry(Some("b")), entry(Some("a"))];
        assert_eq!(
            err(cloudify_entries(&raw, &password())),
            "cloudify[2].name: duplicate name \"a\""
        );
    }

    #[test]
    fn the_answer_cap_defaults_to_16_mib_and_is_bounded() {
        let c = cloudify_entry(0, &entry(None), &password()).expect("valid");
        assert_eq!(c.max_response_bytes, 16 << 20);
        let c = RawCloudify {
            max_response_size: Some(super::super::fields::RawQuantity::Text("64Mi".into())),
            ..entry(None)
        };
        let c = cloudify_entry(0, &c, &password()).expect("valid");
        assert_eq!(c.max_response_bytes, 64 << 20);
        let c = RawCloudify {
            max_response_size: Some(super::super::fields::RawQuantity::Integer(1000)),
            ..entry(None)
        };
        assert_eq!(
            err(cloudify_entry(1, &c, &password())),
            "cloudify[1].max_response_size: 1000 bytes is not between 65536 and 1073741824"
        );
    }

    #[test]
    fn a_token_wins_over_the_password_and_two_sources_of_one_secret_are_refused() {
        let env = BTreeMap::from([("TOKEN".to_owned(), "t0k".to_owned())]);
        let c = RawCloudify {
            token_env: Some("TOKEN".into()),
            ..entry(None)
        };
        assert!(matches!(auth(0, &c, &env), Ok(Auth::Token(t)) if t == "t0k"));
        let c = RawCloudify {
            password_env: Some("P".into()),
            password_file: Some("/p".into()),
            ..entry(None)
        };
        assert_eq!(
            err(auth(1, &c, &env)),
            "cloudify[1].password_env: set password_env or password_file, not both"
        );
        assert!(matches!(
            auth(0, &entry(None), &password()),
            Ok(Auth::Basic { username, password }) if username == "admin" && password == "pw"
        ));
        assert!(err(auth(0, &entry(None), &env)).contains("CLOUDIFY_PASSWORD is not set"));
    }
}
