//! The command line. Each subcommand either runs or says plainly that it is not built
//! yet and exits with status 2, so scripts can tell "unavailable" from "failed".

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Streaming anomaly detection with online random cut forests.
#[derive(Debug, Parser)]
#[command(name = "rcfd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: gRPC API, live dashboard, sources and sinks. With no config it
    /// uses the embedded default (simulator source, embedded store, alerts to the log).
    Serve {
        /// A TOML configuration file; without one, the embedded default.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Score a CSV of numeric rows (one point per row) with a random cut forest and
    /// print one anomaly score per row.
    Score(crate::cli::ScoreArgs),
    /// Evaluate detection accuracy on a labelled benchmark.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Run a detector over every CSV of the Numenta Anomaly Benchmark and print the NAB score.
    Nab {
        /// Folder holding the data files (`timestamp,value` CSVs).
        #[arg(long)]
        data: std::path::PathBuf,
        /// The combined labels file (JSON of anomaly windows per file).
        #[arg(long)]
        labels: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file: print what is wrong by field path, or the effective config.
    Check { file: std::path::PathBuf },
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Input CSV; `-` or absent reads standard input.
    #[arg(long)]
    pub input: Option<std::path::PathBuf>,
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { .. } => not_yet_built("serve", 5),
        Command::Score(_) => not_yet_built("score", 3),
        Command::Eval(EvalCommand::Nab { .. }) => not_yet_built("eval nab", 4),
        Command::Config(ConfigCommand::Check { .. }) => not_yet_built("config check", 5),
    }
}

fn not_yet_built(command: &str, issue: u32) -> ExitCode {
    eprintln!("rcfd {command}: not yet built (tracked in issue {issue})");
    ExitCode::from(2)
}
