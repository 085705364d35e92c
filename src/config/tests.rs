//! Configuration validation tests.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("CLOUDIFY_PASSWORD".to_owned(), "admin".to_owned())])
}

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, &Overrides::default(), &env())
}

#[test]
fn full_example_loads() {
    let c = load(
            r#"
cloudify: [{url: "http://127.0.0.1:8100"}]
node_groups:
  static: ["1:10:k8s-pool-a/workers"]
  auto_discovery: ["cloudify:label=k8s-cluster=demo,label=pool=gpu"]
  groups:
    "k8s-pool-a/workers":
      price_per_hour: 0.12
      template: {capacity: {cpu: "4", memory: 16Gi, pods: 110}, taints: [{key: a, value: b, effect: NoSchedule}]}
      options: {scale_down_unneeded_time: 20s, scale_down_utilization_threshold: 0.4}
"#,
        )
        .expect("valid");
    assert_eq!(c.node_groups.static_groups[0].max, 10);
    assert_eq!(c.node_groups.discovery[0].labels.len(), 2);
    let g = c.node_groups.settings_for("k8s-pool-a/workers");
    assert_eq!(
        g.options.and_then(|o| o.scale_down_unneeded_time),
        Some(Duration::from_secs(20))
    );
    assert_eq!(c.cloudify[0].name, "main");
}

#[test]
fn errors_name_the_key() {
    let e = load(
            "cloudify: [{url: \"http://x\"}]\nnode_groups: {groups: {\"a/b\": {options: {scale_down_unneeded_time: 2x}}}}",
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "node_groups.groups.\"a/b\".options.scale_down_unneeded_time: invalid duration \"2x\" \
         (expected e.g. 10s, 1m30s or 500ms)"
    );
    let e = load("refresh: {interval: soon}").unwrap_err().to_string();
    assert!(
        e.starts_with("refresh.interval: invalid duration \"soon\""),
        "{e}"
    );
    let e = load("grpc: {listne: x}").unwrap_err().to_string();
    assert!(e.contains("listne"), "{e}");
    let e = load("node_groups: {static: [\"a:1:x/y\"]}")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("node_groups.static[0]"), "{e}");
    let e = Config::from_yaml(
        "cloudify: [{url: \"http://x\"}]",
        &Overrides::default(),
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("CLOUDIFY_PASSWORD"), "{e}");
}

/// Issue 21: a semantic error names the file, the key and the expected form; a value a flag gave
/// names the flag instead, not a file key the operator never wrote.
#[test]
fn semantic_errors_name_the_file_or_the_flag() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "cloudify: [{url: \"http://x\"}]\nnode_groups: {groups: {\"a/b\": {zone: \"zone a\"}}}\n",
    )
    .expect("write");
    let e = Config::load(Some(&path), &Overrides::default(), &env())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: node_groups.groups.\"a/b\".zone: \"zone a\" is not a valid Kubernetes label value \
             (at most 63 of A-Z a-z 0-9 . _ -, beginning and ending with a letter or digit)",
            path.display()
        )
    );
    std::fs::write(&path, "cloudify: [{url: \"http://x\"}]\n").expect("write");
    let flags = Overrides {
        nodes: vec!["1:3:a/b".into(), "3:1:a/c".into()],
        ..Overrides::default()
    };
    let e = Config::load(Some(&path), &flags, &env())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "--nodes[1]: \"3:1:a/c\": need 0 <= min <= max");
    let flags = Overrides {
        cloudify_url: Some("ftp://x".into()),
        ..Overrides::default()
    };
    let e = Config::load(Some(&path), &flags, &env())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--cloudify-url: invalid URL"), "{e}");
}

#[test]
fn several_managers_need_prefixed_ids() {
    let y = "cloudify: [{name: a, url: \"http://x\"}, {name: b, url: \"http://y\"}]\nnode_groups: {static: [\"0:3:d/g\"]}";
    assert!(load(y).unwrap_err().to_string().contains("<name>:"));
    let y = "cloudify: [{name: a, url: \"http://x\"}, {name: b, url: \"http://y\"}]\nnode_groups: {static: [\"0:3:b:d/g\"]}";
    assert_eq!(
        load(y).expect("valid").node_groups.static_groups[0].source,
        1
    );
}

#[test]
fn yaml_syntax_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "cloudify:\n  - url: http://x\nnode_groups:\n  static: [\"1:3:a/b\"\n  groups: {}\n",
    )
    .expect("write");
    let e = Config::load(Some(&path), &Overrides::default(), &env())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(e.contains("line 5"), "{e}");
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let e = load("cloudify: [{url: \"http://x\", pasword_env: X}]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cloudify[0]") && e.contains("pasword_env"),
        "{e}"
    );
}

#[test]
fn log_level_is_a_tracing_filter() {
    let c = load("log: {level: \"info,autoscaler_cloudify=debug\"}").expect("valid filter");
    assert_eq!(c.log_level, "info,autoscaler_cloudify=debug");
    let e = load("log: {level: \"info,autoscaler_cloudify=loud\"}")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("log.level: invalid filter"), "{e}");
}

#[test]
fn yaml_type_errors_name_the_file_key_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.yaml");
    // YAML 1.1's `yes` is not a boolean (as with the YAML crate used before).
    std::fs::write(&path, "grpc:\n  insecure: yes\n").expect("write");
    let e = Config::load(Some(&path), &Overrides::default(), &env())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: grpc.insecure: ", path.display())),
        "{e}"
    );
    assert!(e.contains("line 2"), "{e}");
    let e = load("node_groups: {defaults: {template: {capacity: {cpu: [4]}}}}")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node_groups.defaults.template.capacity.cpu")
            && e.contains("expected a quantity such as"),
        "{e}"
    );
}

#[test]
fn lease_keys_default_and_validate() {
    let base = "cloudify: [{url: \"http://x\"}]\n";
    let d = load(base).expect("valid").lease;
    assert_eq!(d, LeaseConfig::default());
    assert_eq!(d.mode, LeaseMode::Auto);
    let c = load(&format!(
        "{base}lease: {{enabled: true, name: l, namespace: ns, duration: 20s, renew_deadline: 12s, renew_period: 3s}}"
    ))
    .expect("valid")
    .lease;
    assert_eq!(c.mode, LeaseMode::On);
    assert_eq!((c.name.as_str(), c.namespace.as_deref()), ("l", Some("ns")));
    assert_eq!(c.renew_deadline, Duration::from_secs(12));
    let err = |yaml: &str| {
        load(&format!("{base}{yaml}"))
            .expect_err("invalid")
            .to_string()
    };
    // The leader must stop mutating before another replica may take the lease.
    assert!(
        err("lease: {duration: 10s, renew_deadline: 10s}").starts_with("lease.renew_deadline"),
        "{}",
        err("lease: {duration: 10s, renew_deadline: 10s}")
    );
    assert!(err("lease: {renew_deadline: 4s, renew_period: 4s}").starts_with("lease.renew_period"));
    assert!(err("lease: {duration: 1500ms}").contains("whole number of seconds"));
    assert!(err("lease: {enabled: maybe}").contains("auto, true or false"));
    assert!(err("lease: {name: \"\"}").starts_with("lease.name"));
    assert!(err("lease: {nmae: x}").contains("nmae"));
    // The leader's Pod label (issue 21): a key the API server would refuse fails at start.
    let labelled = load(&format!(
        "{base}lease: {{leader_label: autoscaler-cloudify.io/leader}}"
    ))
    .expect("valid")
    .lease;
    assert_eq!(
        labelled.leader_label.as_deref(),
        Some("autoscaler-cloudify.io/leader")
    );
    assert_eq!(d.leader_label, None, "off unless asked for");
    for bad in [
        "Autoscaler.IO/leader",
        "autoscaler-cloudify.io/-leader",
        "a/b/c",
        "leader label",
    ] {
        let e = err(&format!("lease: {{leader_label: \"{bad}\"}}"));
        assert!(
            e.starts_with("lease.leader_label") && e.contains("label key"),
            "{bad}: {e}"
        );
    }
    let off = Config::from_yaml(
        base,
        &Overrides {
            leader_elect: Some(LeaseMode::Off),
            ..Overrides::default()
        },
        &env(),
    )
    .expect("valid");
    assert_eq!(off.lease.mode, LeaseMode::Off);
}

#[test]
fn a_provider_id_template_without_a_per_instance_placeholder_is_refused_naming_file_and_key() {
    // Issue 20: every VM got the same id and DeleteNodes removed whichever the index kept.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "cloudify: [{url: \"http://x\"}]\nnode_groups:\n  auto_discovery: [\"cloudify:label=a=b\"]\n  groups:\n    \"d/g\": {provider_id_template: \"cloudify://{tenant}/{deployment}/{group}\"}\n",
    )
    .expect("write");
    let e = Config::load(Some(&path), &Overrides::default(), &env())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(
        e.contains("node_groups.groups.\"d/g\".provider_id_template"),
        "{e}"
    );
    assert!(
        e.contains("{vm_instance}, {group_instance} or {runtime.<key>}"),
        "{e}"
    );
}

#[test]
fn joining_node_is_a_per_group_setting_that_must_not_be_empty() {
    let c = load(
        "cloudify: [{url: \"http://x\"}]\nnode_groups: {auto_discovery: [\"cloudify:label=a=b\"], defaults: {joining_node: worker_host}, groups: {\"d/g\": {joining_node: vm}}}",
    )
    .expect("valid");
    assert_eq!(
        c.node_groups.settings_for("d/g").joining_node.as_deref(),
        Some("vm")
    );
    assert_eq!(
        c.node_groups.settings_for("d/h").joining_node.as_deref(),
        Some("worker_host")
    );
    let e = load(
        "cloudify: [{url: \"http://x\"}]\nnode_groups: {auto_discovery: [\"cloudify:label=a=b\"], defaults: {joining_node: \"\"}}",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("node_groups.defaults.joining_node: must not be empty"),
        "{e}"
    );
}
