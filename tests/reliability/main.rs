//! The reliability suite (docs/reliability.md): the real binary and the in-process provider
//! under manager outages, latency, errors and restarts; security; hostile Cloudify input; and the
//! Lease HA checks that tests/e2e/ha.sh runs against a real kube-apiserver, and the service
//! controller (LoadBalancer Services) that tests/e2e/lb.sh runs against one.

mod answer_size;
mod cloudify_input;
mod connections;
mod ha_lease;
mod hostile_fuzz;
mod hostile_kit;
mod inprocess;
mod lb_service;
mod lost_scale_answers;
mod manager_transport;
mod metrics_text;
mod pki;
mod process;
mod refresh_answers;
mod scale_in_attribution;
mod security;
mod tls_causes;
