//! The `rcfd` binary: parses the command line, starts tracing, calls into the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    rcfd::cli::run(rcfd::cli::Cli::parse())
}
