//! Generates the externalgrpc protocol code with a vendored `protoc`, so a fresh machine needs
//! nothing but `cargo build`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    // Passing the path through the config (not the PROTOC env var) keeps build.rs free of
    // `unsafe { set_var }` (edition 2024).
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("externalgrpc_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("proto/externalgrpc.proto")],
            &[PathBuf::from("proto"), well_known],
        )?;
    println!("cargo:rerun-if-changed=proto/externalgrpc.proto");
    Ok(())
}
