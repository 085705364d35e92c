//! The binary: `check`, `serve` + `inspect`, `demo --walkthrough`, `simulator`, config errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudify_sim::{Scenario, Simulator, Timing};

const BIN: &str = env!("CARGO_BIN_EXE_autoscaler-cloudify");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs `check --config` on a file holding `yaml`.
fn check_with_config(yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).expect("write");
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .env("CLOUDIFY_PASSWORD", "admin")
        .output()
        .expect("run check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_groups_and_fails_on_bad_config() {
    let sim = Simulator::start(
        Scenario::default_demo().with_timing(Timing::instant()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let out = Command::new(BIN)
        .args([
            "check",
            "--cloudify-url",
            &sim.url(),
            "--node-group-auto-discovery",
            "cloudify:label=k8s-cluster=demo",
        ])
        .env("CLOUDIFY_PASSWORD", "admin")
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("k8s-pool-a/workers"), "{stdout}");
    assert!(stdout.contains("k8s-pool-b/gpu-workers"), "{stdout}");
    assert!(
        !stdout.contains("warning"),
        "no options, no warning: {stdout}"
    );

    // A group with options: warned about CA 1.35+'s missing MaxNodeStartupTime (issue 10245),
    // with the unready time that then applies; the group without options is not named.
    let out = check_with_config(&format!(
        "cloudify: [{{url: \"{}\"}}]\nnode_groups:\n  auto_discovery: [\"cloudify:label=k8s-cluster=demo\"]\n  groups: {{\"k8s-pool-a/workers\": {{options: {{scale_down_unready_time: 90s}}}}}}\n",
        sim.url()
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(warnings[0].contains("group k8s-pool-a/workers"), "{stdout}");
    assert!(warnings[0].contains("MaxNodeStartupTime"), "{stdout}");
    assert!(warnings[0].contains("10245"), "{stdout}");
    assert!(
        warnings[0].contains("90s (options.scale_down_unready_time)"),
        "{stdout}"
    );

    let out = check_with_config(&format!(
        "cloudify: [{{url: \"{}\"}}]\nnode_groups: {{groups: {{\"a/b\": {{options: {{scale_down_unneeded_time: 2x}}}}}}}}\n",
        sim.url()
    ));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "config.yaml: node_groups.groups.\"a/b\".options.scale_down_unneeded_time: invalid duration \"2x\""
        ),
        "{stderr}"
    );
    sim.shutdown().await;
}

/// Runs `check --config` on `yaml` (`{url}` replaced by the simulator's URL); returns the exit
/// status, stdout and stderr, and the config file's path as the messages print it.
fn check_file(url: &str, yaml: &str) -> (bool, String, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml.replace("{url}", url)).expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .env("CLOUDIFY_PASSWORD", "admin")
        .output()
        .expect("run check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        cfg.display().to_string(),
    )
}

/// Issue 21 part 2: each mistake that used to pass `check` is a one-line finding naming what to
/// fix; errors fail the run, warnings do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_what_will_hurt() {
    let sim = Simulator::start(
        Scenario::default_demo().with_timing(Timing::instant()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let url = sim.url();
    let head = "cloudify: [{url: \"{url}\"}]\nnode_groups:\n";
    let discovery = "  auto_discovery: [\"cloudify:label=k8s-cluster=demo\"]\n";
    // (what, configuration, passes, the finding's line starts with: `{file}` = the file)
    let cases = [
        (
            "a static group Cloudify does not have",
            format!("{head}{discovery}  static: [\"1:3:k8s-pool-a/wokers\"]\n"),
            false,
            "error: {file}: node_groups.static[0]: Cloudify has no scaling group \"wokers\" in a \
             deployment \"k8s-pool-a\"",
        ),
        (
            "a typo in a group id under node_groups.groups",
            format!("{head}{discovery}  groups: {{\"k8s-pool-a/wokers\": {{max: 9}}}}\n"),
            false,
            "error: {file}: node_groups.groups.\"k8s-pool-a/wokers\": no node group has this \
             id, so these settings apply to no group (known: k8s-pool-a/workers, \
             k8s-pool-b/gpu-workers)",
        ),
        (
            "a runtime property the VMs lack",
            format!(
                "{head}{discovery}  groups: {{\"k8s-pool-a/workers\": {{provider_id_template: \"openstack:///{{runtime.server_uuid}}\"}}}}\n"
            ),
            false,
            "error: group k8s-pool-a/workers: 2 of 2 started VMs lack the runtime property \
             server_uuid that {file}: node_groups.groups.\"k8s-pool-a/workers\".provider_id_template",
        ),
        (
            "two VMs with one provider id",
            format!(
                "{head}{discovery}  defaults: {{provider_id_template: \"x://{{runtime.external_type}}\"}}\n"
            ),
            false,
            "error: provider id \"x://server\": rendered by 2 instances",
        ),
        (
            "a target above max",
            format!("{head}  static: [\"0:1:k8s-pool-a/workers\"]\n"),
            true,
            "warning: group k8s-pool-a/workers: target size 2 is above max 1",
        ),
        (
            "a target below min",
            format!("{head}  static: [\"3:5:k8s-pool-a/workers\"]\n"),
            true,
            "warning: group k8s-pool-a/workers: target size 2 is below min 3",
        ),
    ];
    for (what, yaml, passes, want) in cases {
        let (ok, stdout, stderr, file) = check_file(&url, &yaml);
        let want = want.replace("{file}", &file);
        assert_eq!(ok, passes, "{what}: exit status\n{stdout}{stderr}");
        let findings: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("error: ") || l.starts_with("warning: "))
            .collect();
        assert_eq!(findings.len(), 1, "{what}: one finding\n{stdout}");
        assert!(
            findings[0].starts_with(&want),
            "{what}:\n{}\nwant {want}",
            findings[0]
        );
        if passes {
            assert!(stdout.contains("check OK: 1 warning"), "{what}: {stdout}");
        } else {
            assert!(stderr.contains("check found 1 error"), "{what}: {stderr}");
        }
    }
    sim.shutdown().await;
}

/// Issue 21 part 2: Cloudify locks an account after 4 failed logins, so a wrong password costs
/// one login attempt per `check` run, never more, and the message says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_stops_after_one_refused_login() {
    let sim = Simulator::start(
        Scenario::default_demo().with_timing(Timing::instant()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let control = sim.control();
    control.reset_requests().await.expect("reset");
    let out = Command::new(BIN)
        .args([
            "check",
            "--cloudify-url",
            &sim.url(),
            "--node-group-auto-discovery",
            "cloudify:label=k8s-cluster=demo",
        ])
        .env("CLOUDIFY_PASSWORD", "wrong")
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let requests = control.requests().await.expect("request log");
    assert_eq!(
        requests.total, 1,
        "exactly one login attempt reaches Cloudify: {requests:?}"
    );
    for want in [
        "refused user \"admin\"",
        "check made 1 login attempt and stops without retrying",
        "Cloudify locks an account after 4 failed logins",
        "CLOUDIFY_PASSWORD",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr}");
    }
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_inspect_with_static_groups() {
    let sim = Simulator::start(
        Scenario::default_demo().with_timing(Timing::instant()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{grpc}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--cloudify-url",
            &sim.url(),
            "--nodes",
            "1:3:k8s-pool-a/workers",
            "--log-format",
            "json",
        ])
        .env("CLOUDIFY_PASSWORD", "admin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{http}/readyz")).await
            && r.status() == 200
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = Command::new(BIN)
        .args([
            "inspect",
            "--address",
            &format!("127.0.0.1:{grpc}"),
            "groups",
        ])
        .output()
        .expect("inspect");
    let _ = child.kill();
    let logs = child.wait_with_output().expect("logs");
    assert!(
        ready,
        "serve never became ready: {}",
        String::from_utf8_lossy(&logs.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("k8s-pool-a/workers"), "{stdout}");
    assert!(
        !stdout.contains("gpu-workers"),
        "only the static group: {stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("k8s-pool-a/workers"))
        .expect("line");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["1", "3", "2"], "min max target: {line}");
    let json_logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        json_logs
            .lines()
            .any(|l| l.starts_with('{') && l.contains("gRPC server listening")),
        "{json_logs}"
    );
    // Issue 21 part 5: one line per group found (the static group only).
    let found: Vec<&str> = json_logs
        .lines()
        .filter(|l| l.contains("\"node group found\""))
        .collect();
    assert_eq!(found.len(), 1, "{json_logs}");
    assert!(found[0].contains("k8s-pool-a/workers"), "{json_logs}");
    // Issue 21 part 5: which build runs is in the first line.
    let version = format!("\"version\":\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        json_logs
            .lines()
            .next()
            .is_some_and(|l| l.contains("starting autoscaler-cloudify") && l.contains(&version)),
        "{json_logs}"
    );
    sim.shutdown().await;
}

/// Issue 21 part 5: `-h` names the defaults and the possible values, a log filter that would log
/// nothing is refused (from the flag and from the file), and a start-up error is said once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_defaults_log_filters_and_a_start_up_error_said_once() {
    let help = Command::new(BIN)
        .args(["serve", "-h"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for want in [
        "[default: 0.0.0.0:8086]",
        "[default: 0.0.0.0:8087]",
        "[default: 10s]",
        "[possible values: text, json]",
        "[possible values: auto, true, false]",
    ] {
        assert!(help.contains(want), "missing {want:?} in\n{help}");
    }

    let out = Command::new(BIN)
        .args(["serve", "--log-level", "infoo"])
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("\"infoo\" is not a level"), "{stderr}");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "log: {level: debugg}\ncloudify: [{url: \"http://127.0.0.1:1\"}]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .env("CLOUDIFY_PASSWORD", "x")
        .output()
        .expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: log.level: invalid filter: \"debugg\" is not a level",
            cfg.display()
        )),
        "{stderr}"
    );

    // A port taken by someone else: the error comes out once, not as a log line and again on
    // stderr.
    let sim = Simulator::start(
        Scenario::default_demo().with_timing(Timing::instant()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &taken_addr,
            "--http-listen",
            "127.0.0.1:0",
            "--cloudify-url",
            &sim.url(),
            "--nodes",
            "1:3:k8s-pool-a/workers",
            "--leader-elect",
            "false",
        ])
        .env("CLOUDIFY_PASSWORD", "admin")
        .output()
        .expect("serve");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    let said = format!("cannot listen on {taken_addr}");
    assert_eq!(all.matches(&said).count(), 1, "{all}");
    drop(taken);
    sim.shutdown().await;
}

#[test]
fn demo_walkthrough_scales_up_and_down() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--walkthrough",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--cloudify-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("demo");
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{logs}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "NodeGroupIncreaseSize(2)",
        "scale-out queued",
        "scale-in queued",
        "removed exactly the named instances",
        "walkthrough complete",
    ] {
        assert!(logs.contains(step), "missing {step:?} in\n{logs}");
    }
    assert!(
        !logs.contains('\u{1b}'),
        "no colour codes when stdout is not a terminal"
    );
}

/// `demo` tells a newcomer what runs where and what to try, and the advice works from where it was
/// started (issue 21): the banner names this binary by the path it was started with, the ports
/// this demo listens on (flags after the query), and the `inspect` commands answer.
#[test]
fn demo_prints_a_banner_whose_inspect_command_works() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--cloudify-listen",
            "127.0.0.1:0",
        ])
        // As a person starts it, not as `cargo test` (whose variables say cargo ran it).
        .env_remove("CARGO_PKG_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo");
    let stdout = child.stdout.take().expect("stdout");
    // Read on a thread so a demo that never prints the banner fails by timeout, not by hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("Ctrl-C stops the demo") {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let banner = rx.recv_timeout(Duration::from_secs(60));
    let banner = match banner {
        Ok(b) => b,
        Err(_) => {
            let _ = child.kill();
            panic!("no banner within 60 s");
        }
    };
    let grpc = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("provider gRPC"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned);
    let run = |prefix: &str| {
        let line = banner
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{BIN} {prefix}")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no `{BIN} {prefix}` line in\n{banner}"));
        let args: Vec<String> = line[BIN.len()..]
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let out = Command::new(BIN).args(&args).output().expect("inspect");
        (line, out)
    };
    let (groups_line, groups) = run("inspect groups");
    let (node_line, node) = run("inspect node");
    let _ = child.kill();
    let _ = child.wait();
    let grpc = grpc.unwrap_or_else(|| panic!("no gRPC address in\n{banner}"));
    assert!(grpc.starts_with("127.0.0.1:"), "{banner}");
    for want in [
        "admin",
        "/metrics",
        "k8s-pool-a/workers",
        "k8s-pool-b/gpu-workers",
        "nodes k8s-pool-a/workers",
        "--walkthrough",
    ] {
        assert!(banner.contains(want), "missing {want:?} in\n{banner}");
    }
    assert!(
        groups_line.ends_with(&format!("groups --grpc {grpc}")),
        "{groups_line}"
    );
    let text = String::from_utf8_lossy(&groups.stdout);
    assert!(
        groups.status.success() && text.contains("k8s-pool-b/gpu-workers"),
        "{groups_line}: {text}{}",
        String::from_utf8_lossy(&groups.stderr)
    );
    assert!(text.starts_with("GROUP "), "a header first: {text}");
    // The node controller is off in the demo: the HTTP port says so, which proves the banner's
    // `--http` address is the demo's.
    let text = String::from_utf8_lossy(&node.stdout);
    let err = String::from_utf8_lossy(&node.stderr);
    assert!(
        !err.contains("cannot connect") && !err.contains("Connection refused"),
        "{node_line}: {text}{err}"
    );
}

/// `inspect` says why it cannot reach the provider, not just "transport error".
#[test]
fn inspect_names_the_connection_cause() {
    let closed = free_port();
    let out = Command::new(BIN)
        .args([
            "inspect",
            "groups",
            "--grpc",
            &format!("127.0.0.1:{closed}"),
        ])
        .output()
        .expect("inspect");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "cannot connect to the provider at 127.0.0.1:{closed}"
        )) && stderr.to_lowercase().contains("connection refused"),
        "{stderr}"
    );
}

/// Kills the child on drop so a failing assertion does not leak the process.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn simulator_command_prints_its_url_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_autoscaler-cloudify"))
            .args(["simulator", "--listen", "127.0.0.1:0", "--instances", "7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("a line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL printed")
        .to_string();
    let http = reqwest::Client::new();
    let ok = http
        .get(format!("{url}/api/v3.1/ok"))
        .send()
        .await
        .expect("GET /ok");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let deployment: serde_json::Value = http
        .get(format!(
            "{url}/api/v3.1/deployments/k8s-pool-a?_include=scaling_groups"
        ))
        .basic_auth("admin", Some("admin"))
        .header("Tenant", "default_tenant")
        .send()
        .await
        .expect("GET deployment")
        .json()
        .await
        .expect("JSON");
    let props = &deployment["scaling_groups"]["workers"]["properties"];
    assert_eq!(props["current_instances"], 7);
    assert_eq!(props["max_instances"], 10);
}
