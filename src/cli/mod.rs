//! The command line: argument definitions and dispatch (`command`), and the commands
//! that are more than a call into the library: `score`, with its chart (`plot`) and
//! progress bar (`progress`), and `dashboards` (export and install).

mod command;
mod dashboards;
mod plot;
mod progress;
mod score;

pub use command::{run, Cli, DashboardObjectsArgs, DashboardsCommand, DashboardsInstallArgs};
pub use plot::{plot, PlotError, PlotFormat, PlotTarget};
pub use score::{score_file, ScoreError, ScoreSettings, Trace};
