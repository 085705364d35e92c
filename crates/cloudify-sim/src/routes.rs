//! The HTTP surface: `/api/v3.1/...` as a manager serves it, plus `/_sim/*` for tests.
//!
//! Handlers authenticate, then do all their work on the locked model and render JSON before
//! releasing the lock; serialization to bytes happens after.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::auth::{Caller, authenticate, create_token, parse_expiration};
use super::error::SimError;
use super::executions::{apply_action, create_execution, execution_owner, parse_new_execution};
use super::faults::{Faults, FaultsPatch, RequestLog};
use super::instance_json::instance_page;
use super::query::{
    ListQuery, Listable, list_page, parse_bool, parse_include, project, select_page,
};
use super::resources::token_json;
use super::search::parse_rules;
use super::shared::Shared;
use super::state::{
    Deployment, Execution, ModificationRecord, Node, NodeInstance, Token, evaluate,
    parse_new_deployment,
};
use super::workflow::{ensure_runner, spawn_forced};

type ApiResult = Result<Response, SimError>;
type S = State<Arc<Shared>>;

/// The REST API under `/api/v3.1`, the `/_sim` control routes, and Cloudify-shaped 404/405
/// answers for everything else, with request counting and fault injection around them.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/ok", get(ok))
        .route("/version", get(version))
        .route("/tokens", get(tokens_get).post(tokens_post))
        .route("/tokens/{id}", get(token_get).delete(token_delete))
        .route("/deployments", get(deployments_list))
        .route(
            "/deployments/{id}",
            get(deployment_get)
                .put(deployment_put)
                .delete(deployment_delete),
        )
        .route("/deployments/{id}/outputs", get(deployment_outputs))
        .route(
            "/deployments/{id}/capabilities",
            get(deployment_capabilities),
        )
        .route("/blueprints/{id}", get(blueprint_get).put(blueprint_put))
        .route(
            "/deployment-updates/{id}/update/initiate",
            post(update_initiate),
        )
        .route("/deployment-updates/{id}", get(update_get))
        .route("/searches/deployments", post(deployments_search))
        .route("/nodes", get(nodes_list))
        .route("/node-instances", get(instances_list))
        .route("/node-instances/{id}", get(instance_get))
        .route("/executions", get(executions_list).post(executions_post))
        .route(
            "/executions/{id}",
            get(execution_get).post(execution_action),
        )
        .route("/deployment-modifications", get(modifications_list))
        .route("/deployment-modifications/{id}", get(modification_get))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api/v3.1", api)
        // `manager.get_version()` asks the unversioned URL.
        .route("/api/version", get(version))
        .route(
            "/_sim/faults",
            get(faults_get).post(faults_post).delete(faults_delete),
        )
        .route("/_sim/requests", get(requests_get).delete(requests_delete))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

fn ok_json(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

fn caller(shared: &Shared, headers: &HeaderMap, need_tenant: bool) -> Result<Caller, SimError> {
    authenticate(&mut shared.model(), headers, need_tenant)
}

async fn not_found() -> SimError {
    SimError::NotFound(
        "404 Not Found: The requested URL was not found on the server. If you entered the URL \
         manually please check your spelling and try again."
            .into(),
    )
}

async fn method_not_allowed() -> SimError {
    SimError::MethodNotAllowed("The method is not allowed for the requested URL.".into())
}

async fn ok() -> ApiResult {
    ok_json(json!({"status": "OK"}))
}

async fn version(State(shared): S, headers: HeaderMap) -> ApiResult {
    caller(&shared, &headers, false)?;
    ok_json(json!({
        "version": "7.0.0",
        "edition": "premium",
        "distribution": "simulator",
        "distro_release": "",
        "build": null,
        "date": null,
        "commit": null,
    }))
}

/// GET /tokens: answers both client generations at once. Clients up to 6.3 read
/// `value`/`username`/`role` at the top level (the old "get my token" call); 6.4+ clients read
/// the `items` list. The legacy token is created once per user and reused.
async fn tokens_get(State(shared): S, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let who = caller(&shared, &headers, false)?;
    let query = ListQuery::parse::<Token>(q.as_deref())?;
    let mut model = shared.model();
    const LEGACY: &str = "Legacy GET /tokens session token";
    let legacy = model
        .tokens
        .iter()
        .find(|t| {
            t.username == who.username
                && t.description.as_deref() == Some(LEGACY)
                && t.expiration.is_none_or(|e| e > chrono::Utc::now())
        })
        .cloned();
    let legacy = match legacy {
        Some(t) => t,
        None => {
            let expiration = parse_expiration("+10h")?;
            create_token(
                &mut model,
                &who.username,
                Some(LEGACY.into()),
                Some(expiration),
            )
        }
    };
    let mut page = list_page(&model, &who.username, model.tokens.iter(), &query);
    if let Value::Object(map) = &mut page {
        map.insert(
            "value".into(),
            json!(format!("ctok-{}-{}", legacy.id, legacy.secret)),
        );
        map.insert("username".into(), json!(who.username));
        map.insert("role".into(), json!(who.role));
    }
    ok_json(page)
}

async fn tokens_post(State(shared): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = caller(&shared, &headers, false)?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| SimError::BadParameters(format!("Failed to parse JSON body: {e}")))?
    };
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .map(String::from);
    let expiration = match body.get("expiration_date") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_expiration(s)?),
        Some(_) => {
            return Err(SimError::BadParameters(
                "expiration_date must be a string".into(),
            ));
        }
    };
    let mut model = shared.model();
    let token = create_token(&mut model, &who.username, description, expiration);
    ok_json(Value::Object(token_json(&token, &who.role, true)))
}

fn own_token<'a>(tokens: &'a [Token], who: &Caller, id: &str) -> Result<&'a Token, SimError> {
    tokens
        .iter()
        .find(|t| t.id == id && (t.username == who.username || who.role == "sys_admin"))
        .ok_or_else(|| SimError::not_found("Token", id))
}

async fn token_get(State(shared): S, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&shared, &headers, false)?;
    let model = shared.model();
    let token = own_token(&model.tokens, &who, &id)?;
    ok_json(Value::Object(token_json(token, &who.role, false)))
}

async fn token_delete(State(shared): S, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&shared, &headers, false)?;
    let mut model = shared.model();
    own_token(&model.tokens, &who, &id)?;
    model.tokens.retain(|t| t.id != id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deployments_list(
    State(shared): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let query = ListQuery::parse::<Deployment>(q.as_deref())?;
    let model = shared.model();
    ok_json(list_page(
        &model,
        who.tenant(),
        model.deployments.iter().filter(|d| !d.life.deleted),
        &query,
    ))
}

fn get_one<T: Listable>(
    item: Option<&T>,
    model: &super::state::Model,
    id: &str,
    raw_query: Option<&str>,
) -> ApiResult {
    let include = parse_include::<T>(raw_query)?;
    let item = item.ok_or_else(|| SimError::not_found(T::KIND, id))?;
    ok_json(project(item.render(model), include.as_deref()))
}

async fn deployment_get(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let model = shared.model();
    let item = model
        .deployment_index(who.tenant(), &id)
        .map(|i| &model.deployments[i]);
    get_one(item, &model, &id, q.as_deref())
}

/// `PUT /deployments/{id}` (`async_create` or not, the answer comes at once: the simulator's
/// environment creation is always asynchronous): 201 with the new deployment.
async fn deployment_put(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let request = parse_new_deployment(&body)?;
    let mut model = shared.model();
    let di = model.create_deployment(who.tenant(), &who.username, &id, request)?;
    let (tenant, dep) = (
        model.deployments[di].tenant.clone(),
        model.deployments[di].id.clone(),
    );
    ensure_runner(&shared, &mut model, tenant, dep);
    let rendered = Value::Object(model.deployments[di].render(&model));
    Ok((StatusCode::CREATED, Json(rendered)).into_response())
}

/// `DELETE /deployments/{id}[?force=true]`: 204, the deployment goes once
/// `delete_deployment_environment` ran.
async fn deployment_delete(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let force = query_flag(q.as_deref(), "force")?;
    let mut model = shared.model();
    let di = model.delete_deployment(who.tenant(), &who.username, &id, force)?;
    let (tenant, dep) = (
        model.deployments[di].tenant.clone(),
        model.deployments[di].id.clone(),
    );
    ensure_runner(&shared, &mut model, tenant, dep);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A boolean query parameter (`true`/`false`, as the Python client sends them); false if absent.
fn query_flag(raw: Option<&str>, name: &str) -> Result<bool, SimError> {
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k == name {
            return parse_bool(&v)
                .ok_or_else(|| SimError::BadParameters(format!("{name} must be <true/false>")));
        }
    }
    Ok(false)
}

/// `GET /deployments/{id}/outputs` and `/capabilities`: the blueprint's templates evaluated
/// against the deployment now.
fn evaluated(shared: &Shared, headers: &HeaderMap, id: &str, outputs: bool) -> ApiResult {
    let who = caller(shared, headers, true)?;
    let model = shared.model();
    let di = model
        .deployment_index(who.tenant(), id)
        .ok_or_else(|| SimError::not_found("Deployment", id))?;
    let d = &model.deployments[di];
    let templates = d
        .life
        .blueprint
        .as_ref()
        .map(|b| if outputs { &b.outputs } else { &b.capabilities });
    let values: Map<String, Value> = templates
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), evaluate(v, &d.id, &d.life.inputs)))
        .collect();
    let key = if outputs { "outputs" } else { "capabilities" };
    ok_json(json!({"deployment_id": &*d.id, key: values}))
}

async fn deployment_outputs(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    evaluated(&shared, &headers, &id, true)
}

async fn deployment_capabilities(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    evaluated(&shared, &headers, &id, false)
}

/// `PUT /blueprints/{id}?application_file_name=...` with the archive as the body (the Python
/// client's "legacy" upload; multipart is not read): 201, `uploaded` at once.
async fn blueprint_put(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let file = url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "application_file_name")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut model = shared.model();
    let rendered = {
        let record = model.upload_blueprint(who.tenant(), &who.username, &id, &file, body.len())?;
        record.clone()
    };
    let rendered = Value::Object(rendered.render(&model));
    Ok((StatusCode::CREATED, Json(rendered)).into_response())
}

async fn blueprint_get(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let model = shared.model();
    let item = model.blueprint(who.tenant(), &id);
    get_one(item, &model, &id, q.as_deref())
}

/// `POST /deployment-updates/{id}/update/initiate {inputs}`: the update, `updating`, with its
/// `update` execution queued on the deployment.
async fn update_initiate(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| SimError::BadParameters(format!("Failed to parse JSON body: {e}")))?
    };
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(SimError::BadParameters("inputs: expected a dict".into())),
    };
    let mut model = shared.model();
    let update = model.initiate_update(who.tenant(), &who.username, &id, &inputs)?;
    if let Some(di) = model.deployment_index(who.tenant(), &id) {
        let (tenant, dep) = (
            model.deployments[di].tenant.clone(),
            model.deployments[di].id.clone(),
        );
        ensure_runner(&shared, &mut model, tenant, dep);
    }
    let rendered = model
        .updates
        .iter()
        .find(|u| u.id == update)
        .map(|u| Value::Object(u.render(&model)))
        .unwrap_or(Value::Null);
    ok_json(rendered)
}

async fn update_get(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let model = shared.model();
    let item = model
        .updates
        .iter()
        .find(|u| u.id == id && &*u.tenant == who.tenant());
    get_one(item, &model, &id, q.as_deref())
}

async fn deployments_search(
    State(shared): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let query = ListQuery::parse::<Deployment>(q.as_deref())?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| SimError::BadParameters(format!("Failed to parse JSON body: {e}")))?
    };
    if !body.is_object() {
        return Err(SimError::BadParameters(
            "Request body must be a JSON object".into(),
        ));
    }
    if body.get("constraints").is_some_and(|c| !c.is_null()) {
        return Err(SimError::BadParameters(
            "DSL constraints are not supported by the simulator; use filter_rules".into(),
        ));
    }
    let rules = match body.get("filter_rules") {
        None | Some(Value::Null) => Vec::new(),
        Some(raw) => parse_rules(raw)?,
    };
    let model = shared.model();
    let matching = model
        .deployments
        .iter()
        .filter(|d| !d.life.deleted && rules.iter().all(|r| r.accepts(d)));
    ok_json(list_page(&model, who.tenant(), matching, &query))
}

async fn nodes_list(State(shared): S, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let query = ListQuery::parse::<Node>(q.as_deref())?;
    let model = shared.model();
    ok_json(list_page(&model, who.tenant(), model.nodes.iter(), &query))
}

async fn instances_list(State(shared): S, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let mut query = ListQuery::parse::<NodeInstance>(q.as_deref())?;
    // An instance inserted ahead of this page since the previous one (fault): offset paging
    // skips the row that moved onto the previous page.
    let churned = query.offset > 0
        && query.sort.is_empty()
        && !query.get_all
        && shared.faults().take_page_churn();
    if churned {
        query.offset += 1;
    }
    let model = shared.model();
    // Served from the per-deployment index: a page of a 200k-instance manager costs the page,
    // not a walk over every row.
    let deployments = query.take_filter("deployment_id");
    let keys = model.instance_candidates(who.tenant(), deployments.as_deref());
    let row = |k: &u64| model.instances.get(k);
    let (total, page) = if query.only_paging() {
        // The index is exact and in storage order: the page is a slice of it.
        let total = keys.len();
        let (start, end) = if query.get_all {
            (0, total)
        } else {
            let start = query.offset.min(total);
            (start, start.saturating_add(query.size).min(total))
        };
        (total, keys[start..end].iter().filter_map(row).collect())
    } else if deployments.is_some() {
        select_page(&model, who.tenant(), keys.iter().filter_map(row), &query)
    } else {
        // Walking the rows in order beats a lookup per key when everything is a candidate.
        select_page(&model, who.tenant(), model.instances.values(), &query)
    };
    let total = total + usize::from(churned);
    let body = instance_page(&page, total, &query)
        .map_err(|e| SimError::Internal(format!("serializing node instances: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn instance_get(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let model = shared.model();
    let item = model
        .instance_by_id(&id)
        .filter(|i| &*i.tenant == who.tenant());
    get_one(item, &model, &id, q.as_deref())
}

async fn executions_list(State(shared): S, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let query = ListQuery::parse::<Execution>(q.as_deref())?;
    let model = shared.model();
    ok_json(list_page(
        &model,
        who.tenant(),
        model.executions.iter(),
        &query,
    ))
}

async fn execution_get(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let model = shared.model();
    let item = model.execution(&id).filter(|e| &*e.tenant == who.tenant());
    get_one(item, &model, &id, q.as_deref())
}

/// Read-only: the provider reads modifications to tell whether a `started` scale has changed
/// `planned_instances` yet, and to find one left `started` by a failed or cancelled scale.
async fn modifications_list(
    State(shared): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let query = ListQuery::parse::<ModificationRecord>(q.as_deref())?;
    let model = shared.model();
    ok_json(list_page(
        &model,
        who.tenant(),
        model.modifications.iter(),
        &query,
    ))
}

async fn modification_get(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let model = shared.model();
    let item = model
        .modifications
        .iter()
        .find(|m| m.id == id && &*m.tenant == who.tenant());
    get_one(item, &model, &id, q.as_deref())
}

async fn executions_post(State(shared): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    if shared.faults().take_post_rejection() {
        return Err(SimError::Internal(
            "Internal error occurred in manager REST server (simulated, POST /executions)".into(),
        ));
    }
    let request = parse_new_execution(&body)?;
    let mut model = shared.model();
    let id = create_execution(&mut model, who.tenant(), &who.username, request)?;
    if let Some((tenant, deployment, forced)) = execution_owner(&model, &id) {
        if forced {
            spawn_forced(&shared, id.clone());
        } else {
            ensure_runner(&shared, &mut model, tenant, deployment);
        }
    }
    let rendered = model
        .execution(&id)
        .map(|e| Value::Object(e.render(&model)))
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(rendered)).into_response())
}

async fn execution_action(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let who = caller(&shared, &headers, true)?;
    let mut model = shared.model();
    apply_action(&mut model, who.tenant(), &id, &body)?;
    let rendered = model
        .execution(&id)
        .map(|e| Value::Object(e.render(&model)))
        .unwrap_or(Value::Null);
    ok_json(rendered)
}

fn faults_json(f: &Faults) -> Value {
    serde_json::to_value(f).unwrap_or_else(|_| Value::Object(Map::new()))
}

async fn faults_get(State(shared): S) -> ApiResult {
    ok_json(faults_json(&shared.faults()))
}

async fn faults_post(State(shared): S, body: Bytes) -> ApiResult {
    let patch: FaultsPatch = serde_json::from_slice(&body)
        .map_err(|e| SimError::BadParameters(format!("Invalid faults body: {e}")))?;
    let mut faults = shared.faults();
    faults.apply(patch).map_err(SimError::BadParameters)?;
    ok_json(faults_json(&faults))
}

async fn faults_delete(State(shared): S) -> ApiResult {
    let mut faults = shared.faults();
    *faults = Faults::default();
    ok_json(faults_json(&faults))
}

async fn requests_get(State(shared): S) -> ApiResult {
    let log: RequestLog = shared.requests().clone();
    ok_json(serde_json::to_value(log).unwrap_or(Value::Null))
}

async fn requests_delete(State(shared): S) -> ApiResult {
    *shared.requests() = RequestLog::default();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Counts every `/api/v3.1` request by method and templated route, then applies the injected
/// faults (latency, maintenance mode, random 500s). `/_sim/*` is neither counted nor faulted.
async fn observe(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/_sim") {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str)
        .to_string();
    shared
        .requests()
        .record(format!("{} {route}", request.method()));
    let faults = shared.faults().clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.down {
        return SimError::MaintenanceMode(
            "Your request was rejected since Cloudify manager is currently under maintenance mode"
                .into(),
        )
        .into_response();
    }
    if faults.error_rate > 0.0 && rand::rng().random::<f64>() < faults.error_rate {
        return SimError::Internal(
            "Internal error occurred in manager REST server (simulated)".into(),
        )
        .into_response();
    }
    next.run(request).await
}
