//! Turning [`RawConfig`] plus [`Overrides`] into a validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawCloudify, RawConfig};
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

pub(super) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
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
    // tracing would drop a bad directive silently and log less than asked for.
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        return Err(ConfigError::invalid(
            if ov.log_level.is_some() {
                "--log-level"
            } else {
                "log.level"
            },
            format!("invalid filter {log_level:?}: {e} (e.g. \"info,autoscaler_cloudify=debug\")"),
        ));
    }

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

    let node_groups = super::groups::node_groups(&raw, &cloudify)?;
    let gpu_label = raw
        .gpu_label
        .clone()
        .unwrap_or_else(|| "cloudify.co/gpu-type".into());

    let node_controller = node_controller(&raw.node_controller, ov.node_controller)?;

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
        node_controller,
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
