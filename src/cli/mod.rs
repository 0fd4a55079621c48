//! The command line: argument definitions and dispatch (`command`), and the commands
//! that are more than a call into the library (`score`).

mod command;
mod score;

pub use command::{run, Cli};
pub use score::{score_file, ScoreError, ScoreSettings};
