//! The `autoscaler-cloudify` binary: parse flags, run. Everything lives in the library.

fn main() -> std::process::ExitCode {
    autoscaler_cloudify::cli::main()
}
