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
        lease: lease(&raw.lease, ov)?,
    })
}

fn lease(raw: &super::raw::RawLease, ov: &Overrides) -> Result<LeaseConfig, ConfigError> {
    let d = LeaseConfig::default();
    let mode_text = match (&ov.leader_elect, &raw.enabled) {
        (Some(v), _) => Some(("--leader-elect", v.clone())),
        (None, Some(serde_yaml::Value::Bool(b))) => Some(("lease.enabled", b.to_string())),
        (None, Some(serde_yaml::Value::String(s))) => Some(("lease.enabled", s.clone())),
        (None, Some(other)) => {
            return Err(ConfigError::invalid(
                "lease.enabled",
                format!("expected auto, true or false, got {other:?}"),
            ));
        }
        (None, None) => None,
    };
    let mode = match mode_text {
        None => d.mode,
        Some((key, v)) => match v.trim() {
            "auto" => LeaseMode::Auto,
            "true" | "on" => LeaseMode::On,
            "false" | "off" => LeaseMode::Off,
            other => {
                return Err(ConfigError::invalid(
                    key,
                    format!("expected auto, true or false, got {other:?}"),
                ));
            }
        },
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
    Ok(LeaseConfig {
        mode,
        name,
        namespace,
        duration: duration_,
        renew_deadline,
        renew_period,
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
