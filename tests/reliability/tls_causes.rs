//! Reliability suite: TLS misconfigurations say what did not fit (issue 20 item 14). Every one
//! of them used to print only `transport error`. At start-up, `serve` names the file and what is
//! wrong with it; `inspect`, which connects as CA does, names the CA, the certificate's names,
//! its end date, or the client certificate the provider refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::reliability_support::*;
use autoscaler_cloudify::app::App;
use autoscaler_cloudify::config::Overrides;
use autoscaler_cloudify::nodegroup::ServiceSettings;
use cloudify_sim::{SimulatorHandle, Timing};

/// Runs the binary with `args` until it exits (at most 60 s); (success, stdout + stderr).
fn run_bin(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let (mut cmd, out, err) = command(dir, name, env);
    let mut child = cmd.args(args).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out).unwrap_or_default()
        + &std::fs::read_to_string(err).unwrap_or_default();
    (status.success(), text)
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn files(dir: &Path, prefix: &str, (cert, key): &(String, String), ca: &str) -> Files {
    Files {
        cert: write(dir, &format!("{prefix}.crt"), cert),
        key: write(dir, &format!("{prefix}.key"), key),
        ca: write(dir, &format!("{prefix}-ca.crt"), ca),
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `serve` with these TLS files, expected to refuse to start; its output.
fn serve_refuses(dir: &Path, name: &str, cert: &Path, key: &Path, ca: &Path) -> String {
    let cfg = write(
        dir,
        &format!("{name}.yaml"),
        &provider_yaml("http://127.0.0.1:1", "1h", "0s", ""),
    );
    let (ok, out) = run_bin(
        dir,
        name,
        &[
            "serve",
            "--config",
            p(&cfg),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--tls-cert",
            p(cert),
            "--tls-key",
            p(key),
            "--tls-client-ca",
            p(ca),
        ],
        &[("CLOUDIFY_PASSWORD", PASSWORD)],
    );
    assert!(!ok, "{name}: serve started with a broken TLS setup:\n{out}");
    out
}

/// Issue 20 item 14, the server side: each broken file is named with what is wrong with it.
#[test]
fn serve_names_the_tls_file_that_does_not_fit() {
    let dir = workdir("tls-serve");
    let d = dir.path();
    let pki = Pki::new("provider CA");
    let good = files(d, "good", &pki.leaf("provider", false), &pki.ca_pem());
    let other_key = write(d, "other.key", &pki.leaf("other", false).1);
    let expired = files(
        d,
        "expired",
        &pki.leaf_with("provider", false, &["localhost"], true),
        &pki.ca_pem(),
    );
    let not_pem = write(d, "not-pem.txt", "hello, I am not a certificate\n");
    let cases: Vec<(&str, &Path, &Path, &Path, Vec<String>)> = vec![
        (
            "a key where the certificate should be",
            &good.key,
            &good.key,
            &good.ca,
            vec![
                p(&good.key).into(),
                "grpc.tls.cert_file".into(),
                "no certificate".into(),
            ],
        ),
        (
            "no key in the key file",
            &good.cert,
            &not_pem,
            &good.ca,
            vec![
                p(&not_pem).into(),
                "grpc.tls.key_file".into(),
                "no private key".into(),
            ],
        ),
        (
            "a key of another certificate",
            &good.cert,
            &other_key,
            &good.ca,
            vec![
                p(&other_key).into(),
                p(&good.cert).into(),
                "does not belong to".into(),
            ],
        ),
        (
            "no certificate in the client CA file",
            &good.cert,
            &good.key,
            &not_pem,
            vec![
                p(&not_pem).into(),
                "grpc.tls.client_ca_file".into(),
                "no certificate".into(),
            ],
        ),
        (
            "an expired server certificate",
            &expired.cert,
            &expired.key,
            &expired.ca,
            vec![
                p(&expired.cert).into(),
                "expired".into(),
                "2020-12-31".into(),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, cert, key, ca, expected)) in cases.into_iter().enumerate() {
        let out = serve_refuses(d, &format!("serve-{i}"), cert, key, ca);
        eprintln!("{what}:\n  {}", out.lines().last().unwrap_or_default());
        let missing: Vec<&String> = expected.iter().filter(|e| !out.contains(*e)).collect();
        if !missing.is_empty() {
            failures.push(format!("{what}: {missing:?} missing from:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The provider in-process over mTLS with this server certificate, trusting `client_ca`.
async fn tls_provider(
    dir: &Path,
    name: &str,
    server: &(String, String),
    client_ca: &str,
) -> (SimulatorHandle, App) {
    let sim = start_sim(scenario(Timing::instant())).await;
    let f = files(dir, name, server, client_ca);
    let overrides = Overrides {
        tls_cert: Some(p(&f.cert).into()),
        tls_key: Some(p(&f.key).into()),
        tls_client_ca: Some(p(&f.ca).into()),
        ..Overrides::default()
    };
    let config = loopback_config(&provider_yaml(&sim.url(), "1h", "0s", ""), overrides);
    let app = start_inprocess(&config, ServiceSettings::default()).await;
    (sim, app)
}

/// `inspect groups` at `localhost:<port>` with these client files; (success, output).
async fn inspect(dir: &Path, name: &str, port: u16, client: &Files) -> (bool, String) {
    let (dir, name) = (dir.to_owned(), name.to_owned());
    let (cert, key, ca) = (client.cert.clone(), client.key.clone(), client.ca.clone());
    tokio::task::spawn_blocking(move || {
        run_bin(
            &dir,
            &name,
            &[
                "inspect",
                "--address",
                &format!("localhost:{port}"),
                "--cert",
                p(&cert),
                "--key",
                p(&key),
                "--cacert",
                p(&ca),
                "groups",
            ],
            &[],
        )
    })
    .await
    .expect("inspect")
}

/// Issue 20 item 14, the client side: what CA would meet, said in `inspect`'s error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_says_which_certificate_or_ca_did_not_fit() {
    let dir = workdir("tls-inspect");
    let d = dir.path();
    let ours = Pki::new("provider CA");
    let other = Pki::new("some other CA");
    let client = files(
        d,
        "client",
        &ours.leaf("cluster-autoscaler", true),
        &ours.ca_pem(),
    );
    let wrong_ca = files(
        d,
        "wrong-ca",
        &ours.leaf("cluster-autoscaler", true),
        &other.ca_pem(),
    );
    let foreign = files(
        d,
        "foreign",
        &other.leaf("cluster-autoscaler", true),
        &ours.ca_pem(),
    );

    let (_sim, good) = tls_provider(d, "good", &ours.leaf("provider", false), &ours.ca_pem()).await;
    let (_sim2, misnamed) = tls_provider(
        d,
        "misnamed",
        &ours.leaf_with("provider", false, &["provider.example"], false),
        &ours.ca_pem(),
    )
    .await;
    // `serve` refuses an expired certificate (above); one that expires while it runs is what
    // CA then meets, as from this TLS front.
    let (expired_cert, expired_key) = ours.leaf_with("provider", false, &["localhost"], true);
    let expired = crate::security::tls_front(&expired_cert, &expired_key, good.grpc.addr).await;

    let (ok, out) = inspect(d, "control", good.grpc.addr.port(), &client).await;
    assert!(ok && out.contains("k8s-pool-a/workers"), "control: {out}");

    let cases: Vec<(&str, u16, &Files, Vec<String>)> = vec![
        (
            "the server certificate is not from the CA in --cacert",
            good.grpc.addr.port(),
            &wrong_ca,
            vec![p(&wrong_ca.ca).into(), "not signed by".into()],
        ),
        (
            "the server certificate does not name the host",
            misnamed.grpc.addr.port(),
            &client,
            vec!["localhost".into(), "provider.example".into()],
        ),
        (
            "the server certificate has expired",
            expired.port(),
            &client,
            vec!["expired".into(), "2020-12-31".into()],
        ),
        (
            "the provider refuses the client certificate",
            good.grpc.addr.port(),
            &foreign,
            vec![p(&foreign.cert).into(), "refused".into()],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, port, files, expected)) in cases.into_iter().enumerate() {
        let (ok, out) = inspect(d, &format!("inspect-{i}"), port, files).await;
        eprintln!("{what}:\n  {}", out.trim());
        let missing: Vec<&String> = expected.iter().filter(|e| !out.contains(*e)).collect();
        if ok || !missing.is_empty() {
            failures.push(format!("{what}: ok={ok}, {missing:?} missing from:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for app in [good, misnamed] {
        app.shutdown().await;
    }
}
