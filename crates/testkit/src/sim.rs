//! The simulator environment: a `cloudify-sim` on `127.0.0.1:0`, the demo scenario shaped for a
//! test, and [`SimCtl`], the test side's control of it (faults and the request log through the
//! simulator's typed control client, REST reads as admin, the scale executions and VMs it holds).

use std::time::Duration;

use cloudify_sim::{Scenario, Simulator, SimulatorHandle, Timing};
use serde_json::Value;

use crate::wait::eventually;

/// The demo scenario's first worker group (2 VMs in `k8s-pool-a`).
pub const WORKERS: &str = "k8s-pool-a/workers";
/// The demo scenario's GPU group (`k8s-pool-b`).
pub const GPU: &str = "k8s-pool-b/gpu-workers";
/// The simulator's admin password in the reliability tests: distinctive, so the secret greps
/// cannot match anything by accident.
pub const PASSWORD: &str = "Rel-Pw-7f3c9e1d-do-not-log";
/// The demo scenario's own admin password (the provider suite keeps it).
pub const DEMO_PASSWORD: &str = "admin";

/// The default demo scenario with [`PASSWORD`] and the given timing.
pub fn scenario(timing: Timing) -> Scenario {
    let mut s = Scenario::default_demo().with_timing(timing).with_seed(7);
    for u in &mut s.users {
        u.password = PASSWORD.to_owned();
    }
    s
}

/// Sets `k8s-pool-a/workers` to `current` instances with bounds `min..=max`.
pub fn with_workers(mut s: Scenario, min: i64, max: i64, current: u64) -> Scenario {
    for d in &mut s.deployments {
        for g in &mut d.scaling_groups {
            if g.name == "workers" {
                g.min = min;
                g.max = max;
                g.current = current;
                g.default = Some(current);
            }
        }
    }
    s
}

/// The simulator serving `s` on a free loopback port.
pub async fn start_sim(s: Scenario) -> SimulatorHandle {
    Simulator::start(s, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

/// GET on a manager's REST API (`base` without `/api/v3.1`) as `(user, password, tenant)`, the
/// answer's JSON whatever its status (a test of a refusal reads the error body).
pub async fn cloudify_get(
    http: &reqwest::Client,
    base: &str,
    (user, password, tenant): (&str, &str, &str),
    path_and_query: &str,
) -> Value {
    http.get(format!("{base}/api/v3.1{path_and_query}"))
        .basic_auth(user, Some(password))
        .header("Tenant", tenant)
        .send()
        .await
        .expect("cloudify get")
        .json()
        .await
        .expect("json")
}

/// Test-side control of the simulator: faults and request counts through its typed control
/// client, REST reads as admin.
#[derive(Clone)]
pub struct SimCtl {
    /// The simulator's base URL (without `/api/v3.1`).
    pub url: String,
    /// The client of the REST reads (30 s timeout).
    pub http: reqwest::Client,
    password: String,
    control: cloudify_sim::SimControl,
}

impl SimCtl {
    /// Control of the simulator at `url` whose admin password is [`PASSWORD`].
    pub fn new(url: &str) -> SimCtl {
        SimCtl::with_password(url, PASSWORD)
    }

    /// Control of the simulator at `url` whose admin password is `password`.
    pub fn with_password(url: &str, password: &str) -> SimCtl {
        SimCtl {
            url: url.to_owned(),
            password: password.to_owned(),
            control: cloudify_sim::SimControl::new(url),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Merges `body` (a `/_sim/faults` patch as JSON) into the simulator's faults.
    pub async fn faults(&self, body: Value) {
        let patch: cloudify_sim::FaultsPatch =
            serde_json::from_value(body).expect("a /_sim/faults patch");
        self.control.set_faults(&patch).await.expect("faults");
    }

    /// Back to a healthy simulator.
    pub async fn clear_faults(&self) {
        self.control.clear_faults().await.expect("faults");
    }

    /// The simulator's request log (counts in total and per route), as JSON.
    pub async fn requests(&self) -> Value {
        serde_json::to_value(self.control.requests().await.expect("sim requests")).expect("json")
    }

    /// REST requests the simulator has answered so far.
    pub async fn total(&self) -> u64 {
        self.requests().await["total"].as_u64().unwrap_or(0)
    }

    /// Requests of one route (`"GET /api/v3.1/node-instances"`), 0 when none.
    pub async fn route(&self, route: &str) -> u64 {
        self.requests().await["routes"][route].as_u64().unwrap_or(0)
    }

    /// GET on the REST API as admin, the answer's JSON whatever its status.
    pub async fn get_any(&self, path_and_query: &str) -> Value {
        let admin = ("admin", self.password.as_str(), "default_tenant");
        cloudify_get(&self.http, &self.url, admin, path_and_query).await
    }

    /// GET on the REST API as admin; panics unless the answer is a success.
    pub async fn get(&self, path_and_query: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/api/v3.1{path_and_query}", self.url))
            .basic_auth("admin", Some(&self.password))
            .header("Tenant", "default_tenant")
            .send()
            .await
            .expect("cloudify get");
        assert!(
            r.status().is_success(),
            "GET {path_and_query}: {}",
            r.status()
        );
        r.json().await.expect("json")
    }

    /// Every `scale` execution, oldest first.
    pub async fn scale_executions(&self) -> Vec<Value> {
        let v = self
            .get("/executions?workflow_id=scale&_sort=created_at&_size=1000")
            .await;
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// VM instance ids of `k8s-pool-a/workers` that still exist.
    pub async fn worker_vms(&self) -> Vec<String> {
        let v = self
            .get("/node-instances?deployment_id=k8s-pool-a&node_id=workers_host&_size=1000")
            .await;
        let mut ids: Vec<String> = v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|i| i["state"].as_str() != Some("deleted"))
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// `scaling_groups.workers.properties` of k8s-pool-a.
    pub async fn workers_props(&self) -> Value {
        let v = self.get("/deployments/k8s-pool-a").await;
        v["scaling_groups"]["workers"]["properties"].clone()
    }

    /// Waits until no scale execution is in a non-final state (the one wait for Cloudify's
    /// executions of the kit).
    pub async fn wait_executions_done(&self, limit: Duration) {
        eventually(limit, "scale executions to end", || async {
            let running: Vec<Value> = self
                .scale_executions()
                .await
                .into_iter()
                .filter(|e| !is_final(e))
                .collect();
            if running.is_empty() {
                Ok(())
            } else {
                Err(running)
            }
        })
        .await;
    }
}

/// Whether an execution (REST JSON) is in one of Cloudify's final states.
pub fn is_final(execution: &Value) -> bool {
    matches!(
        execution["status"].as_str(),
        Some("terminated" | "failed" | "cancelled")
    )
}
