//! The largest group CA can be told about: NodeGroupNodes lists every instance of a group in one
//! answer, and CA's gRPC client refuses answers over 4 MiB (issue 20). The limit follows from the
//! longest provider id a group's template can render; a configured max above it is refused here,
//! and a max that comes from Cloudify is lowered to it when the snapshot is built.

use super::error::ConfigError;
use super::fields::key_path;
use super::model::NodeGroupsConfig;
use super::provider_id::{ProviderIdParts, ProviderIdTemplate};
use crate::cloudify::ClientSettings;

/// Cloudify's longest resource id (deployment ids are at most 256 characters); scaling group
/// names and runtime property values used in ids are counted at this length too.
const CLOUDIFY_ID_MAX: usize = 256;
/// A node-instance id is the node id, `_` and six characters.
const INSTANCE_SUFFIX: usize = 7;

/// The longest id `template` renders for one group; `None` for what is not known yet (a
/// discovered deployment or group) counts as the longest Cloudify allows.
pub fn longest_provider_id(
    template: &ProviderIdTemplate,
    tenant: &str,
    deployment: Option<&str>,
    group: Option<&str>,
) -> usize {
    let longest = "x".repeat(CLOUDIFY_ID_MAX);
    let instance = "x".repeat(CLOUDIFY_ID_MAX + INSTANCE_SUFFIX);
    let parts = ProviderIdParts {
        tenant,
        deployment: deployment.unwrap_or(&longest),
        group: group.unwrap_or(&longest),
        group_instance: &instance,
        vm_instance: &instance,
    };
    template
        .render(&parts, |_| Some(longest.clone()))
        .map_or(0, |id| id.len())
}

/// The largest max of a group whose ids `template` renders: at that many instances its
/// NodeGroupNodes answer still fits in what CA accepts.
pub fn max_instances_in_answer(
    template: &ProviderIdTemplate,
    tenant: &str,
    deployment: Option<&str>,
    group: Option<&str>,
) -> i32 {
    let id = longest_provider_id(template, tenant, deployment, group);
    i32::try_from(crate::proto::instances_per_answer(id)).unwrap_or(i32::MAX)
}

/// Refuses every configured max that could make a group's answer larger than CA accepts: the
/// static groups', each `groups.<id>.max`, `defaults.max` and `unbounded_max` (with what they
/// apply to not known yet, counted at the longest).
pub(super) fn check(ng: &NodeGroupsConfig, sources: &[ClientSettings]) -> Result<(), ConfigError> {
    for m in configured_maxes(ng, sources) {
        let limit = max_instances_in_answer(&m.template, m.tenant, m.deployment, m.group);
        if m.max > limit {
            let id = longest_provider_id(&m.template, m.tenant, m.deployment, m.group);
            return Err(ConfigError::invalid(
                m.key,
                format!(
                    "{} is too large: NodeGroupNodes lists a group's instances in one answer and \
                     CA's gRPC client refuses answers over 4 MiB; with provider ids of up to {id} \
                     bytes (template {:?}, Cloudify ids of up to {CLOUDIFY_ID_MAX} characters) \
                     at most {limit} instances fit: set {limit} or less",
                    m.max,
                    m.template.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// A configured max, and what the ids of the groups it bounds are made of (`None`: not known
/// before discovery).
struct ConfiguredMax<'a> {
    key: String,
    max: i32,
    template: ProviderIdTemplate,
    tenant: &'a str,
    deployment: Option<&'a str>,
    group: Option<&'a str>,
}

fn configured_maxes<'a>(
    ng: &'a NodeGroupsConfig,
    sources: &'a [ClientSettings],
) -> Vec<ConfiguredMax<'a>> {
    let tenant_of = |source: usize| sources.get(source).map_or("", |s| s.tenant.as_str());
    let longest_tenant = sources
        .iter()
        .map(|s| s.tenant.as_str())
        .max_by_key(|t| t.len())
        .unwrap_or("");
    let template_of = |id: &str| ng.settings_for(id).provider_id_template.unwrap_or_default();
    let mut out = Vec::new();
    for (i, g) in ng.static_groups.iter().enumerate() {
        let id = match sources.get(g.source) {
            Some(s) if sources.len() > 1 => format!("{}:{}/{}", s.name, g.deployment, g.group),
            _ => format!("{}/{}", g.deployment, g.group),
        };
        out.push(ConfiguredMax {
            key: format!("node_groups.static[{i}]"),
            max: g.max,
            template: template_of(&id),
            tenant: tenant_of(g.source),
            deployment: Some(&g.deployment),
            group: Some(&g.group),
        });
    }
    for (id, settings) in &ng.groups {
        let Some(max) = settings.max else { continue };
        // `[<name>:]<deployment>/<group>`, already checked when the file was read.
        let (source, rest) = match id.split_once(':') {
            Some((name, rest)) => (sources.iter().position(|s| s.name == name), rest),
            None => (Some(0), id.as_str()),
        };
        let (deployment, group) = rest
            .split_once('/')
            .map_or((None, None), |(d, g)| (Some(d), Some(g)));
        out.push(ConfiguredMax {
            key: key_path(&["node_groups", "groups", id, "max"]),
            max,
            template: template_of(id),
            tenant: source.map_or(longest_tenant, tenant_of),
            deployment,
            group,
        });
    }
    // What applies to discovered groups: the longest any configured template renders.
    let worst = std::iter::once(template_of(""))
        .chain(ng.groups.keys().map(|id| template_of(id)))
        .min_by_key(|t| max_instances_in_answer(t, longest_tenant, None, None))
        .unwrap_or_default();
    let discovered = |key: &str, max: i32| ConfiguredMax {
        key: key.to_owned(),
        max,
        template: worst.clone(),
        tenant: longest_tenant,
        deployment: None,
        group: None,
    };
    if let Some(max) = ng.defaults.max {
        out.push(discovered("node_groups.defaults.max", max));
    }
    out.push(discovered("node_groups.unbounded_max", ng.unbounded_max));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_id_counts_unknown_parts_at_cloudify_s_limits() {
        let t = ProviderIdTemplate::default();
        // cloudify:// + tenant + / + deployment + / + node id_suffix
        assert_eq!(
            longest_provider_id(&t, "default_tenant", None, None),
            11 + 14 + 1 + 256 + 1 + 263
        );
        assert_eq!(
            longest_provider_id(&t, "t", Some("d"), Some("g")),
            11 + 1 + 1 + 1 + 1 + 263
        );
        let runtime = ProviderIdTemplate::parse("openstack:///{runtime.external_id}").expect("t");
        assert_eq!(longest_provider_id(&runtime, "t", None, None), 13 + 256);
        let discovered = max_instances_in_answer(&t, "default_tenant", None, None);
        let named = max_instances_in_answer(&t, "default_tenant", Some("pool"), Some("workers"));
        assert!(
            (discovered, named) == (3300, 4116),
            "the default template leaves room for thousands of instances"
        );
    }
}
