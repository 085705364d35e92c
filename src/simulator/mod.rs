//! Placeholder with the Contract 1 API until the SIM branch lands (owned by the SIM engineer;
//! this file is replaced by the merge).
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("simulator not available in this build")]
pub struct SimError;

#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorArgs {
    #[arg(long, default_value = "127.0.0.1:8100")]
    pub listen: SocketAddr,
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[arg(long)]
    pub instances: Option<u64>,
}

pub async fn run(_args: SimulatorArgs) -> Result<(), SimError> {
    Err(SimError)
}

#[derive(Debug, Clone)]
pub struct Timing;
impl Timing {
    pub fn instant() -> Timing {
        Timing
    }
    pub fn demo() -> Timing {
        Timing
    }
}

#[derive(Debug, Clone)]
pub struct Scenario;
impl Scenario {
    pub fn default_demo() -> Scenario {
        Scenario
    }
    pub fn with_instances(self, _n: u64) -> Scenario {
        self
    }
    pub fn with_timing(self, _t: Timing) -> Scenario {
        self
    }
    pub fn from_yaml_file(_p: impl AsRef<std::path::Path>) -> Result<Scenario, SimError> {
        Err(SimError)
    }
}

pub struct Simulator;
impl Simulator {
    pub async fn start(_s: Scenario, _a: SocketAddr) -> Result<SimulatorHandle, SimError> {
        Err(SimError)
    }
}

pub struct SimulatorHandle;
impl SimulatorHandle {
    pub fn url(&self) -> String {
        String::new()
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
    pub async fn shutdown(self) {}
}
