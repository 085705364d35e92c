//! Template nodes (scale-from-zero), GPU types, autoscaling options and pricing: answers computed
//! from configuration, never from Cloudify.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prost::Message;

use super::{DomainError, NodeGroupService};
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

/// A CPU quantity in cores, read as Kubernetes reads it (`500m`, `2`, `1e-3`, `250u`; issue 21).
fn cpu_cores(text: &str) -> Option<f64> {
    crate::config::Quantity::parse(text.trim())
        .ok()
        .map(|q| q.as_f64())
}

impl NodeGroupService {
    /// The encoded template node of a group; `NotImplemented` when none is configured (never an
    /// empty answer: CA >= 1.35 dereferences a nil NodeInfo).
    pub fn template_node_info(&self, id: &str) -> Result<Arc<Vec<u8>>, DomainError> {
        let snap = self.inventory.peek();
        let g = Self::group(&snap, id)?;
        // Keyed by everything of the group the template reads that a refresh can change: the
        // site gives the zone when none is configured (issue 21: a deployment moved to another
        // site kept the old zone). The rest comes from the id and the configuration.
        let key = (id.to_owned(), g.site.clone());
        if let Some(bytes) = self.templates.get(&key) {
            return Ok(bytes);
        }
        let settings = self.config().settings_for(id);
        let spec = settings.template.clone().ok_or_else(|| {
            DomainError::NotImplemented(format!(
                "node group {id:?} has no template node configured"
            ))
        })?;
        let manager = (self.inventory.sources().len() > 1)
            .then(|| {
                self.inventory
                    .sources()
                    .get(g.source)
                    .map(|c| c.name().to_owned())
            })
            .flatten();
        let bytes =
            Arc::new(template_node(g, &settings, &spec, manager.as_deref()).encode_to_vec());
        self.templates.insert(key, Arc::clone(&bytes));
        Ok(bytes)
    }

    /// The GPULabel RPC: the configured `gpu_label` (default `cloudify.co/gpu-type`).
    pub fn gpu_label(&self) -> String {
        self.settings.gpu_label.clone()
    }

    /// GPU types offered by any template (values of the GPU label).
    pub fn gpu_types(&self) -> Vec<String> {
        let cfg = self.config();
        let mut types: Vec<String> = cfg
            .groups
            .values()
            .chain(std::iter::once(&cfg.defaults))
            .filter_map(|g| g.template.as_ref())
            .filter_map(|t| t.labels.get(&self.settings.gpu_label).cloned())
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// NodeGroupGetOptions: `NotImplemented` unless options are configured for the group.
    pub fn options(
        &self,
        id: &str,
        defaults: AutoscalingOptions,
    ) -> Result<AutoscalingOptions, DomainError> {
        let snap = self.inventory.peek();
        Self::group(&snap, id)?;
        let spec = self.config().settings_for(id).options.ok_or_else(|| {
            DomainError::NotImplemented(format!("no autoscaling options configured for {id:?}"))
        })?;
        Ok(merge_options(defaults, &spec))
    }

    /// Price of a node for `[start, end]`: the group's hourly price times the hours. The node is
    /// found as an instance, or (template nodes CA builds from our templates) by its labels.
    pub fn node_price(
        &self,
        provider_id: &str,
        name: &str,
        labels: &std::collections::HashMap<String, String>,
        hours: f64,
    ) -> Result<f64, DomainError> {
        let snap = self.inventory.peek();
        let group_id = match snap
            .lookup(provider_id, name)
            .and_then(|r| snap.instance(r))
        {
            Some((g, _)) => Some(g.id.clone()),
            None => {
                let dep = labels.get("cloudify.co/deployment");
                let grp = labels.get("cloudify.co/scaling-group");
                snap.groups
                    .iter()
                    .find(|g| Some(&g.deployment) == dep && Some(&g.group) == grp)
                    .map(|g| g.id.clone())
            }
        };
        let price = group_id
            .and_then(|id| self.config().settings_for(&id).price_per_hour)
            .ok_or_else(|| {
                DomainError::NotImplemented(format!("no price configured for node {name:?}"))
            })?;
        Ok(price * hours.max(0.0))
    }

    /// Price of a pod for `hours`: its CPU requests at the cheapest configured price per core.
    pub fn pod_price(&self, pod: &[u8], hours: f64) -> Result<f64, DomainError> {
        let cfg = self.config();
        let per_core = cfg
            .groups
            .keys()
            .map(|id| cfg.settings_for(id))
            .filter_map(|s| {
                let cores = s
                    .template
                    .as_ref()?
                    .capacity
                    .get("cpu")
                    .and_then(|c| cpu_cores(c))?;
                (cores > 0.0).then_some(s.price_per_hour? / cores)
            })
            .fold(None, |acc: Option<f64>, p| {
                Some(acc.map_or(p, |a| a.min(p)))
            })
            .ok_or_else(|| DomainError::NotImplemented("no prices configured".into()))?;
        let pod = core::Pod::decode(pod)
            .map_err(|e| DomainError::InvalidArgument(format!("cannot decode pod: {e}")))?;
        let cores: f64 = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter_map(|c| c.resources.as_ref()?.requests.get("cpu")?.string.clone())
            .filter_map(|c| cpu_cores(&c))
            .sum();
        Ok(cores * per_core * hours.max(0.0))
    }
}
