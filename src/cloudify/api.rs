//! [`Cloudify`] over [`CloudifyClient`]: which endpoints, filters and projections each call uses.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::client::CallKind;
use super::models::Identified;
use super::{
    Cloudify, CloudifyClient, CloudifyError, Deployment, DeploymentModification, Execution,
    ExecutionStatus, Node, NodeInstance, ScaleRequest,
};

/// Every deployment read (label search and by id): what the groups and the refresh's change
/// tracking need. `labels` is left out: the search matches them server-side, and on the real
/// manager they are a relationship read per row.
const DEPLOYMENT_FIELDS: &str =
    "id,scaling_groups,site_name,updated_at,latest_execution,latest_execution_status";
const NODE_FIELDS: &str = "id,deployment_id,type_hierarchy,host_id";
const INSTANCE_FIELDS: &str =
    "id,node_id,deployment_id,host_id,state,runtime_properties,scaling_groups";
const MODIFICATION_FIELDS: &str = "id,deployment_id,status,context,modified_nodes";
const EXECUTION_FIELDS: &str =
    "id,workflow_id,deployment_id,status,error,parameters,created_at,ended_at";
/// What the refresh's second look at the executions compares: ids and statuses.
const EXECUTION_STATUS_FIELDS: &str = "id,workflow_id,deployment_id,status";

/// Bytes of URL-encoded id parameters (`deployment_id=…&deployment_id=…`) in one request. The
/// real manager runs behind gunicorn, which refuses a request line over 4094 bytes (issue 20):
/// with the path, the projection and the paging parameters (under 400 bytes) a request line
/// stays under 2.5 KiB, whatever the number of ids. An id longer than this goes alone.
pub(super) const ID_BUDGET: usize = 2048;

/// Ids of one kind in one request. The real manager's REST service turns each repeated filter
/// value into one more OR'ed nested subquery, run twice (rows and count): measured on the
/// manager tier under load, one `deployment_id` of `/node-instances` took 0.3 s, 10 took 1.1 s,
/// 30 took 4.1 s and 60 took 60 s (tests/manager/FINDINGS.md). Ten per request is the cheapest
/// per id.
pub(super) const IDS_PER_REQUEST: usize = 10;

/// Above this many deployments, their nodes and instances are read for the whole tenant (the
/// instances filtered by node name only) and the others' dropped here: on the real manager one
/// such request costs what one request naming ten ids does (tests/manager/FINDINGS.md; with 50
/// deployments, VM instances by id in 5 requests took 5-6 s, the tenant's in one 0.3-0.8 s,
/// BENCHMARKS.md section 12), and a refresh reads that many only when it reads everything (the
/// first, the periodic full one). A tenant whose other deployments are many makes its answers
/// longer, paged by 1,000.
pub(super) const TENANT_WIDE_ABOVE: usize = 2 * IDS_PER_REQUEST;

/// Requests of one split list in flight at once: a few, so that a refresh that reads many
/// deployments does not wait on each in turn, and leaves the manager's other REST workers
/// (four on the manager tier) to everyone else.
const PARALLEL_REQUESTS: usize = 2;

/// Splits `values` into runs of at most [`IDS_PER_REQUEST`] whose `key=value&` parameters,
/// URL-encoded, fit in `budget` bytes (each run holds at least one value). Each run becomes one
/// request.
pub(super) fn chunks<'a>(key: &str, values: &'a [String], budget: usize) -> Vec<&'a [String]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, v) in values.iter().enumerate() {
        let cost = key.len()
            + 2
            + url::form_urlencoded::byte_serialize(v.as_bytes())
                .map(str::len)
                .sum::<usize>();
        if i > start && (used + cost > budget || i - start == IDS_PER_REQUEST) {
            out.push(&values[start..i]);
            start = i;
            used = 0;
        }
        used += cost;
    }
    if start < values.len() {
        out.push(&values[start..]);
    }
    out
}

/// The queries of a list filtered by `key` in `values`: one per chunk, or a single one without
/// the filter (every deployment of the tenant) when `values` is empty and `all_when_empty`.
fn scoped<'a>(
    key: &'a str,
    values: &[String],
    all_when_empty: bool,
) -> Vec<Vec<(&'a str, String)>> {
    if values.is_empty() {
        return if all_when_empty {
            vec![Vec::new()]
        } else {
            Vec::new()
        };
    }
    chunks(key, values, ID_BUDGET)
        .into_iter()
        .map(|c| repeated(key, c))
        .collect()
}

fn repeated<'a>(key: &'a str, values: &[String]) -> Vec<(&'a str, String)> {
    values.iter().map(|v| (key, v.clone())).collect()
}

/// The items of a tenant-wide read that belong to these deployments.
fn of_deployments<T>(items: Vec<T>, ids: &[String], of: impl Fn(&T) -> &String) -> Vec<T> {
    let wanted: std::collections::HashSet<&String> = ids.iter().collect();
    items
        .into_iter()
        .filter(|i| wanted.contains(of(i)))
        .collect()
}

/// The items of every request, in order; an item two requests both answered is kept once
/// (the first). Chunks name disjoint ids, so that only happens when a manager lies.
fn merged<T: Identified>(parts: Vec<Vec<T>>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for item in parts.into_iter().flatten() {
        if seen.insert(item.key().into_owned()) {
            out.push(item);
        }
    }
    out
}

#[async_trait]
impl Cloudify for CloudifyClient {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn tenant(&self) -> &str {
        &self.settings.tenant
    }

    async fn deployments_by_id(&self, ids: &[String]) -> Result<Vec<Deployment>, CloudifyError> {
        let queries = with(scoped("id", ids, false), &[("_include", DEPLOYMENT_FIELDS)]);
        let parts = self
            .list_each("GET /deployments", "/deployments", queries, None)
            .await?;
        Ok(merged(parts))
    }

    async fn search_deployments(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<Deployment>, CloudifyError> {
        let rules: Vec<_> = labels
            .iter()
            .map(|(k, v)| json!({"key": k, "values": [v], "operator": "any_of", "type": "label"}))
            .collect();
        let q = [("_include", DEPLOYMENT_FIELDS.to_owned())];
        self.list_all(
            "POST /searches/deployments",
            Method::POST,
            "/searches/deployments",
            &q,
            Some(json!({ "filter_rules": rules })),
            None,
        )
        .await
    }

    async fn nodes(&self, deployment_ids: &[String]) -> Result<Vec<Node>, CloudifyError> {
        if deployment_ids.len() > TENANT_WIDE_ABOVE {
            // Sorted, so that pages read while other deployments come and go stay in order
            // (a node's id is unique within its deployment only).
            let q = [
                ("_include", NODE_FIELDS.to_owned()),
                ("_sort", "deployment_id".to_owned()),
                ("_sort", "id".to_owned()),
            ];
            let all: Vec<Node> = self
                .list_all("GET /nodes", Method::GET, "/nodes", &q, None, None)
                .await?;
            return Ok(of_deployments(all, deployment_ids, |n| &n.deployment_id));
        }
        let queries = with(
            scoped("deployment_id", deployment_ids, false),
            &[("_include", NODE_FIELDS)],
        );
        let parts = self
            .list_each("GET /nodes", "/nodes", queries, None)
            .await?;
        Ok(merged(parts))
    }

    async fn node_instances(
        &self,
        deployment_ids: &[String],
        node_ids: &[String],
    ) -> Result<Vec<NodeInstance>, CloudifyError> {
        // Both lists share the budget; node ids are few (the VM nodes' names) unless every
        // deployment names its own.
        if deployment_ids.len() > TENANT_WIDE_ABOVE {
            let queries = chunks("node_id", node_ids, ID_BUDGET)
                .into_iter()
                .map(|nodes| {
                    let mut q = repeated("node_id", nodes);
                    q.push(("_include", INSTANCE_FIELDS.into()));
                    q.push(("_sort", "id".into()));
                    q
                })
                .collect();
            let parts = self
                .list_each("GET /node-instances", "/node-instances", queries, None)
                .await?;
            return Ok(of_deployments(merged(parts), deployment_ids, |i| {
                &i.deployment_id
            }));
        }
        let mut queries = Vec::new();
        for nodes in chunks("node_id", node_ids, ID_BUDGET / 2) {
            for deployments in chunks("deployment_id", deployment_ids, ID_BUDGET / 2) {
                let mut q = repeated("deployment_id", deployments);
                q.extend(repeated("node_id", nodes));
                q.push(("_include", INSTANCE_FIELDS.into()));
                queries.push(q);
            }
        }
        let parts = self
            .list_each("GET /node-instances", "/node-instances", queries, None)
            .await?;
        Ok(merged(parts))
    }

    async fn scale_executions(
        &self,
        deployment_ids: &[String],
        statuses: &[ExecutionStatus],
        limit: Option<usize>,
    ) -> Result<Vec<Execution>, CloudifyError> {
        self.executions_of(deployment_ids, statuses, limit, EXECUTION_FIELDS)
            .await
    }

    async fn scale_execution_statuses(
        &self,
        statuses: &[ExecutionStatus],
        limit: Option<usize>,
    ) -> Result<Vec<Execution>, CloudifyError> {
        self.executions_of(&[], statuses, limit, EXECUTION_STATUS_FIELDS)
            .await
    }

    async fn deployment_modifications(
        &self,
        deployment_ids: &[String],
        status: &str,
    ) -> Result<Vec<DeploymentModification>, CloudifyError> {
        // No id: every deployment of the tenant (one request, whatever their number).
        let queries = with(
            scoped("deployment_id", deployment_ids, true),
            &[("status", status), ("_include", MODIFICATION_FIELDS)],
        );
        let parts = self
            .list_each(
                "GET /deployment-modifications",
                "/deployment-modifications",
                queries,
                None,
            )
            .await?;
        Ok(merged(parts))
    }

    async fn start_scale(&self, request: &ScaleRequest) -> Result<Execution, CloudifyError> {
        let mut parameters = json!({
            "scalable_entity_name": request.group,
            "delta": request.delta,
            "scale_compute": false,
        });
        if request.abort_started {
            parameters["abort_started"] = json!(true);
        }
        if !request.include_instances.is_empty() {
            parameters["include_instances"] = json!(request.include_instances);
        }
        let body = json!({
            "deployment_id": request.deployment_id,
            "workflow_id": "scale",
            "parameters": parameters,
            // queue: a second workflow on the deployment waits instead of failing with
            // existing_running_execution_error. Never `force`: parallel scales corrupt the
            // deployment modification.
            "queue": true,
        });
        self.send(
            "POST /executions",
            || self.request(Method::POST, "/executions").json(&body),
            CallKind::Write,
        )
        .await
    }

    async fn execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        let path = format!("/executions/{}", urlencode(id));
        self.send(
            "GET /executions/{id}",
            || self.request(Method::GET, &path),
            CallKind::Read,
        )
        .await
    }

    async fn cancel_execution(&self, id: &str) -> Result<Execution, CloudifyError> {
        let path = format!("/executions/{}", urlencode(id));
        let body = json!({"action": "cancel"});
        self.send(
            "POST /executions/{id}",
            || self.request(Method::POST, &path).json(&body),
            CallKind::Write,
        )
        .await
    }
}

/// One list request on its way.
type ListFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<T>, CloudifyError>> + Send + 'a>>;

/// Each query with these parameters added.
fn with<'a>(
    mut queries: Vec<Vec<(&'a str, String)>>,
    params: &[(&'a str, &str)],
) -> Vec<Vec<(&'a str, String)>> {
    for q in &mut queries {
        q.extend(params.iter().map(|(k, v)| (*k, (*v).to_owned())));
    }
    queries
}

impl CloudifyClient {
    /// One `GET` list (every page) per query, [`PARALLEL_REQUESTS`] at a time; their items in
    /// the order of the queries.
    async fn list_each<T: DeserializeOwned + Identified + Send>(
        &self,
        route: &'static str,
        path: &str,
        queries: Vec<Vec<(&str, String)>>,
        limit: Option<usize>,
    ) -> Result<Vec<Vec<T>>, CloudifyError> {
        // Boxed, so the stream holds no closure type: the `Send` future `async_trait` needs
        // could not be proven for one (a higher-ranked lifetime).
        let pending: Vec<ListFuture<'_, T>> = queries
            .iter()
            .map(|q| {
                Box::pin(self.list_all(route, Method::GET, path, q, None, limit))
                    as ListFuture<'_, T>
            })
            .collect();
        futures::stream::iter(pending)
            .buffered(PARALLEL_REQUESTS)
            .try_collect()
            .await
    }

    /// `scale` executions, newest first, with the projection `fields`: of every deployment of
    /// the tenant when `deployment_ids` is empty (one request), else one request per chunk of
    /// ids, merged newest first and cut to `limit`.
    async fn executions_of(
        &self,
        deployment_ids: &[String],
        statuses: &[ExecutionStatus],
        limit: Option<usize>,
        fields: &str,
    ) -> Result<Vec<Execution>, CloudifyError> {
        let mut queries = scoped("deployment_id", deployment_ids, true);
        let several = queries.len() > 1;
        for q in &mut queries {
            q.extend(statuses.iter().map(|s| ("status", s.as_str().to_owned())));
            q.push(("workflow_id", "scale".into()));
            q.push(("_sort", "-created_at".into()));
            q.push(("_include", fields.into()));
        }
        let parts = self
            .list_each("GET /executions", "/executions", queries, limit)
            .await?;
        let mut out: Vec<Execution> = merged(parts);
        if several {
            // Cloudify's timestamps sort as text; a stable sort keeps each chunk's order.
            out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
            if let Some(l) = limit {
                out.truncate(l);
            }
        }
        Ok(out)
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0len$}")).collect()
    }

    #[test]
    fn chunks_fit_the_budget_and_keep_every_id_once_in_order() {
        for (n, len) in [(0, 10), (1, 10), (93, 40), (160, 50), (1000, 8)] {
            let all = ids(n, len);
            let parts = chunks("deployment_id", &all, ID_BUDGET);
            let flat: Vec<&String> = parts.iter().flat_map(|c| c.iter()).collect();
            assert_eq!(flat, all.iter().collect::<Vec<_>>(), "{n} ids of {len}");
            for c in &parts {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(c.iter().map(|v| ("deployment_id", v)))
                    .finish();
                assert!(query.len() <= ID_BUDGET, "{} bytes", query.len());
            }
        }
    }

    #[test]
    fn a_request_names_at_most_ten_ids() {
        let all = ids(25, 3);
        let sizes: Vec<usize> = chunks("deployment_id", &all, ID_BUDGET)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
        assert!(scoped("id", &[], false).is_empty(), "no id: no request");
        assert_eq!(
            scoped("id", &[], true),
            [Vec::new()],
            "no id: the whole tenant"
        );
    }

    #[test]
    fn an_id_is_counted_encoded_and_a_huge_one_goes_alone() {
        let odd = vec![
            "a b/ü".repeat(100),
            "x".into(),
            "y".repeat(3000),
            "z".into(),
        ];
        let parts = chunks("id", &odd, 600);
        let sizes: Vec<usize> = parts.iter().map(|c| c.len()).collect();
        assert_eq!(
            sizes,
            [1, 1, 1, 1],
            "500 chars encode to more than 600 bytes"
        );
        assert_eq!(chunks("id", &odd[1..2], 600).len(), 1);
    }
}
