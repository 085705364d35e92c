//! `autoscaler-cloudify check`: load the configuration, read Cloudify once, print the node groups
//! and every finding (one line each, error or warning, with what to fix). Exits non-zero on a
//! configuration error, a failed read or any finding of severity error.
//!
//! A 401 ends the run at once: `check` is what an operator runs while fixing credentials, and
//! Cloudify locks an account after 4 failed logins in a row, so it makes no further attempt, keeps
//! no state between runs, and says how many attempts it made (issue 21 part 2).

mod findings;

use std::sync::Arc;

use findings::{Finding, Origin, Severity};

use super::CheckArgs;
use crate::cloudify::{Cloudify, CloudifyClient, CloudifyError};
use crate::config::Config;
use crate::inventory::{InstanceState, Inventory, InventoryError, Snapshot};
use crate::nodegroup::{NodeGroupService, ServiceSettings};
use crate::observability::metrics::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) async fn run(args: CheckArgs) -> Result<(), BoxError> {
    let config = args.serve.load()?;
    println!(
        "configuration OK: {} Cloudify manager/tenant entr{}",
        config.cloudify.len(),
        if config.cloudify.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    let metrics = Metrics::new();
    let clients = crate::app::clients(&config, &metrics)?;
    let sources: Vec<Arc<dyn Cloudify>> = clients
        .iter()
        .map(|c| Arc::clone(c) as Arc<dyn Cloudify>)
        .collect();
    let inventory = Inventory::new(
        sources,
        Arc::new(config.node_groups.clone()),
        Arc::clone(&metrics),
    );
    let snap = match inventory.refresh().await {
        Ok(s) => s,
        Err(e) if e.cloudify().is_some_and(CloudifyError::is_auth) => {
            return Err(refused_login(&config, &clients, &e).into());
        }
        Err(e) => return Err(e.into()),
    };
    let service =
        NodeGroupService::new(Arc::clone(&inventory), metrics, ServiceSettings::default());
    print_groups(&snap, &service)?;
    let origin = Origin {
        file: args.serve.config.as_deref(),
        nodes_flag: !args.serve.overrides.nodes.is_empty(),
    };
    let found = findings::findings(&config, origin, &snap, &|id| service.target_size(id).ok());
    report(&found)
}

/// The table of node groups as CA will see them.
fn print_groups(snap: &Snapshot, service: &NodeGroupService) -> Result<(), BoxError> {
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
    Ok(())
}

/// Prints the findings, one line each, and a summary; any error makes the command fail.
fn report(found: &[Finding]) -> Result<(), BoxError> {
    for f in found {
        println!("{f}");
    }
    let errors = found
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = found.len() - errors;
    if errors > 0 {
        return Err(format!(
            "check found {errors} error{} and {warnings} warning{} (listed above)",
            plural(errors),
            plural(warnings)
        )
        .into());
    }
    match warnings {
        0 => println!("check OK"),
        n => println!("check OK: {n} warning{}", plural(n)),
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What to tell an operator whose credentials Cloudify refused.
fn refused_login(config: &Config, clients: &[Arc<CloudifyClient>], e: &InventoryError) -> String {
    let attempts: u32 = clients.iter().map(|c| c.failed_logins()).sum();
    let who = match e {
        InventoryError::Cloudify { manager, .. } => config
            .cloudify
            .iter()
            .find(|c| &c.name == manager)
            .map(|c| {
                let user = match &c.auth {
                    crate::cloudify::Auth::Basic { username, .. } => {
                        format!("user {username:?}")
                    }
                    crate::cloudify::Auth::Token(_) => "the token".to_owned(),
                };
                format!("Cloudify entry {:?} ({}) refused {user}", c.name, c.url)
            })
            .unwrap_or_else(|| format!("Cloudify entry {manager:?} refused the credentials")),
        InventoryError::Unsettled { .. } | InventoryError::Inconsistent { .. } => {
            "Cloudify refused the credentials".to_owned()
        }
    };
    format!(
        "{who}: {e}. check made {attempts} login attempt{} and stops without retrying: \
         Cloudify locks an account after 4 failed logins, and every run with these credentials \
         (check, serve, another replica) is one more. Fix the password (CLOUDIFY_PASSWORD, \
         cloudify[].password_env or password_file) or the token before running check again; a \
         locked account unlocks after Cloudify's lock period or by an admin.",
        plural(attempts as usize)
    )
}
