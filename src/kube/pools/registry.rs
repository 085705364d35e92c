//! The pools the inventory serves as node groups, read from the pool controller's reflector
//! store on every replica (followers serve CA's reads too). A pool is served once it is
//! installed; a deleting one is served with `min = max = 0`, so CA cannot scale it up while the
//! controller waits for its Nodes to go. Size, template, price and option changes need no
//! Cloudify call: the next refresh serves them. A pool's scale-from-zero capacity comes from the
//! configuration's flavor table (`pools.flavors`) for its flavor, under its own
//! `template.capacity`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::Store;

use super::crd::{CloudifyNodePool, PoolOptions, PoolTemplate};
use super::plan::condition_true;
use crate::config::{GroupSettings, OptionsSpec, TaintSpec, TemplateSpec};
use crate::inventory::{PoolGroup, PoolSource};

/// A configured Cloudify entry, as pools name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerEntry {
    /// `cloudify[].name`.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
}

/// Index of the entry a pool's `manager` names (empty: the first), or why none fits.
pub fn resolve_manager(
    managers: &[ManagerEntry],
    manager: &str,
    tenant: &str,
) -> Result<usize, String> {
    let index = if manager.is_empty() {
        (!managers.is_empty()).then_some(0)
    } else {
        managers.iter().position(|m| m.name == manager)
    };
    let Some(i) = index else {
        let names: Vec<&str> = managers.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "manager {manager:?} is not a cloudify[] entry of the provider configuration (entries: {})",
            names.join(", ")
        ));
    };
    if !tenant.is_empty() && managers[i].tenant != tenant {
        return Err(format!(
            "tenant {tenant:?} is not the tenant of manager entry {:?} ({})",
            managers[i].name, managers[i].tenant
        ));
    }
    Ok(i)
}

/// What each flavor holds (`pools.flavors`): resource name → quantity.
pub type Flavors = BTreeMap<String, BTreeMap<String, String>>;

/// The node group a pool is served as, `None` while it is not installed (or misconfigured).
pub fn pool_group(
    pool: &CloudifyNodePool,
    managers: &[ManagerEntry],
    flavors: &Flavors,
) -> Option<PoolGroup> {
    let status = pool.status.as_ref()?;
    if !condition_true(status, "Installed") {
        return None;
    }
    let name = pool.metadata.name.as_deref()?;
    let spec = &pool.spec;
    let source = resolve_manager(managers, &spec.manager, &spec.tenant).ok()?;
    let deleting = pool.metadata.deletion_timestamp.is_some();
    // The flavor input as the deployment gets it (`inputs.flavor` over `compute.flavor`).
    let flavor = spec
        .deployment_inputs()
        .get("flavor")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let (min, max) = if deleting {
        (0, 0)
    } else {
        (spec.min_size, spec.max_size.max(spec.min_size))
    };
    Some(PoolGroup {
        source,
        deployment: spec.deployment_for(name),
        group: spec.scaling_group.clone(),
        min,
        max,
        settings: GroupSettings {
            min: Some(min),
            max: Some(max),
            price_per_hour: spec.price_per_hour,
            template: template(
                &spec.template,
                flavor.as_deref().and_then(|f| flavors.get(f)),
            ),
            instance_type: flavor,
            zone: spec.compute.site.clone(),
            options: options(&spec.autoscaling_options),
            ..GroupSettings::default()
        },
    })
}

fn template(t: &PoolTemplate, flavor: Option<&BTreeMap<String, String>>) -> Option<TemplateSpec> {
    if t == &PoolTemplate::default() && flavor.is_none() {
        return None;
    }
    let mut capacity = flavor.cloned().unwrap_or_default();
    capacity.extend(t.capacity.iter().map(|(k, v)| (k.clone(), v.clone())));
    Some(TemplateSpec {
        labels: t.labels.clone(),
        taints: t
            .taints
            .iter()
            .map(|x| TaintSpec {
                key: x.key.clone(),
                value: x.value.clone(),
                effect: x.effect.clone(),
            })
            .collect(),
        capacity,
        allocatable: t.allocatable.clone(),
    })
}

fn duration(text: &Option<String>) -> Option<Duration> {
    text.as_deref()
        .and_then(|t| humantime::parse_duration(t).ok())
}

fn options(o: &PoolOptions) -> Option<OptionsSpec> {
    if o == &PoolOptions::default() {
        return None;
    }
    Some(OptionsSpec {
        scale_down_utilization_threshold: o.scale_down_utilization_threshold,
        scale_down_gpu_utilization_threshold: o.scale_down_gpu_utilization_threshold,
        scale_down_unneeded_time: duration(&o.scale_down_unneeded_time),
        scale_down_unready_time: duration(&o.scale_down_unready_time),
        max_node_provision_time: duration(&o.max_node_provision_time),
        zero_or_max_node_scaling: o.zero_or_max_node_scaling,
        ignore_daemonsets_utilization: o.ignore_daemonsets_utilization,
    })
}

/// The installed pools of a reflector store, for the inventory.
pub struct PoolRegistry {
    store: Store<CloudifyNodePool>,
    managers: Arc<Vec<ManagerEntry>>,
    flavors: Flavors,
}

impl PoolRegistry {
    /// A registry over the controller's store.
    pub fn new(
        store: Store<CloudifyNodePool>,
        managers: Arc<Vec<ManagerEntry>>,
        flavors: Flavors,
    ) -> PoolRegistry {
        PoolRegistry {
            store,
            managers,
            flavors,
        }
    }
}

impl PoolSource for PoolRegistry {
    fn pools(&self) -> Vec<PoolGroup> {
        self.store
            .state()
            .iter()
            .filter_map(|p| pool_group(p, &self.managers, &self.flavors))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn managers() -> Vec<ManagerEntry> {
        vec![
            ManagerEntry {
                name: "main".into(),
                tenant: "default_tenant".into(),
            },
            ManagerEntry {
                name: "edge".into(),
                tenant: "edge_tenant".into(),
            },
        ]
    }

    fn pool(extra: serde_json::Value) -> CloudifyNodePool {
        let mut v = json!({
            "apiVersion": "autoscaler.cloudify.io/v1alpha1", "kind": "CloudifyNodePool",
            "metadata": {"name": "gpu"},
            "spec": {"blueprintId": "bp", "manager": "edge", "minSize": 1, "maxSize": 5,
                     "compute": {"flavor": "g1", "site": "zone-b"}, "pricePerHour": 2.5,
                     "template": {"capacity": {"cpu": "8"}},
                     "autoscalingOptions": {"scaleDownUnneededTime": "20m"}},
            "status": {"conditions": [{"type": "Installed", "status": "True", "reason": "Installed"}]},
        });
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                m.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).expect("pool")
    }

    #[test]
    fn an_installed_pool_is_a_group_of_its_manager_with_its_settings() {
        let g = pool_group(&pool(json!({})), &managers(), &Flavors::new()).expect("served");
        assert_eq!(
            (g.source, g.deployment.as_str(), g.group.as_str()),
            (1, "np-gpu", "workers")
        );
        assert_eq!((g.min, g.max), (1, 5));
        assert_eq!(g.settings.price_per_hour, Some(2.5));
        assert_eq!(g.settings.instance_type.as_deref(), Some("g1"));
        assert_eq!(g.settings.zone.as_deref(), Some("zone-b"));
        assert_eq!(g.settings.template.expect("template").capacity["cpu"], "8");
        assert_eq!(
            g.settings
                .options
                .expect("options")
                .scale_down_unneeded_time,
            Some(Duration::from_secs(1200))
        );
    }

    #[test]
    fn a_deleting_pool_is_served_with_max_zero_and_an_uninstalled_one_not_at_all() {
        let mut deleting = pool(json!({}));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        let g = pool_group(&deleting, &managers(), &Flavors::new()).expect("still served");
        assert_eq!((g.min, g.max), (0, 0));
        let fresh = pool(json!({"status": {"conditions": []}}));
        assert!(pool_group(&fresh, &managers(), &Flavors::new()).is_none());
    }

    #[test]
    fn the_flavor_table_fills_the_capacity_the_pool_does_not_give() {
        let flavors = Flavors::from([(
            "g1".to_string(),
            BTreeMap::from([
                ("cpu".to_string(), "16".to_string()),
                ("memory".to_string(), "64Gi".to_string()),
                ("nvidia.com/gpu".to_string(), "1".to_string()),
            ]),
        )]);
        let g = pool_group(&pool(json!({})), &managers(), &flavors).expect("served");
        let capacity = g.settings.template.expect("template").capacity;
        assert_eq!(capacity["cpu"], "8", "the pool's own capacity wins");
        assert_eq!(capacity["memory"], "64Gi");
        assert_eq!(capacity["nvidia.com/gpu"], "1");
        // No template at all: the flavor alone makes one; an input names the flavor too.
        let mut bare = pool(json!({}));
        bare.spec.template = PoolTemplate::default();
        bare.spec.compute.flavor = None;
        bare.spec.inputs.insert("flavor".into(), json!("g1"));
        let g = pool_group(&bare, &managers(), &flavors).expect("served");
        assert_eq!(g.settings.instance_type.as_deref(), Some("g1"));
        assert_eq!(g.settings.template.expect("template").capacity["cpu"], "16");
        bare.spec.inputs.insert("flavor".into(), json!("unknown"));
        let g = pool_group(&bare, &managers(), &flavors).expect("served");
        assert!(
            g.settings.template.is_none(),
            "nothing to build a template from"
        );
    }

    #[test]
    fn managers_resolve_by_name_and_tenants_must_match() {
        assert_eq!(resolve_manager(&managers(), "", ""), Ok(0));
        assert_eq!(resolve_manager(&managers(), "edge", "edge_tenant"), Ok(1));
        assert!(resolve_manager(&managers(), "nope", "").is_err());
        assert!(resolve_manager(&managers(), "main", "other").is_err());
        assert!(resolve_manager(&[], "", "").is_err());
    }
}
