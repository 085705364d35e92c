//! The one test kit of autoscaler-cloudify (issue 24), shared by the integration suites
//! (`tests/provider`, `tests/reliability`, `tests/tooling`, `tests/manager_contract`) and the
//! benches, as linkerd's app-test crate is for its proxy:
//!
//! - [`sim`]: the simulator on `127.0.0.1:0`, its typed control (faults, request log) and REST
//!   reads as admin;
//! - [`env`]: the provider in-process before the simulator ([`env::Env`], CA's RPCs as methods);
//! - [`reliability`]: the reliability suite's harnesses: the provider in-process or as the real
//!   binary ([`reliability::Proc`]), a CA-shaped client with CA's deadline, latency figures and
//!   secret greps;
//! - [`wait`]: [`wait::eventually`] and the one wait for Cloudify's executions to end;
//! - [`procfs`]: memory, threads, fds and CPU of a process;
//! - [`hostile`]: a programmable hostile Cloudify Manager in front of a real one;
//! - [`fixtures`]: the benches' Cloudify pages and providers on the in-memory fake;
//! - [`loadtest`]: CA's call mix against the real binary (the `loadtest` bench and its smoke
//!   test).
//!
//! Test code: it panics with a message where a test would (`expect`), never in the provider.

pub mod env;
pub mod fixtures;
pub mod hostile;
pub mod loadtest;
pub mod procfs;
pub mod reliability;
pub mod sim;
pub mod wait;
