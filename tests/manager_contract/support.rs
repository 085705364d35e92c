//! What the contract tests share: the manager from the environment (or a skip, or a failure when
//! the tier promised one), clients built the way the provider builds them, and raw REST calls for
//! what the provider never does itself (fault switches, waiting, requests it never sends).

use std::time::{Duration, Instant};

use autoscaler_cloudify::cloudify::{
    Auth, ClientSettings, Cloudify, CloudifyClient, Execution, NodeInstance,
};
use serde_json::{Value, json};

/// Deployments of `tests/manager/scenarios/contract.yaml` (created by `tests/manager/fixtures.py`).
pub const LIFE: &str = "realmgr-contract-life";
pub const QUEUE: &str = "realmgr-contract-queue";
pub const FAIL: &str = "realmgr-contract-fail";
pub const OTHER: &str = "realmgr-contract-other";
pub const TENANT_DEP: &str = "realmgr-contract-tenant";
/// The discovery label value every contract deployment but `OTHER` carries.
pub const CLUSTER: &str = "realmgr-contract";
/// The scaling group of the tier's worker-pool blueprints.
pub const GROUP: &str = "workers";
/// The VM node of the group.
pub const VM: &str = "worker_host";
/// The quota text of the tier's fault switch (`blueprints/scripts/vm_create.py`).
pub const QUOTA: &str =
    "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances";

/// The manager the environment names (`eval "$(tests/manager/manager.sh env)"`).
#[derive(Clone, Debug)]
pub struct Manager {
    pub url: String,
    pub tenant: String,
    pub second_tenant: String,
    pub auth: Auth,
    pub ca_cert_pem: Option<Vec<u8>>,
}

/// The manager, or `None` after printing why the test is skipped. Panics (the test fails) when
/// `MANAGER_CONTRACT_REQUIRED=1` says the tier promised a manager and none is configured.
pub fn manager(test: &str) -> Option<Manager> {
    let Some(url) = std::env::var("CLOUDIFY_MANAGER_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        let how = "CLOUDIFY_MANAGER_URL is not set: run tests/manager/run.sh (the manager tier), or \
                   eval \"$(tests/manager/manager.sh env)\", create the deployments with \
                   tests/manager/fixtures.py tests/manager/scenarios/contract.yaml and run \
                   cargo test --test manager_contract";
        if std::env::var("MANAGER_CONTRACT_REQUIRED").as_deref() == Ok("1") {
            panic!(
                "{test}: the manager tier asked for this test (MANAGER_CONTRACT_REQUIRED=1) but {how}"
            );
        }
        eprintln!("manager_contract: skipped {test}: {how}");
        return None;
    };
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let auth = match var("CLOUDIFY_MANAGER_TOKEN") {
        Some(t) => Auth::Token(t),
        None => Auth::Basic {
            username: var("CLOUDIFY_MANAGER_USER").unwrap_or_else(|| "admin".into()),
            password: var("CLOUDIFY_MANAGER_PASSWORD").unwrap_or_else(|| "admin".into()),
        },
    };
    let ca_cert_pem = if url.starts_with("https") {
        var("CLOUDIFY_MANAGER_CA_CERT")
            .map(|p| std::fs::read(&p).expect("CLOUDIFY_MANAGER_CA_CERT"))
    } else {
        None
    };
    Some(Manager {
        url,
        tenant: var("CLOUDIFY_MANAGER_TENANT").unwrap_or_else(|| "default_tenant".into()),
        second_tenant: var("MANAGER_SECOND_TENANT").unwrap_or_else(|| "tier_tenant_b".into()),
        auth,
        ca_cert_pem,
    })
}

impl Manager {
    /// Client settings as the provider builds them from its config, for this URL and tenant.
    pub fn settings(&self, url: &str, tenant: &str, auth: Auth) -> ClientSettings {
        ClientSettings {
            name: "main".into(),
            url: url.into(),
            tenant: tenant.into(),
            auth,
            ca_cert_pem: self.ca_cert_pem.clone(),
            insecure_skip_verify: false,
            request_timeout: Duration::from_secs(30),
            max_response_bytes: autoscaler_cloudify::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// The provider's client for the manager's default tenant.
    pub fn client(&self) -> CloudifyClient {
        self.client_for(&self.url, &self.tenant, self.auth.clone())
    }

    /// The provider's client for another URL (a proxy in front), tenant or credentials.
    pub fn client_for(&self, url: &str, tenant: &str, auth: Auth) -> CloudifyClient {
        CloudifyClient::new(self.settings(url, tenant, auth), None).expect("client settings")
    }

    fn raw(&self, method: reqwest::Method, path: &str, tenant: &str) -> reqwest::RequestBuilder {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(pem) = &self.ca_cert_pem {
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem).expect("CA PEM"));
        }
        let r = b
            .build()
            .expect("HTTP client")
            .request(
                method,
                format!("{}/api/v3.1{path}", self.url.trim_end_matches('/')),
            )
            .header("Tenant", tenant);
        match &self.auth {
            Auth::Basic { username, password } => r.basic_auth(username, Some(password)),
            Auth::Token(t) => r.header("Authentication-Token", t),
        }
    }

    /// A raw call in the default tenant: (status, JSON body or `null`).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_in(&self.tenant, method, path, body).await
    }

    /// A raw call in a tenant: (status, JSON body or `null`).
    pub async fn call_in(
        &self,
        tenant: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.raw(method, path, tenant);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("the manager answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Starts a workflow the way an operator would (parameters the provider never sends).
    pub async fn start_raw(
        &self,
        deployment: &str,
        parameters: Value,
        queue: bool,
    ) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/executions",
            Some(json!({"deployment_id": deployment, "workflow_id": "scale",
                        "parameters": parameters, "queue": queue})),
        )
        .await
    }

    /// Sets (an object) or clears (`{}`) the runtime-property fault switch of a
    /// worker-pool-faults deployment (tests/manager/README.md, "Fault switches").
    pub async fn set_fault(&self, deployment: &str, fault: Value) {
        let (s, page) = self
            .call(
                reqwest::Method::GET,
                &format!("/node-instances?deployment_id={deployment}&node_id=fault_switch"),
                None,
            )
            .await;
        assert_eq!(s, 200, "fault switch of {deployment}: {page}");
        let inst = &page["items"][0];
        let id = inst["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{deployment} has no fault_switch: {page}"));
        let (s, full) = self
            .call(reqwest::Method::GET, &format!("/node-instances/{id}"), None)
            .await;
        assert_eq!(s, 200, "{full}");
        let mut props = full["runtime_properties"].clone();
        if !props.is_object() {
            props = json!({});
        }
        props["fault"] = fault;
        let (s, body) = self
            .call(
                reqwest::Method::PATCH,
                &format!("/node-instances/{id}"),
                Some(json!({"runtime_properties": props, "version": full["version"]})),
            )
            .await;
        assert_eq!(s, 200, "PATCH fault switch: {body}");
    }
}

/// Fails with a clear message when the fixture deployment is missing.
pub async fn require_deployments(c: &CloudifyClient, ids: &[&str]) {
    let want: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    let found = c.deployments_by_id(&want).await.expect("GET /deployments");
    let mut have: Vec<&str> = found.iter().map(|d| d.id.as_str()).collect();
    have.sort_unstable();
    let mut want_sorted: Vec<&str> = ids.to_vec();
    want_sorted.sort_unstable();
    assert_eq!(
        have, want_sorted,
        "the contract deployments are missing: run tests/manager/fixtures.py tests/manager/scenarios/contract.yaml"
    );
}

/// Polls an execution through the provider's client until it ended.
pub async fn wait_ended(c: &CloudifyClient, id: &str) -> Execution {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let e = c.execution(id).await.expect("GET /executions/{id}");
        if e.is_ended() {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "execution {id} still {} after 240 s",
            e.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The VM instances of a deployment (node `worker_host`), by id.
pub async fn vms(c: &CloudifyClient, deployment: &str) -> Vec<NodeInstance> {
    let mut v = c
        .node_instances(&[deployment.to_owned()], &[VM.to_owned()])
        .await
        .expect("GET /node-instances");
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// `(current, planned)` of the deployment's `workers` group.
pub async fn group_counts(c: &CloudifyClient, deployment: &str) -> (i64, i64) {
    let d = c
        .deployments_by_id(&[deployment.to_owned()])
        .await
        .expect("GET /deployments");
    let p = &d
        .first()
        .and_then(|d| d.scaling_groups.get(GROUP))
        .unwrap_or_else(|| panic!("{deployment} has no group {GROUP}"))
        .properties;
    (
        p.current_instances.expect("current_instances"),
        p.planned_instances.expect("planned_instances"),
    )
}
