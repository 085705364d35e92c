//! What ships around the provider: the command line, the chart's and manifests' configuration,
//! the example blueprints (worker pool, load balancer), and the load test in its quick mode.

mod blueprint_example;
mod cli;
mod crd;
mod deploy_config;
mod layering;
mod lb_blueprints;
mod lint_policy;
mod loadtest_smoke;
mod metrics_doc;
