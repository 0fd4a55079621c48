//! `rcfd score --plot FILE`: draws a scored file as SVG or PNG. The upper panel has the
//! input values (one line per feature), the lower one the anomaly score, both over the
//! row index, or over the timestamp when every row has one that reads as a number or a
//! date and time; rows the model flagged (`is_anomaly`) are red dots in both panels.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (the `dejavu` crate) through
//! plotters' ab_glyph backend, so a machine without fonts draws the same chart. This
//! module never reads a font or any file; it writes only the file it was given.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::score::Trace;

/// Width and height in pixels (PNG) or user units (SVG): wide, since series are long.
const SIZE: (u32, u32) = (1400, 800);
/// Radius of a flagged row's dot.
const MARKER_RADIUS: u32 = 3;
/// The family every label asks for; the embedded font is registered under it.
const FONT: &str = "sans-serif";

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("plot file `{path}`: unknown extension `{extension}` (allowed: .svg, .png)")]
    UnknownExtension { path: String, extension: String },
    #[error("nothing to plot: no row was scored")]
    Empty,
    #[error("the embedded font could not be loaded")]
    Font,
    #[error("drawing {path}: {reason}")]
    Draw { path: PathBuf, reason: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("encoding {path} as PNG: {source}")]
    Png { path: PathBuf, source: png::EncodingError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    Svg,
    Png,
}

/// Where `--plot` writes and in which format, told by the file's extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotTarget {
    pub path: PathBuf,
    pub format: PlotFormat,
}

impl std::str::FromStr for PlotTarget {
    type Err = PlotError;

    /// Checked when the command line is parsed, so a typo fails before a long file is
    /// scored rather than after.
    fn from_str(value: &str) -> Result<Self, PlotError> {
        let path = PathBuf::from(value);
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let format = match extension.as_deref() {
            Some("svg") => PlotFormat::Svg,
            Some("png") => PlotFormat::Png,
            other => {
                return Err(PlotError::UnknownExtension {
                    path: value.to_owned(),
                    extension: other.map_or_else(|| "(none)".to_owned(), |e| format!(".{e}")),
                })
            }
        };
        Ok(PlotTarget { path, format })
    }
}

/// Registers the embedded font once per process; plotters keeps fonts in a global table.
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Draws `trace` to `target`.
pub fn plot(trace: &Trace, target: &PlotTarget) -> Result<(), PlotError> {
    if trace.scores.is_empty() {
        return Err(PlotError::Empty);
    }
    register_font()?;
    let path = &target.path;
    let draw_error = |reason: String| PlotError::Draw { path: path.clone(), reason };
    match target.format {
        PlotFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
                draw(&root, trace).map_err(|e| draw_error(e.to_string()))?;
                root.present().map_err(|e| draw_error(e.to_string()))?;
            }
            std::fs::write(path, svg).map_err(|source| PlotError::Write { path: path.clone(), source })
        }
        PlotFormat::Png => {
            let (width, height) = SIZE;
            let mut pixels = vec![0u8; width as usize * height as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
                draw(&root, trace).map_err(|e| draw_error(e.to_string()))?;
                root.present().map_err(|e| draw_error(e.to_string()))?;
            }
            write_png(path, width, height, &pixels)
        }
    }
}

/// RGB pixels to a PNG file. Encoded here, not by plotters, whose encoder brings the
/// whole `image` crate (JPEG, BMP and GIF codecs) for this one format.
fn write_png(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<(), PlotError> {
    let png_error = |source| PlotError::Png { path: path.to_owned(), source };
    let file = std::fs::File::create(path).map_err(|source| PlotError::Write { path: path.to_owned(), source })?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)
}

/// What the x axis runs over.
#[derive(Debug, Clone, PartialEq)]
enum XAxis {
    Row,
    /// Timestamps that are plain numbers (epoch seconds or milliseconds, a counter).
    Number(Vec<f64>),
    /// Date and time, as seconds since 1970-01-01 (no time zone: drawn as written).
    DateTime(Vec<f64>),
}

impl XAxis {
    /// Timestamps only when every row has one, all of one kind and never going back in
    /// time: anything else would draw lines zigzagging over the chart.
    fn of(timestamps: &[String], rows: usize) -> XAxis {
        if timestamps.len() != rows || rows == 0 {
            return XAxis::Row;
        }
        let ordered = |xs: &[f64]| xs.windows(2).all(|w| w[0] <= w[1]);
        if let Some(xs) = timestamps
            .iter()
            .map(|t| t.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()
        {
            if ordered(&xs) {
                return XAxis::Number(xs);
            }
        }
        if let Some(xs) = timestamps.iter().map(|t| seconds_since_epoch(t)).collect::<Option<Vec<f64>>>() {
            if ordered(&xs) {
                return XAxis::DateTime(xs);
            }
        }
        XAxis::Row
    }

    fn x(&self, row: usize) -> f64 {
        match self {
            XAxis::Row => row as f64,
            XAxis::Number(xs) | XAxis::DateTime(xs) => xs[row],
        }
    }

    fn label(&self, x: f64) -> String {
        match self {
            XAxis::Row | XAxis::Number(_) => format!("{x:.0}"),
            XAxis::DateTime(_) => format_datetime(x),
        }
    }

    fn description(&self) -> &'static str {
        match self {
            XAxis::Row => "row",
            XAxis::Number(_) | XAxis::DateTime(_) => "timestamp",
        }
    }
}

/// `YYYY-MM-DD`, optionally followed by ` ` or `T` and `HH:MM[:SS[.fff]]` and a `Z`,
/// as seconds since 1970-01-01T00:00:00.
fn seconds_since_epoch(text: &str) -> Option<f64> {
    let text = text.trim();
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok().filter(|m| (1..=12).contains(m))?;
    let day: i64 = parts.next()?.parse().ok().filter(|d| (1..=31).contains(d))?;
    if parts.next().is_some() {
        return None;
    }
    let mut seconds = crate::calendar::days_from_civil(year, month, day) as f64 * 86_400.0;
    if let Some(time) = time {
        let mut parts = time.split(':');
        let hour: f64 = parts.next()?.parse().ok().filter(|h| (0.0..24.0).contains(h))?;
        let minute: f64 = parts.next()?.parse().ok().filter(|m| (0.0..60.0).contains(m))?;
        let second: f64 = match parts.next() {
            Some(s) => s.parse().ok().filter(|s| (0.0..61.0).contains(s))?,
            None => 0.0,
        };
        if parts.next().is_some() {
            return None;
        }
        seconds += hour * 3600.0 + minute * 60.0 + second;
    }
    Some(seconds)
}

/// `YYYY-MM-DD HH:MM` of seconds since the epoch.
fn format_datetime(seconds: f64) -> String {
    let total_minutes = (seconds / 60.0).round() as i64;
    let (days, minute_of_day) = (total_minutes.div_euclid(1440), total_minutes.rem_euclid(1440));
    let (year, month, day) = crate::calendar::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// An axis label without the trailing `.0` of whole numbers.
fn short_number(y: f64) -> String {
    if y == y.round() && y.abs() < 1e15 {
        format!("{y:.0}")
    } else {
        let text = format!("{y:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// `lo..hi` padded by 5%, or widened to a unit when flat, so lines never sit on a frame.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    (lo - pad)..(hi + pad)
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// A feature's colour: plotters' palette, skipping red, which means "flagged".
fn feature_colour(index: usize) -> RGBColor {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
    ];
    COLOURS[index % COLOURS.len()]
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, trace: &Trace) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let rows = trace.scores.len();
    let axis = XAxis::of(&trace.timestamps, rows);
    let x_range = padded(axis.x(0), axis.x(rows - 1));
    let label = |x: &f64| axis.label(*x);
    let value_label = |y: &f64| short_number(*y);
    let flagged: Vec<usize> = (0..rows).filter(|&r| trace.flagged.get(r).copied().unwrap_or(false)).collect();
    let (inputs, scores) = root.split_vertically(SIZE.1 * 55 / 100);

    let (lo, hi) = bounds(trace.values.iter().flatten().copied());
    let mut chart = ChartBuilder::on(&inputs)
        .caption(format!("input: {}", trace.features.join(", ")), (FONT, 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone(), padded(lo, hi))?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&label)
        .y_label_formatter(&value_label)
        .max_light_lines(2)
        .y_desc("value")
        .draw()?;
    for (f, name) in trace.features.iter().enumerate() {
        let colour = feature_colour(f);
        // A missing value (NaN) is left out; the line joins its neighbours.
        let points = (0..rows).filter_map(|r| {
            let v = trace.values.get(r)?.get(f).copied()?;
            v.is_finite().then(|| (axis.x(r), v))
        });
        chart
            .draw_series(LineSeries::new(points, &colour))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], colour.filled()));
        let marks = flagged.iter().filter_map(|&r| {
            let v = trace.values.get(r)?.get(f).copied()?;
            v.is_finite().then(|| Circle::new((axis.x(r), v), MARKER_RADIUS, RED.filled()))
        });
        chart.draw_series(marks)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;

    let (_, top) = bounds(trace.scores.iter().copied());
    let mut chart = ChartBuilder::on(&scores)
        .caption(format!("anomaly score ({} flagged rows in red)", flagged.len()), (FONT, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, padded(0.0, top.max(1.0)))?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&label)
        .y_label_formatter(&value_label)
        .max_light_lines(2)
        .x_desc(axis.description())
        .y_desc("anomaly_score")
        .draw()?;
    let points = (0..rows).filter(|&r| trace.scores[r].is_finite()).map(|r| (axis.x(r), trace.scores[r]));
    chart.draw_series(LineSeries::new(points, &BLACK))?;
    let marks = flagged
        .iter()
        .filter(|&&r| trace.scores[r].is_finite())
        .map(|&r| Circle::new((axis.x(r), trace.scores[r]), MARKER_RADIUS, RED.filled()));
    chart.draw_series(marks)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rcfd-plot-{}-{name}", std::process::id()))
    }

    /// A seeded NAB-style file with spikes at rows 500 and 700, scored as `rcfd score` does.
    fn scored() -> Trace {
        let mut input = String::from("timestamp,value\n");
        for i in 0..800 {
            let value = if i == 500 || i == 700 { 115 } else { 10 + (i * 7) % 11 };
            input.push_str(&format!("2024-01-01 {:02}:{:02}:00,{value}\n", i / 60, i % 60));
        }
        let settings = super::super::ScoreSettings {
            forest: crate::detector::config::ForestSettings { trees: 20, sample_size: 64, ..Default::default() },
            ..Default::default()
        };
        let mut trace = Trace::default();
        super::super::score_file(input.as_bytes(), std::io::sink(), &settings, Some(&mut trace)).expect("scores");
        trace
    }

    #[test]
    fn the_svg_marks_each_flagged_row_in_both_panels() {
        let trace = scored();
        let flagged: Vec<usize> = (0..trace.flagged.len()).filter(|&r| trace.flagged[r]).collect();
        assert_eq!(flagged, [500, 700], "the seeded spikes, and only they");
        assert_eq!(XAxis::of(&trace.timestamps, 800).description(), "timestamp");
        let path = temp("spikes.svg");
        plot(&trace, &path.to_str().expect("utf-8").parse().expect("svg")).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        // One dot on the value line and one on the score line per flagged row, and no
        // other circle in the chart.
        assert_eq!(svg.matches("<circle").count(), 4);
        assert_eq!(svg.matches("fill=\"#FF0000\"").count(), 4);
        assert!(svg.contains("2024-01-01 "), "timestamps label the x axis");
        assert!(svg.contains("anomaly score (2 flagged rows in red)"));
    }

    #[test]
    fn a_png_is_written_with_text_from_the_embedded_font() {
        let trace = Trace {
            features: vec!["a".into(), "b".into()],
            timestamps: Vec::new(),
            values: (0..50).map(|i| vec![f64::from(i), if i == 20 { f64::NAN } else { 50.0 - f64::from(i) }]).collect(),
            scores: (0..50).map(|i| if i == 30 { 4.0 } else { 1.0 }).collect(),
            flagged: (0..50).map(|i| i == 30).collect(),
        };
        let path = temp("small.png");
        plot(&trace, &PlotTarget { path: path.clone(), format: PlotFormat::Png }).expect("plots");
        let bytes = std::fs::read(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert!(bytes.len() > 1000, "{} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn an_unknown_plot_extension_names_the_value_and_what_is_allowed() {
        let err = "out.jpg".parse::<PlotTarget>().expect_err("jpg is not drawn");
        assert_eq!(err.to_string(), "plot file `out.jpg`: unknown extension `.jpg` (allowed: .svg, .png)");
        let err = "chart".parse::<PlotTarget>().expect_err("no extension");
        assert_eq!(err.to_string(), "plot file `chart`: unknown extension `(none)` (allowed: .svg, .png)");
        assert_eq!("Out.SVG".parse::<PlotTarget>().expect("svg").format, PlotFormat::Svg);
        assert_eq!("a/b.png".parse::<PlotTarget>().expect("png").format, PlotFormat::Png);
    }

    #[test]
    fn timestamps_become_seconds_and_back() {
        assert_eq!(seconds_since_epoch("1970-01-02 00:00:01"), Some(86_401.0));
        assert_eq!(seconds_since_epoch("2024-03-01T12:30:00Z"), Some(1_709_296_200.0));
        assert_eq!(format_datetime(1_709_296_200.0), "2024-03-01 12:30");
        assert_eq!(seconds_since_epoch("2024-13-01"), None);
        assert_eq!(seconds_since_epoch("yesterday"), None);
        assert_eq!(
            (short_number(40000.0), short_number(2.5), short_number(0.125)),
            ("40000".into(), "2.5".into(), "0.125".into())
        );
        let ts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(XAxis::of(&ts(&["3", "5"]), 2), XAxis::Number(vec![3.0, 5.0]));
        assert_eq!(XAxis::of(&ts(&["5", "3"]), 2), XAxis::Row, "going back in time");
        assert_eq!(XAxis::of(&ts(&["5"]), 2), XAxis::Row, "a row without one");
    }
}
