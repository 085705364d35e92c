//! What CA asks about a group that configuration answers, never Cloudify: the template node
//! (scale-from-zero), the GPU label and types, autoscaling options, node and pod prices. Its own
//! home beside [`NodeGroupService`](super::NodeGroupService) (issue 24): it reads the snapshot's
//! groups and the configuration and takes no part in sizes or scales.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_pb::api::core::v1 as core;
use prost::Message;

use super::template::{AutoscalingOptions, merge_options, template_node};
use super::{DomainError, group_in};
use crate::inventory::Inventory;

/// The configured answers about groups: templates, GPUs, options, prices.
pub struct GroupCatalog {
    inventory: Arc<Inventory>,
    /// Label whose value names the GPU type ([`ServiceSettings::gpu_label`](super::ServiceSettings::gpu_label)).
    gpu_label: String,
    /// Encoded template nodes by (group id, Cloudify site): besides the id and the configuration
    /// a template reads the deployment's site (the zone's default), which a refresh can change.
    templates: moka::sync::Cache<(String, Option<String>), Arc<Vec<u8>>>,
}

impl GroupCatalog {
    /// The catalog of the groups `inventory` holds; `gpu_label` names the GPU type of a node.
    pub fn new(inventory: Arc<Inventory>, gpu_label: String) -> GroupCatalog {
        GroupCatalog {
            inventory,
            gpu_label,
            templates: moka::sync::Cache::new(10_000),
        }
    }

    /// The encoded template node of a group; `NotImplemented` when none is configured (never an
    /// empty answer: CA >= 1.35 dereferences a nil NodeInfo).
    pub fn template_node_info(&self, id: &str) -> Result<Arc<Vec<u8>>, DomainError> {
        let snap = self.inventory.peek();
        let g = group_in(&snap, id)?;
        // Issue 21: a deployment moved to another site kept the zone of the cached template.
        let key = (id.to_owned(), g.site.clone());
        if let Some(bytes) = self.templates.get(&key) {
            return Ok(bytes);
        }
        let settings = self.inventory.config().settings_for(id);
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
        self.gpu_label.clone()
    }

    /// GPU types offered by any template (values of the GPU label).
    pub fn gpu_types(&self) -> Vec<String> {
        let cfg = self.inventory.config();
        let mut types: Vec<String> = cfg
            .groups
            .values()
            .chain(std::iter::once(&cfg.defaults))
            .filter_map(|g| g.template.as_ref())
            .filter_map(|t| t.labels.get(&self.gpu_label).cloned())
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
        group_in(&snap, id)?;
        let spec = self
            .inventory
            .config()
            .settings_for(id)
            .options
            .ok_or_else(|| {
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
        labels: &HashMap<String, String>,
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
            .and_then(|id| self.inventory.config().settings_for(&id).price_per_hour)
            .ok_or_else(|| {
                DomainError::NotImplemented(format!("no price configured for node {name:?}"))
            })?;
        Ok(price * hours.max(0.0))
    }

    /// Price of a pod for `hours`: its CPU requests at the cheapest configured price per core.
    pub fn pod_price(&self, pod: &[u8], hours: f64) -> Result<f64, DomainError> {
        let cfg = self.inventory.config();
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

/// A CPU quantity in cores, read as Kubernetes reads it (`500m`, `2`, `1e-3`, `250u`; issue 21).
fn cpu_cores(text: &str) -> Option<f64> {
    crate::config::Quantity::parse(text.trim())
        .ok()
        .map(|q| q.as_f64())
}
