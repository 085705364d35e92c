//! Reliability suite, part 3 (issue #7): security of the real binary. mTLS on the gRPC port,
//! plaintext only on loopback or with `--insecure`, TLS to Cloudify verified against the
//! configured CA (the simulator behind a test TLS front with an rcgen certificate), and secrets
//! (password, token, the basic-auth header) absent from logs, errors, `/metrics`, `/readyz` and
//! `check` output.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::reliability_support::*;
use autoscaler_cloudify::proto;
use autoscaler_cloudify::proto::cloud_provider_client::CloudProviderClient;
use cloudify_sim::Timing;
use serde_json::json;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn tls_client(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<CloudProviderClient<tonic::transport::Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(CloudProviderClient::new(ch))
}

/// Connects and calls NodeGroups; `Ok(n groups)` or the failure text.
async fn try_node_groups(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<usize, String> {
    let mut c = tls_client(addr, ca_pem, identity).await?;
    c.node_groups(req(proto::NodeGroupsRequest {}))
        .await
        .map(|r| r.into_inner().node_groups.len())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requires_a_client_certificate_from_the_configured_ca() {
    let dir = workdir("mtls");
    let sim = start_sim(scenario(Timing::instant())).await;
    let ours = Pki::new("reliability CA");
    let other = Pki::new("some other CA");
    let (srv_cert, srv_key) = ours.leaf("provider", false);
    let good_client = ours.leaf("cluster-autoscaler", true);
    let foreign_client = other.leaf("cluster-autoscaler", true);
    let d = dir.path();
    let ca = write(d, "ca.pem", &ours.ca_pem());
    let cert = write(d, "tls.crt", &srv_cert);
    let key = write(d, "tls.key", &srv_key);
    let cfg = write(
        d,
        "provider.yaml",
        &provider_yaml(&sim.url(), "10s", "5s", ""),
    );
    let args = [
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
        "--tls-client-ca",
        ca.to_str().expect("path"),
    ];
    let mut p = Proc::serve(d, "mtls", &cfg, &args, &[("CLOUDIFY_PASSWORD", PASSWORD)]);
    p.wait_ready(Duration::from_secs(30)).await;

    let ca_pem = ours.ca_pem();
    let good = try_node_groups(p.grpc, &ca_pem, Some(&good_client)).await;
    let none = try_node_groups(p.grpc, &ca_pem, None).await;
    let foreign = try_node_groups(p.grpc, &ca_pem, Some(&foreign_client)).await;
    let plain = match CloudProviderClient::connect(format!("http://{}", p.grpc)).await {
        Ok(mut c) => c
            .node_groups(req(proto::NodeGroupsRequest {}))
            .await
            .map(|r| r.into_inner().node_groups.len())
            .map_err(|s| format!("{:?}", s.code())),
        Err(e) => Err(e.to_string()),
    };
    figure(
        "security/mtls",
        &format!(
            "trusted client cert: {:?}; no cert: {}; cert of another CA: {}; plaintext: {}",
            good,
            none.as_ref().map_or("refused", |_| "ACCEPTED"),
            foreign.as_ref().map_or("refused", |_| "ACCEPTED"),
            plain.as_ref().map_or("refused", |_| "ACCEPTED"),
        ),
    );
    assert_eq!(good, Ok(2), "trusted client");
    assert!(none.is_err(), "client without certificate accepted");
    assert!(
        foreign.is_err(),
        "client with a foreign certificate accepted"
    );
    assert!(plain.is_err(), "plaintext client accepted on the TLS port");
    let log = p.log();
    p.kill();
    assert_no_secrets("mtls provider log", &log, &[PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_off_loopback_unless_insecure() {
    let dir = workdir("plaintext");
    let sim = start_sim(scenario(Timing::instant())).await;
    let d = dir.path();
    let cfg = write(
        d,
        "provider.yaml",
        &provider_yaml(&sim.url(), "10s", "5s", ""),
    );
    let env = [("CLOUDIFY_PASSWORD", PASSWORD)];
    let port = free_port();
    let any: SocketAddr = format!("0.0.0.0:{port}").parse().expect("addr");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut refused = Proc::serve_on(d, "plain-refused", &cfg, any, http, &[], &env);
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = refused.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < end, "plaintext on 0.0.0.0 was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused_log = refused.log();
    assert!(!status.success());
    assert!(
        refused_log.contains("refusing plaintext gRPC"),
        "{refused_log}"
    );

    let http2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut insecure = Proc::serve_on(d, "plain-insecure", &cfg, any, http2, &["--insecure"], &env);
    insecure.wait_ready(Duration::from_secs(30)).await;
    let mut c = CloudProviderClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let groups = c
        .node_groups(req(proto::NodeGroupsRequest {}))
        .await
        .expect("node groups")
        .into_inner()
        .node_groups
        .len();
    let insecure_log = insecure.log();
    insecure.kill();
    figure(
        "security/plaintext",
        &format!(
            "0.0.0.0 without TLS: exit {status} ({}); with --insecure: serves {groups} groups, \
             warns={}",
            refused_log
                .lines()
                .find(|l| l.contains("refusing"))
                .unwrap_or("")
                .trim(),
            insecure_log.contains("--insecure")
        ),
    );
    assert_eq!(groups, 2);
    assert!(insecure_log.contains("plaintext gRPC on a non-loopback address"));
    assert_no_secrets(
        "plaintext logs",
        &(refused_log + &insecure_log),
        &[PASSWORD],
    );
}

/// Server-only TLS (no client CA) authenticates nobody: refused off loopback like plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_ca_is_refused_off_loopback_unless_insecure() {
    let dir = workdir("no-client-ca");
    let d = dir.path();
    let sim = start_sim(scenario(Timing::instant())).await;
    let pki = Pki::new("server only");
    let (cert, key) = pki.leaf("provider", false);
    let cert = write(d, "tls.crt", &cert);
    let key = write(d, "tls.key", &key);
    let cfg = write(
        d,
        "provider.yaml",
        &provider_yaml(&sim.url(), "10s", "5s", ""),
    );
    let env = [("CLOUDIFY_PASSWORD", PASSWORD)];
    let tls = [
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
    ];
    let any: SocketAddr = format!("0.0.0.0:{}", free_port()).parse().expect("addr");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut refused = Proc::serve_on(d, "no-ca-refused", &cfg, any, http, &tls, &env);
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = refused.child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < end,
            "server-only TLS on 0.0.0.0 was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = refused.log();
    assert!(!status.success());
    assert!(log.contains("without client authentication"), "{log}");

    let mut args = tls.to_vec();
    args.push("--insecure");
    let http2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let any2: SocketAddr = format!("0.0.0.0:{}", free_port()).parse().expect("addr");
    let mut allowed = Proc::serve_on(d, "no-ca-insecure", &cfg, any2, http2, &args, &env);
    allowed.wait_ready(Duration::from_secs(30)).await;
    let groups = try_node_groups(
        format!("127.0.0.1:{}", any2.port()).parse().expect("addr"),
        &pki.ca_pem(),
        None,
    )
    .await;
    let allowed_log = allowed.log();
    allowed.kill();
    figure(
        "security/no-client-ca",
        &format!(
            "server-only TLS on 0.0.0.0: exit {status}; with --insecure: {groups:?} without a \
             client certificate, warns={}",
            allowed_log.contains("without a client CA")
        ),
    );
    assert_eq!(groups, Ok(2));
    assert_no_secrets("no-client-ca logs", &(log + &allowed_log), &[PASSWORD]);
}

/// A TLS front for the simulator: terminates TLS with `cert`/`key` and pipes bytes to `backend`.
/// A TLS front with this certificate on 127.0.0.1, forwarding to `backend` in plaintext.
pub(crate) async fn tls_front(cert_pem: &str, key_pem: &str, backend: SocketAddr) -> SocketAddr {
    use tokio_rustls::rustls;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("cert pem");
    let key: rustls::pki_types::PrivateKeyDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(key_pem.as_bytes()).expect("key pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (wrong CA on the client side) just ends this connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut up) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    addr
}

fn run_check(dir: &Path, name: &str, config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let (mut cmd, out, err) = command(dir, name, env);
    cmd.arg("check").arg("--config").arg(config);
    let mut child = cmd.spawn().expect("spawn check");
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("check did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out).unwrap_or_default()
        + &std::fs::read_to_string(err).unwrap_or_default();
    (status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_cloudify_is_verified_against_the_configured_ca() {
    let dir = workdir("cfy-tls");
    let d = dir.path();
    let sim = start_sim(scenario(Timing::instant())).await;
    let manager_ca = Pki::new("manager CA");
    let other_ca = Pki::new("unrelated CA");
    let (cert, key) = manager_ca.leaf("cloudify-manager", false);
    let front = tls_front(&cert, &key, sim.addr()).await;
    let url = format!("https://localhost:{}", front.port());
    let right = write(d, "manager-ca.pem", &manager_ca.ca_pem());
    let wrong = write(d, "other-ca.pem", &other_ca.ca_pem());
    let env = [("CLOUDIFY_PASSWORD", PASSWORD)];
    let cfg_for = |name: &str, ca: Option<&Path>| {
        let extra = ca.map_or(String::new(), |p| {
            format!(", ca_cert_file: \"{}\"", p.display())
        });
        write(d, name, &provider_yaml(&url, "10s", "5s", &extra))
    };
    let (ok, ok_out) = run_check(d, "check-right", &cfg_for("right.yaml", Some(&right)), &env);
    let (bad, bad_out) = run_check(d, "check-wrong", &cfg_for("wrong.yaml", Some(&wrong)), &env);
    let (sys, sys_out) = run_check(d, "check-system", &cfg_for("system.yaml", None), &env);
    // The same through `serve`: ready with the right CA.
    let mut p = Proc::serve(
        d,
        "cfy-tls",
        &cfg_for("serve.yaml", Some(&right)),
        &[],
        &env,
    );
    p.wait_ready(Duration::from_secs(30)).await;
    let serve_log = p.log();
    p.kill();
    let first_error = |s: &str| {
        s.lines()
            .find(|l| l.contains("error"))
            .unwrap_or("")
            .rsplit("): ")
            .next()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect::<String>()
    };
    figure(
        "security/cloudify-tls",
        &format!(
            "configured CA: check ok={ok}; other CA: ok={bad} ({}); system roots: ok={sys}",
            first_error(&bad_out)
        ),
    );
    assert!(ok, "check with the right CA failed: {ok_out}");
    assert!(ok_out.contains("k8s-pool-a/workers"), "{ok_out}");
    assert!(!bad, "check trusted a certificate of another CA: {bad_out}");
    assert!(
        !sys,
        "check trusted a private CA without configuration: {sys_out}"
    );
    // The operator must see why: the certificate, not just "error sending request".
    assert!(
        bad_out.contains("UnknownIssuer") || bad_out.to_lowercase().contains("certificate"),
        "unclear error: {bad_out}"
    );
    for (what, text) in [
        ("check output", &ok_out),
        ("check error", &bad_out),
        ("check error", &sys_out),
        ("serve log", &serve_log),
    ] {
        assert_no_secrets(what, text, &[PASSWORD]);
    }
}

/// Drives the binary through successes and failures at trace level and greps everything it
/// prints or serves for the password and the token. Each source grepped carries a marker of our
/// own, logged where a leaked secret would be, and the grep must find the marker: a capture that
/// lost the logs would otherwise pass for a clean one (issue 24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_metrics_readyz_or_check() {
    let dir = workdir("secrets");
    let d = dir.path();
    let sim = start_sim(scenario(Timing::instant())).await;
    let ctl = SimCtl::new(&sim.url());
    let token: serde_json::Value = ctl
        .http
        .post(format!("{}/api/v3.1/tokens", sim.url()))
        .basic_auth("admin", Some(PASSWORD))
        .json(&json!({"description": "secrets test"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let token = token["value"].as_str().expect("token").to_owned();
    let token_secret = token.rsplit('-').next().unwrap_or_default().to_owned();
    let secrets = [PASSWORD, token.as_str(), token_secret.as_str()];
    // Text the provider logs as it comes (a node id CA sent), next to where a secret would be.
    let marker = "cloudify://positive-control-3e9a/x/y";
    let mut sources: Vec<(&str, String)> = Vec::new();

    // Basic auth, trace logging, JSON format: successes, refused mutations, a manager outage.
    let cfg = write(d, "basic.yaml", &provider_yaml(&sim.url(), "1s", "0s", ""));
    let env = [("CLOUDIFY_PASSWORD", PASSWORD)];
    let trace = ["--log-level", "trace", "--log-format", "json"];
    let mut p = Proc::serve(d, "secrets-basic", &cfg, &trace, &env);
    p.wait_ready(Duration::from_secs(60)).await;
    let mut c = p.client().await;
    increase(&mut c, WORKERS, 1).await.expect("increase");
    let _ = increase(&mut c, WORKERS, 1000).await;
    let _ = delete(&mut c, WORKERS, vec![node(marker, "")]).await;
    ctl.faults(json!({"down": true})).await;
    let _ = refresh(&mut c).await;
    let _ = increase(&mut c, WORKERS, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sources.push(("basic-auth /metrics", p.metrics().await));
    sources.push((
        "basic-auth /readyz",
        p.readyz()
            .await
            .map(|r| r.1.to_string())
            .unwrap_or_default(),
    ));
    ctl.clear_faults().await;
    sources.push(("basic-auth serve log", p.log()));
    p.kill();

    // Token auth.
    let cfg = write(
        d,
        "token.yaml",
        &provider_yaml(&sim.url(), "1s", "0s", ", token_env: CLOUDIFY_TOKEN"),
    );
    let env = [("CLOUDIFY_TOKEN", token.as_str())];
    let mut p = Proc::serve(d, "secrets-token", &cfg, &trace, &env);
    p.wait_ready(Duration::from_secs(60)).await;
    let mut c = p.client().await;
    let _ = delete(&mut c, WORKERS, vec![node(marker, "")]).await;
    sources.push(("token /metrics", p.metrics().await));
    sources.push(("token serve log", p.log()));
    p.kill();

    // `check`, successful and with a wrong password (the error path).
    let (ok, out) = run_check(
        d,
        "check-ok",
        &write(d, "c1.yaml", &provider_yaml(&sim.url(), "1s", "0s", "")),
        &[("CLOUDIFY_PASSWORD", PASSWORD)],
    );
    assert!(ok, "{out}");
    sources.push(("check output", out));
    let (ok, out) = run_check(
        d,
        "check-token",
        &write(
            d,
            "c2.yaml",
            &provider_yaml(&sim.url(), "1s", "0s", ", token_env: CLOUDIFY_TOKEN"),
        ),
        &[("CLOUDIFY_TOKEN", token.as_str())],
    );
    assert!(ok, "{out}");
    sources.push(("check output, token", out));
    let wrong_pw = format!("{PASSWORD}-but-wrong");
    let (ok, out) = run_check(
        d,
        "check-wrong",
        &write(d, "c3.yaml", &provider_yaml(&sim.url(), "1s", "0s", "")),
        &[("CLOUDIFY_PASSWORD", wrong_pw.as_str())],
    );
    assert!(!ok);
    sources.push(("check error", out));

    // Positive controls: each source holds what it must, found by the same grep.
    for (what, text) in &sources {
        let expected = match *what {
            w if w.ends_with("serve log") => marker,
            w if w.ends_with("/metrics") => "autoscaler_cloudify_build_info",
            w if w.ends_with("/readyz") => "snapshot_loaded",
            "check error" => "401",
            _ => "k8s-pool-a/workers",
        };
        assert_would_find(what, text, expected);
    }
    let collected: String = sources.iter().map(|(_, t)| t.as_str()).collect();
    figure(
        "security/secrets",
        &format!(
            "{} bytes of trace logs, /metrics, /readyz and check output from {} sources, each \
             with its positive control found, grepped for the password, the token, its secret \
             and the basic-auth header: 0 hits",
            collected.len(),
            sources.len()
        ),
    );
    assert_no_secrets("binary output", &collected, &secrets);
    assert_no_secrets("binary output", &collected, &[&wrong_pw]);
}
