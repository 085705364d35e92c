//! The service controller (issue 23): Services of type LoadBalancer served by Cloudify
//! deployments, one per Service, made from a configured LB blueprint.
//!
//! - [`spec`]: whether a Service is ours (type and `loadBalancerClass`), its backend Nodes (the
//!   upstream predicates) and the deployment inputs of the blueprint contract, with Warnings for
//!   what the blueprint cannot serve.
//! - [`plan`]: the next step of a load balancer's lifecycle from what Cloudify shows (create,
//!   install, update when quiet, read the address; uninstall, delete, drop the finalizer).
//! - [`ingress`]: the address from the deployment's capabilities or outputs into
//!   `status.loadBalancer.ingress`.
//!
//! All three are pure; the controller around them ([`controller`], with `observe` reading
//! Cloudify and `apply` writing to Kubernetes) only moves data between Kubernetes, Cloudify and
//! them.

mod apply;
pub mod controller;
pub mod ingress;
mod observe;
pub mod plan;
pub mod spec;
#[cfg(test)]
mod tests;

pub use controller::{LbError, ServiceController, spawn};
