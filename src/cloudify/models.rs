//! Serde models of the Cloudify answers this service reads. Every field is tolerant: missing,
//! `null` or oddly typed values fall back to a default instead of failing the whole page, because
//! one malformed instance must not hide a whole node pool from the autoscaler.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub use super::execution_status::ExecutionStatus;

/// Deserializes `T`, or `T::default()` when the value is `null` or has another shape.
pub(super) fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).unwrap_or_default())
}

/// Like [`lenient`], but numbers given as strings (`"3"`) are accepted too.
fn lenient_i64<'de, D>(d: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(value_as_i64(&Value::deserialize(d)?))
}

/// A Cloudify timestamp, RFC 3339 or without a zone (then UTC), to the second; `None` for text
/// that is no time or a time before 1970.
pub fn parse_timestamp(s: &str) -> Option<std::time::SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&chrono::Utc))
        .or_else(|_| {
            // Cloudify often omits the zone ("2026-11-27T23:00:00.123"): it is UTC.
            chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .map(|n| n.and_utc())
        })
        .ok()?;
    let secs = u64::try_from(t.timestamp()).ok()?;
    Some(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Reads an integer from a JSON number or a numeric string.
pub fn value_as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A page of a list endpoint.
#[derive(Debug, Deserialize)]
pub struct ListPage<T> {
    /// The items of this page. Required: Cloudify always sends it, and a 200 answer without it
    /// (`{}`, `[]`, a proxy's placeholder) must fail the refresh instead of reading as an empty
    /// manager, which would tell CA that every node vanished (issue #7).
    pub items: Vec<T>,
    /// Absent or malformed: no total, so the first page is taken as the whole list.
    #[serde(default, deserialize_with = "lenient")]
    pub metadata: ListMetadata,
}

/// A list item that carries an id. An item without one (missing, `null`, a number) means the
/// answer is not what we think it is: the whole page is rejected rather than silently dropping
/// the item, because a dropped deployment or VM looks to CA like a deleted node pool or node.
pub trait Identified {
    /// The id (`""` when the answer had none).
    fn id(&self) -> &str;
    /// What tells two items of one list apart (paging drops an item seen twice): the id,
    /// unless ids repeat across deployments.
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.id())
    }
}

impl Identified for Node {
    fn id(&self) -> &str {
        &self.id
    }

    /// Node ids are template names: every deployment of a blueprint has a `worker_host`. Keyed
    /// by id alone, a list of several deployments' nodes kept the first deployment's only.
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(format!("{}/{}", self.deployment_id, self.id))
    }
}

macro_rules! identified {
    ($($t:ty),*) => {$(
        impl Identified for $t {
            fn id(&self) -> &str {
                &self.id
            }
        }
    )*};
}
identified!(Deployment, NodeInstance, Execution, DeploymentModification);

/// `metadata` of a list answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListMetadata {
    /// Only `pagination.total` is read.
    #[serde(deserialize_with = "lenient")]
    pub pagination: Pagination,
}

/// `metadata.pagination` of a list answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pagination {
    /// Items matching the query over all pages: paging stops when the offset reaches it, and a
    /// total that changes between pages restarts the listing. `None`: the first page is all.
    #[serde(deserialize_with = "lenient_i64")]
    pub total: Option<i64>,
}

/// A deployment (`GET /deployments`, `POST /searches/deployments`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Deployment {
    /// The first half of a group id (`<deployment>/<group>`). Empty fails the page.
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// Labels as `{key, value}` entries; discovery matches them server-side, so only the fake
    /// reads them.
    #[serde(deserialize_with = "lenient")]
    pub labels: Vec<Label>,
    /// Scaling groups by name.
    #[serde(deserialize_with = "lenient")]
    pub scaling_groups: HashMap<String, ScalingGroup>,
    /// The Cloudify site the deployment is assigned to (zone of its Nodes by default).
    #[serde(deserialize_with = "lenient")]
    pub site_name: Option<String>,
    /// When the deployment itself last changed (a deployment update): its nodes and the
    /// membership of its scaling groups change with nothing else, so the refresh re-reads them
    /// only when this moves (issue 19).
    #[serde(deserialize_with = "lenient")]
    pub updated_at: Option<String>,
    /// Id of the deployment's newest execution, of any workflow: a new one means its instances
    /// may have changed since they were read.
    #[serde(deserialize_with = "lenient")]
    pub latest_execution: Option<String>,
    /// Cloudify's summary of that execution (`in_progress`, `completed`, `failed`,
    /// `cancelled`): while it is not final, the instances keep changing.
    #[serde(deserialize_with = "lenient")]
    pub latest_execution_status: Option<String>,
}

/// `latest_execution_status` values after which the execution changes nothing any more.
pub const FINAL_EXECUTION_SUMMARIES: [&str; 3] = ["completed", "failed", "cancelled"];

impl Deployment {
    /// True when the deployment's newest execution has ended (or it never had one), so that,
    /// with the same [`latest_execution`](Self::latest_execution), its instances are what they
    /// were. False when Cloudify names an execution without saying how it is.
    pub fn is_settled(&self) -> bool {
        match (
            &self.latest_execution,
            self.latest_execution_status.as_deref(),
        ) {
            (_, Some(s)) => FINAL_EXECUTION_SUMMARIES.contains(&s),
            (None, None) => true,
            (Some(_), None) => false,
        }
    }
}

/// One deployment label.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Label {
    /// What a discovery rule's `label=<key>=<value>` names as `<key>`.
    #[serde(deserialize_with = "lenient")]
    pub key: String,
    /// The rule's `<value>`: Cloudify's search (an `any_of` filter rule) matches it.
    #[serde(deserialize_with = "lenient")]
    pub value: String,
}

/// A scaling group of a deployment.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ScalingGroup {
    /// Node ids in the group; its compute nodes among them are the group's VMs.
    #[serde(deserialize_with = "lenient")]
    pub members: Vec<String>,
    /// The policy's bounds and the current/planned counts.
    #[serde(deserialize_with = "lenient")]
    pub properties: ScalingGroupProperties,
}

/// `scaling_groups.<g>.properties`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ScalingGroupProperties {
    /// Lower bound (not enforced by Cloudify).
    #[serde(deserialize_with = "lenient_i64")]
    pub min_instances: Option<i64>,
    /// Upper bound, `-1` = unbounded (not enforced by Cloudify).
    #[serde(deserialize_with = "lenient_i64")]
    pub max_instances: Option<i64>,
    /// Instances after the last finished modification.
    #[serde(deserialize_with = "lenient_i64")]
    pub current_instances: Option<i64>,
    /// Instances the running modification aims at (= current when idle).
    #[serde(deserialize_with = "lenient_i64")]
    pub planned_instances: Option<i64>,
}

/// A node of a deployment (`GET /nodes`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Node {
    /// Node id (template name).
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// Node ids are unique only within one deployment, so nodes are keyed by both.
    #[serde(deserialize_with = "lenient")]
    pub deployment_id: String,
    /// Type and its ancestors; a `cloudify.nodes.Compute` in it makes the node a VM.
    #[serde(deserialize_with = "lenient")]
    pub type_hierarchy: Vec<String>,
    /// Containing compute node (itself for a compute node).
    #[serde(deserialize_with = "lenient")]
    pub host_id: Option<String>,
}

impl Node {
    /// True for a VM: a node whose type derives from `cloudify.nodes.Compute`, or that is its own host.
    pub fn is_compute(&self) -> bool {
        self.type_hierarchy
            .iter()
            .any(|t| t == "cloudify.nodes.Compute")
            || self.host_id.as_deref() == Some(self.id.as_str())
    }
}

/// The group instance a node instance belongs to.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct GroupRef {
    /// Scaling group name (a key of [`Deployment::scaling_groups`]).
    #[serde(deserialize_with = "lenient")]
    pub name: String,
    /// Shared by every node instance of one scaling unit (the VM, its port, its floating IP).
    #[serde(deserialize_with = "lenient")]
    pub id: String,
}

/// A node instance (`GET /node-instances`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct NodeInstance {
    /// The node-instance id (`<node>_<suffix>`, e.g. `vm_a1b2c3`); empty fails the page.
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// The node (template) it instantiates: a compute node makes this a VM instance.
    #[serde(deserialize_with = "lenient")]
    pub node_id: String,
    /// With `node_id`, finds the node (node ids repeat across deployments).
    #[serde(deserialize_with = "lenient")]
    pub deployment_id: String,
    /// Containing compute instance: one that is its own host is a VM even if its node is not
    /// known to be compute.
    #[serde(deserialize_with = "lenient")]
    pub host_id: Option<String>,
    /// Lifecycle state (`uninitialized` … `started` … `deleted`).
    #[serde(deserialize_with = "lenient")]
    pub state: String,
    /// Runtime properties (`ip`, `hostname`, `external_id`, …).
    #[serde(deserialize_with = "lenient")]
    pub runtime_properties: serde_json::Map<String, Value>,
    /// Group instances, outermost first.
    #[serde(deserialize_with = "lenient")]
    pub scaling_groups: Vec<GroupRef>,
}

impl NodeInstance {
    /// Drops the runtime properties [`runtime_str`](Self::runtime_str) can never answer
    /// (structured values, nulls, empty strings): a VM's `networks` and agent settings are most
    /// of an instance's memory, and the refresh keeps instances between passes.
    pub fn keep_scalar_runtime_properties(&mut self) {
        self.runtime_properties.retain(|_, v| match v {
            Value::String(s) => !s.is_empty(),
            Value::Number(_) | Value::Bool(_) => true,
            _ => false,
        });
    }

    /// A runtime property rendered as text (strings as is, numbers and booleans formatted);
    /// `None` when absent, null, empty or structured.
    pub fn runtime_str(&self, key: &str) -> Option<String> {
        match self.runtime_properties.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// An execution (`/executions`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Execution {
    /// What `cancel_execution` and a deployment modification's `context.execution_id` name.
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// Workflow, `scale` here.
    #[serde(deserialize_with = "lenient")]
    pub workflow_id: String,
    /// With [`scaled_group`](Self::scaled_group), the group it scales.
    #[serde(deserialize_with = "lenient")]
    pub deployment_id: String,
    /// Cloudify's status, a closed vocabulary with `Unknown` for anything else.
    pub status: ExecutionStatus,
    /// Cloudify's failure text; CA sees it in the error of a failed scale-out's instances (a
    /// `quota` in it makes their class `OutOfResources`).
    #[serde(deserialize_with = "lenient")]
    pub error: Option<String>,
    /// Workflow parameters after default merging.
    #[serde(deserialize_with = "lenient")]
    pub parameters: serde_json::Map<String, Value>,
    /// Creation time (ISO 8601).
    #[serde(deserialize_with = "lenient")]
    pub created_at: Option<String>,
    /// End time (ISO 8601), for ended executions.
    #[serde(deserialize_with = "lenient")]
    pub ended_at: Option<String>,
}

/// A deployment modification (`GET /deployment-modifications`): what a running (or stuck)
/// `scale` changed. `planned_instances` includes a scale only once its modification exists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeploymentModification {
    /// Only tells modifications apart across pages; the owning execution is in `context`.
    #[serde(deserialize_with = "lenient")]
    pub id: String,
    /// Deployment it modifies.
    #[serde(deserialize_with = "lenient")]
    pub deployment_id: String,
    /// `started`, `finished` or `rolledback`.
    #[serde(deserialize_with = "lenient")]
    pub status: String,
    /// `{execution_id, workflow_id, ...}` of the workflow that started it.
    #[serde(deserialize_with = "lenient")]
    pub context: serde_json::Map<String, Value>,
    /// `{<group or node>: {instances: N, ...}}`: the target of each modified entity.
    #[serde(deserialize_with = "lenient")]
    pub modified_nodes: serde_json::Map<String, Value>,
}

impl DeploymentModification {
    /// The execution that started it (`context.execution_id`), if recorded.
    pub fn execution_id(&self) -> Option<&str> {
        self.context.get("execution_id")?.as_str()
    }

    /// The target instance count it sets for `entity`, if it modifies it.
    pub fn target_of(&self, entity: &str) -> Option<i64> {
        self.modified_nodes
            .get(entity)?
            .get("instances")
            .and_then(value_as_i64)
    }
}

/// Statuses of executions that may still change the group (what the refresh asks Cloudify for
/// when the recent executions do not cover every active one).
pub const ACTIVE_STATUSES: [ExecutionStatus; 7] = [
    ExecutionStatus::Queued,
    ExecutionStatus::Pending,
    ExecutionStatus::Scheduled,
    ExecutionStatus::Started,
    ExecutionStatus::Cancelling,
    ExecutionStatus::ForceCancelling,
    ExecutionStatus::KillCancelling,
];

impl Execution {
    /// The scaled entity (`scalable_entity_name`).
    pub fn scaled_group(&self) -> Option<&str> {
        self.parameters.get("scalable_entity_name")?.as_str()
    }

    /// The `delta` parameter (default 1, as in the workflow declaration).
    pub fn delta(&self) -> i64 {
        self.parameters
            .get("delta")
            .and_then(value_as_i64)
            .unwrap_or(1)
    }

    /// `include_instances` as a list (the workflow also accepts a single id).
    pub fn include_instances(&self) -> Vec<String> {
        match self.parameters.get("include_instances") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// True while the execution has not started its modification.
    pub fn is_waiting(&self) -> bool {
        self.status.is_waiting()
    }

    /// True once the execution ended.
    pub fn is_ended(&self) -> bool {
        self.status.is_ended()
    }

    /// `created_at` as a time, when Cloudify gave a readable one.
    pub fn created_time(&self) -> Option<std::time::SystemTime> {
        self.created_at.as_deref().and_then(parse_timestamp)
    }
}

/// Cloudify's JSON error body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// The error text; `detail` is used when it is absent.
    #[serde(deserialize_with = "lenient")]
    pub message: Option<String>,
    /// Some endpoints use `detail` instead of `message`.
    #[serde(deserialize_with = "lenient")]
    pub detail: Option<String>,
    /// Machine code, e.g. `not_found_error`.
    #[serde(deserialize_with = "lenient")]
    pub error_code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_fields_fall_back_to_defaults() {
        let page: ListPage<NodeInstance> = serde_json::from_str(
            r#"{"items":[{"id":"vm_1","state":null,"runtime_properties":"oops",
                "scaling_groups":[{"name":"g","id":"g_1"}],"host_id":7}],
                "metadata":{"pagination":{"total":"1","offset":0,"size":1000}}}"#,
        )
        .expect("tolerant decode");
        assert_eq!(page.items[0].id, "vm_1");
        assert_eq!(page.items[0].state, "");
        assert!(page.items[0].runtime_properties.is_empty());
        assert_eq!(page.items[0].host_id, None);
        assert_eq!(page.metadata.pagination.total, Some(1));
    }

    #[test]
    fn only_the_runtime_properties_a_template_can_read_are_kept() {
        let mut i: NodeInstance = serde_json::from_value(serde_json::json!({"id": "vm_1",
            "runtime_properties": {"ip": "10.0.0.1", "port": 22, "ok": true, "empty": "",
                "none": null, "networks": {"n": ["10.0.0.1"]}, "list": [1]}}))
        .expect("decode");
        let before: Vec<Option<String>> = ["ip", "port", "ok", "empty", "none", "networks"]
            .iter()
            .map(|k| i.runtime_str(k))
            .collect();
        i.keep_scalar_runtime_properties();
        let mut kept: Vec<&str> = i.runtime_properties.keys().map(String::as_str).collect();
        kept.sort();
        assert_eq!(kept, ["ip", "ok", "port"]);
        let after: Vec<Option<String>> = ["ip", "port", "ok", "empty", "none", "networks"]
            .iter()
            .map(|k| i.runtime_str(k))
            .collect();
        assert_eq!(before, after, "what runtime_str answers does not change");
    }

    #[test]
    fn a_deployment_is_settled_once_its_newest_execution_ended() {
        let d = |status: Option<&str>| Deployment {
            latest_execution: Some("e".into()),
            latest_execution_status: status.map(str::to_owned),
            ..Deployment::default()
        };
        assert!(d(Some("completed")).is_settled());
        assert!(d(Some("failed")).is_settled());
        assert!(!d(Some("in_progress")).is_settled());
        assert!(!d(None).is_settled(), "an execution of unknown status");
        assert!(Deployment::default().is_settled(), "no execution ever");
    }

    #[test]
    fn execution_parameters() {
        let e: Execution = serde_json::from_str(
            r#"{"id":"e","parameters":{"scalable_entity_name":"g","delta":"-2",
                "include_instances":["a","b"]}}"#,
        )
        .expect("decode");
        assert_eq!(e.delta(), -2);
        assert_eq!(e.scaled_group(), Some("g"));
        assert_eq!(e.include_instances(), vec!["a", "b"]);
    }
}
