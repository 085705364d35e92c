//! What one refresh costs against a real Cloudify Manager (issues 19 item 7 and 20 item 7,
//! BENCHMARKS.md section 12): criterion's mean wall time of one refresh at 10, 100 and 200
//! labelled deployments (a scaling group of two VMs each), plus the requests, bytes and longest
//! request line of each refresh and the manager's time per route.
//!
//! ```sh
//! . /work/wt/manager-env.sh          # or: eval "$(tests/manager/manager.sh env)"
//! /work/manager-shared/venv/bin/python scripts/bench/refresh_deployments.py create --count 200
//! cargo bench --features manager-bench --bench refresh        # REFRESH_BENCH_SIZES=10,100 for fewer sizes
//! /work/manager-shared/venv/bin/python scripts/bench/refresh_deployments.py delete
//! ```
//!
//! The manager comes from the manager tier's variables (`CLOUDIFY_MANAGER_URL`, an `http://`
//! URL, `CLOUDIFY_MANAGER_USER`, `CLOUDIFY_MANAGER_PASSWORD`, `CLOUDIFY_MANAGER_TENANT`); without
//! a URL the benchmark prints one line and measures nothing (the simulator models no query
//! cost, so its figures would say nothing about this). Outside `cargo bench` (`cargo test
//! --all-targets`) it is skipped too: it would need the deployments.
//!
//! Deployments are selected by the label `refresh-bench`: those of size N carry the value
//! `d<N>` (a deployment carries several values), so one set of 200 serves the three sizes. Every
//! request goes through a counting proxy (the test kit's hostile manager, passing everything
//! through), which gives the requests, the bytes answered, the longest request line and each
//! request's time.
//!
//! For each size: `full` (every deployment's nodes and instances read again on every refresh,
//! `refresh.full_every: 0s`: a provider's first refresh, and the periodic full one) and
//! `incremental` (the default, on a manager where nothing changes: CA's every loop).

use testkit::hostile;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoscaler_cloudify::cloudify::{Auth, ClientSettings, Cloudify, CloudifyClient};
use autoscaler_cloudify::config::{Config, Overrides};
use autoscaler_cloudify::inventory::{FetchOptions, Inventory};
use autoscaler_cloudify::observability::metrics::Metrics;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use tokio::runtime::Runtime;

/// The label that selects a size's deployments.
const LABEL: &str = "refresh-bench";

/// Refreshes measured per size and mode: criterion's smallest sample count, one refresh each.
const SAMPLES: usize = 10;

/// The manager to read, from the manager tier's environment variables.
struct Target {
    url: String,
    tenant: String,
    username: String,
    password: String,
    sizes: Vec<usize>,
}

impl Target {
    /// `None` when no manager URL is set.
    fn from_env() -> Result<Option<Target>, String> {
        let Ok(url) = std::env::var("CLOUDIFY_MANAGER_URL") else {
            return Ok(None);
        };
        let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
        let sizes = var("REFRESH_BENCH_SIZES", "10,100,200")
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("REFRESH_BENCH_SIZES: {e} (expected e.g. 10,100,200)"))?;
        Ok(Some(Target {
            url,
            tenant: var("CLOUDIFY_MANAGER_TENANT", "default_tenant"),
            username: var("CLOUDIFY_MANAGER_USER", "admin"),
            password: var("CLOUDIFY_MANAGER_PASSWORD", ""),
            sizes,
        }))
    }

    /// A provider's inventory of the deployments of size `n`, reading through `url`.
    fn inventory(&self, url: &str, n: usize, full: bool) -> Arc<Inventory> {
        let env = BTreeMap::from([("P".to_owned(), "x".to_owned())]);
        let yaml = format!(
            "cloudify: [{{url: \"http://unused\", password_env: P}}]\n\
             node_groups: {{auto_discovery: [\"cloudify:label={LABEL}=d{n}\"]}}\n"
        );
        let cfg = Config::from_yaml(&yaml, &Overrides::default(), &env).expect("bench config");
        let settings = ClientSettings {
            name: "main".into(),
            url: url.to_owned(),
            tenant: self.tenant.clone(),
            auth: Auth::Basic {
                username: self.username.clone(),
                password: self.password.clone(),
            },
            ca_cert_pem: None,
            insecure_skip_verify: false,
            request_timeout: Duration::from_secs(120),
            max_response_bytes: autoscaler_cloudify::cloudify::DEFAULT_MAX_RESPONSE_BYTES,
        };
        let client = CloudifyClient::new(settings, None).expect("client");
        let options = FetchOptions {
            full_every: if full {
                Duration::ZERO
            } else {
                FetchOptions::default().full_every
            },
        };
        Inventory::with_options(
            vec![Arc::new(client) as Arc<dyn Cloudify>],
            Arc::new(cfg.node_groups),
            Metrics::new(),
            options,
        )
    }
}

/// One refresh; a failed one ends the benchmark (its time would mean nothing).
async fn refresh(inv: &Inventory) {
    if let Err(e) = inv.refresh().await {
        panic!("refresh failed: {e}");
    }
}

/// What the proxy saw of `refreshes` refreshes, per refresh, as a line of the table.
fn cost(n: usize, mode: &str, seen: &[hostile::Seen], refreshes: usize) -> String {
    let per = |x: f64| x / refreshes.max(1) as f64;
    let mut routes: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for s in seen {
        let r = routes
            .entry(s.path.trim_start_matches("/api/v3.1/"))
            .or_default();
        r.0 += 1;
        r.1 += s.elapsed.as_secs_f64();
    }
    let routes: Vec<String> = routes
        .into_iter()
        .map(|(path, (k, secs))| {
            format!(
                "{path} {:.1}×{:.3} s",
                per(k as f64),
                per(secs) / per(k as f64)
            )
        })
        .collect();
    let bytes: u64 = seen.iter().map(|s| s.body_bytes).sum();
    format!(
        "| {n} | {mode} | {:.1} | {:.1} KiB | {} B | {} |",
        per(seen.len() as f64),
        per(bytes as f64) / 1024.0,
        seen.iter().map(|s| s.request_line).max().unwrap_or(0),
        routes.join(", ")
    )
}

/// Benchmarks one mode at one size: [`SAMPLES`] refreshes of one inventory, one per sample.
fn measure(
    c: &mut Criterion,
    rt: &Runtime,
    proxy: &hostile::HostileManager,
    inv: &Inventory,
    (n, mode): (usize, &str),
    probe: Duration,
) -> String {
    let mut group = c.benchmark_group("refresh");
    // Flat sampling with a target of one refresh per sample: criterion's least work, and each
    // refresh costs the shared manager seconds.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(probe * SAMPLES as u32);
    let mut refreshes = 0usize;
    proxy.take_requests();
    group.bench_function(BenchmarkId::new(mode, n), |b| {
        b.to_async(rt).iter_custom(|iters| {
            refreshes += iters as usize;
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    refresh(inv).await;
                }
                started.elapsed()
            }
        })
    });
    group.finish();
    cost(n, mode, &proxy.take_requests(), refreshes)
}

fn run(c: &mut Criterion, target: &Target) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let proxy = rt.block_on(hostile::HostileManager::start(&target.url));
    let mut rows = vec![
        "| deployments | mode | requests | answered | longest request line | per route: requests × mean time |".to_owned(),
        "|---:|---|---:|---:|---:|---|".to_owned(),
    ];
    for &n in &target.sizes {
        for (mode, full) in [("full", true), ("incremental", false)] {
            let inv = target.inventory(&proxy.url(), n, full);
            // The first refresh reads everything (a new provider's); it also tells how long
            // one takes, and whether the deployments are there.
            let started = Instant::now();
            proxy.take_requests();
            rt.block_on(refresh(&inv));
            let first = started.elapsed();
            let seen = proxy.take_requests();
            if full {
                rows.push(cost(n, "first", &seen, 1));
            }
            let groups = inv.snapshot().groups.len();
            if groups != n {
                eprintln!(
                    "refresh: {groups} of {n} deployments carry {LABEL}=d{n}: create them with \
                     scripts/bench/refresh_deployments.py create --count {n}"
                );
                break;
            }
            let probe = if full {
                first
            } else {
                let started = Instant::now();
                rt.block_on(refresh(&inv));
                started.elapsed()
            };
            rows.push(measure(c, &rt, &proxy, &inv, (n, mode), probe));
        }
    }
    println!("\n{}", rows.join("\n"));
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "refresh: skipped: it reads a real Cloudify Manager, run it with `cargo bench --features manager-bench --bench refresh`"
        );
        return;
    }
    let target = match Target::from_env() {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!(
                "refresh: skipped: no manager (set CLOUDIFY_MANAGER_URL and its credentials: \
                 `. /work/wt/manager-env.sh` or `eval \"$(tests/manager/manager.sh env)\"`)"
            );
            return;
        }
        Err(e) => {
            eprintln!("refresh: {e}");
            std::process::exit(2);
        }
    };
    let mut c = Criterion::default().configure_from_args();
    run(&mut c, &target);
    c.final_summary();
}
