//! `cargo bench --features loadtest --bench loadtest -- [flags]`: CA's call mix against the real
//! binary (crates/testkit/src/loadtest says what it measures; `-- --help` lists the flags). A
//! bench target without the harness rather than a binary of the package: it is a measuring tool,
//! not something to install. The `loadtest` feature keeps it out of `cargo test --all-targets`,
//! where it would only be compiled and linked to do nothing.

use testkit::loadtest as run;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = run::Args::parse();
    if !args.bench {
        // `cargo test --features loadtest --all-targets` runs it too; tests/tooling/loadtest_smoke.rs already
        // runs the quick load test there, with assertions.
        eprintln!(
            "loadtest: skipped outside `cargo bench` (tests/tooling/loadtest_smoke.rs runs --quick)"
        );
        return std::process::ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
