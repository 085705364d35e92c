//! Validation of `node_groups`: static and discovered group selection, per-group settings,
//! templates and options.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::ConfigError;
use super::fields::{duration, key_path, quantity};
use super::model::{
    AddressProperties, Discovery, GroupSettings, NodeGroupsConfig, OptionsSpec, StaticGroup,
    TaintSpec, TemplateSpec,
};
use super::provider_id::ProviderIdTemplate;
use super::raw::{RawConfig, RawGroup, RawOptions, RawTemplate};
use crate::cloudify::ClientSettings;

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

pub(super) fn node_groups(
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
                format!("{n} is not a valid size (a whole number from 0 to 2147483647)"),
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
    for (field, v) in [
        ("node_name_property", &g.node_name_property),
        ("joining_node", &g.joining_node),
    ] {
        if v.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::invalid(key(&[field]), "must not be empty"));
        }
    }
    if let Some(p) = g.price_per_hour
        && !(p.is_finite() && p >= 0.0)
    {
        return Err(ConfigError::invalid(
            key(&["price_per_hour"]),
            format!("{p} is not a price (a number >= 0, per node and hour)"),
        ));
    }
    for (field, v) in [
        ("instance_type", &g.instance_type),
        ("region", &g.region),
        ("zone", &g.zone),
    ] {
        if let Some(v) = v {
            label_value(&key(&[field]), v)?;
        }
    }
    let address_properties = match &g.address_properties {
        None => None,
        Some(a) => {
            let d = AddressProperties::default();
            let pick = |f: &str, v: &Option<String>, default: String| match v {
                Some(p) if p.is_empty() => Err(ConfigError::invalid(
                    key(&["address_properties", f]),
                    "must not be empty",
                )),
                Some(p) => Ok(p.clone()),
                None => Ok(default),
            };
            Some(AddressProperties {
                internal_ip: pick("internal_ip", &a.internal_ip, d.internal_ip)?,
                external_ip: pick("external_ip", &a.external_ip, d.external_ip)?,
                hostname: pick("hostname", &a.hostname, d.hostname)?,
            })
        }
    };
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
        joining_node: g.joining_node.clone(),
        price_per_hour: g.price_per_hour,
        instance_type: g.instance_type.clone(),
        region: g.region.clone(),
        zone: g.zone.clone(),
        address_properties,
        template,
        options,
    })
}

/// A Kubernetes label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric; the API server would refuse the Node patch otherwise.
pub(super) fn label_value(key: &str, v: &str) -> Result<(), ConfigError> {
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "{v:?} is not a valid Kubernetes label value (at most 63 of A-Z a-z 0-9 . _ -, \
                 beginning and ending with a letter or digit)"
            ),
        ))
    }
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
