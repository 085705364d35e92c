//! Heap per instance (issue #8), measured with dhat's heap profiler: the snapshot a provider
//! keeps between refreshes, and the peak while one refresh decodes its pages and builds the new
//! snapshot. Not a criterion benchmark: it prints bytes, which do not need repetitions.
//!
//! `cargo bench --bench memory` (100k instances); under `cargo test` it runs at 2k instances.

use testkit::fixtures as common;

use std::hint::black_box;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let n = if common::benching() { 100_000 } else { 2_000 };
    let out = std::env::temp_dir().join(format!("dhat-memory-{}.json", std::process::id()));
    let profiler = dhat::Profiler::builder().testing().file_name(&out).build();
    let cfg = common::config();

    // The JSON bodies are the network's, not ours: measured from here on.
    let pages = common::pages(n);
    let json_bytes: usize = pages.instances.iter().map(Vec::len).sum();
    let base = dhat::HeapStats::get();

    let data = common::decode_pages(&pages);
    let decoded = dhat::HeapStats::get();
    let snap = autoscaler_cloudify::inventory::build_snapshot(
        std::time::Instant::now(),
        std::time::SystemTime::now(),
        std::slice::from_ref(&data),
        &cfg,
        false,
    );
    let built = dhat::HeapStats::get();
    drop(data);
    let kept = dhat::HeapStats::get();
    assert_eq!(snap.instance_count(), n);

    let per = |bytes: usize| bytes as f64 / n as f64;
    let models = decoded.curr_bytes - base.curr_bytes;
    let snapshot = kept.curr_bytes - base.curr_bytes;
    let peak = built.max_bytes.saturating_sub(base.curr_bytes);
    println!("memory/{n} instances ({json_bytes} bytes of node-instance JSON, not counted)");
    println!(
        "  decoded Cloudify models: {models:>11} B  {:>7.0} B/instance",
        per(models)
    );
    println!(
        "  snapshot (kept):        {snapshot:>11} B  {:>7.0} B/instance  ({} blocks)",
        per(snapshot),
        kept.curr_blocks - base.curr_blocks
    );
    println!(
        "  peak of decode + build: {peak:>11} B  {:>7.0} B/instance",
        per(peak)
    );
    println!(
        "  refresh peak with the previous snapshot still served: {:>7.0} B/instance",
        per(peak + snapshot)
    );
    black_box(snap);
    drop(profiler);
    let _ = std::fs::remove_file(out);
}
