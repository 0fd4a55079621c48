//! Argument definitions and dispatch. Each subcommand either runs or says plainly that
//! it is not built yet and exits with status 2, so scripts can tell "unavailable" from
//! "failed".

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
    Score(ScoreArgs),
    /// Evaluate detection accuracy on a labelled benchmark.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Dashboards for OpenSearch Dashboards: export the saved objects, or import them.
    #[command(subcommand)]
    Dashboards(DashboardsCommand),
}

#[derive(Debug, Subcommand)]
pub enum DashboardsCommand {
    /// Write the saved objects (index pattern, visualizations, saved search, dashboard)
    /// as NDJSON for the saved-objects import API.
    Export {
        #[command(flatten)]
        objects: DashboardObjectsArgs,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Import the saved objects into OpenSearch Dashboards (replacing earlier versions).
    Install(DashboardsInstallArgs),
}

#[derive(Debug, Args)]
pub struct DashboardObjectsArgs {
    /// The OpenSearch sink's index prefix; default: the one in --config, else `rcfd-events`.
    #[arg(long)]
    pub index_prefix: Option<String>,
    /// A service config file whose `opensearch.index_prefix` to use.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Features whose value, expected value and attribution the latest-anomalies search
    /// shows (comma-separated); default: iotValue.
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct DashboardsInstallArgs {
    /// OpenSearch Dashboards' URL with its base path, e.g. `https://dashboards.example.com:5601`.
    #[arg(long)]
    pub url: String,
    /// Basic authentication user; default: RCFD_DASHBOARDS_USER.
    #[arg(long)]
    pub user: Option<String>,
    /// Basic authentication password; prefer RCFD_DASHBOARDS_PASSWORD.
    #[arg(long)]
    pub password: Option<String>,
    /// The security plugin's tenant to import into (e.g. `global`).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub objects: DashboardObjectsArgs,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Score every series of a Numenta Anomaly Benchmark corpus and print the NAB
    /// score per profile, overall and per category.
    Nab(NabArgs),
    /// Write the held-out synthetic corpus (seeded sensor, traffic and flow series with
    /// injected anomalies) in NAB's layout, for `rcfd eval nab --data DIR/data --labels
    /// DIR/labels/combined_windows.json`.
    Synthetic {
        /// Folder to write `data/`, `labels/` and `config/` under.
        #[arg(long)]
        output: std::path::PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rounds of 21 series (7 per shape: one per anomaly kind, one without).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file: print what is wrong by field path, or the effective config.
    Check { file: std::path::PathBuf },
}

#[derive(Debug, Args)]
pub struct NabArgs {
    /// Folder holding the data files (`<category>/<file>.csv`, `timestamp,value`).
    #[arg(long)]
    pub data: std::path::PathBuf,
    /// The combined windows file (JSON: file -> list of [start, end] timestamps).
    #[arg(long)]
    pub labels: std::path::PathBuf,
    /// NAB's profiles file; default: `../config/profiles.json` next to the labels.
    #[arg(long)]
    pub profiles: Option<std::path::PathBuf>,
    /// Write per-file results (`timestamp,value,anomaly_score,label`) under this folder.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
    /// A detector file (its first feature gets each series' values); default: the
    /// default detector with the options below.
    #[arg(long)]
    pub detector: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = crate::forest::ForestConfig::default().shingle_size)]
    pub shingle_size: usize,
    #[arg(long, default_value_t = crate::forest::ForestConfig::default().trees)]
    pub trees: usize,
    #[arg(long, default_value_t = crate::detector::config::DEFAULT_SAMPLE_SIZE)]
    pub sample_size: usize,
    #[arg(long, default_value_t = crate::forest::ForestConfig::default().seed)]
    pub seed: u64,
    /// none, normalize, difference or normalize_difference.
    #[arg(long, default_value = "none")]
    pub transform: crate::detector::config::Transform,
    /// What NAB's threshold sweep runs over: `peak` (the detector's peak_score:
    /// anomaly_score where it is higher than in the --peak-window records before, else
    /// 0: one detection per burst), `raw` (anomaly_score), `grade` (the adaptive
    /// threshold's anomaly_grade) or `alert` (1 where an alert starts, as the service
    /// would send it, else 0: the detector's own threshold, nothing to sweep).
    #[arg(long, value_enum, default_value_t = NabScore::Peak)]
    pub score: NabScore,
    /// The detector's threshold.peak_window (without --detector).
    #[arg(long, default_value_t = crate::detector::threshold::DEFAULT_PEAK_WINDOW)]
    pub peak_window: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NabScore {
    Peak,
    Raw,
    Grade,
    Alert,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Input CSV; absent or `-` reads standard input.
    pub file: Option<std::path::PathBuf>,
    /// Write the scored rows here instead of standard output.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
    /// A detector file; its features are matched to the header by name.
    #[arg(long)]
    pub detector: Option<std::path::PathBuf>,
    /// Feature columns by header name, comma-separated (without --detector); default:
    /// every numeric column except `timestamp`.
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// none, normalize, difference or normalize_difference (without --detector).
    #[arg(long, default_value = "none")]
    pub transform: crate::detector::config::Transform,
    /// Records per point (internal shingling); 1 means none.
    #[arg(long, default_value_t = 1)]
    pub shingle_size: usize,
    #[arg(long, default_value_t = crate::forest::ForestConfig::default().trees)]
    pub trees: usize,
    #[arg(long, default_value_t = crate::detector::config::DEFAULT_SAMPLE_SIZE)]
    pub sample_size: usize,
    /// Default: 0.1 / sample size.
    #[arg(long)]
    pub time_decay: Option<f64>,
    /// Default: sample size / 4.
    #[arg(long)]
    pub output_after: Option<usize>,
    #[arg(long, default_value_t = crate::forest::ForestConfig::default().seed)]
    pub seed: u64,
    /// Draw the input values, the anomaly score and the flagged rows (in red) to this
    /// file, over the row index or the `timestamp`; `.svg` or `.png`.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<super::PlotTarget>,
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => match crate::service::serve(config.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rcfd serve: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Score(args) => score(args),
        Command::Eval(EvalCommand::Nab(args)) => match eval_nab(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rcfd eval nab: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Eval(EvalCommand::Synthetic { output, seed, rounds }) => {
            match crate::eval::synthetic::write(&output, &crate::eval::synthetic::corpus(seed, rounds)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rcfd eval synthetic: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dashboards(command) => match super::dashboards::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rcfd dashboards: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Config(ConfigCommand::Check { file }) => match config_check(&file) {
            Ok(effective) => {
                print!("{effective}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rcfd config check: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn score(args: ScoreArgs) -> ExitCode {
    match run_score(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcfd score: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_score(args: &ScoreArgs) -> anyhow::Result<usize> {
    use crate::detector::config::{DetectorConfig, ForestSettings};
    use anyhow::Context;
    use std::io::IsTerminal;

    let detector = match &args.detector {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(DetectorConfig::from_toml(&text).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let settings = super::ScoreSettings {
        detector,
        columns: args.columns.clone(),
        transform: args.transform,
        forest: ForestSettings {
            trees: args.trees,
            sample_size: args.sample_size,
            time_decay: args.time_decay,
            output_after: args.output_after,
            shingle_size: args.shingle_size,
            seed: args.seed,
        },
    };
    let mut progress = None;
    let input: Box<dyn std::io::BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let bytes = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            match bytes.filter(|_| super::progress::wanted(std::io::stderr().is_terminal(), bytes)) {
                Some(bytes) => {
                    let bar = super::progress::bar(bytes);
                    let input = Box::new(std::io::BufReader::new(bar.wrap_read(file)));
                    progress = Some(bar);
                    input
                }
                None => Box::new(std::io::BufReader::new(file)),
            }
        }
    };
    let output: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut trace = args.plot.as_ref().map(|_| super::Trace::default());
    let scored = super::score_file(input, output, &settings, trace.as_mut());
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let rows = scored?;
    if let (Some(target), Some(trace)) = (&args.plot, &trace) {
        super::plot(trace, target)?;
    }
    Ok(rows)
}

fn eval_nab(args: &NabArgs) -> anyhow::Result<()> {
    use crate::detector::config::{DetectorConfig, ForestSettings};
    use crate::detector::model::Model;
    use crate::eval::classification::{self, LabelledRows};
    use crate::eval::{corpus, nab::ScoredFile};

    let profiles_path = match &args.profiles {
        Some(path) => path.clone(),
        None => args.labels.parent().unwrap_or(std::path::Path::new(".")).join("../config/profiles.json"),
    };
    let profiles = corpus::load_profiles(&profiles_path)?;
    let series = corpus::load(&args.data, &args.labels)?;
    let config = match &args.detector {
        Some(path) => DetectorConfig::from_toml(&std::fs::read_to_string(path)?)?,
        None => {
            let mut config = DetectorConfig::offline(
                "nab",
                vec!["value".into()],
                args.transform,
                ForestSettings {
                    shingle_size: args.shingle_size,
                    trees: args.trees,
                    sample_size: args.sample_size,
                    seed: args.seed,
                    ..ForestSettings::default()
                },
            );
            config.threshold.peak_window = args.peak_window;
            config
        }
    };
    let detector = config.validate()?;
    anyhow::ensure!(detector.features.len() == 1, "a NAB series has one value: the detector must have one feature");
    let mut all_scores = Vec::with_capacity(series.len());
    let mut row_metrics = Vec::with_capacity(series.len());
    let mut pooled = LabelledRows::default();
    for s in &series {
        let mut model = Model::new(&detector);
        let mut scores = Vec::with_capacity(s.values.len());
        // The per-row numbers judge the model's own outputs, whatever --score sweeps.
        let (mut raw, mut flagged) = (Vec::with_capacity(s.values.len()), Vec::with_capacity(s.values.len()));
        for &value in &s.values {
            let output = model.process(&[f64::from(value)]).map_err(|e| anyhow::anyhow!("{}: {e}", s.name))?;
            scores.push(match args.score {
                NabScore::Peak => output.peak_score,
                NabScore::Raw => output.anomaly_score,
                NabScore::Grade => output.anomaly_grade,
                NabScore::Alert => f64::from(u8::from(output.is_anomaly && output.starts_region)),
            });
            raw.push(output.anomaly_score);
            flagged.push(output.is_anomaly);
        }
        let rows = LabelledRows::after_probation(&raw, &flagged, &s.windows);
        pooled.extend(&rows);
        row_metrics.push((s.name.clone(), classification::row_metrics(&rows)));
        all_scores.push(scores);
    }
    if let Some(dir) = &args.output {
        corpus::write_results(dir, &series, &all_scores)?;
    }
    let files: Vec<ScoredFile> = series
        .iter()
        .zip(all_scores)
        .map(|(s, scores)| ScoredFile {
            name: s.name.clone(),
            category: s.category.clone(),
            scores,
            windows: s.windows.clone(),
        })
        .collect();
    print!("{}", corpus::format_reports(&corpus::report(&files, &profiles)));
    print!("{}", classification::format_metrics(&row_metrics, &classification::row_metrics(&pooled)));
    Ok(())
}

/// The effective configuration (file plus environment overrides, defaults filled in).
fn config_check(file: &std::path::Path) -> anyhow::Result<String> {
    let config = crate::service::run::load_config(Some(file))?;
    Ok(toml::to_string(&config.config)?)
}
