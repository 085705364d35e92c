//! Node groups declared as `CloudifyNodePool` resources (issue 22): a third source of node groups
//! beside the static ones (`--nodes`) and label discovery. A pool is served exactly like a static
//! group (its deployment is fetched by id, its bounds are final) with its own settings (template,
//! price, options), so the snapshot, the indexes and every invariant are the same; CA sees a new
//! pool on the refresh after the pool is installed.
//!
//! The inventory knows nothing of Kubernetes: the composition root plugs in a [`PoolSource`]
//! (the registry of `crate::kube::pools`), asked once per refresh.

use crate::config::{GroupSettings, NodeGroupsConfig, StaticGroup};

/// One pool to serve as a node group.
#[derive(Debug, Clone)]
pub struct PoolGroup {
    /// Index of its Cloudify entry in the configuration's `cloudify` list.
    pub source: usize,
    /// Its deployment.
    pub deployment: String,
    /// Its scaling group.
    pub group: String,
    /// Fewest instances.
    pub min: i32,
    /// Most instances (0 while the pool is being deleted, so CA cannot scale it up).
    pub max: i32,
    /// Template, price, options, zone and instance type.
    pub settings: GroupSettings,
}

/// Where the pools come from; asked at the start of every refresh, so it must be cheap.
pub trait PoolSource: Send + Sync {
    /// The pools to serve now.
    fn pools(&self) -> Vec<PoolGroup>;
}

/// `config` with the pools added as static groups with their own settings. A pool whose group
/// is also configured statically (or a second pool on the same group) is left out with a
/// warning: the configuration's group wins, and one group is never served twice.
pub fn with_pools(
    config: &NodeGroupsConfig,
    pools: &[PoolGroup],
    group_id: impl Fn(&PoolGroup) -> String,
) -> NodeGroupsConfig {
    let mut out = config.clone();
    for p in pools {
        let taken = out
            .static_groups
            .iter()
            .any(|s| s.source == p.source && s.deployment == p.deployment && s.group == p.group);
        if taken {
            tracing::warn!(deployment = %p.deployment, group = %p.group,
                "a CloudifyNodePool names a group that is already a node group; not served twice");
            continue;
        }
        out.static_groups.push(StaticGroup {
            source: p.source,
            deployment: p.deployment.clone(),
            group: p.group.clone(),
            min: p.min,
            max: p.max,
        });
        out.groups.insert(group_id(p), p.settings.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(deployment: &str, max: i32) -> PoolGroup {
        PoolGroup {
            source: 0,
            deployment: deployment.into(),
            group: "workers".into(),
            min: 0,
            max,
            settings: GroupSettings {
                price_per_hour: Some(0.5),
                ..GroupSettings::default()
            },
        }
    }

    #[test]
    fn pools_become_static_groups_with_their_settings_and_never_twice() {
        let mut config = NodeGroupsConfig {
            static_groups: Vec::new(),
            discovery: Vec::new(),
            unbounded_max: 10,
            defaults: GroupSettings::default(),
            groups: Default::default(),
        };
        config.static_groups.push(StaticGroup {
            source: 0,
            deployment: "np-taken".into(),
            group: "workers".into(),
            min: 1,
            max: 2,
        });
        let out = with_pools(&config, &[pool("np-a", 4), pool("np-taken", 9)], |p| {
            format!("{}/{}", p.deployment, p.group)
        });
        assert_eq!(out.static_groups.len(), 2);
        assert_eq!(out.static_groups[1].deployment, "np-a");
        assert_eq!((out.static_groups[1].min, out.static_groups[1].max), (0, 4));
        assert_eq!(out.settings_for("np-a/workers").price_per_hour, Some(0.5));
        assert_eq!(out.settings_for("np-taken/workers").price_per_hour, None);
    }
}
