//! A hostile Cloudify Manager for tests (issue 20): an HTTP proxy on `127.0.0.1:0` in front of a
//! real manager (usually the simulator) whose behaviour a test programs per route, and which
//! logs every request it saw.
//!
//! ```ignore
//! let hostile = HostileManager::start(&sim.url()).await;
//! // The provider talks to `hostile.url()` instead of the simulator.
//! hostile.add(Rule::get("/api/v3.1/node-instances").ignore_offset());
//! hostile.add(Rule::post("/api/v3.1/searches/").times(1).html(502));
//! hostile.add(Rule::any("/api/v3.1/nodes").mutate_json(|v| v["items"] = json!([])));
//! hostile.limit_request_line(Some(4094)); // gunicorn's default
//! let seen = hostile.requests(); // method, path, query, headers, what was answered
//! ```
//!
//! Rules are tried in the order they were added; the first one whose method and path prefix
//! match (and that has uses left, see [`Rule::times`]) decides the answer, and a request no rule
//! matches is passed through unchanged. Redirects of the backend are passed to the client as
//! they are (the proxy follows none).

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A JSON mutation applied to the backend's answer.
type Mutation = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// What a matching rule does with the request.
#[derive(Clone)]
enum Action {
    /// Forward to the backend and answer what it answered.
    Pass,
    /// Forward, then change the JSON answer (a non-JSON answer is passed unchanged).
    Mutate(Mutation),
    /// Answer this, without asking the backend.
    Respond {
        status: StatusCode,
        content_type: String,
        body: Bytes,
    },
    /// Forward, then answer only the first `n` bytes of the backend's body.
    Truncate(usize),
    /// Answer 200 with a valid JSON body of about this many bytes, streamed.
    Huge(u64),
    /// Never answer (the client's timeout decides).
    Stall,
    /// Answer `302 Found` to the same path and query on this origin.
    Redirect(String),
}

/// How the hostile manager answers the requests that match a method and a path prefix.
#[derive(Clone)]
pub struct Rule {
    method: Option<Method>,
    prefix: String,
    uses: Option<usize>,
    ignored_params: Vec<String>,
    replaced_params: Vec<(String, String)>,
    delay: Option<Duration>,
    forward_first: bool,
    action: Action,
}

impl Rule {
    fn new(method: Option<Method>, prefix: &str) -> Rule {
        Rule {
            method,
            prefix: prefix.to_owned(),
            uses: None,
            ignored_params: Vec::new(),
            replaced_params: Vec::new(),
            delay: None,
            forward_first: false,
            action: Action::Pass,
        }
    }

    /// `GET` requests whose path starts with `prefix` (e.g. `/api/v3.1/node-instances`).
    pub fn get(prefix: &str) -> Rule {
        Rule::new(Some(Method::GET), prefix)
    }

    /// `POST` requests whose path starts with `prefix`.
    pub fn post(prefix: &str) -> Rule {
        Rule::new(Some(Method::POST), prefix)
    }

    /// Requests of any method whose path starts with `prefix`.
    pub fn any(prefix: &str) -> Rule {
        Rule::new(None, prefix)
    }

    /// Applies to the next `n` matching requests only, then no more (a transient fault).
    pub fn times(mut self, n: usize) -> Rule {
        self.uses = Some(n);
        self
    }

    /// Waits this long before acting (a slow manager).
    pub fn delay(mut self, d: Duration) -> Rule {
        self.delay = Some(d);
        self
    }

    /// Forwards the request to the backend first (dropping its answer), then answers as the
    /// rule says: a manager that stored a POST but whose answer was lost (a 502 from the proxy
    /// in front of it, a cut connection; issue 20 item 12).
    pub fn after_forwarding(mut self) -> Rule {
        self.forward_first = true;
        self
    }

    /// Drops this query parameter before forwarding, as a manager that ignores it would.
    pub fn ignore_param(mut self, name: &str) -> Rule {
        self.ignored_params.push(name.to_owned());
        self
    }

    /// Drops `_offset`: every page the backend answers is the first one, with its true total.
    pub fn ignore_offset(self) -> Rule {
        self.ignore_param("_offset")
    }

    /// Forwards with every value of this query parameter replaced by `value` (e.g. `_size` to
    /// make a real manager answer small pages to a client that asks for large ones). The
    /// request log keeps what the client sent.
    pub fn set_param(mut self, name: &str, value: &str) -> Rule {
        self.replaced_params
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// Forwards unchanged (useful with [`delay`](Self::delay) or
    /// [`ignore_param`](Self::ignore_param)).
    pub fn pass(mut self) -> Rule {
        self.action = Action::Pass;
        self
    }

    /// Forwards, then changes the backend's JSON answer with `f` before answering it.
    pub fn mutate_json(mut self, f: impl Fn(&mut Value) + Send + Sync + 'static) -> Rule {
        self.action = Action::Mutate(Arc::new(f));
        self
    }

    /// Answers `status` with this body and content type, without asking the backend.
    pub fn respond(mut self, status: u16, content_type: &str, body: impl Into<Bytes>) -> Rule {
        self.action = Action::Respond {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            content_type: content_type.to_owned(),
            body: body.into(),
        };
        self
    }

    /// Answers `status` with nginx's HTML error page, as a proxy in front of a manager does.
    pub fn html(self, status: u16) -> Rule {
        let body = format!(
            "<html>\r\n<head><title>{status} Error</title></head>\r\n<body>\r\n\
             <center><h1>{status} Error</h1></center>\r\n<hr><center>nginx</center>\r\n\
             </body>\r\n</html>\r\n"
        );
        self.respond(status, "text/html", body)
    }

    /// Forwards, then answers only the first `keep` bytes of the backend's body.
    pub fn truncate(mut self, keep: usize) -> Rule {
        self.action = Action::Truncate(keep);
        self
    }

    /// Answers 200 with a JSON body of about `bytes` bytes (`{"items":[],"pad":"xxx…"}`),
    /// streamed, so the proxy itself holds none of it.
    pub fn huge(mut self, bytes: u64) -> Rule {
        self.action = Action::Huge(bytes);
        self
    }

    /// Never answers: the connection stays open until the client gives up.
    pub fn stall(mut self) -> Rule {
        self.action = Action::Stall;
        self
    }

    /// Answers `302 Found` with `Location: <origin><same path and query>` (e.g. another
    /// hostile manager's [`url`](HostileManager::url), to see which headers follow).
    pub fn redirect_to(mut self, origin: &str) -> Rule {
        self.action = Action::Redirect(origin.trim_end_matches('/').to_owned());
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.uses != Some(0)
            && self.method.as_ref().is_none_or(|m| m == method)
            && path.starts_with(&self.prefix)
    }
}

/// One request the hostile manager received, and what it answered.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, e.g. `/api/v3.1/node-instances`.
    pub path: String,
    /// The raw query string (empty when there was none).
    pub query: String,
    /// The request's headers, as received.
    pub headers: HeaderMap,
    /// Length of the HTTP/1.1 request line (`GET /path?query HTTP/1.1`), what gunicorn limits.
    pub request_line: usize,
    /// The status answered (0 when the request stalled).
    pub status: u16,
    /// Bytes of the body answered.
    pub body_bytes: u64,
    /// The number [`HostileManager::add`] gave the rule that decided the answer; `None` when
    /// it was passed through.
    pub rule: Option<usize>,
    /// From the request's arrival to its answer (the backend's time, for a passed request).
    pub elapsed: Duration,
}

impl Seen {
    /// The value of a query parameter, each time it occurs.
    pub fn param(&self, name: &str) -> Vec<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }
}

struct Inner {
    backend: String,
    http: reqwest::Client,
    rules: Mutex<Vec<(usize, Rule)>>,
    next_rule: Mutex<usize>,
    seen: Mutex<Vec<Seen>>,
    max_request_line: Mutex<Option<usize>>,
}

/// A poisoned lock only means a test thread panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hostile manager: serves on `127.0.0.1:0` until dropped.
pub struct HostileManager {
    url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileManager {
    /// Starts a proxy in front of `backend` (a manager URL such as the simulator's), passing
    /// everything through until rules are added.
    pub async fn start(backend: &str) -> HostileManager {
        let inner = Arc::new(Inner {
            backend: backend.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("proxy HTTP client"),
            rules: Mutex::new(Vec::new()),
            next_rule: Mutex::new(0),
            seen: Mutex::new(Vec::new()),
            max_request_line: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the hostile manager");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        HostileManager { url, inner, task }
    }

    /// The URL to configure as the manager's (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Adds a rule after the existing ones; returns its number (see [`Seen::rule`]).
    pub fn add(&self, rule: Rule) -> usize {
        let mut next = lock(&self.inner.next_rule);
        let n = *next;
        *next += 1;
        lock(&self.inner.rules).push((n, rule));
        n
    }

    /// Removes every rule: everything passes through again.
    pub fn clear_rules(&self) {
        lock(&self.inner.rules).clear();
    }

    /// Refuses requests whose request line is longer than `max` bytes with gunicorn's answer
    /// (`414` and an HTML page, "Request Line is too large"; tests/manager/FINDINGS.md);
    /// gunicorn's default is 4094. `None` lifts it.
    pub fn limit_request_line(&self, max: Option<usize>) {
        *lock(&self.inner.max_request_line) = max;
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.inner.seen).clone()
    }

    /// Every request seen so far, oldest first, and forgets them.
    pub fn take_requests(&self) -> Vec<Seen> {
        std::mem::take(&mut *lock(&self.inner.seen))
    }
}

impl Drop for HostileManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The rule that decides this request, its uses counted.
fn pick(inner: &Inner, method: &Method, path: &str) -> Option<(usize, Rule)> {
    let mut rules = lock(&inner.rules);
    let (n, rule) = rules.iter_mut().find(|(_, r)| r.matches(method, path))?;
    if let Some(uses) = rule.uses.as_mut() {
        *uses -= 1;
    }
    Some((*n, rule.clone()))
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let arrived = std::time::Instant::now();
    let request_line = format!("{} {} HTTP/1.1", parts.method, parts.uri).len();
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: parts.headers.clone(),
        request_line,
        status: 0,
        body_bytes: 0,
        rule: None,
        elapsed: Duration::ZERO,
    };
    let limit = *lock(&inner.max_request_line);
    if let Some(max) = limit.filter(|max| request_line > *max) {
        // gunicorn counts the whole line (method, target and protocol, without the CRLF).
        let text = format!(
            "<html><head><title>Bad Request</title></head><body><h1><p>Bad Request</p></h1>\
             Request Line is too large ({request_line} &gt; {max})</body></html>"
        );
        let refused = (StatusCode::URI_TOO_LONG, html(), text).into_response();
        return record(&inner, seen, arrived, refused);
    }
    let picked = pick(&inner, &parts.method, &path);
    seen.rule = picked.as_ref().map(|(n, _)| *n);
    let rule = picked.map(|(_, r)| r);
    if let Some(d) = rule.as_ref().and_then(|r| r.delay) {
        tokio::time::sleep(d).await;
    }
    let action = rule.as_ref().map_or(Action::Pass, |r| r.action.clone());
    let forward_first = rule.as_ref().is_some_and(|r| r.forward_first);
    let (ignored, replaced) = rule
        .map(|r| (r.ignored_params, r.replaced_params))
        .unwrap_or_default();
    let forwards_anyway = matches!(
        action,
        Action::Pass | Action::Mutate(_) | Action::Truncate(_)
    );
    if forward_first && !forwards_anyway {
        let query = rewrite_query(&query, &ignored, &replaced);
        let _ = forward(
            &inner,
            &parts.method,
            &path,
            &query,
            &parts.headers,
            body.clone(),
        )
        .await;
    }
    let response = match action {
        Action::Respond {
            status,
            content_type,
            body,
        } => (status, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        Action::Huge(bytes) => huge(bytes),
        Action::Stall => {
            lock(&inner.seen).push(seen);
            return std::future::pending::<Response>().await;
        }
        Action::Redirect(origin) => {
            let target = match query.as_str() {
                "" => format!("{origin}{path}"),
                q => format!("{origin}{path}?{q}"),
            };
            (StatusCode::FOUND, [(header::LOCATION, target)]).into_response()
        }
        Action::Pass | Action::Mutate(_) | Action::Truncate(_) => {
            let query = rewrite_query(&query, &ignored, &replaced);
            let (status, headers, bytes) =
                forward(&inner, &parts.method, &path, &query, &parts.headers, body).await;
            let bytes = match action {
                Action::Mutate(f) => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mut v) => {
                        f(&mut v);
                        Bytes::from(serde_json::to_vec(&v).expect("JSON encodes"))
                    }
                    Err(_) => bytes,
                },
                Action::Truncate(keep) => bytes.slice(..keep.min(bytes.len())),
                _ => bytes,
            };
            let mut r = (status, bytes).into_response();
            for name in [header::CONTENT_TYPE, header::LOCATION] {
                if let Some(v) = headers.get(&name) {
                    r.headers_mut().insert(name, v.clone());
                }
            }
            r
        }
    };
    record(&inner, seen, arrived, response)
}

fn html() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "text/html")]
}

/// Logs what was answered and answers it.
fn record(
    inner: &Inner,
    mut seen: Seen,
    arrived: std::time::Instant,
    response: Response,
) -> Response {
    seen.elapsed = arrived.elapsed();
    seen.status = response.status().as_u16();
    seen.body_bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            use axum::body::HttpBody;
            response.body().size_hint().exact()
        })
        .unwrap_or(0);
    lock(&inner.seen).push(seen);
    response
}

/// The query without the named parameters.
fn rewrite_query(query: &str, names: &[String], replaced: &[(String, String)]) -> String {
    if names.is_empty() && replaced.is_empty() {
        return query.to_owned();
    }
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !names.iter().any(|n| n == k))
        .map(|(k, v)| match replaced.iter().find(|(n, _)| n == &k) {
            Some((_, value)) => (k.into_owned(), value.clone()),
            None => (k.into_owned(), v.into_owned()),
        })
        .collect();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish()
}

/// Sends the request to the backend; a backend that does not answer becomes a 502.
async fn forward(
    inner: &Inner,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let url = match query {
        "" => format!("{}{path}", inner.backend),
        q => format!("{}{path}?{q}", inner.backend),
    };
    let mut r = inner.http.request(method.clone(), url).body(body);
    for (k, v) in headers {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            r = r.header(k, v);
        }
    }
    match r.send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, headers, bytes)
        }
        Err(e) => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            (
                StatusCode::BAD_GATEWAY,
                h,
                Bytes::from(format!("hostile manager: backend unreachable: {e}")),
            )
        }
    }
}

/// A streamed 200 answer of about `bytes` bytes of valid JSON.
fn huge(bytes: u64) -> Response {
    const CHUNK: usize = 64 * 1024;
    let head = Bytes::from_static(b"{\"items\":[],\"pad\":\"");
    let tail = Bytes::from_static(b"\"}");
    let pad = bytes.saturating_sub((head.len() + tail.len()) as u64);
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let full = pad / CHUNK as u64;
    let rest = (pad % CHUNK as u64) as usize;
    let stream = futures::stream::iter(
        std::iter::once(head)
            .chain((0..full).map(move |_| chunk.clone()))
            .chain(std::iter::once(Bytes::from(vec![b'x'; rest])))
            .chain(std::iter::once(tail))
            .map(Ok::<_, Infallible>),
    );
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let total = bytes.max(21);
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        r.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    r
}
