//! Helpers shared by the simulator integration tests: start a simulator on 127.0.0.1:0 and
//! talk to it over real HTTP with reqwest, the way any manager client would.

use std::time::{Duration, Instant};

use cloudify_sim::{Scenario, Simulator, SimulatorHandle, Timing};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A running simulator and a client for it.
pub struct Sim {
    pub handle: SimulatorHandle,
    pub api: Api,
}

/// Starts `scenario` (timing instant unless the scenario says otherwise).
pub async fn start(scenario: Scenario) -> Sim {
    let handle = Simulator::start(scenario, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts");
    let api = Api::new(&handle.url());
    Sim { handle, api }
}

/// The default demo scenario with instant timing and a fixed seed.
pub async fn start_default() -> Sim {
    start(
        Scenario::default_demo()
            .with_timing(Timing::instant())
            .with_seed(42),
    )
    .await
}

/// A small REST client: basic auth `admin`/`admin`, tenant `default_tenant` by default.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub user: Option<(String, String)>,
    pub token: Option<String>,
    pub tenant: Option<String>,
}

impl Api {
    pub fn new(url: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            base: url.to_string(),
            user: Some(("admin".into(), "admin".into())),
            token: None,
            tenant: Some("default_tenant".into()),
        }
    }

    pub fn with_user(&self, user: &str, password: &str) -> Api {
        Api {
            user: Some((user.into(), password.into())),
            token: None,
            ..self.clone()
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api {
            user: None,
            token: Some(token.into()),
            ..self.clone()
        }
    }

    pub fn with_tenant(&self, tenant: Option<&str>) -> Api {
        Api {
            tenant: tenant.map(String::from),
            ..self.clone()
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            user: None,
            token: None,
            ..self.clone()
        }
    }

    /// Sends a request to `path` (relative to the manager URL, e.g. `/api/v3.1/ok`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some((u, p)) = &self.user {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(t) = &self.token {
            req = req.header("Authentication-Token", t);
        }
        if let Some(t) = &self.tenant {
            req = req.header("Tenant", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/v3.1{path}"), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/api/v3.1{path}"), Some(body))
            .await
    }

    /// GET that must succeed.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Starts a scale; returns the 201 body.
    pub async fn scale(&self, deployment: &str, params: Value, queue: bool) -> (StatusCode, Value) {
        self.post(
            "/executions",
            json!({"deployment_id": deployment, "workflow_id": "scale",
                   "parameters": params, "queue": queue}),
        )
        .await
    }

    /// Starts a scale that must be accepted; returns its id.
    pub async fn scale_ok(&self, deployment: &str, params: Value) -> String {
        let (status, body) = self.scale(deployment, params, true).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("execution id").to_string()
    }

    /// Polls an execution until it reaches an end state (10 s budget).
    pub async fn wait_execution(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.get_ok(&format!("/executions/{id}")).await;
            let status = e["status"].as_str().unwrap_or_default();
            if matches!(status, "terminated" | "failed" | "cancelled") {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} stuck in {status}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The scaling-group properties of `deployment`/`group`.
    pub async fn group(&self, deployment: &str, group: &str) -> Value {
        let d = self
            .get_ok(&format!(
                "/deployments/{deployment}?_include=scaling_groups"
            ))
            .await;
        d["scaling_groups"][group]["properties"].clone()
    }

    /// All node instances of a deployment (one page of up to 10000).
    pub async fn instances(&self, deployment: &str) -> Vec<Value> {
        let body = self
            .get_ok(&format!(
                "/node-instances?deployment_id={deployment}&_size=10000"
            ))
            .await;
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Group-instance ids currently in `deployment`, in storage order.
    pub async fn group_instance_ids(&self, deployment: &str) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for i in self.instances(deployment).await {
            if let Some(gid) = i["scaling_groups"][0]["id"].as_str()
                && !ids.iter().any(|g| g == gid)
            {
                ids.push(gid.to_string());
            }
        }
        ids
    }

    /// The VM node instances (host_id == id) of a group, in storage order.
    pub async fn vms(&self, deployment: &str, group: &str) -> Vec<Value> {
        self.instances(deployment)
            .await
            .into_iter()
            .filter(|i| i["host_id"] == i["id"] && i["scaling_groups"][0]["name"] == group)
            .collect()
    }

    pub async fn set_faults(&self, faults: Value) {
        let (status, body) = self.call(Method::POST, "/_sim/faults", Some(faults)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Asserts a Cloudify error answer.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error_code"], code, "{}", got.1);
    assert!(got.1["message"].is_string(), "{}", got.1);
    assert!(got.1.get("server_traceback").is_some(), "{}", got.1);
}
