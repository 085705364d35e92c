//! The configuration file as written (YAML), before validation. Unknown keys are errors so that a
//! typo does not silently fall back to a default.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::fields::{RawQuantity, RawSwitch};

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub grpc: RawGrpc,
    pub http: RawHttp,
    pub log: RawLog,
    pub refresh: RawRefresh,
    pub lease: RawLease,
    pub cloudify: Vec<RawCloudify>,
    pub node_groups: RawNodeGroups,
    pub gpu_label: Option<String>,
    pub node_controller: RawNodeController,
    pub load_balancers: RawLoadBalancers,
    pub pools: RawPools,
}

/// The `pools:` section (issue 22).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPools {
    pub enabled: Option<bool>,
    pub cluster_labels: std::collections::BTreeMap<String, String>,
    pub flavors: BTreeMap<String, BTreeMap<String, RawQuantity>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLoadBalancers {
    pub enabled: Option<bool>,
    pub class: Option<String>,
    pub class_less: Option<bool>,
    pub cluster_name: Option<String>,
    pub deployment_prefix: Option<String>,
    pub default_manager: Option<String>,
    pub blueprints: BTreeMap<String, RawLbBlueprint>,
    pub address_type: Option<String>,
    pub exclude_not_ready: Option<bool>,
    pub poll_interval: Option<String>,
    pub resync_interval: Option<String>,
    pub concurrency: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLbBlueprint {
    pub blueprint_id: Option<String>,
    pub protocols: Option<Vec<String>>,
    pub inputs: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawNodeController {
    pub enabled: Option<bool>,
    pub max_deletions_per_refresh: Option<i64>,
    pub min_node_age: Option<String>,
    pub managed_provider_id_prefixes: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAddresses {
    pub internal_ip: Option<String>,
    pub external_ip: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawGrpc {
    pub listen: Option<String>,
    pub tls: Option<RawTls>,
    pub insecure: Option<bool>,
    pub drain_timeout: Option<String>,
    pub keepalive_interval: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_connections: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub header_read_timeout: Option<String>,
    pub max_connections: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRefresh {
    pub interval: Option<String>,
    pub max_age: Option<String>,
    pub full_every: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLease {
    pub enabled: Option<RawSwitch>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub duration: Option<String>,
    pub renew_deadline: Option<String>,
    pub renew_period: Option<String>,
    pub leader_label: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCloudify {
    pub name: Option<String>,
    pub url: Option<String>,
    pub tenant: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub ca_cert_file: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub request_timeout: Option<String>,
    pub max_response_size: Option<RawQuantity>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawNodeGroups {
    #[serde(rename = "static")]
    pub static_groups: Vec<String>,
    pub auto_discovery: Vec<String>,
    pub unbounded_max: Option<i64>,
    pub defaults: RawGroup,
    pub groups: BTreeMap<String, RawGroup>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawGroup {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub provider_id_template: Option<String>,
    pub node_name_property: Option<String>,
    pub joining_node: Option<String>,
    pub price_per_hour: Option<f64>,
    pub instance_type: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub address_properties: Option<RawAddresses>,
    pub template: Option<RawTemplate>,
    pub options: Option<RawOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTemplate {
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<RawTaint>,
    pub capacity: BTreeMap<String, RawQuantity>,
    pub allocatable: BTreeMap<String, RawQuantity>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTaint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOptions {
    pub scale_down_utilization_threshold: Option<f64>,
    pub scale_down_gpu_utilization_threshold: Option<f64>,
    pub scale_down_unneeded_time: Option<String>,
    pub scale_down_unready_time: Option<String>,
    pub max_node_provision_time: Option<String>,
    pub zero_or_max_node_scaling: Option<bool>,
    pub ignore_daemonsets_utilization: Option<bool>,
}
