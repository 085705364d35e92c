//! What ships around the provider: the command line, the chart's and manifests' configuration,
//! the example blueprint, and the load test in its quick mode.

// The load test (included by loadtest_smoke) reads /proc through `crate::procfs`.
mod blueprint_example;
mod cli;
mod deploy_config;
mod layering;
mod lint_policy;
mod loadtest_smoke;
mod metrics_doc;
#[path = "../kit/procfs.rs"]
mod procfs;
