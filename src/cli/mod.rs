//! The command line: argument definitions and dispatch (`command`), and the commands
//! that are more than a call into the library: `score`, with its chart (`plot`) and
//! progress bar (`progress`).

mod command;
mod plot;
mod progress;
mod score;

pub use command::{run, Cli};
pub use plot::{plot, PlotError, PlotFormat, PlotTarget};
pub use score::{score_file, ScoreError, ScoreSettings, Trace};
