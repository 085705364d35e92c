//! The server around the service: mTLS, plaintext policy, gRPC health and reflection, and the HTTP
//! port (/healthz, /readyz, /metrics).

use std::path::Path;
use std::sync::Arc;

use crate::provider_support::*;
use autoscaler_cloudify::config::TlsFiles;
use autoscaler_cloudify::grpc::{Provider, ServeError, serve};
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["cluster-autoscaler".into()]),
        ca: ca.pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_signed_by_the_client_ca() {
    let env = start_default().await;
    let dir = tempfile::tempdir().expect("tmp");
    let pki = pki();
    let files = TlsFiles {
        cert_file: write(dir.path(), "tls.crt", &pki.server.0),
        key_file: write(dir.path(), "tls.key", &pki.server.1),
        client_ca_file: Some(write(dir.path(), "ca.crt", &pki.ca)),
    };
    let server = serve(
        "127.0.0.1:0".parse().expect("addr"),
        Some(&files),
        false,
        &Default::default(),
        Provider::new(Arc::clone(&env.app.service), Arc::clone(&env.app.metrics)),
    )
    .await
    .expect("tls server");
    let url = format!("https://localhost:{}", server.addr.port());

    let tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    let channel = Endpoint::from_shared(url.clone())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("mTLS connect");
    let groups = CloudProviderClient::new(channel)
        .node_groups(proto::NodeGroupsRequest {})
        .await
        .expect("call over mTLS")
        .into_inner()
        .node_groups;
    assert_eq!(groups.len(), 2);

    // Without a client certificate the handshake (or the first call) fails.
    let no_cert = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(&pki.ca));
    let outcome = async {
        let channel = Endpoint::from_shared(url)?
            .tls_config(no_cert)?
            .connect()
            .await?;
        CloudProviderClient::new(channel)
            .node_groups(proto::NodeGroupsRequest {})
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    assert!(
        outcome.is_err(),
        "a client without certificate must be refused"
    );
    server.shutdown().await;
    env.shutdown().await;
}

#[tokio::test]
async fn plaintext_only_on_loopback_or_with_insecure() {
    let env = start_default().await;
    let provider = || Provider::new(Arc::clone(&env.app.service), Arc::clone(&env.app.metrics));
    let e = serve(
        "0.0.0.0:0".parse().expect("addr"),
        None,
        false,
        &Default::default(),
        provider(),
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(e, ServeError::PlaintextRefused(_)), "{e}");
    let s = serve(
        "0.0.0.0:0".parse().expect("addr"),
        None,
        true,
        &Default::default(),
        provider(),
    )
    .await
    .expect("allowed with --insecure");
    s.shutdown().await;
    env.shutdown().await;
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() {
    let env = start_default().await;
    let channel = Endpoint::from_shared(format!("http://{}", env.app.grpc.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "clusterautoscaler.cloudprovider.v1.externalgrpc.CloudProvider".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = stream
        .message()
        .await
        .expect("answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"clusterautoscaler.cloudprovider.v1.externalgrpc.CloudProvider".to_owned()),
        "{names:?}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn http_port_serves_health_readiness_and_metrics() {
    let mut env = start_default().await;
    env.target(WORKERS).await;
    let base = format!("http://{}", env.app.http_addr);
    let http = env.http.clone();
    let get = |p: &str| http.get(format!("{base}{p}")).send();
    assert_eq!(get("/healthz").await.expect("healthz").status(), 200);
    let r = get("/readyz").await.expect("readyz");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["ready"], true);
    assert_eq!(body["detail"]["groups"], 2);
    assert!(body["detail"]["snapshot_age_seconds"].is_number(), "{body}");
    let text = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "autoscaler_cloudify_build_info{version=\"",
        "autoscaler_cloudify_ready 1",
        "autoscaler_cloudify_grpc_requests_total{method=\"NodeGroupTargetSize\",code=\"Ok\"}",
        "autoscaler_cloudify_grpc_request_duration_seconds",
        "autoscaler_cloudify_cloudify_requests_total{route=\"GET /node-instances\",status=\"200\"}",
        "autoscaler_cloudify_refresh_duration_seconds",
        "autoscaler_cloudify_snapshot_age_seconds",
        "autoscaler_cloudify_instances",
        "autoscaler_cloudify_node_groups",
        "autoscaler_cloudify_target_size{group=\"k8s-pool-a/workers\"}",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    // The request counter moves with each call, and the per-group gauge has Cloudify's target.
    let sample = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let calls =
        "autoscaler_cloudify_grpc_requests_total{method=\"NodeGroupTargetSize\",code=\"Ok\"}";
    let before = sample(&text, calls);
    let target = env.target(WORKERS).await;
    let text = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(sample(&text, calls), before + 1.0);
    assert_eq!(
        sample(
            &text,
            "autoscaler_cloudify_target_size{group=\"k8s-pool-a/workers\"}"
        ),
        f64::from(target)
    );
    env.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_show_in_readiness_and_stop_login_attempts() {
    use cloudify_sim::{Scenario, Simulator, Timing};
    let sim = Simulator::start(
        Scenario::default_demo().with_timing(Timing::instant()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let env =
        std::collections::BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "wrong".to_owned())]);
    let overrides = autoscaler_cloudify::config::Overrides {
        listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let cfg = autoscaler_cloudify::config::Config::from_yaml(
        &TEST_CONFIG.replace("{url}", &sim.url()),
        &overrides,
        &env,
    )
    .expect("config");
    let app = autoscaler_cloudify::app::start(&cfg, settings())
        .await
        .expect("starts");
    let http = reqwest::Client::new();
    let mut body = serde_json::Value::Null;
    for _ in 0..50 {
        let r = http
            .get(format!("http://{}/readyz", app.http_addr))
            .send()
            .await
            .expect("readyz");
        assert_eq!(r.status(), 503);
        body = r.json().await.expect("json");
        if body["detail"]["auth_problem"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body["detail"]["auth_problem"], true, "{body}");
    let mut client = CloudProviderClient::connect(format!("http://{}", app.grpc.addr))
        .await
        .expect("connect");
    let before = sim.control().requests().await.expect("sim requests");
    for _ in 0..5 {
        let e = client
            .refresh(proto::RefreshRequest {})
            .await
            .expect_err("not ready");
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
    let after = sim.control().requests().await.expect("sim requests");
    assert_eq!(
        before.total, after.total,
        "no login attempts during the back-off"
    );
    app.shutdown().await;
    sim.shutdown().await;
}
