//! The criterion benchmarks in one binary (issue 24 item 7: one bench binary to compile and link
//! instead of three, in every `cargo test --all-targets` and `cargo bench`): in-process lookups,
//! snapshot build and response encoding (`inventory.rs`), NodeGroupForNode end to end over gRPC
//! (`grpc.rs`), CORE's smaller lookup benchmark (`lookup.rs`). Select with criterion's filter:
//! `cargo bench --bench criterion -- grpc_latency`. Numbers in BENCHMARKS.md.

mod grpc;
mod inventory;
mod lookup;

criterion::criterion_main!(
    inventory::group::benches,
    grpc::group::benches,
    lookup::group::benches
);
