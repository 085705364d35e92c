//! An in-process Cloudify Manager simulator: the slice of the REST API (v3.1) the provider uses,
//! served over real HTTP, faithful enough that Cloudify's own Python client
//! (`cloudify-common` 7.0.5) cannot tell it from a manager. It backs the `demo` command, every
//! integration test and the benchmarks. `docs/simulator.md` describes scenarios, routes, the
//! `/_sim` fault endpoints and where the simulator knowingly differs from a manager.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use cloudify_sim::{Scenario, Simulator, Timing};
//! let scenario = Scenario::default_demo().with_instances(50).with_timing(Timing::instant());
//! let sim = Simulator::start(scenario, "127.0.0.1:0".parse()?).await?;
//! println!("manager at {}/api/v3.1", sim.url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - `scenario`: what the manager starts with (YAML or built-in) and the workflow pace.
//! - `state`: the model (deployments, nodes, node instances, executions) behind one mutex.
//! - `resources`: the JSON shape of each resource; `query`: filters, `_include`, `_sort`,
//!   paging; `search`: label/attribute `filter_rules`.
//! - `auth`: basic/token auth, lockout, `Tenant`; `executions`: POST validation, queueing,
//!   cancel; `workflow`: the `scale` workflow and the per-deployment FIFO runner
//!   (`workflow::plan` validates a scale and starts its deployment modification).
//! - `faults`: `/_sim` fault injection and request counts; `control`: the typed client for
//!   them ([`SimControl`]); `routes` + `server`: axum glue.

mod auth;
mod control;
mod error;
mod executions;
mod faults;
mod instance_json;
mod query;
mod resources;
mod routes;
mod scenario;
mod search;
mod server;
mod shared;
mod state;
mod workflow;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use control::{ControlError, SimControl};
pub use error::SimError;
pub use faults::{Faults, FaultsPatch, RequestLog};
pub use scenario::{
    AuthPolicy, BlueprintSpec, DeploymentSpec, GroupSpec, InputSpec, LabelValues, Scenario, Timing,
    UserSpec,
};
pub use server::{Simulator, SimulatorHandle};

/// Command-line arguments of `autoscaler-cloudify simulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorArgs {
    /// Address to serve the Cloudify REST API on.
    #[arg(
        long,
        default_value = "127.0.0.1:8100",
        env = "AUTOSCALER_CLOUDIFY_SIM_LISTEN"
    )]
    pub listen: SocketAddr,
    /// Scenario YAML file (see docs/simulator.md); the built-in demo scenario if omitted.
    #[arg(long, env = "AUTOSCALER_CLOUDIFY_SIM_SCENARIO")]
    pub scenario: Option<PathBuf>,
    /// Start `k8s-pool-a/workers` with N instances (its max is raised to at least N).
    #[arg(long)]
    pub instances: Option<u64>,
}

impl SimulatorArgs {
    /// The scenario these arguments describe.
    pub fn load_scenario(&self) -> Result<Scenario, SimError> {
        let scenario = match &self.scenario {
            Some(path) => Scenario::from_yaml_file(path)?,
            None => Scenario::default_demo(),
        };
        Ok(match self.instances {
            Some(n) => scenario.with_instances(n),
            None => scenario,
        })
    }
}

/// Runs the simulator alone: prints its URL and serves until Ctrl-C.
pub async fn run(args: SimulatorArgs) -> Result<(), SimError> {
    let scenario = args.load_scenario()?;
    let instances = scenario.node_instance_count();
    let users: Vec<String> = scenario
        .users
        .iter()
        .map(|u| format!("{}/{}", u.username, u.password))
        .collect();
    let tenants = scenario.tenants.join(", ");
    let sim = Simulator::start(scenario, args.listen).await?;
    println!("Cloudify Manager simulator listening on {}", sim.url());
    println!(
        "  REST: {}/api/v3.1  tenants: {tenants}  users: {}  node instances: {instances}",
        sim.url(),
        users.join(", ")
    );
    println!(
        "  faults: POST/DELETE {0}/_sim/faults  counts: GET {0}/_sim/requests",
        sim.url()
    );
    let signal = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    signal.map_err(|source| SimError::Io {
        addr: args.listen.to_string(),
        source,
    })
}
