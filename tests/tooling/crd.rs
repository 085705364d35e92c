//! The `CloudifyNodePool` CRD in the chart is the one the Rust types generate (issue 22): this
//! test fails when the types change and the file was not regenerated. Regenerate with
//! `UPDATE_CRD=1 cargo test --test tooling crd`.

use std::path::Path;

use autoscaler_cloudify::kube::pools::crd::CloudifyNodePool;
use kube::CustomResourceExt;

const FILE: &str =
    "deploy/helm/autoscaler-cloudify/crds/cloudifynodepools.autoscaler.cloudify.io.yaml";

/// The file's text: a header, then the CRD as JSON (valid YAML, and no YAML writer needed).
fn generated() -> String {
    let crd = serde_json::to_string_pretty(&CloudifyNodePool::crd()).expect("CRD as JSON");
    format!(
        "# Generated from src/kube/pools/crd.rs: do not edit. Regenerate with\n\
         # UPDATE_CRD=1 cargo test --test tooling crd\n{crd}\n"
    )
}

#[test]
fn the_chart_crd_matches_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FILE);
    let want = generated();
    if std::env::var("UPDATE_CRD").as_deref() == Ok("1") {
        std::fs::write(&path, &want).expect("write the CRD");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{FILE} is stale or missing: the CloudifyNodePool types changed. Regenerate it with \
         UPDATE_CRD=1 cargo test --test tooling crd"
    );
}
