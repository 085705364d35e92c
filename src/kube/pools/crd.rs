//! The `CloudifyNodePool` custom resource (issue 22): a worker pool declared with kubectl,
//! backed by one Cloudify deployment the provider creates, installs, updates and removes, and
//! served to CA as a node group.
//!
//! The schema is generated from these types (`CustomResourceExt::crd`) into the chart
//! (`deploy/helm/autoscaler-cloudify/crds/`; `tests/tooling/crd.rs` fails when it is stale). Its
//! CEL rules (`x-kubernetes-validations`) refuse at the API server what the controller could
//! only refuse later with a condition: `minSize <= maxSize`, and changes of the fields that name
//! the deployment (manager, tenant, blueprint, deployment id, scaling group), which a deployment
//! update cannot change.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// API group of the resource.
pub const GROUP: &str = "autoscaler.cloudify.io";
/// Finalizer the controller puts on every pool before it creates anything in Cloudify.
pub const FINALIZER: &str = "autoscaler.cloudify.io/deployment";

/// What a pool is: which manager and blueprint, the deployment's inputs, the scaling group CA
/// resizes, its bounds, and what CA needs to scale it from zero.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoscaler.cloudify.io",
    version = "v1alpha1",
    kind = "CloudifyNodePool",
    plural = "cloudifynodepools",
    shortname = "cnp",
    category = "autoscaler",
    status = "CloudifyNodePoolStatus",
    doc = "A Cloudify worker pool: one Cloudify deployment owned by autoscaler-cloudify, whose scaling group the Cluster Autoscaler resizes.",
    printcolumn = r#"{"name": "Deployment", "type": "string", "jsonPath": ".status.deploymentId"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Min", "type": "integer", "jsonPath": ".spec.minSize"}"#,
    printcolumn = r#"{"name": "Max", "type": "integer", "jsonPath": ".spec.maxSize"}"#,
    printcolumn = r#"{"name": "Current", "type": "integer", "jsonPath": ".status.currentSize"}"#,
    printcolumn = r#"{"name": "Target", "type": "integer", "jsonPath": ".status.targetSize"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.minSize <= self.maxSize").message("minSize must not exceed maxSize"),
    validation = Rule::new("self.manager == oldSelf.manager").message("manager is immutable: create another pool"),
    validation = Rule::new("self.tenant == oldSelf.tenant").message("tenant is immutable: create another pool"),
    validation = Rule::new("self.blueprintId == oldSelf.blueprintId").message("blueprintId is immutable: create another pool"),
    validation = Rule::new("self.deploymentId == oldSelf.deploymentId").message("deploymentId is immutable"),
    validation = Rule::new("self.scalingGroup == oldSelf.scalingGroup").message("scalingGroup is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct CloudifyNodePoolSpec {
    /// The `cloudify[]` entry of the provider configuration (by `name`) whose manager and tenant
    /// hold the deployment; empty: the first entry.
    #[serde(default)]
    pub manager: String,
    /// The tenant, when given: it must be the entry's (a check, not a choice: credentials are per
    /// entry). Empty: the entry's.
    #[serde(default)]
    pub tenant: String,
    /// An uploaded blueprint of that tenant with the scaling group below.
    #[x_kube(validation = Rule::new("self != ''").message("blueprintId is required"))]
    pub blueprint_id: String,
    /// The deployment's id; empty: `np-<pool name>`.
    #[serde(default)]
    pub deployment_id: String,
    /// Compute and storage of each VM, rendered as deployment inputs.
    #[serde(default)]
    pub compute: ComputeSpec,
    /// Further deployment inputs, passed as they are; they win over the `compute` ones of the
    /// same name.
    #[serde(default)]
    #[schemars(schema_with = "free_form_map")]
    pub inputs: BTreeMap<String, Value>,
    /// The scaling group of the deployment that is the node group.
    #[serde(default = "default_group")]
    pub scaling_group: String,
    /// Fewest VMs CA may scale the pool down to.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("minSize must not be negative"))]
    pub min_size: i32,
    /// Most VMs CA may scale the pool up to.
    #[x_kube(validation = Rule::new("self >= 0").message("maxSize must not be negative"))]
    pub max_size: i32,
    /// What a new VM's Node will look like, for scale-from-zero. Capacity not given here comes
    /// from the configuration's flavor table for `compute.flavor`.
    #[serde(default)]
    pub template: PoolTemplate,
    /// Price per VM-hour, for CA's `price` expander; none: the configuration's default.
    #[serde(default)]
    pub price_per_hour: Option<f64>,
    /// Per-group CA options (`NodeGroupGetOptions`).
    #[serde(default)]
    pub autoscaling_options: PoolOptions,
}

fn default_group() -> String {
    "workers".into()
}

fn free_form_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Compute and storage of a pool's VMs. Each field set becomes the deployment input of the
/// same name in snake case (`flavor`, `image`, `volume_size`, `network`, `site`); the blueprint
/// must declare it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSpec {
    /// Flavor / instance type (also the Node's `node.kubernetes.io/instance-type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Image of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Root or data volume size in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<i64>,
    /// Network the VM's port is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Site, zone or cloud the VMs run in (also the Node's `topology.kubernetes.io/zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// A Node taint of the template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct PoolTaint {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default)]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`. An OpenAPI enum, not a CEL rule: the
    /// API server estimates a CEL rule on an item of an unbounded list over its cost budget
    /// (seen on kube-apiserver 1.36: "estimated rule cost exceeds budget by factor of 1.47x").
    #[schemars(extend("enum" = ["NoSchedule", "PreferNoSchedule", "NoExecute"]))]
    pub effect: String,
}

/// The Node CA imagines for a pool with no VM (scale from zero).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct PoolTemplate {
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    #[serde(default)]
    pub taints: Vec<PoolTaint>,
    /// Capacity (`cpu`, `memory`, `pods`, `nvidia.com/gpu`, ...), Kubernetes quantities.
    #[serde(default)]
    pub capacity: BTreeMap<String, String>,
    /// Allocatable, when it differs from capacity.
    #[serde(default)]
    pub allocatable: BTreeMap<String, String>,
}

/// Per-group CA options; unset ones fall back to CA's flags.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolOptions {
    /// `scaleDownUtilizationThreshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_utilization_threshold: Option<f64>,
    /// `scaleDownGpuUtilizationThreshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_gpu_utilization_threshold: Option<f64>,
    /// `scaleDownUnneededTime`, a duration such as `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_unneeded_time: Option<String>,
    /// `scaleDownUnreadyTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_unready_time: Option<String>,
    /// `maxNodeProvisionTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_node_provision_time: Option<String>,
    /// `zeroOrMaxNodeScaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_or_max_node_scaling: Option<bool>,
    /// `ignoreDaemonSetsUtilization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_daemonsets_utilization: Option<bool>,
}

/// One condition of a pool (the `metav1.Condition` shape).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolCondition {
    /// `Created`, `Installed`, `Ready`, `Failed` or `Deleting`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// For a person.
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    #[serde(default)]
    pub last_transition_time: String,
    /// The generation it was set for.
    #[serde(default)]
    pub observed_generation: i64,
}

/// The last lifecycle execution the controller followed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRef {
    /// Execution id.
    pub id: String,
    /// `install`, `uninstall`, `update`, `create_deployment_environment`, ...
    pub workflow: String,
    /// Cloudify's status.
    pub status: String,
    /// The last line of Cloudify's error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the controller found and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudifyNodePoolStatus {
    /// `Creating`, `Installing`, `Ready`, `Updating`, `Failed`, `Deleting`.
    #[serde(default)]
    pub phase: String,
    /// The Cloudify deployment.
    #[serde(default)]
    pub deployment_id: String,
    /// The node group id CA knows it by.
    #[serde(default)]
    pub node_group_id: String,
    /// VMs the scaling group has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_size: Option<i32>,
    /// VMs it is heading for (queued scales included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_size: Option<i32>,
    /// The last lifecycle execution followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_execution: Option<ExecutionRef>,
    /// Failed installs (or uninstalls) in a row: the backoff's exponent.
    #[serde(default)]
    pub failures: u32,
    /// No retry before this instant (RFC 3339), after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// The generation whose inputs the last deployment update applied: a failed update is not
    /// retried until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_generation: Option<i64>,
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<PoolCondition>,
    /// The generation this status describes.
    #[serde(default)]
    pub observed_generation: i64,
}

impl CloudifyNodePoolSpec {
    /// The deployment id: `deploymentId`, else `np-<pool name>`.
    pub fn deployment_for(&self, pool_name: &str) -> String {
        if self.deployment_id.is_empty() {
            format!("np-{pool_name}")
        } else {
            self.deployment_id.clone()
        }
    }

    /// The deployment inputs: `compute` as snake-case inputs, then `inputs` over them.
    pub fn deployment_inputs(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        let c = &self.compute;
        let typed = [
            ("flavor", c.flavor.clone().map(Value::from)),
            ("image", c.image.clone().map(Value::from)),
            ("volume_size", c.volume_size.map(Value::from)),
            ("network", c.network.clone().map(Value::from)),
            ("site", c.site.clone().map(Value::from)),
        ];
        for (k, v) in typed {
            if let Some(v) = v {
                out.insert(k.to_owned(), v);
            }
        }
        for (k, v) in &self.inputs {
            out.insert(k.clone(), v.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use kube::core::cel::{validate_cel, validate_cel_update};
    use serde_json::json;

    use super::*;

    fn pool(spec: Value) -> CloudifyNodePool {
        serde_json::from_value(json!({
            "apiVersion": "autoscaler.cloudify.io/v1alpha1",
            "kind": "CloudifyNodePool",
            "metadata": {"name": "gpu-a"},
            "spec": spec,
        }))
        .expect("a pool")
    }

    fn base() -> Value {
        json!({"blueprintId": "k8s-worker-pool", "minSize": 0, "maxSize": 4})
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        v[key] = value;
        v
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_a_short_name_and_print_columns() {
        let crd = CloudifyNodePool::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names, Some(vec!["cnp".to_string()]));
        let version = &crd.spec.versions[0];
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Deployment",
                "Phase",
                "Min",
                "Max",
                "Current",
                "Target",
                "Age"
            ]
        );
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let schema = serde_json::to_string(&crd).expect("json");
        assert!(schema.contains("x-kubernetes-preserve-unknown-fields"));
    }

    #[test]
    fn min_above_max_and_negative_sizes_are_refused() {
        validate_cel(&pool(base())).expect("a valid pool");
        let err = validate_cel(&pool(with(base(), "minSize", json!(5)))).expect_err("min > max");
        assert!(
            err.to_string().contains("minSize must not exceed maxSize"),
            "{err}"
        );
        let err = validate_cel(&pool(with(
            with(base(), "minSize", json!(-1)),
            "maxSize",
            json!(-1),
        )))
        .expect_err("negative");
        assert!(err.to_string().contains("must not be negative"), "{err}");
        let err =
            validate_cel(&pool(with(base(), "blueprintId", json!("")))).expect_err("no blueprint");
        assert!(err.to_string().contains("blueprintId is required"), "{err}");
    }

    #[test]
    fn the_fields_naming_the_deployment_are_immutable_and_the_rest_is_not() {
        let old = pool(base());
        for (field, value, message) in [
            ("blueprintId", json!("other"), "blueprintId is immutable"),
            (
                "deploymentId",
                json!("np-other"),
                "deploymentId is immutable",
            ),
            ("scalingGroup", json!("gpu"), "scalingGroup is immutable"),
            ("manager", json!("edge"), "manager is immutable"),
            ("tenant", json!("t2"), "tenant is immutable"),
        ] {
            let new = pool(with(base(), field, value));
            let err = validate_cel_update(&new, &old).expect_err(field);
            assert!(err.to_string().contains(message), "{field}: {err}");
        }
        let resized = pool(with(
            with(
                with(base(), "maxSize", json!(9)),
                "pricePerHour",
                json!(0.5),
            ),
            "compute",
            json!({"flavor": "m1.large"}),
        ));
        validate_cel_update(&resized, &old).expect("sizes, price and inputs may change");
    }

    #[test]
    fn taint_effects_are_an_enum_of_the_three_kubernetes_ones() {
        let crd = serde_json::to_value(CloudifyNodePool::crd()).expect("json");
        let effect = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["template"]["properties"]["taints"]["items"]["properties"]["effect"];
        assert_eq!(
            effect["enum"],
            json!(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
            "{effect}"
        );
    }

    #[test]
    fn the_example_pool_parses_and_passes_the_rules() {
        let text = include_str!("../../../deploy/cloudify/cloudifynodepool-example.yaml");
        let example: CloudifyNodePool = serde_saphyr::from_str(text).expect("the example parses");
        validate_cel(&example).expect("the example is valid");
        assert_eq!(example.spec.max_size, 8);
        assert_eq!(
            example.spec.deployment_inputs().get("volume_size"),
            Some(&json!(100))
        );
    }

    #[test]
    fn inputs_come_from_compute_then_the_free_form_map() {
        let p = pool(with(
            with(
                base(),
                "compute",
                json!({"flavor": "g1.xlarge", "volumeSize": 80, "site": "zone-a"}),
            ),
            "inputs",
            json!({"site": "zone-b", "ssh_key": "k"}),
        ));
        assert_eq!(
            Value::Object(p.spec.deployment_inputs()),
            json!({"flavor": "g1.xlarge", "volume_size": 80, "site": "zone-b", "ssh_key": "k"})
        );
        assert_eq!(p.spec.deployment_for("gpu-a"), "np-gpu-a");
        assert_eq!(p.spec.scaling_group, "workers");
    }
}
