//! PNG line charts of a run's metrics, drawn with plotters.
//!
//! Charts are drawn into an in-memory RGB buffer and encoded with `png`, then written through a
//! temp file + rename: a researcher who opens a plot while the trainer redraws it never sees half
//! an image. Text uses an embedded font (plotters' `ab_glyph` feature), so plots render the same
//! on a CI machine without any system fonts.
//!
//! The panels the trainer draws are a data table, [`PANELS`]: a new panel is one line there.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::backend::{BitMapBackend, RGBPixel};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{MetricsError, write_atomically};

/// DejaVu Sans, embedded so plots need no system fonts. DejaVu fonts are under a free licence (a
/// Bitstream Vera derivative, DejaVu changes in the public domain): see assets/FONT-LICENSE.txt.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The font family every text style below asks for; the embedded font is registered under it.
pub(super) const FONT: &str = "sans-serif";

/// One chart of the standard set: which metric keys it shows, and how.
#[derive(Debug, Clone, Copy)]
pub struct Panel {
    /// File name under `plots/`.
    pub file: &'static str,
    pub title: &'static str,
    pub y_label: &'static str,
    /// Key patterns, slash-separated; a `*` segment matches any one segment
    /// (`eval/*/accuracy` matches `eval/countdown/accuracy`).
    pub keys: &'static [&'static str],
    /// A range the y axis always covers (it still grows to fit data outside it).
    pub y_range: Option<(f64, f64)>,
}

impl Panel {
    const fn new(
        file: &'static str,
        title: &'static str,
        y_label: &'static str,
        keys: &'static [&'static str],
    ) -> Self {
        Self {
            file,
            title,
            y_label,
            keys,
            y_range: None,
        }
    }

    const fn y_covers(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }
}

/// The panels [`plot_panels`] draws, one PNG each, skipped while none of their keys has data.
#[rustfmt::skip]
pub const PANELS: &[Panel] = &[
    Panel::new("reward.png", "Reward", "reward", &["reward/mean", "reward/correct"]),
    Panel::new("accuracy.png", "Eval accuracy", "accuracy", &["eval/*/accuracy"]).y_covers(0.0, 1.0),
    Panel::new("entropy.png", "Policy entropy", "entropy (nats/token)", &["actor/entropy"]),
    Panel::new("response_length.png", "Response length", "tokens", &["response_length/mean"]),
    Panel::new("kl.png", "KL divergence", "KL", &["actor/kl", "actor/ppo_kl"]),
    Panel::new("grad_norm.png", "Gradient norm", "global L2 norm", &["actor/grad_norm"]),
    Panel::new("logprob_gap.png", "Rollout vs. training log-prob gap", "|logprob difference|",
               &["rollout/logprob_abs_diff", "rollout/logprob_max_abs_diff"]),
];

/// File name of the grid of every non-empty panel.
pub const OVERVIEW_FILE: &str = "overview.png";

/// Titles, labels and size of a chart drawn by [`plot_series_with`].
#[derive(Debug, Clone)]
pub struct PlotOptions<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// A range the y axis always covers, e.g. `(0.0, 1.0)` for accuracies.
    pub y_range: Option<(f64, f64)>,
    /// Image size in pixels.
    pub size: (u32, u32),
}

impl<'a> PlotOptions<'a> {
    /// A chart over training steps with the default size.
    pub fn new(title: &'a str, y_label: &'a str) -> Self {
        Self {
            title,
            x_label: "step",
            y_label,
            y_range: None,
            size: (900, 540),
        }
    }
}

/// Draws named `(x, y)` series as lines over "step" into the PNG `path`.
///
/// Non-finite points are skipped. When no series has a finite point nothing is written and the
/// result is `Ok(false)`. Parent directories are created.
pub fn plot_series(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(&str, &[(f64, f64)])],
) -> Result<bool, MetricsError> {
    plot_series_with(path, &PlotOptions::new(title, y_label), series)
}

/// [`plot_series`] with full control over labels, y range and size.
pub fn plot_series_with(
    path: &Path,
    options: &PlotOptions<'_>,
    series: &[(&str, &[(f64, f64)])],
) -> Result<bool, MetricsError> {
    let prepared = prepare(
        series
            .iter()
            .map(|(name, points)| (name.to_string(), points.to_vec())),
    );
    if prepared.is_empty() {
        return Ok(false);
    }
    render_png(path, options.size, |root| {
        draw_chart(root, options, &prepared, 1.0)
    })?;
    Ok(true)
}

/// Draws every panel of [`PANELS`] that has data, plus [`OVERVIEW_FILE`], into `plots_dir`.
/// `history` maps a metric key to its `(step, value)` points. Returns the files written.
pub fn plot_panels(
    plots_dir: &Path,
    history: &BTreeMap<String, Vec<(u64, f64)>>,
) -> Result<Vec<PathBuf>, MetricsError> {
    let mut drawn = Vec::new();
    for panel in PANELS {
        let series = prepare(panel_series(panel, history));
        if series.is_empty() {
            continue;
        }
        let mut options = PlotOptions::new(panel.title, panel.y_label);
        options.y_range = panel.y_range;
        drawn.push((panel.file, options, series));
    }
    let mut written = Vec::new();
    for (file, options, series) in &drawn {
        let path = plots_dir.join(file);
        render_png(&path, options.size, |root| {
            draw_chart(root, options, series, 1.0)
        })?;
        written.push(path);
    }
    if !drawn.is_empty() {
        let path = plots_dir.join(OVERVIEW_FILE);
        let cols = match drawn.len() {
            1 | 2 => drawn.len(),
            3 | 4 => 2,
            _ => 3,
        };
        let rows = drawn.len().div_ceil(cols);
        let cell = (640u32, 400u32);
        let size = (cell.0 * cols as u32, cell.1 * rows as u32);
        render_png(&path, size, |root| {
            for (area, (_, options, series)) in root.split_evenly((rows, cols)).iter().zip(&drawn) {
                draw_chart(area, options, series, 0.85)?;
            }
            Ok(())
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Whether `key` matches `pattern` (slash-separated; a `*` segment matches any one segment).
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let mut p = pattern.split('/');
    let mut k = key.split('/');
    loop {
        match (p.next(), k.next()) {
            (None, None) => return true,
            (Some(ps), Some(ks)) if ps == "*" || ps == ks => {}
            _ => return false,
        }
    }
}

/// The series of a panel: every history key matching one of its patterns, in pattern order.
fn panel_series(
    panel: &Panel,
    history: &BTreeMap<String, Vec<(u64, f64)>>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for pattern in panel.keys {
        for (key, points) in history {
            if key_matches(pattern, key) && !out.iter().any(|(k, _)| k == key) {
                let points = points.iter().map(|&(s, v)| (s as f64, v)).collect();
                out.push((key.clone(), points));
            }
        }
    }
    out
}

/// A series ready to draw: finite points only, magnitudes capped.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Values beyond this are drawn at it: keeps every range computation finite (a span of two such
/// values still fits in an f64), while a real blow-up stays obvious on the chart.
const MAX_MAGNITUDE: f64 = 1e300;

/// Drops non-finite points, caps magnitudes, and drops series left empty.
fn prepare(series: impl IntoIterator<Item = (String, Vec<(f64, f64)>)>) -> Vec<Series> {
    series
        .into_iter()
        .map(|(name, points)| Series {
            name,
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| {
                    (
                        x.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE),
                        y.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE),
                    )
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// An axis range around `[min, max]` (both finite) that plotters can always draw: never empty,
/// never so narrow that tick computation degenerates, and padded so edge points stay visible.
fn axis_range(min: f64, max: f64, covers: Option<(f64, f64)>) -> (f64, f64) {
    let (mut lo, mut hi) = (min, max);
    if let Some((a, b)) = covers {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    let magnitude = lo.abs().max(hi.abs());
    if hi - lo <= magnitude * 1e-9 {
        // A single point or a constant series: centre it in a band of +-10% (+-1 around zero).
        let centre = lo / 2.0 + hi / 2.0;
        let half = if centre == 0.0 {
            1.0
        } else {
            centre.abs() * 0.1
        };
        return (centre - half, centre + half);
    }
    let pad = (hi - lo) * 0.04;
    (lo - pad, hi + pad)
}

/// Tick label text: as many decimals as the tick spacing needs, scientific for extreme values.
fn format_tick(v: f64, spacing: f64) -> String {
    let mag = v.abs();
    if mag <= spacing * 1e-6 {
        return "0".to_string();
    }
    if !(1e-4..1e6).contains(&mag) {
        return format!("{v:.2e}");
    }
    let decimals = if spacing.is_finite() && spacing > 0.0 {
        (-spacing.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// Colours that stay distinct on white (matplotlib's tab10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Series with at most this many points also get a marker per point (a lone point is visible).
const MARKER_MAX_POINTS: usize = 60;

pub(super) type Area<'a> = DrawingArea<BitMapBackend<'a, RGBPixel>, Shift>;

/// Draws one chart (axes, labels, lines, legend) filling `area`; `scale` shrinks text for grids.
fn draw_chart(
    area: &Area<'_>,
    options: &PlotOptions<'_>,
    series: &[Series],
    scale: f64,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(pick))
            .fold(init, f)
    };
    let (x0, x1) = axis_range(
        fold(f64::min, f64::INFINITY, |p| p.0),
        fold(f64::max, f64::NEG_INFINITY, |p| p.0),
        None,
    );
    let (y0, y1) = axis_range(
        fold(f64::min, f64::INFINITY, |p| p.1),
        fold(f64::max, f64::NEG_INFINITY, |p| p.1),
        options.y_range,
    );
    // Integer x values (steps) get at most one label per integer, so ticks never read "1.5".
    let integer_x = series
        .iter()
        .all(|s| s.points.iter().all(|p| p.0.fract() == 0.0));
    let x_labels = if integer_x {
        (x1 - x0).floor().clamp(1.0, 9.0) as usize + 1
    } else {
        10
    };
    let y_labels = 8;
    let x_spacing = (x1 - x0) / x_labels as f64;
    let y_spacing = (y1 - y0) / y_labels as f64;
    let x_fmt = |v: &f64| {
        if integer_x && v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v:.0}")
        } else {
            format_tick(*v, x_spacing)
        }
    };
    let y_fmt = |v: &f64| format_tick(*v, y_spacing);
    let px = |size: f64| (size * scale).round().max(6.0);

    let mut chart = ChartBuilder::on(area)
        .caption(options.title, (FONT, px(24.0)))
        .margin(px(12.0))
        .x_label_area_size(px(48.0))
        .y_label_area_size(px(80.0))
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(x_labels)
        .y_labels(y_labels)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc(options.x_label)
        .y_desc(options.y_label)
        .label_style((FONT, px(14.0)))
        .axis_desc_style((FONT, px(16.0)))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(err)?;

    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = ShapeStyle {
            color: color.to_rgba(),
            filled: true,
            stroke_width: 2,
        };
        let marker = if s.points.len() <= MARKER_MAX_POINTS {
            3
        } else {
            0
        };
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style).point_size(marker))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(legend_corner(series, (x0, x1), (y0, y1)))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font((FONT, px(14.0)))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// The corner of the plot where the legend hides the fewest points (ties: upper right first).
fn legend_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    // The legend box covers roughly 40% of the width and 25% of the height of a chart.
    let in_box = |right: bool, top: bool, (px, py): (f64, f64)| {
        let fx = (px - x.0) / (x.1 - x.0);
        let fy = (py - y.0) / (y.1 - y.0);
        let fx = if right { 1.0 - fx } else { fx };
        let fy = if top { 1.0 - fy } else { fy };
        fx <= 0.4 && fy <= 0.25
    };
    let corners = [
        (true, true, SeriesLabelPosition::UpperRight),
        (false, true, SeriesLabelPosition::UpperLeft),
        (true, false, SeriesLabelPosition::LowerRight),
        (false, false, SeriesLabelPosition::LowerLeft),
    ];
    let hidden = |right: bool, top: bool| {
        series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|&&p| in_box(right, top, p))
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&(right, top, _)| hidden(right, top))
        .map_or(SeriesLabelPosition::UpperRight, |(_, _, pos)| pos)
}

/// Registers the embedded font with plotters once per process.
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font did not load".to_string())
    }
}

/// Draws on a white `size` canvas with `draw`, then writes it to `path` as PNG, atomically.
pub(super) fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
) -> Result<(), MetricsError> {
    let plot_err = |message: String| MetricsError::Plot {
        path: path.to_path_buf(),
        message,
    };
    ensure_font().map_err(plot_err)?;
    let (w, h) = (size.0.clamp(16, 8192), size.1.clamp(16, 8192));
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let backend = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut pixels, (w, h))
            .map_err(|e| plot_err(e.to_string()))?;
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        draw(&root).map_err(plot_err)?;
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    let png = encode_png(&pixels, w, h).map_err(|e| plot_err(format!("encoding PNG: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| MetricsError::io(dir, "creating directory", e))?;
    }
    write_atomically(path, &png)
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks `path` is a PNG of the expected size with a real drawing on it (not blank).
    pub fn assert_real_png(path: &Path, size: (u32, u32)) {
        let bytes = fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        assert!(
            bytes.len() > 2_000,
            "{} is only {} bytes",
            path.display(),
            bytes.len()
        );
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), size);
        let inked = buf[..info.buffer_size()]
            .chunks(3)
            .filter(|px| px != &[255, 255, 255])
            .count();
        assert!(
            inked > 2_000,
            "{}: only {inked} non-white pixels",
            path.display()
        );
    }

    #[test]
    fn patterns_match_whole_segments() {
        assert!(key_matches("eval/*/accuracy", "eval/countdown/accuracy"));
        assert!(!key_matches("eval/*/accuracy", "eval/accuracy"));
        assert!(!key_matches("eval/*/accuracy", "eval/a/b/accuracy"));
        assert!(!key_matches(
            "eval/*/accuracy",
            "eval/countdown/accuracy_std"
        ));
        assert!(key_matches("actor/kl", "actor/kl"));
        assert!(!key_matches("actor/kl", "actor/kl/x"));
        assert!(key_matches("actor/*", "actor/entropy"));
    }

    #[test]
    fn axis_ranges_are_never_empty() {
        for (lo, hi) in [
            (0.0, 0.0),
            (5.0, 5.0),
            (-3.0, -3.0),
            (1e300, 1e300),
            (-1e300, 1e300),
            (1.0, 1.0 + 1e-15),
            (1e-300, 2e-300),
        ] {
            let (a, b) = axis_range(lo, hi, None);
            assert!(
                a.is_finite() && b.is_finite() && a < b,
                "{lo} {hi} -> {a} {b}"
            );
            assert!(a <= lo && b >= hi);
        }
        let (a, b) = axis_range(0.5, 0.5, Some((0.0, 1.0)));
        assert!(a < 0.0 && b > 1.0);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(format_tick(100.0, 10.0), "100");
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(1e-17, 0.1), "0");
        assert_eq!(format_tick(2.5e7, 1e6), "2.50e7");
    }

    #[test]
    fn plot_series_draws_degenerate_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, Vec<(f64, f64)>)> = vec![
            ("one_point", vec![(3.0, 0.5)]),
            ("constant", (0..50).map(|i| (i as f64, 2.0)).collect()),
            ("zeros", (0..5).map(|i| (i as f64, 0.0)).collect()),
            (
                "with_nan",
                vec![
                    (0.0, 1.0),
                    (1.0, f64::NAN),
                    (2.0, f64::INFINITY),
                    (3.0, 2.0),
                ],
            ),
            ("huge", vec![(0.0, 1e308), (1.0, -f64::MAX), (2.0, 1.0)]),
            ("tiny_span", vec![(0.0, 1.0), (1.0, 1.0 + 1e-14)]),
            (
                "long",
                (0..5000).map(|i| (i as f64, (i as f64).sin())).collect(),
            ),
        ];
        for (name, points) in &cases {
            let path = dir.path().join(format!("{name}.png"));
            let wrote = plot_series(&path, name, "value", &[(name, points)]).unwrap();
            assert!(wrote, "{name}");
            assert_real_png(&path, (900, 540));
        }
    }

    #[test]
    fn plot_series_skips_empty_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.png");
        assert!(!plot_series(&path, "t", "y", &[]).unwrap());
        let nan = [(0.0, f64::NAN), (f64::NAN, 1.0)];
        assert!(!plot_series(&path, "t", "y", &[("a", &nan), ("b", &[])]).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn plot_series_with_legend_and_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/compare.png");
        let a: Vec<(f64, f64)> = (0..20).map(|i| (i as f64 * 0.5, i as f64 / 20.0)).collect();
        let b: Vec<(f64, f64)> = (0..20).map(|i| (i as f64 * 0.5, 0.3)).collect();
        let options = PlotOptions {
            title: "accuracy vs. budget",
            x_label: "k samples",
            y_label: "accuracy",
            y_range: Some((0.0, 1.0)),
            size: (640, 400),
        };
        assert!(plot_series_with(&path, &options, &[("kiln", &a), ("peer", &b)]).unwrap());
        assert_real_png(&path, (640, 400));
    }

    #[test]
    fn panels_follow_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut history: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        history.insert("reward/mean".into(), vec![(1, 0.1), (2, 0.4)]);
        history.insert("eval/countdown/accuracy".into(), vec![(0, 0.2)]);
        history.insert("eval/math/accuracy".into(), vec![(0, 0.3)]);
        history.insert("actor/kl".into(), vec![(1, f64::NAN)]);
        let written = plot_panels(dir.path(), &history).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["reward.png", "accuracy.png", "overview.png"]);
        assert_real_png(&dir.path().join("reward.png"), (900, 540));
        assert_real_png(&dir.path().join("overview.png"), (1280, 400));
        assert!(!dir.path().join("kl.png").exists(), "all-NaN panel skipped");

        assert!(
            plot_panels(dir.path(), &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }
}
