//! The simulator's REST surface over real HTTP: health, auth, tenants, resource shapes and the
//! list conventions (filters, `_include`, paging, `_sort`, `_get_all_results`), searches.

use crate::support::{assert_error, start, start_default};
use cloudify_sim::{Scenario, Timing};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn ok_needs_no_auth() {
    let sim = start_default().await;
    let (status, body) = sim.api.anonymous().with_tenant(None).get("/ok").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "OK");
}

#[tokio::test]
async fn credentials_and_tenant_are_checked() {
    let sim = start_default().await;
    let api = &sim.api;
    assert_error(
        &api.anonymous().get("/deployments").await,
        401,
        "unauthorized_error",
    );
    assert_error(
        &api.with_user("admin", "wrong").get("/deployments").await,
        401,
        "unauthorized_error",
    );
    assert_error(
        &api.with_user("nobody", "x").get("/deployments").await,
        401,
        "unauthorized_error",
    );
    let missing = api.with_tenant(None).get("/deployments").await;
    assert_error(&missing, 403, "forbidden_error");
    assert!(
        missing.1["message"]
            .as_str()
            .unwrap_or_default()
            .contains("tenant not provided")
    );
    let unknown = api.with_tenant(Some("other")).get("/deployments").await;
    assert_error(&unknown, 403, "forbidden_error");
    assert!(
        unknown.1["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid tenant name")
    );
    // A wrong Authorization header is no authentication at all.
    let (status, _) = api
        .anonymous()
        .with_token("garbage")
        .get("/deployments")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn account_locks_after_too_many_failed_logins() {
    let sim = start_default().await;
    let bad = sim.api.with_user("admin", "wrong");
    // `failed_logins_before_account_lock` = 4: four failures do not lock...
    for _ in 0..4 {
        assert_error(&bad.get("/deployments").await, 401, "unauthorized_error");
    }
    sim.api.get_ok("/deployments").await;
    // ...and a success resets the count; more than four in a row lock the account, after
    // which even the right password is refused.
    for _ in 0..5 {
        assert_error(&bad.get("/deployments").await, 401, "unauthorized_error");
    }
    assert_error(
        &sim.api.get("/deployments").await,
        401,
        "unauthorized_error",
    );
}

#[tokio::test]
async fn tokens_new_and_old_style() {
    let sim = start_default().await;
    // 6.4+: POST /tokens returns the secret once.
    let (status, created) = sim
        .api
        .call(
            Method::POST,
            "/api/v3.1/tokens",
            Some(json!({"description": "ci", "expiration_date": "+1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let value = created["value"].as_str().expect("value").to_string();
    assert!(value.starts_with("ctok-"), "{value}");
    let by_token = sim.api.with_token(&value);
    let body = by_token.get_ok("/deployments?_include=id").await;
    assert_eq!(body["metadata"]["pagination"]["total"], 3);
    // The token list masks secrets.
    let list = sim.api.get_ok("/tokens").await;
    let items = list["items"].as_array().expect("items");
    assert!(items.iter().all(|t| t["value"] == "********"), "{list}");
    // <= 6.3: GET /tokens answered {value, username, role}.
    let legacy = list["value"].as_str().expect("legacy value");
    assert_eq!(list["username"], "admin");
    assert_eq!(list["role"], "sys_admin");
    sim.api.with_token(legacy).get_ok("/deployments").await;
    // Expired tokens are refused.
    let (_, expired) = sim
        .api
        .call(
            Method::POST,
            "/api/v3.1/tokens",
            Some(json!({"expiration_date": "2001-01-01 00:00"})),
        )
        .await;
    let expired = expired["value"].as_str().expect("value");
    assert_error(
        &sim.api.with_token(expired).get("/deployments").await,
        401,
        "unauthorized_error",
    );
}

#[tokio::test]
async fn deployment_shape_has_scaling_groups_and_labels() {
    let sim = start_default().await;
    let d = sim.api.get_ok("/deployments/k8s-pool-a").await;
    assert_eq!(d["id"], "k8s-pool-a");
    assert_eq!(d["tenant_name"], "default_tenant");
    let workers = &d["scaling_groups"]["workers"];
    assert_eq!(workers["members"], json!(["workers_host", "workers_port"]));
    assert_eq!(
        workers["properties"],
        json!({"default_instances": 2, "min_instances": 1, "max_instances": 10,
               "current_instances": 2, "planned_instances": 2})
    );
    assert_eq!(d["labels"][0]["key"], "k8s-cluster");
    assert_eq!(d["labels"][0]["value"], "demo");
    let scale = d["workflows"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == "scale"))
        .expect("scale workflow");
    assert_eq!(scale["parameters"]["delta"]["default"], 1);
    assert_error(
        &sim.api.get("/deployments/nope").await,
        404,
        "not_found_error",
    );
}

#[tokio::test]
async fn nodes_and_instances_have_the_planned_shape() {
    let sim = start_default().await;
    let nodes = sim
        .api
        .get_ok("/nodes?deployment_id=k8s-pool-a&id=workers_host")
        .await;
    let host = &nodes["items"][0];
    assert_eq!(host["type"], "cloudify.openstack.nodes.Server");
    assert!(
        host["type_hierarchy"]
            .as_array()
            .is_some_and(|h| h.contains(&json!("cloudify.nodes.Compute")))
    );
    assert_eq!(host["host_id"], "workers_host");
    assert_eq!(host["number_of_instances"], 1);
    assert_eq!(host["actual_number_of_instances"], 2);
    let port = sim
        .api
        .get_ok("/nodes?deployment_id=k8s-pool-a&id=workers_port")
        .await;
    assert_eq!(port["items"][0]["host_id"], Value::Null);

    let vms = sim.api.vms("k8s-pool-a", "workers").await;
    assert_eq!(vms.len(), 2);
    let vm = &vms[0];
    let id = vm["id"].as_str().expect("id");
    let suffix = id.strip_prefix("workers_host_").expect("node prefix");
    assert!(
        suffix.len() == 6
            && suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert_eq!(vm["state"], "started");
    assert_eq!(vm["node_id"], "workers_host");
    assert!(vm["index"].as_u64().is_some() && vm["version"].as_u64().is_some());
    let rp = &vm["runtime_properties"];
    assert!(
        rp["external_id"].is_string() && rp["ip"].as_str().is_some_and(|ip| ip.starts_with("10."))
    );
    assert_eq!(
        rp["hostname"],
        format!("k8s-pool-a-{}", id.replace('_', "-"))
    );
    let gid = vm["scaling_groups"][0]["id"].as_str().expect("group id");
    assert!(gid.starts_with("workers_") && gid.len() == "workers_".len() + 6);
    // The port shares the group-instance id and has no host.
    let one = sim.api.get_ok(&format!("/node-instances/{id}")).await;
    assert_eq!(one["id"], id);
    let port_id = vm["relationships"][0]["target_id"].as_str().expect("port");
    let port = sim.api.get_ok(&format!("/node-instances/{port_id}")).await;
    assert_eq!(port["scaling_groups"][0]["id"], gid);
    assert_eq!(port["host_id"], Value::Null);
    assert_error(
        &sim.api.get("/node-instances/nope_abcdef").await,
        404,
        "not_found_error",
    );
    // Control plane: one started VM, hostname from the deployment.
    let cp = sim.api.instances("k8s-control-plane").await;
    assert_eq!(cp.len(), 1);
    assert!(
        cp[0]["runtime_properties"]["hostname"]
            .as_str()
            .is_some_and(|h| h.starts_with("k8s-control-plane-control-plane-host-"))
    );
}

#[tokio::test]
async fn filters_include_sort_and_paging() {
    let sim = start(
        Scenario::default_demo()
            .with_instances(25)
            .with_timing(Timing::instant())
            .with_seed(1),
    )
    .await;
    let api = &sim.api;
    // Equality filter, repeat for OR.
    let a = api.get_ok("/node-instances?deployment_id=k8s-pool-a").await;
    assert_eq!(a["metadata"]["pagination"]["total"], 50);
    let both = api
        .get_ok("/node-instances?deployment_id=k8s-pool-a&deployment_id=k8s-control-plane")
        .await;
    assert_eq!(both["metadata"]["pagination"]["total"], 51);
    let hosts = api
        .get_ok("/node-instances?node_id=workers_host&state=started")
        .await;
    assert_eq!(hosts["metadata"]["pagination"]["total"], 25);
    // Paging: size is the page size asked, total is all matches.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = api
            .get_ok(&format!(
                "/node-instances?deployment_id=k8s-pool-a&_size=7&_offset={offset}&_include=id"
            ))
            .await;
        let p = &page["metadata"]["pagination"];
        assert_eq!(
            (p["size"].as_u64(), p["offset"].as_u64()),
            (Some(7), Some(offset))
        );
        let items = page["items"].as_array().expect("items").clone();
        for i in &items {
            assert_eq!(i.as_object().map(|o| o.len()), Some(1), "{i}");
            seen.push(i["id"].as_str().expect("id").to_string());
        }
        offset += items.len() as u64;
        if items.is_empty() || offset >= p["total"].as_u64().expect("total") {
            break;
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (50, 50));
    // Default page size 1000; _get_all_results returns everything.
    let all = api
        .get_ok("/node-instances?_get_all_results=true&_include=id")
        .await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(51));
    assert_eq!(
        api.get_ok("/node-instances?_include=id").await["metadata"]["pagination"]["size"],
        1000
    );
    // _sort ascending and descending.
    let asc = api.get_ok("/node-instances?_sort=id&_include=id").await;
    let ids: Vec<&str> = asc["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    let desc = api
        .get_ok("/node-instances?_sort=-id&_include=id&_size=1")
        .await;
    assert_eq!(desc["items"][0]["id"], json!(sorted.last().copied()));
    // Errors.
    assert_error(
        &api.get("/node-instances?_include=id,bogus").await,
        400,
        "no_such_include_field_error",
    );
    assert_error(
        &api.get("/deployments/k8s-pool-a?_include=nope").await,
        400,
        "no_such_include_field_error",
    );
    assert_error(
        &api.get("/node-instances?bogus=1").await,
        400,
        "bad_parameters_error",
    );
    assert_error(
        &api.get("/executions?colour=red").await,
        400,
        "bad_parameters_error",
    );
    assert_error(
        &api.get("/node-instances?_size=-1").await,
        400,
        "bad_parameters_error",
    );
    assert_error(
        &api.get("/node-instances?_get_all_results=maybe").await,
        400,
        "bad_parameters_error",
    );
    assert_error(
        &api.get("/nodes?_sort=nope").await,
        400,
        "bad_parameters_error",
    );
    assert_error(
        &api.get("/deployments?_filter_id=saved").await,
        404,
        "not_found_error",
    );
}

#[tokio::test]
async fn search_deployments_by_label() {
    let sim = start_default().await;
    let search = |rules: Value| {
        let api = sim.api.clone();
        async move {
            api.post(
                "/searches/deployments?_include=id",
                json!({"filter_rules": rules}),
            )
            .await
        }
    };
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, body) = search(json!([{"key": "k8s-cluster", "values": ["demo"],
                                         "operator": "any_of", "type": "label"}]))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        ids(&body),
        ["k8s-pool-a", "k8s-pool-b", "k8s-control-plane"]
    );
    let (_, body) = search(json!([{"key": "k8s-cluster", "values": ["prod"],
                                    "operator": "any_of", "type": "label"}]))
    .await;
    assert!(ids(&body).is_empty());
    let (_, body) = search(json!([{"key": "k8s-cluster", "values": ["prod"],
                                    "operator": "not_any_of", "type": "label"}]))
    .await;
    assert_eq!(ids(&body).len(), 3);
    let (_, body) = search(json!([{"key": "role", "values": [],
                                    "operator": "is_null", "type": "label"}]))
    .await;
    assert_eq!(ids(&body).len(), 3);
    let (_, body) = search(json!([{"key": "k8s-cluster", "values": [],
                                    "operator": "is_not_null", "type": "label"},
                                   {"key": "id", "values": ["k8s-pool"],
                                    "operator": "starts_with", "type": "attribute"}]))
    .await;
    assert_eq!(ids(&body), ["k8s-pool-a", "k8s-pool-b"]);
    let bad = search(
        json!([{"key": "k8s-cluster", "values": ["demo"], "operator": "equals",
                             "type": "label"}]),
    )
    .await;
    assert_error(&bad, 400, "invalid_filter_rule");
    assert!(bad.1["err_filter_rule"].is_object() && bad.1["err_reason"].is_string());
}

#[tokio::test]
async fn bad_bodies_and_routes_never_crash() {
    let sim = start_default().await;
    let raw = |method: Method, path: &str, body: &'static str| {
        let http = sim.api.http.clone();
        let url = format!("{}{path}", sim.api.base);
        async move {
            let resp = http
                .request(method, url)
                .basic_auth("admin", Some("admin"))
                .header("Tenant", "default_tenant")
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .expect("sent");
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    for (path, body) in [
        ("/api/v3.1/executions", "{not json"),
        ("/api/v3.1/executions", "[1,2]"),
        ("/api/v3.1/executions", r#"{"workflow_id": "scale"}"#),
        (
            "/api/v3.1/executions",
            r#"{"deployment_id": 5, "workflow_id": "scale"}"#,
        ),
        (
            "/api/v3.1/executions",
            r#"{"deployment_id": "k8s-pool-a", "workflow_id": "scale", "parameters": [1]}"#,
        ),
        (
            "/api/v3.1/executions",
            r#"{"deployment_id": "k8s-pool-a", "workflow_id": "scale", "queue": "perhaps"}"#,
        ),
        ("/api/v3.1/searches/deployments", "{{"),
        ("/api/v3.1/searches/deployments", r#"{"filter_rules": "x"}"#),
        ("/api/v3.1/tokens", "nope"),
    ] {
        let got = raw(Method::POST, path, body).await;
        assert_error(&got, 400, "bad_parameters_error");
    }
    assert_error(
        &raw(Method::DELETE, "/api/v3.1/deployments", "").await,
        405,
        "method_not_allowed_error",
    );
    assert_error(
        &raw(Method::GET, "/api/v3.1/nothing-here", "").await,
        404,
        "not_found_error",
    );
    let (status, _) = raw(Method::POST, "/_sim/faults", "{\"latency\": 1}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn request_lines_over_the_scenario_limit_get_gunicorns_414() {
    let scenario = Scenario::from_yaml_str(
        "timing: {execution_start_ms: 0, step_ms: 0}\nmax_request_line: 4094\ndeployments: [{id: pool}]\n",
    )
    .expect("scenario");
    let sim = start(scenario).await;
    // `GET <path> HTTP/1.1` of exactly `len` bytes, padded with repeated deployment filters.
    let line_of = |len: usize| {
        let mut path = "/api/v3.1/node-instances?_include=id".to_string();
        while "GET ".len() + path.len() + " HTTP/1.1".len() + 60 < len {
            path.push_str("&deployment_id=k8s-pool-0001");
        }
        let pad = len - ("GET ".len() + path.len() + "&deployment_id=".len() + " HTTP/1.1".len());
        path.push_str(&format!("&deployment_id={}", "x".repeat(pad)));
        path
    };
    let get = |path: String| {
        sim.api
            .http
            .get(format!("{}{path}", sim.api.base))
            .basic_auth("admin", Some("admin"))
            .header("Tenant", "default_tenant")
            .send()
    };
    let at_limit = get(line_of(4094)).await.expect("sent");
    assert_eq!(at_limit.status(), StatusCode::OK);
    let over = get(line_of(4095)).await.expect("sent");
    assert_eq!(over.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(
        over.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html")
    );
    let body = over.text().await.expect("body");
    assert!(
        body.contains("Request Line is too large (4095 &gt; 4094)"),
        "{body}"
    );
    // Without the scenario key there is no limit.
    let unlimited = start_default().await;
    let long = unlimited
        .api
        .http
        .get(format!("{}{}", unlimited.api.base, line_of(9000)))
        .basic_auth("admin", Some("admin"))
        .header("Tenant", "default_tenant")
        .send()
        .await
        .expect("sent");
    assert_eq!(long.status(), StatusCode::OK);
}
