//! `autoscaler-cloudify check`: load the configuration, refresh once from Cloudify, print the
//! node groups. Exits non-zero on any problem.

use std::sync::Arc;

use super::CheckArgs;
use crate::cloudify::Cloudify;
use crate::inventory::{InstanceState, Inventory};
use crate::nodegroup::{NodeGroupService, ServiceSettings};
use crate::observability::metrics::Metrics;

pub(super) async fn run(args: CheckArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = args.serve.load()?;
    println!(
        "configuration OK: {} Cloudify entr(y/ies)",
        config.cloudify.len()
    );
    let metrics = Metrics::new();
    let sources: Vec<Arc<dyn Cloudify>> = crate::app::clients(&config, &metrics)?
        .into_iter()
        .map(|c| c as Arc<dyn Cloudify>)
        .collect();
    let inventory = Inventory::new(
        sources,
        Arc::new(config.node_groups.clone()),
        Arc::clone(&metrics),
    );
    let snap = inventory.refresh().await?;
    let service =
        NodeGroupService::new(Arc::clone(&inventory), metrics, ServiceSettings::default());
    println!(
        "{:<40} {:>5} {:>5} {:>6} {:>9} {:>8} {:>8} {:>8}",
        "GROUP", "MIN", "MAX", "TARGET", "INSTANCES", "RUNNING", "CREATING", "DELETING"
    );
    for g in &snap.groups {
        let count = |s: InstanceState| g.instances.iter().filter(|i| i.state == s).count();
        println!(
            "{:<40} {:>5} {:>5} {:>6} {:>9} {:>8} {:>8} {:>8}",
            g.id,
            g.min,
            g.max,
            service.target_size(&g.id)?,
            g.instances.len(),
            count(InstanceState::Running),
            count(InstanceState::Creating),
            count(InstanceState::Deleting),
        );
    }
    if snap.groups.is_empty() {
        return Err("no node groups found (check node_groups.static / auto_discovery)".into());
    }
    Ok(())
}
