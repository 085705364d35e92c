//! The deployment artefacts against the real code: the provider configuration the Helm chart
//! renders (committed as deploy/manifests/autoscaler-cloudify.yaml) and the chart's CI values must
//! load with the loader `serve` and `check` use, the Deployment and the helm test pod must only
//! pass flags the binary has, and CA's cloud-config must name everything CA needs for mTLS.
//! A chart or config change that drifts from the code fails here, not in a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autoscaler_cloudify::cli::{Cli, Command};
use clap::Parser;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a multi-document YAML stream (empty documents skipped).
fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(text)
        .expect("valid YAML documents")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Parses `args` the way the container runs them (`ENTRYPOINT ["/autoscaler-cloudify", "serve"]`)
/// and loads the configuration with `config_file` in place of the mounted path.
fn load_as_serve(
    args: &[String],
    config_file: &Path,
    env: &BTreeMap<String, String>,
) -> autoscaler_cloudify::config::Config {
    let argv = ["autoscaler-cloudify", "serve"]
        .into_iter()
        .map(str::to_owned)
        .chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("args {args:?}: {e}"));
    let Command::Serve(mut serve) = cli.command else {
        panic!("not serve");
    };
    assert_eq!(
        serve.config.as_deref(),
        Some(Path::new("/etc/autoscaler-cloudify/config/config.yaml")),
        "the Deployment must point --config at the mounted ConfigMap"
    );
    serve.config = Some(config_file.to_owned());
    serve
        .load_with_env(env)
        .unwrap_or_else(|e| panic!("the rendered config does not load: {e}"))
}

/// Secrets as the Deployment supplies them: one dummy value per env var it sets.
fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .map(|n| (n.to_owned(), "secret".to_owned()))
        .collect()
}

#[test]
fn rendered_manifests_load_with_the_real_config_loader() {
    let docs = documents(&read("deploy/manifests/autoscaler-cloudify.yaml"));
    let config_yaml = object(&docs, "ConfigMap", "autoscaler-cloudify")["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config_yaml).expect("write");

    let deployment = object(&docs, "Deployment", "autoscaler-cloudify");
    let containers = &deployment["spec"]["template"]["spec"]["containers"];
    let provider = containers
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"].as_str() == Some("provider")))
        .expect("provider container");
    let config = load_as_serve(&strings(&provider["args"]), &file, &container_env(provider));

    // What the chart's Service, probes and cloud-config rely on.
    assert_eq!(config.grpc_listen.port(), 8086);
    assert_eq!(config.http_listen.port(), 8087);
    // Dual-stack by default (issue 21): `[::]`, which on Linux also accepts IPv4 (below).
    assert!(
        config.grpc_listen.ip().is_unspecified() && config.grpc_listen.is_ipv6(),
        "{}",
        config.grpc_listen
    );
    assert!(config.http_listen.is_ipv6(), "{}", config.http_listen);
    // The leader labels its Pod for the gRPC Service's selector (issue 21).
    assert_eq!(
        config.lease.leader_label.as_deref(),
        Some("autoscaler-cloudify.io/leader")
    );
    let tls = config.tls.as_ref().expect("mTLS by default");
    assert!(tls.client_ca_file.is_some(), "client certificates required");
    assert!(!config.insecure);
    let ports: Vec<i64> = provider["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert_eq!(ports, [8086, 8087]);
    // The TLS files the config names are where the Deployment mounts the server Secret.
    let mounts: Vec<&str> = provider["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for f in [&tls.cert_file, &tls.key_file] {
        assert!(
            mounts.iter().any(|m| f.starts_with(m)),
            "{} is not under a mount {mounts:?}",
            f.display()
        );
    }
}

#[test]
fn cloud_config_has_what_cas_externalgrpc_client_needs() {
    let docs = documents(&read("deploy/manifests/autoscaler-cloudify.yaml"));
    let text =
        object(&docs, "ConfigMap", "autoscaler-cloudify-cloud-config")["data"]["cloud-config"]
            .as_str()
            .expect("data.cloud-config");
    let cc: Value = serde_saphyr::from_str(text).expect("cloud-config is YAML");
    for key in ["address", "cert", "key", "cacert"] {
        assert!(
            cc[key].as_str().is_some_and(|v| !v.is_empty()),
            "cloud-config lacks {key}: {text}"
        );
    }
    let address = cc["address"].as_str().unwrap_or_default();
    assert!(address.ends_with(":8086"), "{address}");
    // `inspect --cloud-config` reads the same file (the helm test pod does exactly this).
    let cli = Cli::try_parse_from([
        "autoscaler-cloudify",
        "inspect",
        "--cloud-config=/etc/autoscaler-cloudify/cloud-config/cloud-config",
        "groups",
    ]);
    assert!(cli.is_ok(), "{:?}", cli.err());
}

#[test]
fn helm_test_pod_runs_a_command_that_exists() {
    let template = read("deploy/helm/autoscaler-cloudify/templates/tests/test-connection.yaml");
    let line = template
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("args:"))
        .expect("args line in the helm test pod");
    let args: Vec<String> = serde_saphyr::from_str(line).expect("args are a plain YAML list");
    let argv = std::iter::once("autoscaler-cloudify".to_owned()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(matches!(cli.command, Command::Inspect(_)), "{args:?}");
}

/// The chart writes `values.config` verbatim below the `grpc`/`http` keys it owns, so the CI
/// values (two managers, token auth, per-group overrides) must load too, with the chart's
/// `extraArgs` on top.
#[test]
fn ci_values_config_loads_with_the_real_config_loader() {
    let values: Value =
        serde_saphyr::from_str(&read("tests/helm/values-ci.yaml")).expect("values-ci.yaml");
    let mut config = values["config"].clone();
    let dir = tempfile::tempdir().expect("tmp");
    // ca_cert_file is read at load time: point it at a file that exists here.
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    for entry in config["cloudify"].as_array_mut().into_iter().flatten() {
        if entry.get("ca_cert_file").is_some() {
            entry["ca_cert_file"] = Value::String(ca.display().to_string());
        }
    }
    let file: PathBuf = dir.path().join("config.yaml");
    // JSON is YAML: the loader reads it like the chart's rendered file.
    std::fs::write(&file, serde_json::to_string(&config).expect("json")).expect("write");
    let env: BTreeMap<String, String> = values["credentials"]["env"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| (k.clone(), "secret".to_owned()))
        .collect();
    let mut args = vec!["--config=/etc/autoscaler-cloudify/config/config.yaml".to_owned()];
    args.extend(strings(&values["extraArgs"]));
    let loaded = load_as_serve(&args, &file, &env);
    assert_eq!(loaded.cloudify.len(), 2);
    assert!(
        loaded
            .node_groups
            .groups
            .contains_key("main:k8s-pool-a/workers")
    );
}

/// Every `autoscaler_cloudify_*` name the operator docs mention (tables, alerts, troubleshooting)
/// is one the process registers, so an alert copied from the docs can fire.
#[test]
fn documented_metric_names_are_exported() {
    use autoscaler_cloudify::observability::metrics::*;
    let metrics = Metrics::new();
    // Labelled families are only encoded once they have a series.
    let method = MethodLabels { method: "m" };
    let route = RouteLabels { route: "r" };
    metrics
        .grpc_requests
        .get_or_create(&GrpcLabels {
            method: "m",
            code: GrpcCode::Ok,
        })
        .inc();
    metrics.grpc_duration.get_or_create(&method).observe(0.0);
    metrics
        .cloudify_requests
        .get_or_create(&CloudifyLabels {
            route: "r",
            status: Answer::Status(200),
        })
        .inc();
    metrics.cloudify_duration.get_or_create(&route).observe(0.0);
    metrics
        .refreshes
        .get_or_create(&ResultLabels {
            result: RefreshResult::Ok,
        })
        .inc();
    metrics
        .target_size
        .get_or_create(&GroupLabels { group: "g".into() })
        .set(1);
    metrics.scale(ScaleDirection::Up, ScaleResult::Accepted);
    metrics
        .node_controller
        .shutdown_taints
        .get_or_create(&ActionLabels {
            action: TaintAction::Added,
        })
        .inc();
    let port = PortLabels { port: Port::Http };
    metrics.connections_open.get_or_create(&port).set(1);
    metrics.connections_rejected.get_or_create(&port).inc();
    let exported: Vec<String> = metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(exported.len() > 10, "{exported:?}");
    for doc in ["docs/operations.md", "README.md", "docs/configuration.md"] {
        let text = read(doc);
        let mut rest = text.as_str();
        while let Some(i) = rest.find("autoscaler_cloudify_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            rest = &tail[end..];
            if name == "autoscaler_cloudify_" {
                continue; // the prefix itself, e.g. `autoscaler_cloudify_*`
            }
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                exported.iter().any(|e| e == base || e == name),
                "{doc} mentions {name}, which is not exported ({exported:?})"
            );
        }
    }
}

/// The chart listens on `[::]` (issue 21, dual-stack clusters): on Linux such a socket takes IPv4
/// connections too (`net.ipv6.bindv6only=0`, the default), so IPv4-only clusters keep working.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_dual_stack_listen_address_accepts_ipv4_and_ipv6() {
    if std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "1") {
        eprintln!("skipped: net.ipv6.bindv6only=1 on this machine");
        return;
    }
    let Ok(l) = tokio::net::TcpListener::bind("[::]:0").await else {
        eprintln!(
            "skipped: no IPv6 on this machine (the chart's listenAddress: 0.0.0.0 is for it)"
        );
        return;
    };
    let port = l.local_addr().expect("addr").port();
    for client in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let c = tokio::net::TcpStream::connect(&client).await;
        assert!(c.is_ok(), "{client}: {c:?}");
        l.accept().await.expect("accepted");
    }
}
