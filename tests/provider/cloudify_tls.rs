//! The Cloudify client over HTTPS: a custom CA certificate is trusted, an unknown one is refused,
//! and `insecure_skip_verify` accepts any certificate.

use std::sync::Arc;
use std::time::Duration;

use autoscaler_cloudify::cloudify::{
    Auth, ClientSettings, Cloudify, CloudifyClient, CloudifyError, ExecutionStatus,
};
use axum::Router;
use axum::routing::get;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // Failed handshakes (the client refusing our certificate) are expected in this test.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS "manager" whose certificate for `localhost` is signed by a fresh CA; returns the URL
/// and the CA PEM.
async fn https_manager() -> (String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let app = Router::new().route(
        "/api/v3.1/executions",
        get(|| async {
            axum::Json(serde_json::json!({"items": [], "metadata": {"pagination": {"total": 0}}}))
        }),
    );
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("https://localhost:{port}"), ca.pem())
}

fn settings(url: &str, ca: Option<&str>, insecure: bool) -> ClientSettings {
    ClientSettings {
        name: "main".into(),
        url: url.into(),
        tenant: "default_tenant".into(),
        auth: Auth::Token("t".into()),
        ca_cert_pem: ca.map(|c| c.as_bytes().to_vec()),
        insecure_skip_verify: insecure,
        request_timeout: Duration::from_secs(2),
        max_response_bytes: autoscaler_cloudify::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
    }
}

#[tokio::test]
async fn custom_ca_is_trusted_and_unknown_certificates_are_refused() {
    let (url, ca) = https_manager().await;
    let trusted = CloudifyClient::new(settings(&url, Some(&ca), false), None).expect("client");
    let execs = trusted
        .scale_executions(&[], &[ExecutionStatus::Queued], None)
        .await
        .expect("HTTPS with the custom CA");
    assert!(execs.is_empty());

    let untrusted = CloudifyClient::new(settings(&url, None, false), None).expect("client");
    let e = untrusted
        .scale_executions(&[], &[ExecutionStatus::Queued], None)
        .await
        .expect_err("unknown CA");
    assert!(matches!(e, CloudifyError::Transport { .. }), "{e}");

    let insecure = CloudifyClient::new(settings(&url, None, true), None).expect("client");
    insecure
        .scale_executions(&[], &[ExecutionStatus::Queued], None)
        .await
        .expect("verification disabled");

    let bad = CloudifyClient::new(settings(&url, Some("not a pem"), false), None);
    assert!(matches!(bad, Err(CloudifyError::Settings(_))));
}
