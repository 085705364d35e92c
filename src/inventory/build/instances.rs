//! Step 3: each VM instance of a source, as CA and the node controller see it.

use super::executions::Removals;
use super::*;
use crate::cloudify::models::GroupRef;
use crate::config::{AddressProperties, ProviderIdParts, ProviderIdTemplate};

/// The settings an instance is rendered with, resolved once per group: `settings_for` clones
/// the group's template spec (maps of labels and capacities), which per instance was most of the
/// build time at 100k instances.
struct InstanceSettings {
    /// Renders the provider id.
    template: ProviderIdTemplate,
    /// Runtime property holding the Kubernetes node name.
    name_key: String,
    /// Runtime properties holding the addresses.
    address_keys: AddressProperties,
}

impl InstanceSettings {
    fn of(config: &NodeGroupsConfig, group_id: &str) -> InstanceSettings {
        let s = config.settings_for(group_id);
        InstanceSettings {
            template: s.provider_id_template.unwrap_or_default(),
            name_key: s
                .node_name_property
                .unwrap_or_else(|| "hostname".to_owned()),
            address_keys: s.address_properties.unwrap_or_default(),
        }
    }
}

/// What CA is told about a Cloudify node-instance state.
fn state_of(cloudify_state: &str) -> InstanceState {
    match cloudify_state {
        "started" => InstanceState::Running,
        "stopping" | "stopped" | "deleting" | "deleted" => InstanceState::Deleting,
        // uninitialized, initializing, creating, created, configuring, configured, starting,
        // and anything unknown: not ready yet.
        _ => InstanceState::Creating,
    }
}

/// True for an instance of a VM node (or one that is its own host: a VM whose node the refresh
/// did not list as compute). Ports, floating IPs and software are not CA's nodes.
fn is_vm(inst: &NodeInstance, compute: &ComputeNodes<'_>) -> bool {
    compute.contains(&(inst.deployment_id.as_str(), inst.node_id.as_str()))
        || inst.host_id.as_deref() == Some(inst.id.as_str())
}

/// The node group an instance belongs to and its group instance there: the first of its
/// scaling groups (outermost first) that is a node group.
fn group_of<'i>(
    inst: &'i NodeInstance,
    groups: &Groups<'_>,
) -> Option<(GroupKey<'i>, &'i GroupRef)> {
    inst.scaling_groups.iter().find_map(|r| {
        let key = (inst.deployment_id.as_str(), r.name.as_str());
        groups.contains_key(&key).then_some((key, r))
    })
}

/// The provider id and state of an instance in state `state`. When the id needs a runtime
/// property the VM has not reported yet, a placeholder CA can still echo back to DeleteNodes
/// (as clusterapi's `pending-machine-…`), and the instance is not reported running: no Node
/// can match it yet.
fn identify(
    template: &ProviderIdTemplate,
    parts: &ProviderIdParts<'_>,
    inst: &NodeInstance,
    state: InstanceState,
) -> (String, InstanceState) {
    match template.render(parts, |k| inst.runtime_str(k)) {
        Some(id) => (id, state),
        None => {
            let state = if state == InstanceState::Running {
                InstanceState::Creating
            } else {
                state
            };
            let id = format!(
                "cloudify-pending://{}/{}/{}",
                parts.tenant, parts.deployment, parts.vm_instance
            );
            (id, state)
        }
    }
}

/// `(state, being_removed)` once the active scale-ins are known. A named instance is leaving
/// even while its VM still says `started`. A deleting instance of a deployment whose scale-in
/// names nothing may be its victim, so it counts as being removed too; any other deleting
/// instance (a failed scale-in without rollback, a cancelled or killed one) may be deleted again.
fn removal(state: InstanceState, named: bool, unhinted_scale_in: bool) -> (InstanceState, bool) {
    if named {
        return (InstanceState::Deleting, true);
    }
    let being_removed = state == InstanceState::Deleting && unhinted_scale_in;
    (state, being_removed)
}

/// Adds every VM instance of the source to its node group.
pub(super) fn attach<'a>(
    src: &'a SourceData,
    config: &NodeGroupsConfig,
    compute: &ComputeNodes<'_>,
    removals: &Removals<'_>,
    groups: &mut Groups<'a>,
) {
    let mut resolved: HashMap<String, InstanceSettings> = HashMap::new();
    for inst in &src.instances {
        if !is_vm(inst, compute) || inst.id.is_empty() {
            continue;
        }
        let Some((key, gref)) = group_of(inst, groups) else {
            continue;
        };
        let Some(group) = groups.get_mut(&key) else {
            continue;
        };
        if !resolved.contains_key(group.id.as_str()) {
            // Looked up before inserting: `entry` would copy the group id for every instance.
            resolved.insert(group.id.clone(), InstanceSettings::of(config, &group.id));
        }
        let Some(settings) = resolved.get(group.id.as_str()) else {
            continue;
        };
        let parts = ProviderIdParts {
            tenant: &group.tenant,
            deployment: &group.deployment,
            group: &group.group,
            group_instance: &gref.id,
            vm_instance: &inst.id,
        };
        let (provider_id, state) =
            identify(&settings.template, &parts, inst, state_of(&inst.state));
        let (state, being_removed) = removal(
            state,
            removals.names(&inst.deployment_id, &inst.id, &gref.id),
            removals.unhinted_in(&inst.deployment_id),
        );
        if !group.vm_nodes.contains(&inst.node_id) {
            // The VM node may be contained in a listed member rather than listed itself.
            group.vm_nodes.push(inst.node_id.clone());
        }
        group.instances.push(GroupInstance {
            provider_id,
            vm_instance: inst.id.clone(),
            group_instance: gref.id.clone(),
            node_name: inst.runtime_str(&settings.name_key),
            state,
            cloudify_state: inst.state.clone(),
            addresses: InstanceAddresses {
                internal_ip: inst.runtime_str(&settings.address_keys.internal_ip),
                external_ip: inst.runtime_str(&settings.address_keys.external_ip),
                hostname: inst.runtime_str(&settings.address_keys.hostname),
            },
            being_removed,
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::executions::apply_active;
    use super::super::fixtures::{self, config, groups_a_g, vm};
    use super::*;

    fn parts<'a>(vm_instance: &'a str) -> ProviderIdParts<'a> {
        ProviderIdParts {
            tenant: "t",
            deployment: "a",
            group: "g",
            group_instance: "g_1",
            vm_instance,
        }
    }

    #[test]
    fn cloudify_states_map_to_three_states_for_ca() {
        assert_eq!(state_of("started"), InstanceState::Running);
        for s in ["stopping", "stopped", "deleting", "deleted"] {
            assert_eq!(state_of(s), InstanceState::Deleting, "{s}");
        }
        for s in [
            "uninitialized",
            "creating",
            "configured",
            "starting",
            "whatever",
            "",
        ] {
            assert_eq!(state_of(s), InstanceState::Creating, "{s}");
        }
    }

    #[test]
    fn vms_are_instances_of_compute_nodes_or_their_own_host() {
        let compute = ComputeNodes::from([("a", "vm")]);
        let mut port = vm("port_1", "a", "started", json!({}));
        port.node_id = "port".into();
        port.host_id = Some("vm_1".into());
        assert!(!is_vm(&port, &compute));
        let mut own_host = port.clone();
        own_host.host_id = Some("port_1".into());
        assert!(is_vm(&own_host, &compute));
        let mut listed = vm("vm_1", "a", "started", json!({}));
        listed.host_id = None;
        assert!(is_vm(&listed, &compute));
    }

    #[test]
    fn an_instance_belongs_to_its_first_scaling_group_that_is_a_node_group() {
        let groups = groups_a_g();
        let mut inst = vm("vm_1", "a", "started", json!({}));
        inst.scaling_groups = serde_json::from_value(
            json!([{"name": "outer", "id": "outer_1"}, {"name": "g", "id": "g_1"}]),
        )
        .expect("refs");
        let (key, r) = group_of(&inst, &groups).expect("in a/g");
        assert_eq!((key, r.id.as_str()), (("a", "g"), "g_1"));
        inst.deployment_id = "b".into();
        assert!(group_of(&inst, &groups).is_none(), "b/g is no node group");
    }

    #[test]
    fn a_rendered_id_keeps_the_state() {
        let template = ProviderIdTemplate::default();
        let inst = vm("vm_1", "a", "started", json!({}));
        let (id, state) = identify(&template, &parts("vm_1"), &inst, InstanceState::Running);
        assert_eq!(
            (id.as_str(), state),
            ("cloudify://t/a/vm_1", InstanceState::Running)
        );
    }

    #[test]
    fn an_id_waiting_for_a_runtime_property_is_a_placeholder_and_not_running() {
        let template = ProviderIdTemplate::parse("aws:///{runtime.zone}/{runtime.external_id}")
            .expect("template");
        let half = vm("vm_1", "a", "started", json!({"zone": "eu-1a"}));
        let (id, state) = identify(&template, &parts("vm_1"), &half, InstanceState::Running);
        assert_eq!(
            (id.as_str(), state),
            ("cloudify-pending://t/a/vm_1", InstanceState::Creating)
        );
        let (_, deleting) = identify(&template, &parts("vm_1"), &half, InstanceState::Deleting);
        assert_eq!(
            deleting,
            InstanceState::Deleting,
            "a leaving VM stays leaving"
        );
        let full = vm(
            "vm_1",
            "a",
            "started",
            json!({"zone": "eu-1a", "external_id": "i-9"}),
        );
        assert_eq!(
            identify(&template, &parts("vm_1"), &full, InstanceState::Running).0,
            "aws:///eu-1a/i-9"
        );
    }

    #[test]
    fn named_instances_leave_and_unhinted_scale_ins_claim_the_deleting_ones() {
        use InstanceState::*;
        assert_eq!(removal(Running, true, false), (Deleting, true));
        assert_eq!(removal(Running, false, true), (Running, false));
        assert_eq!(removal(Deleting, false, true), (Deleting, true));
        assert_eq!(
            removal(Deleting, false, false),
            (Deleting, false),
            "nothing removes it: deletable again"
        );
        assert_eq!(removal(Creating, false, false), (Creating, false));
    }

    #[test]
    fn attach_adds_vms_with_names_addresses_and_removal_state() {
        let cfg = config(
            "node_groups: {auto_discovery: [\"cloudify:label=x=y\"], defaults: {node_name_property: name, address_properties: {internal_ip: private}}}",
        );
        let mut inner = vm("inner_1", "a", "creating", json!({}));
        inner.node_id = "inner".into();
        let src = SourceData {
            tenant: "t".into(),
            instances: vec![
                vm(
                    "vm_1",
                    "a",
                    "started",
                    json!({"name": "n1", "private": "10.0.0.1", "hostname": "h1"}),
                ),
                vm("vm_2", "a", "started", json!({})),
                vm("", "a", "started", json!({})),
                inner,
            ],
            active: vec![fixtures::scale("s", "a", "started", -1, &["vm_2"])],
            ..Default::default()
        };
        let compute = ComputeNodes::from([("a", "vm")]);
        let mut groups = groups_a_g();
        let removals = apply_active(&src.active, &HashSet::new(), &HashSet::new(), &mut groups);
        attach(&src, &cfg, &compute, &removals, &mut groups);
        let g = &groups[&("a", "g")];
        let ids: Vec<&str> = g.instances.iter().map(|i| i.vm_instance.as_str()).collect();
        assert_eq!(
            ids,
            ["vm_1", "vm_2", "inner_1"],
            "an instance without an id is skipped"
        );
        let vm1 = &g.instances[0];
        assert_eq!(vm1.provider_id, "cloudify://t/a/vm_1");
        assert_eq!(vm1.group_instance, "g_vm_1");
        assert_eq!(vm1.node_name.as_deref(), Some("n1"));
        assert_eq!(vm1.addresses.internal_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(vm1.addresses.hostname.as_deref(), Some("h1"));
        assert_eq!(
            (vm1.state, vm1.being_removed),
            (InstanceState::Running, false)
        );
        let vm2 = &g.instances[1];
        assert_eq!(
            (vm2.state, vm2.being_removed),
            (InstanceState::Deleting, true)
        );
        assert_eq!(vm2.cloudify_state, "started");
        assert_eq!(
            g.vm_nodes,
            ["vm", "inner"],
            "a VM node inside a listed member joins the group's VM nodes"
        );
    }
}
