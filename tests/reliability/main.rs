//! The reliability suite (docs/reliability.md): the real binary and the in-process provider
//! under manager outages, latency, errors and restarts; security; hostile Cloudify input; and the
//! Lease HA checks that tests/e2e/ha.sh runs against a real kube-apiserver, and the service
//! controller (LoadBalancer Services) that tests/e2e/lb.sh runs against one.

mod cloudify_input;
mod ha_lease;
mod hostile_kit;
mod inprocess;
mod lb_service;
mod process;
#[path = "../reliability_support/mod.rs"]
mod reliability_support;
mod security;
