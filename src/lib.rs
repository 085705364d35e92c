//! autoscaler-cloudify: a Kubernetes Cluster Autoscaler `externalgrpc` cloud provider that maps
//! CA node groups onto Cloudify scaling groups.
//!
//! # Layout
//!
//! Dependencies point downwards only:
//!
//! - [`cli`]: the `autoscaler-cloudify` command (`serve`, `demo`, `simulator`, `check`,
//!   `inspect`): parses flags and dispatches. `main.rs` only calls [`cli::main`].
//! - [`app`]: the composition root: from a validated configuration to a running provider
//!   (inventory and its refresh loop, domain, gRPC and HTTP servers, the Kubernetes side).
//! - [`kube`]: the Kubernetes side, on when credentials are present (kube-rs client): the node
//!   controller, which initializes joining Nodes and removes Nodes whose VM is gone, from the
//!   inventory snapshot (pure decisions in `kube::nodes::plan`).
//! - [`grpc`]: the tonic facade for CA's `CloudProvider` service: decode, call the domain, map
//!   the domain error to a `tonic::Status` in one function. Also the server setup (mTLS, health,
//!   reflection).
//! - [`nodegroup`]: the domain: sizes, IncreaseSize, DeleteNodes, DecreaseTargetSize, instance
//!   states, templates, options, prices. Knows neither tonic nor HTTP; talks to the inventory and
//!   the [`cloudify::Cloudify`] trait, so it is unit-tested with a fake.
//! - [`inventory`]: the immutable snapshot of groups and instances with its lookup indexes,
//!   rebuilt aside by a background refresh and swapped in whole (arc-swap).
//! - [`config`]: the configuration file, flags and secrets, validated at start.
//! - [`cloudify`]: the Cloudify REST client (reqwest), its models and typed errors, and the
//!   in-memory [`cloudify::fake::FakeCloudify`] that unit tests and benchmarks share.
//! - [`observability`]: Prometheus metrics, the health/metrics HTTP port, tracing setup and the
//!   log format.
//! - [`proto`]: the generated externalgrpc protocol (with the CA 1.29–1.36 compatibility fields).
//! - The Cloudify Manager simulator behind `demo`, the tests and the benches is its own crate,
//!   `crates/cloudify-sim` (feature `simulator`, on by default); it depends on nothing here.

pub mod app;
pub mod cli;
pub mod cloudify;
pub mod config;
pub mod grpc;
pub mod inventory;
pub mod kube;
pub mod nodegroup;
pub mod observability;
pub mod proto;
