//! docs/operations.md calls its metrics table "the complete list": this keeps it true. Every
//! metric family the provider exposes (the registry's `# TYPE` lines, the `process_*` ones
//! included) is in the table, and the table names nothing the provider does not expose (issue 21
//! part 6).

use std::collections::BTreeSet;

use autoscaler_cloudify::observability::metrics::{
    Answer, CloudifyLabels, GroupLabels, Metrics, RouteLabels,
};

/// The metric names in the first column of the table under `## Metrics`, counters without their
/// `_total` (as `# TYPE` names them).
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    let section = doc
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Metrics section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(|name| name.trim_end_matches("_total").to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The families the provider exposes, by their `# TYPE` line; a family whose labels come from the
/// data (a Cloudify route, a group) shows only once it has a series, so each gets one.
fn exposed() -> BTreeSet<String> {
    let m = Metrics::new();
    let route = "GET /deployments";
    m.cloudify_requests
        .get_or_create(&CloudifyLabels {
            route,
            status: Answer::Status(200),
        })
        .inc();
    m.cloudify_duration
        .get_or_create(&RouteLabels { route })
        .observe(0.1);
    m.target_size
        .get_or_create(&GroupLabels {
            group: "d/g".into(),
        })
        .set(1);
    m.encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_documented_metrics_are_exactly_the_exposed_ones() {
    let (doc, live) = (documented(), exposed());
    assert!(live.len() > 20, "{live:?}");
    let undocumented: Vec<&String> = live.difference(&doc).collect();
    let gone: Vec<&String> = doc.difference(&live).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "exposed but not in docs/operations.md's table: {undocumented:?}; in the table but not \
         exposed: {gone:?}"
    );
}
