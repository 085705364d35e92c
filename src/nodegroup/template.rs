//! The pure builders behind the [`GroupCatalog`](super::GroupCatalog): the template `v1.Node`
//! of a group (scale-from-zero), the labels its Nodes carry, and CA's autoscaling options merged
//! with the configured ones.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::{GroupSettings, OptionsSpec, TemplateSpec};
use crate::inventory::NodeGroup;

/// CA's autoscaling options for one group (durations optional, as on the wire).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoscalingOptions {
    /// Proto field 1: CA's `--scale-down-utilization-threshold`, a fraction (0..1).
    pub scale_down_utilization_threshold: f64,
    /// Proto field 2: the same for GPU nodes (`--scale-down-gpu-utilization-threshold`).
    pub scale_down_gpu_utilization_threshold: f64,
    /// Proto fields 8, legacy 3 (`--scale-down-unneeded-time`); `None` when CA sent neither.
    pub scale_down_unneeded_time: Option<Duration>,
    /// Proto fields 9, legacy 4 (`--scale-down-unready-time`); `None` when CA sent neither.
    pub scale_down_unready_time: Option<Duration>,
    /// Proto fields 10, legacy 5 (`--max-node-provision-time`); `None` when CA sent neither.
    pub max_node_provision_time: Option<Duration>,
    /// Proto field 6: scale only to 0 or to max (`--zero-or-max-node-scaling`).
    pub zero_or_max_node_scaling: bool,
    /// Proto field 7: `--ignore-daemonsets-utilization`.
    pub ignore_daemonsets_utilization: bool,
}

/// Start from CA's defaults and override only what is configured (CA issue #5935: an answer
/// that drops a duration makes CA use 0 for it).
pub fn merge_options(defaults: AutoscalingOptions, spec: &OptionsSpec) -> AutoscalingOptions {
    AutoscalingOptions {
        scale_down_utilization_threshold: spec
            .scale_down_utilization_threshold
            .unwrap_or(defaults.scale_down_utilization_threshold),
        scale_down_gpu_utilization_threshold: spec
            .scale_down_gpu_utilization_threshold
            .unwrap_or(defaults.scale_down_gpu_utilization_threshold),
        scale_down_unneeded_time: spec
            .scale_down_unneeded_time
            .or(defaults.scale_down_unneeded_time),
        scale_down_unready_time: spec
            .scale_down_unready_time
            .or(defaults.scale_down_unready_time),
        max_node_provision_time: spec
            .max_node_provision_time
            .or(defaults.max_node_provision_time),
        zero_or_max_node_scaling: spec
            .zero_or_max_node_scaling
            .unwrap_or(defaults.zero_or_max_node_scaling),
        ignore_daemonsets_utilization: spec
            .ignore_daemonsets_utilization
            .unwrap_or(defaults.ignore_daemonsets_utilization),
    }
}

fn q(s: &str) -> Quantity {
    Quantity {
        string: Some(s.to_owned()),
    }
}

/// The well-known topology labels of a group's Nodes: instance type, region and zone (the zone
/// defaults to the deployment's Cloudify site). The node controller puts the same ones on real
/// Nodes, so scale-from-zero templates and joined Nodes agree.
pub fn topology_labels(g: &NodeGroup, settings: &GroupSettings) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let zone = settings.zone.clone().or_else(|| g.site.clone());
    for (key, value) in [
        (INSTANCE_TYPE_LABEL, settings.instance_type.clone()),
        (REGION_LABEL, settings.region.clone()),
        (ZONE_LABEL, zone),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            labels.insert(key.to_owned(), v);
        }
    }
    labels
}

/// Carries a group's `instance_type` on its template and joined Nodes.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// Carries a group's `region` on its template and joined Nodes.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Carries a group's `zone`, else its deployment's Cloudify site.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The labels every Node of a group carries besides the template's own: the Cloudify
/// deployment and scaling group (and the manager's name with several managers).
pub fn group_labels(g: &NodeGroup, prefixed_manager: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("cloudify.co/deployment".to_owned(), g.deployment.clone()),
        ("cloudify.co/scaling-group".to_owned(), g.group.clone()),
    ]);
    if let Some(m) = prefixed_manager {
        labels.insert("cloudify.co/manager".into(), m.to_owned());
    }
    labels
}

/// Builds the template `v1.Node` of a group.
pub fn template_node(
    g: &NodeGroup,
    settings: &GroupSettings,
    spec: &TemplateSpec,
    prefixed_manager: Option<&str>,
) -> core::Node {
    let name = format!("template-{}-{}", g.deployment, g.group)
        .to_ascii_lowercase()
        .replace('_', "-");
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ("kubernetes.io/hostname".to_owned(), name.clone()),
    ]);
    labels.extend(group_labels(g, prefixed_manager));
    labels.extend(topology_labels(g, settings));
    labels.extend(spec.labels.clone());
    let mut capacity: BTreeMap<String, Quantity> = spec
        .capacity
        .iter()
        .map(|(k, v)| (k.clone(), q(v)))
        .collect();
    // Without `pods` the scheduler's fit check rejects every pod on the template.
    capacity.entry("pods".into()).or_insert_with(|| q("110"));
    let mut allocatable = capacity.clone();
    allocatable.extend(spec.allocatable.iter().map(|(k, v)| (k.clone(), q(v))));
    let condition = |t: &str, status: &str, reason: &str| core::NodeCondition {
        r#type: Some(t.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        ..Default::default()
    };
    let arch = labels.get("kubernetes.io/arch").cloned();
    let os = labels.get("kubernetes.io/os").cloned();
    core::Node {
        metadata: Some(ObjectMeta {
            name: Some(name),
            labels,
            ..Default::default()
        }),
        spec: Some(core::NodeSpec {
            taints: spec
                .taints
                .iter()
                .map(|t| core::Taint {
                    key: Some(t.key.clone()),
                    value: Some(t.value.clone()),
                    effect: Some(t.effect.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            capacity,
            allocatable,
            phase: Some("Running".into()),
            conditions: vec![
                condition("Ready", "True", "KubeletReady"),
                condition("NetworkUnavailable", "False", "RouteCreated"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            node_info: Some(core::NodeSystemInfo {
                operating_system: os,
                architecture: arch,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
