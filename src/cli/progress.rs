//! The progress bar of `rcfd score`, on stderr. It is drawn only where a person is
//! watching and would otherwise wait in silence: stderr is a terminal and the input is
//! a file big enough to take a while. Never when stderr is a pipe or a file, so tests,
//! scripts and logs get no control characters.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Inputs smaller than this are scored before a bar would be more than a flicker:
/// 1 MiB is about 40,000 rows of a NAB-style `timestamp,value` file (25 to 30 bytes a
/// row), half a second with the default forest (measured: NAB's 10,320-row nyc_taxi in
/// 0.14 s) and several seconds with a big detector or many features.
pub const MIN_INPUT_BYTES: u64 = 1024 * 1024;

/// Whether to draw: `input_bytes` is the input file's size, None for standard input,
/// whose length is unknown (and which is usually a pipe from a program that may use
/// the terminal itself).
pub fn wanted(stderr_is_terminal: bool, input_bytes: Option<u64>) -> bool {
    stderr_is_terminal && input_bytes.is_some_and(|bytes| bytes >= MIN_INPUT_BYTES)
}

/// A bar over the input's bytes: counting bytes read needs no first pass over the file
/// to count its rows, and rows are near enough the same length for an honest ETA.
pub fn bar(input_bytes: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "scoring [{bar:40}] {percent:>3}% {binary_bytes}/{binary_total_bytes}, {eta} left",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    // indicatif hides a stderr target that is not a terminal by itself as well.
    ProgressBar::with_draw_target(Some(input_bytes), ProgressDrawTarget::stderr()).with_style(style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_is_for_big_files_on_a_terminal_only() {
        assert!(wanted(true, Some(MIN_INPUT_BYTES)));
        assert!(wanted(true, Some(50 * 1024 * 1024)));
        assert!(!wanted(true, Some(MIN_INPUT_BYTES - 1)), "a small file is done before a bar helps");
        assert!(!wanted(true, None), "standard input has no known length");
        assert!(!wanted(false, Some(50 * 1024 * 1024)), "stderr is a pipe or a file");
    }
}
