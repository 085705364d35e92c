//! Parsers of single field values (key paths, durations, addresses, secret files, quantities),
//! shared by the top-level validation (`validate.rs`) and the node-group validation
//! (`groups.rs`). They know nothing of the file's shape, so `groups` need not import `validate`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;

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

/// A humantime duration (`10s`, `1m30s`, `250ms`).
pub(super) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        ConfigError::invalid(
            key,
            format!("invalid duration {text:?} (expected e.g. 10s, 1m30s or 500ms)"),
        )
    })
}

/// A `host:port` listen address.
pub(super) fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("invalid address {text:?} (expected host:port, e.g. 0.0.0.0:8086)"),
        )
    })
}

/// A secret kept in a file (a mounted Kubernetes Secret): its text without the trailing newline
/// that `echo` and most editors add.
pub(super) fn read_secret_file(key: &str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {path:?}: {e}")))
}

/// A Kubernetes quantity as written in the file: YAML reads `cpu: 4` as a number and
/// `memory: 16Gi` as a string, and both are meant.
#[derive(Debug, Clone, PartialEq)]
pub enum RawQuantity {
    /// Written as text (`"3800m"`, `16Gi`).
    Text(String),
    /// Written as a whole number (`4`, `110`).
    Integer(i64),
    /// Written as a decimal number (`0.5`).
    Decimal(f64),
}

impl<'de> Deserialize<'de> for RawQuantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawQuantity;
            // Serde's message for anything else: "invalid type: boolean `true`, expected …".
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quantity such as \"4\", \"3800m\" or \"16Gi\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawQuantity, E> {
                Ok(RawQuantity::Text(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawQuantity, E> {
                Ok(RawQuantity::Integer(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawQuantity, E> {
                i64::try_from(v)
                    .map(RawQuantity::Integer)
                    .map_err(|_| E::custom(format!("quantity {v} is too large")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawQuantity, E> {
                Ok(RawQuantity::Decimal(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A switch that is a boolean or a word (`lease.enabled: true` or `auto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSwitch {
    /// Written as a boolean.
    Bool(bool),
    /// Written as text (`auto`, `true`, `false`).
    Text(String),
}

impl<'de> Deserialize<'de> for RawSwitch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSwitch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("auto, true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawSwitch, E> {
                Ok(RawSwitch::Bool(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSwitch, E> {
                Ok(RawSwitch::Text(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A size in bytes: a whole number of bytes, or a number with a binary suffix (`512Ki`,
/// `16Mi`, `1Gi`), between `min` and `max`.
pub(super) fn byte_size(
    key: &str,
    v: &RawQuantity,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let invalid = |text: &str| {
        ConfigError::invalid(
            key,
            format!("invalid size {text:?} (bytes, or a number with Ki, Mi or Gi, e.g. 16Mi)"),
        )
    };
    let bytes = match v {
        RawQuantity::Integer(n) => u64::try_from(*n).map_err(|_| invalid(&n.to_string()))?,
        RawQuantity::Decimal(x) => return Err(invalid(&x.to_string())),
        RawQuantity::Text(s) => {
            let t = s.trim();
            let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
                Some(i) => t.split_at(i),
                None => (t, ""),
            };
            let unit = match unit {
                "" => 1,
                "Ki" => 1 << 10,
                "Mi" => 1 << 20,
                "Gi" => 1 << 30,
                _ => return Err(invalid(s)),
            };
            num.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(unit))
                .ok_or_else(|| invalid(s))?
        }
    };
    if !(min..=max).contains(&bytes) {
        return Err(ConfigError::invalid(
            key,
            format!("{bytes} bytes is not between {min} and {max}"),
        ));
    }
    Ok(bytes)
}

/// Checks a quantity as Kubernetes parses it ([`Quantity`](super::Quantity)) and returns its text;
/// a capacity or allocatable below zero is refused (a Node's resources cannot be).
pub(super) fn quantity(key: &str, v: &RawQuantity) -> Result<String, ConfigError> {
    let text = match v {
        RawQuantity::Text(s) => s.trim().to_owned(),
        RawQuantity::Integer(n) => n.to_string(),
        RawQuantity::Decimal(x) => x.to_string(),
    };
    match super::quantity::Quantity::parse(&text) {
        Ok(q) if q.is_negative() => Err(ConfigError::invalid(
            key,
            format!("{text:?} is negative (a Node's resources are at least 0)"),
        )),
        Ok(_) => Ok(text),
        Err(e) => Err(ConfigError::invalid(
            key,
            format!(
                "invalid quantity {text:?}: {e} (expected {})",
                super::quantity::QUANTITY_FORMS
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_quote_what_is_not_an_identifier() {
        assert_eq!(
            key_path(&["node_groups", "groups", "a/b", "min"]),
            "node_groups.groups.\"a/b\".min"
        );
        assert_eq!(key_path(&["refresh", ""]), "refresh.\"\"");
    }

    #[test]
    fn quantities_are_read_as_kubernetes_reads_them() {
        let ok = |q: RawQuantity| quantity("k", &q).expect("valid");
        assert_eq!(ok(RawQuantity::Integer(4)), "4");
        assert_eq!(ok(RawQuantity::Decimal(0.5)), "0.5");
        assert_eq!(ok(RawQuantity::Text(" 16Gi ".into())), "16Gi");
        assert_eq!(ok(RawQuantity::Text("3800m".into())), "3800m");
        // Issue 21: forms Kubernetes accepts that the old hand-written check refused.
        assert_eq!(ok(RawQuantity::Text("1e3".into())), "1e3");
        assert_eq!(ok(RawQuantity::Text("250u".into())), "250u");
        let e = quantity("t.capacity.cpu", &RawQuantity::Text("4 cores".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.capacity.cpu: invalid quantity \"4 cores\": not a number")
                && e.contains("e.g. 4, 3800m, 16Gi, 1e3"),
            "{e}"
        );
        // ... and forms it refuses that the old check let through.
        for bad in ["1e3Ki", "1.5E+2k", "1.2.3", "-4", "-1Gi"] {
            assert!(
                quantity("k", &RawQuantity::Text(bad.into())).is_err(),
                "{bad}"
            );
        }
        assert!(
            quantity("k", &RawQuantity::Integer(-2))
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
    }

    #[test]
    fn byte_sizes_take_bytes_or_binary_suffixes_within_bounds() {
        let size = |q: RawQuantity| byte_size("k", &q, 1024, 1 << 30);
        assert_eq!(size(RawQuantity::Integer(4096)).expect("bytes"), 4096);
        assert_eq!(
            size(RawQuantity::Text("16Mi".into())).expect("Mi"),
            16 << 20
        );
        assert_eq!(
            size(RawQuantity::Text(" 512Ki ".into())).expect("Ki"),
            512 << 10
        );
        assert_eq!(
            size(RawQuantity::Text("16MB".into()))
                .unwrap_err()
                .to_string(),
            "k: invalid size \"16MB\" (bytes, or a number with Ki, Mi or Gi, e.g. 16Mi)"
        );
        assert_eq!(
            size(RawQuantity::Text("2Gi".into()))
                .unwrap_err()
                .to_string(),
            "k: 2147483648 bytes is not between 1024 and 1073741824"
        );
        assert!(size(RawQuantity::Integer(-1)).is_err());
        assert!(size(RawQuantity::Decimal(1.5)).is_err());
    }

    #[test]
    fn secret_files_lose_only_the_trailing_newline() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret \n").expect("write");
        let path = path.display().to_string();
        assert_eq!(read_secret_file("k", &path).expect("read"), "s3cret ");
        let e = read_secret_file("cloudify[0].token_file", "/nonexistent/token")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cloudify[0].token_file: cannot read \"/nonexistent/token\""),
            "{e}"
        );
    }
}
