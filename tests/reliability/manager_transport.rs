//! Reliability suite: the Cloudify client's transport against a hostile manager (issue 20). A
//! manager that redirects elsewhere must not receive our credentials there; a manager that
//! answers without end must not take the process's memory with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::reliability_support::hostile::{HostileManager, Rule};
use crate::reliability_support::{scenario, start_sim};

use autoscaler_cloudify::cloudify::{
    Auth, ClientSettings, Cloudify, CloudifyClient, CloudifyError, ScaleRequest,
};
use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use cloudify_sim::Timing;
use futures::StreamExt;

/// The token every test here authenticates with: distinctive, so a leak cannot be a coincidence.
const TOKEN: &str = "tok-5b0e2c7a-must-not-travel";

fn settings(url: &str, auth: Auth) -> ClientSettings {
    ClientSettings {
        name: "main".into(),
        url: url.into(),
        tenant: "default_tenant".into(),
        auth,
        ca_cert_pem: None,
        insecure_skip_verify: false,
        request_timeout: Duration::from_secs(20),
        max_response_bytes: autoscaler_cloudify::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
    }
}

async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Issue 20 item 3: reqwest drops `Authorization` when a redirect leaves the origin, but not a
/// custom header such as Cloudify's `Authentication-Token`. A manager (the test kit's hostile
/// one) answers every call with a 302 to a second one that records what reaches it. No redirect
/// is followed: the call fails with an error that names where the manager tried to send it.
#[tokio::test]
async fn a_redirect_to_another_host_gets_no_credentials_and_a_clear_error() {
    let sim = start_sim(scenario(Timing::instant())).await;
    let elsewhere = HostileManager::start(&sim.url()).await;
    let manager = HostileManager::start(&sim.url()).await;
    manager.add(Rule::any("/api/v3.1/").redirect_to(&elsewhere.url()));
    for auth in [
        Auth::Token(TOKEN.into()),
        Auth::Basic {
            username: "admin".into(),
            password: TOKEN.into(),
        },
    ] {
        let c = CloudifyClient::new(settings(&manager.url(), auth), None).expect("client");
        let read = c.deployments_by_id(&["k8s-pool-a".into()]).await;
        let write = c
            .start_scale(&ScaleRequest {
                deployment_id: "k8s-pool-a".into(),
                group: "workers".into(),
                delta: 1,
                include_instances: vec![],
                abort_started: false,
            })
            .await;
        let leaked: Vec<String> = elsewhere
            .requests()
            .iter()
            .filter(|r| {
                r.headers.contains_key("authentication-token")
                    || r.headers.contains_key("authorization")
            })
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            leaked.is_empty(),
            "the credentials reached the other host on {leaked:?}"
        );
        for (what, r) in [("read", read.map(|_| ())), ("write", write.map(|_| ()))] {
            let e = r.expect_err("a redirect is not an answer");
            assert!(matches!(e, CloudifyError::Redirect { .. }), "{what}: {e:?}");
            let text = e.to_string();
            assert!(
                text.contains(&elsewhere.url()) && text.contains("302"),
                "{what}: the error names the status and where it pointed: {text}"
            );
            assert!(!e.is_unavailable(), "{what}: a redirect is not retried");
        }
    }
    assert!(
        elsewhere.requests().is_empty(),
        "nothing at all was sent to the other host"
    );
    assert_eq!(manager.requests().len(), 4, "each call was made once");
}

/// Bytes a manager's answer has put on the wire so far.
type Sent = Arc<AtomicU64>;

/// A manager whose every answer is a valid, empty list page padded with `size` bytes of
/// whitespace, streamed in 64 KiB chunks (with a Content-Length when `announce`).
async fn huge_manager(size: u64, announce: bool) -> (String, Sent) {
    let sent: Sent = Arc::default();
    let s = Arc::clone(&sent);
    let app = Router::new().fallback(move || {
        let s = Arc::clone(&s);
        async move {
            let head = br#"{"items":[],"metadata":{"pagination":{"total":0}}"#;
            let chunk = vec![b' '; 64 * 1024];
            let chunks = size / chunk.len() as u64;
            let total = head.len() as u64 + chunks * chunk.len() as u64 + 1;
            let stream = futures::stream::iter(
                std::iter::once(head.to_vec())
                    .chain((0..chunks).map(move |_| chunk.clone()))
                    .chain(std::iter::once(b"}".to_vec())),
            )
            .map(move |c| {
                s.fetch_add(c.len() as u64, Ordering::SeqCst);
                Ok::<_, std::io::Error>(c)
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            if announce {
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, header::HeaderValue::from(total));
            }
            r
        }
    });
    (listen(app).await, sent)
}

/// Issue 20 item 9: a 300 MiB answer took the process to 318 MiB RSS, over the chart's 256Mi
/// limit. The body is read as a stream and refused past the cap, with or without a
/// Content-Length; what the manager manages to send stays near the cap (plus socket buffers).
#[tokio::test]
async fn an_answer_larger_than_the_cap_is_refused_while_it_streams() {
    const SIZE: u64 = 96 * 1024 * 1024;
    for announce in [false, true] {
        let (url, sent) = huge_manager(SIZE, announce).await;
        let c =
            CloudifyClient::new(settings(&url, Auth::Token(TOKEN.into())), None).expect("client");
        let r = c.deployments_by_id(&["k8s-pool-a".into()]).await;
        let e = r.expect_err("a 96 MiB answer is over the default cap");
        let text = e.to_string();
        assert!(
            matches!(e, CloudifyError::TooLarge { .. }),
            "announce={announce}: {e:?}"
        );
        assert!(
            text.contains("GET /deployments") && text.contains("16 MiB"),
            "the error names the route and the limit: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let on_wire = sent.load(Ordering::SeqCst);
        assert!(
            on_wire < 40 * 1024 * 1024,
            "announce={announce}: the client stopped reading near the cap, yet {on_wire} bytes \
             were sent"
        );
    }
}
