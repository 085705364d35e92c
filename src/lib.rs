//! autoscaler-cloudify: a Kubernetes Cluster Autoscaler `externalgrpc` provider backed by
//! Cloudify scaling groups.
//!
//! Layout:
//! - [`simulator`]: an in-process Cloudify Manager (REST v3.1 slice) for the demo, tests and
//!   benchmarks.
#![deny(missing_docs)]

pub mod simulator;
