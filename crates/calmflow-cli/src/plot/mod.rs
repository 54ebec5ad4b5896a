//! Scatter plots of samples against a target, side-by-side panels of several methods
//! against one target, trajectories over time, parameter sweeps (a metric's mean ± std over
//! seeds), grouped bars of dispersion ratios and grids of grey-scale images (digits), as PNG or SVG (by the file extension),
//! written atomically. Scatter plots and trajectories draw points of more than two
//! dimensions by their first two coordinates; panels take 2-D points only.

use std::path::{Path, PathBuf};
use std::sync::Once;

use ndarray::{Array2, Array3};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

mod images;

pub use images::{ImageShape, image_grid};

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// One set of points in a scatter plot.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Points `(n, D ≥ 2)`.
    pub points: &'a Array2<f32>,
    /// Colour (RGB).
    pub color: (u8, u8, u8),
}

/// The colours calmflow's plots use: target, CaLMFlow, CFM, source.
pub const TARGET: (u8, u8, u8) = (150, 150, 150);
/// CaLMFlow samples.
pub const CALMFLOW: (u8, u8, u8) = (31, 119, 180);
/// CFM samples.
pub const BASELINE: (u8, u8, u8) = (214, 39, 40);
/// Source points.
pub const SOURCE: (u8, u8, u8) = (44, 160, 44);

static FONT: Once = Once::new();

/// plotters draws text only with a registered font; the DejaVu Sans face ships inside the
/// binary (licence in `assets/`) so plots need nothing installed.
fn register_font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        );
    });
}

fn error(path: &Path, message: impl ToString) -> PlotError {
    PlotError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

enum Format {
    Png,
    Svg,
}

fn format_of(path: &Path) -> Result<Format, PlotError> {
    match path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .as_deref()
    {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => Err(error(
            path,
            "unknown plot type; use a .png or .svg file name",
        )),
    }
}

/// Draws with `draw` on a `size` canvas and writes the file atomically.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String> + Copy,
    draw_svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    register_font();
    match format_of(path)? {
        Format::Png => {
            let name = path
                .file_name()
                .ok_or_else(|| error(path, "names no file"))?
                .to_string_lossy()
                .to_string();
            let staging: PathBuf =
                path.with_file_name(format!(".{name}.partial-{}.png", std::process::id()));
            let result = (|| {
                let area = BitMapBackend::new(&staging, size).into_drawing_area();
                draw(&area)?;
                area.present().map_err(|e| e.to_string())
            })();
            let result =
                result.and_then(|()| std::fs::rename(&staging, path).map_err(|e| e.to_string()));
            if result.is_err() {
                let _ = std::fs::remove_file(&staging);
            }
            result.map_err(|m| error(path, m))
        }
        Format::Svg => {
            let mut text = String::new();
            {
                let area = SVGBackend::with_string(&mut text, size).into_drawing_area();
                draw_svg(&area).map_err(|m| error(path, m))?;
                area.present().map_err(|e| error(path, e))?;
            }
            calmflow::data::write_atomically(path, |w| {
                std::io::Write::write_all(w, text.as_bytes())
            })
            .map_err(|e| error(path, e))
        }
    }
}

/// How far beyond the quantiles of [`bounds`] (as a fraction of their span) a coordinate
/// still counts as the distribution's tail rather than an outlier.
const OUTLIER_GAP: f32 = 0.25;

/// Axis ranges `((x0, x1), (y0, y1))` over the first two coordinates of every set, with a
/// 5 % margin. `tail` is the fraction of coordinates that may fall outside at each end of
/// each axis: 0 covers every point; 0.005 covers the 0.5–99.5 % quantiles, widened to take
/// in every coordinate less than [`OUTLIER_GAP`] × their span beyond them, so that a
/// distribution's tails stay in view and only far outliers are left out. Non-finite
/// coordinates are ignored.
fn bounds<'a>(sets: impl Iterator<Item = &'a Array2<f32>>, tail: f64) -> ((f32, f32), (f32, f32)) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for set in sets.filter(|s| s.ncols() >= 2) {
        for row in set.rows() {
            if row[0].is_finite() && row[1].is_finite() {
                xs.push(row[0]);
                ys.push(row[1]);
            }
        }
    }
    if xs.is_empty() {
        return ((-1.0, 1.0), (-1.0, 1.0));
    }
    let range = |v: &mut Vec<f32>| {
        let n = v.len();
        let k = ((tail.clamp(0.0, 0.5) * n as f64) as usize).min((n - 1) / 2);
        let a = *v.select_nth_unstable_by(k, f32::total_cmp).1;
        let b = *v.select_nth_unstable_by(n - 1 - k, f32::total_cmp).1;
        let gap = OUTLIER_GAP * (b - a);
        let near = v.iter().filter(|&&x| x >= a - gap && x <= b + gap);
        let (a, b) = near.fold((a, b), |(a, b), &x| (a.min(x), b.max(x)));
        let m = 0.05 * (b - a).max(1e-3);
        (a - m, b + m)
    };
    (range(&mut xs), range(&mut ys))
}

fn check_2d(path: &Path, sets: &[&Array2<f32>]) -> Result<(), PlotError> {
    if let Some(bad) = sets.iter().find(|s| s.ncols() < 2) {
        return Err(error(
            path,
            format!("plots need points of dimension ≥ 2, got {}", bad.ncols()),
        ));
    }
    Ok(())
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf32, plotters::coord::types::RangedCoordf32>,
>;

/// Grid lines at labelled ticks.
const BOLD_GRID: RGBAColor = RGBAColor(0, 0, 0, 0.15);
/// Grid lines between labelled ticks: faint, so that they do not compete with the data.
const LIGHT_GRID: RGBAColor = RGBAColor(0, 0, 0, 0.04);
/// Tick labels, in pixels.
const TICK_FONT: u32 = 14;

/// A white canvas with a title (`title_size` pixels), axes and a grid over
/// `((x0, x1), (y0, y1))`.
fn frame<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    title_size: u32,
    ((xa, xb), (ya, yb)): ((f32, f32), (f32, f32)),
) -> Result<Chart<'a, DB>, String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", fitting_size(area, title, title_size)))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(xa..xb, ya..yb)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .bold_line_style(BOLD_GRID)
        .light_line_style(LIGHT_GRID)
        .label_style(("sans-serif", TICK_FONT))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", TICK_FONT))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// Whether `(x, y)` lies inside the axis ranges `((x0, x1), (y0, y1))` (never for NaN).
fn within(((xa, xb), (ya, yb)): ((f32, f32), (f32, f32)), x: f32, y: f32) -> bool {
    (xa..=xb).contains(&x) && (ya..=yb).contains(&y)
}

/// A labelled point cloud (first two coordinates) at opacity `alpha`; points outside the
/// axes (or not finite) are left out rather than drawn over the margins.
fn draw_cloud<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &Array2<f32>,
    label: &str,
    color: (u8, u8, u8),
    alpha: f64,
) -> Result<(), String> {
    let color = RGBColor(color.0, color.1, color.2);
    let (xs, ys) = (chart.x_range(), chart.y_range());
    let axes = ((xs.start, xs.end), (ys.start, ys.end));
    let shown: Vec<(f32, f32)> = points
        .rows()
        .into_iter()
        .map(|r| (r[0], r[1]))
        .filter(|&(x, y)| within(axes, x, y))
        .collect();
    chart
        .draw_series(
            shown
                .into_iter()
                .map(|p| Circle::new(p, 2, color.mix(alpha).filled())),
        )
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    Ok(())
}

fn draw_scatter<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series<'_>],
) -> Result<(), String> {
    let mut chart = frame(
        area,
        title,
        22,
        bounds(series.iter().map(|s| s.points), 0.0),
    )?;
    for s in series {
        draw_cloud(&mut chart, s.points, s.label, s.color, 0.6)?;
    }
    draw_legend(&mut chart)
}

/// A scatter plot of every series (first one drawn first, so put the target there).
pub fn scatter(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), PlotError> {
    check_2d(path, &series.iter().map(|s| s.points).collect::<Vec<_>>())?;
    render(
        path,
        (800, 700),
        |a| draw_scatter(a, title, series),
        |a| draw_scatter(a, title, series),
    )
}

fn draw_trajectories<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    paths: &Array3<f32>,
    target: Option<&Array2<f32>>,
    max_paths: usize,
) -> Result<(), String> {
    let (n, steps, _) = paths.dim();
    let flat = paths
        .to_shape((n * steps, paths.dim().2))
        .map_err(|e| e.to_string())?
        .to_owned();
    let mut chart = frame(
        area,
        title,
        22,
        bounds([&flat].into_iter().chain(target), 0.0),
    )?;
    if let Some(t) = target {
        draw_cloud(&mut chart, t, "target", TARGET, 0.4)?;
    }
    let shown = n.min(max_paths.max(1));
    let line = RGBColor(CALMFLOW.0, CALMFLOW.1, CALMFLOW.2);
    for i in 0..shown {
        let pts: Vec<(f32, f32)> = (0..steps)
            .map(|k| (paths[[i, k, 0]], paths[[i, k, 1]]))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, line.mix(0.35)))
            .map_err(|e| e.to_string())?;
    }
    let start = RGBColor(SOURCE.0, SOURCE.1, SOURCE.2);
    chart
        .draw_series(
            (0..shown)
                .map(|i| Circle::new((paths[[i, 0, 0]], paths[[i, 0, 1]]), 3, start.filled())),
        )
        .map_err(|e| e.to_string())?
        .label("t = 0")
        .legend(move |(x, y)| Circle::new((x, y), 4, start.filled()));
    chart
        .draw_series((0..shown).map(|i| {
            Circle::new(
                (paths[[i, steps - 1, 0]], paths[[i, steps - 1, 1]]),
                3,
                line.filled(),
            )
        }))
        .map_err(|e| e.to_string())?
        .label("t = 1")
        .legend(move |(x, y)| Circle::new((x, y), 4, line.filled()));
    draw_legend(&mut chart)
}

/// Trajectories `(n, steps, D ≥ 2)` as lines from `t = 0` to `t = 1` (at most `max_paths`
/// of them), over an optional target cloud.
pub fn trajectories(
    path: &Path,
    title: &str,
    paths: &Array3<f32>,
    target: Option<&Array2<f32>>,
    max_paths: usize,
) -> Result<(), PlotError> {
    let (n, steps, d) = paths.dim();
    if n == 0 || steps == 0 || d < 2 {
        return Err(error(
            path,
            format!("trajectories must be (n ≥ 1, steps ≥ 1, D ≥ 2), got ({n}, {steps}, {d})"),
        ));
    }
    if let Some(t) = target {
        check_2d(path, &[t])?;
    }
    render(
        path,
        (800, 700),
        |a| draw_trajectories(a, title, paths, target, max_paths),
        |a| draw_trajectories(a, title, paths, target, max_paths),
    )
}

/// One metric of a [`sweep`]: its name (the y axis) and its values at every setting.
#[derive(Debug, Clone, Copy)]
pub struct SweepMetric<'a> {
    /// The metric, as the y axis names it (`"Fréchet"`).
    pub name: &'a str,
    /// The settings in order, each with the metric's values over seeds.
    pub points: &'a [SweepPoint<'a>],
}

/// One setting of a swept parameter and a metric's values at it (one per seed).
#[derive(Debug, Clone, Copy)]
pub struct SweepPoint<'a> {
    /// The setting, as the x-axis label shows it (`"P = 4"`).
    pub setting: &'a str,
    /// The metric over seeds; non-finite values are left out.
    pub values: &'a [f64],
}

/// Mean and sample standard deviation (`n − 1`; 0 for one value) of the finite values:
/// the summary over seeds that [`sweep`] draws. `None` when no value is finite.
///
/// ```
/// let (m, s) = calmflow_cli::plot::mean_std(&[1.0, 3.0, f64::NAN]).unwrap();
/// assert_eq!((m, s), (2.0, 2f64.sqrt()));
/// assert!(calmflow_cli::plot::mean_std(&[f64::NAN]).is_none());
/// ```
pub fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

/// Categorical x axes put category `i` at `x = i` over `-0.5..n − 0.5`; asking for this
/// many ticks puts one on every integer (and on the half-integers between, which
/// [`draw_category_names`] leaves blank).
fn category_ticks(n: usize) -> usize {
    n.max(1) * 2 + 1
}

/// Pixels between the x axis and the first line of a category's name, and between lines.
const CATEGORY_GAP: i32 = 8;

/// Each category's name broken at spaces into lines at most `slot` pixels wide at `font`
/// pixels (a single word wider than the slot keeps its own line): a long setting such as
/// `"N = 8, bridge σ 1, context noise 1"` would otherwise run over its neighbours.
fn wrapped_names<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: &[&str],
    slot: u32,
    font: u32,
) -> Vec<Vec<String>> {
    let style: TextStyle<'_> = ("sans-serif", font).into_font().into();
    let fits = |text: &str| {
        area.estimate_text_size(text, &style)
            .is_ok_and(|(w, _)| w + 6 <= slot)
    };
    names
        .iter()
        .map(|name| {
            let mut lines: Vec<String> = Vec::new();
            for word in name.split_whitespace() {
                match lines.last_mut() {
                    Some(line) if fits(&format!("{line} {word}")) => {
                        line.push(' ');
                        line.push_str(word);
                    }
                    _ => lines.push(word.to_string()),
                }
            }
            lines
        })
        .collect()
}

/// Height of the x label area that [`draw_category_names`] fills with `lines` lines.
fn category_area(lines: usize, font: u32) -> u32 {
    CATEGORY_GAP as u32 + lines.max(1) as u32 * (font + 2) + 6
}

/// Writes each category's (wrapped) name under the x axis, centred on `x = i`: the mesh
/// draws the ticks with blank labels, because plotters writes a label on one line
/// whatever its width.
fn draw_category_names<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    names: &[Vec<String>],
    y_axis: f32,
    font: u32,
) -> Result<(), String> {
    let (bx, by) = area.get_base_pixel();
    let style = ("sans-serif", font)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, lines) in names.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f32, y_axis));
        for (k, line) in lines.iter().enumerate() {
            let top = y - by + CATEGORY_GAP + k as i32 * (font as i32 + 2);
            area.draw(&Text::new(line.as_str(), (x - bx, top), style.clone()))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn draw_sweep<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    metric: &SweepMetric<'_>,
) -> Result<(), String> {
    let points = metric.points;
    // The axis takes in every seed and every mean ± std bar, with room above for the key.
    let bars = points
        .iter()
        .filter_map(|p| mean_std(p.values))
        .flat_map(|(m, s)| [m - s, m + s]);
    let finite = points
        .iter()
        .flat_map(|p| p.values.iter().copied())
        .filter(|v| v.is_finite())
        .chain(bars);
    let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let span = (hi - lo).max(1e-6 * hi.abs().max(1e-12));
    let x_range = (-0.5f32, points.len() as f32 - 0.5);
    let y_range = ((lo - 0.08 * span) as f32, (hi + 0.3 * span) as f32);
    let settings: Vec<&str> = points.iter().map(|p| p.setting).collect();
    let (margin, y_area) = (12u32, 60u32);
    let slot =
        area.dim_in_pixel().0.saturating_sub(2 * margin + y_area) / points.len().max(1) as u32;
    let names = wrapped_names(area, &settings, slot, TICK_FONT);
    let lines = names.iter().map(Vec::len).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .margin(margin)
        .x_label_area_size(category_area(lines, TICK_FONT))
        .y_label_area_size(y_area)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .bold_line_style(BOLD_GRID)
        .light_line_style(LIGHT_GRID)
        .label_style(("sans-serif", TICK_FONT))
        .x_labels(category_ticks(settings.len()))
        .x_label_formatter(&|_| String::new())
        .y_desc(metric.name)
        .draw()
        .map_err(|e| e.to_string())?;
    draw_category_names(area, &chart, &names, y_range.0, TICK_FONT)?;
    let line = RGBColor(CALMFLOW.0, CALMFLOW.1, CALMFLOW.2);
    let summary: Vec<(f32, f64, f64)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| mean_std(p.values).map(|(m, s)| (i as f32, m, s)))
        .collect();
    chart
        .draw_series(LineSeries::new(
            summary.iter().map(|&(x, m, _)| (x, m as f32)),
            line.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label("mean ± std over seeds")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], line.stroke_width(2)));
    chart
        .draw_series(summary.iter().map(|&(x, m, s)| {
            ErrorBar::new_vertical(
                x,
                (m - s) as f32,
                m as f32,
                (m + s) as f32,
                line.filled(),
                10,
            )
        }))
        .map_err(|e| e.to_string())?;
    let seed = RGBColor(TARGET.0, TARGET.1, TARGET.2);
    chart
        .draw_series(points.iter().enumerate().flat_map(|(i, p)| {
            p.values
                .iter()
                .filter(|v| v.is_finite())
                .map(move |&v| Circle::new((i as f32 + 0.12, v as f32), 3, seed.filled()))
        }))
        .map_err(|e| e.to_string())?
        .label("one seed")
        .legend(move |(x, y)| Circle::new((x, y), 3, seed.filled()));
    draw_legend(&mut chart)
}

fn draw_sweeps<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    metrics: &[SweepMetric<'_>],
) -> Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let body = area
        .titled(title, ("sans-serif", fitting_size(area, title, 20)))
        .map_err(|e| e.to_string())?;
    for (panel, metric) in body.split_evenly((1, metrics.len())).iter().zip(metrics) {
        draw_sweep(panel, metric)?;
    }
    Ok(())
}

/// A parameter sweep: for each metric, a panel with the metric's mean ± std over seeds
/// at each setting, joined by a line, and each seed's value beside it; the panels sit
/// side by side under one `title`, and long setting names wrap under their tick.
///
/// Errors: no metric, a metric without settings, or metrics that disagree on the
/// settings; a file name that is neither `.png` nor `.svg`.
pub fn sweep(path: &Path, title: &str, metrics: &[SweepMetric<'_>]) -> Result<(), PlotError> {
    let Some(first) = metrics.first() else {
        return Err(error(path, "a sweep plot needs at least one metric"));
    };
    if first.points.is_empty() {
        return Err(error(path, "a sweep plot needs at least one setting"));
    }
    fn settings<'a>(m: &SweepMetric<'a>) -> Vec<&'a str> {
        m.points.iter().map(|p| p.setting).collect()
    }
    if let Some(m) = metrics.iter().find(|m| settings(m) != settings(first)) {
        return Err(error(
            path,
            format!(
                "the sweep's metrics disagree on the settings: {:?} has {:?}, {:?} has {:?}",
                first.name,
                settings(first),
                m.name,
                settings(m)
            ),
        ));
    }
    let width = (metrics.len() as u32 * 520).max(720);
    render(
        path,
        (width, 500),
        |a| draw_sweeps(a, title, metrics),
        |a| draw_sweeps(a, title, metrics),
    )
}

/// The tail fraction of [`bounds`] for the shared axes of [`panels`].
const PANEL_TAIL: f64 = 0.005;
/// Pixel size of one panel of [`panels`].
const PANEL_SIZE: (u32, u32) = (440, 420);
/// Panels per row at most.
const PANEL_COLUMNS: usize = 3;

/// `(rows, columns)` of a grid of `n` panels, at most [`PANEL_COLUMNS`] wide.
fn panel_grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, PANEL_COLUMNS);
    (n.div_ceil(cols), cols)
}

fn check_panel_set(path: &Path, what: &str, points: &Array2<f32>) -> Result<(), PlotError> {
    let (n, d) = points.dim();
    if n == 0 || d != 2 {
        return Err(error(
            path,
            format!("{what}: panels need a non-empty set of 2-D points, got ({n}, {d})"),
        ));
    }
    Ok(())
}

/// Horizontal pixels a caption leaves free: the charts' margins (12 each side) and 8 px
/// either side of the text.
const CAPTION_SLACK: u32 = 40;

/// The largest font size up to `largest` (and no smaller than 10) at which `text` fits
/// the width of `area` less [`CAPTION_SLACK`]: plotters centres a caption and lets what
/// overflows run past the area's edges (cut at the image's, or into a neighbouring
/// panel), so every title and panel caption goes through this.
fn fitting_size<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    largest: u32,
) -> u32 {
    let width = area.dim_in_pixel().0;
    (10..=largest)
        .rev()
        .find(|&size| {
            area.estimate_text_size(text, &("sans-serif", size).into_font().into())
                .is_ok_and(|(w, _)| w + CAPTION_SLACK <= width)
        })
        .unwrap_or(10)
}

fn draw_panels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    target: &Array2<f32>,
    methods: &[Series<'_>],
) -> Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    // One key for every panel, under the title: a legend inside a panel would cover points.
    let key = ("sans-serif", 15).into_font().color(&RGBColor(90, 90, 90));
    let body = area
        .titled(title, ("sans-serif", fitting_size(area, title, 24)))
        .and_then(|a| a.titled("grey: the target", key))
        .map_err(|e| e.to_string())?;
    let axes = bounds(
        std::iter::once(target).chain(methods.iter().map(|m| m.points)),
        PANEL_TAIL,
    );
    for (cell, method) in body
        .split_evenly(panel_grid(methods.len()))
        .iter()
        .zip(methods)
    {
        let outside = method
            .points
            .rows()
            .into_iter()
            .filter(|r| !within(axes, r[0], r[1]))
            .count();
        let caption = match outside {
            0 => method.label.to_string(),
            n => format!("{} ({n} outside)", method.label),
        };
        let mut chart = frame(cell, &caption, 18, axes)?;
        draw_cloud(&mut chart, target, "target", TARGET, 0.3)?;
        draw_cloud(&mut chart, method.points, method.label, method.color, 0.45)?;
    }
    Ok(())
}

/// One panel per method, side by side (up to three to a row), each drawing the method's
/// points over the target's (grey) and titled with the method's label, under an overall
/// `title`.
///
/// Every panel has the same axes: the 0.5–99.5 % quantiles of the target and all methods
/// together, widened to take in the tails that lie within a quarter of that span beyond
/// them, plus a 5 % margin, so a few far outliers do not squeeze the rest into a corner.
/// Points beyond the axes (or not finite) are left out, and a panel's title counts its
/// method's (`"CFM (5 outside)"`).
///
/// Errors: an empty `methods`, or a target or method that is empty or not 2-D points
/// `(n, 2)`; a file name that is neither `.png` nor `.svg`.
pub fn panels(
    path: &Path,
    title: &str,
    target: &Array2<f32>,
    methods: &[Series<'_>],
) -> Result<(), PlotError> {
    if methods.is_empty() {
        return Err(error(path, "panels need at least one method"));
    }
    check_panel_set(path, "target", target)?;
    for m in methods {
        check_panel_set(path, m.label, m.points)?;
    }
    let (rows, cols) = panel_grid(methods.len());
    let size = (
        (cols as u32 * PANEL_SIZE.0).max(640),
        rows as u32 * PANEL_SIZE.1 + 70,
    );
    render(
        path,
        size,
        |a| draw_panels(a, title, target, methods),
        |a| draw_panels(a, title, target, methods),
    )
}

/// Colours of the bar labels of [`dispersion_bars`], in order of first appearance
/// (matplotlib's "tab10" cycle).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];
/// Width of the key beside the bars, in pixels.
const KEY_WIDTH: u32 = 180;
/// Group names under the bars, in pixels.
const GROUP_FONT: u32 = 16;
/// Share of a group's slot that its bars fill.
const GROUP_WIDTH: f32 = 0.8;

type Groups<'s, 'a> = &'s [(&'a str, Vec<(&'a str, f64)>)];

/// The distinct bar labels in order of first appearance, after checking every value.
fn bar_labels<'a>(path: &Path, groups: Groups<'_, 'a>) -> Result<Vec<&'a str>, PlotError> {
    if groups.is_empty() {
        return Err(error(path, "a bar chart needs at least one group"));
    }
    let mut labels: Vec<&str> = Vec::new();
    for (group, bars) in groups {
        if bars.is_empty() {
            return Err(error(path, format!("group {group:?} has no bars")));
        }
        for (k, &(label, value)) in bars.iter().enumerate() {
            if !value.is_finite() || value < 0.0 {
                return Err(error(
                    path,
                    format!("{group:?} {label:?}: ratios must be finite and ≥ 0, got {value}"),
                ));
            }
            if bars[..k].iter().any(|&(l, _)| l == label) {
                return Err(error(
                    path,
                    format!("group {group:?} has two bars labelled {label:?}"),
                ));
            }
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
    }
    Ok(labels)
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    groups: Groups<'_, '_>,
    labels: &[&str],
) -> Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let (plot_area, key_area) = area.split_horizontally(area.dim_in_pixel().0 - KEY_WIDTH);
    let top = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|&(_, v)| v))
        .fold(0.0, f64::max);
    let y_max = (top * 1.1).max(1.5) as f32;
    let g = groups.len();
    let names: Vec<&str> = groups.iter().map(|(name, _)| *name).collect();
    let (margin, y_area) = (12u32, 60u32);
    let group_px = plot_area
        .dim_in_pixel()
        .0
        .saturating_sub(2 * margin + y_area)
        / g.max(1) as u32;
    let wrapped = wrapped_names(&plot_area, &names, group_px, GROUP_FONT);
    let lines = wrapped.iter().map(Vec::len).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", fitting_size(&plot_area, title, 22)))
        .margin(margin)
        .x_label_area_size(category_area(lines, GROUP_FONT))
        .y_label_area_size(y_area)
        .build_cartesian_2d(-0.5f32..g as f32 - 0.5, 0f32..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(BOLD_GRID)
        .light_line_style(LIGHT_GRID)
        .label_style(("sans-serif", TICK_FONT))
        .x_labels(category_ticks(g))
        .x_label_formatter(&|_| String::new())
        .y_desc("variance ratio (samples / target)")
        .draw()
        .map_err(|e| e.to_string())?;
    draw_category_names(&plot_area, &chart, &wrapped, 0.0, GROUP_FONT)?;
    let slot = GROUP_WIDTH / labels.len() as f32;
    let color_of = |label: &str| {
        let k = labels.iter().position(|&l| l == label).unwrap_or(0);
        let (r, g, b) = PALETTE[k % PALETTE.len()];
        RGBColor(r, g, b)
    };
    // (left edge, value, label) of every bar; a group without some label leaves its slot
    // empty, so a label sits at the same offset in every group.
    let bars: Vec<(f32, f32, &str)> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, (_, bars))| {
            bars.iter().map(move |&(label, v)| {
                let j = labels.iter().position(|&l| l == label).unwrap_or(0);
                (
                    i as f32 - GROUP_WIDTH / 2.0 + j as f32 * slot,
                    v as f32,
                    label,
                )
            })
        })
        .collect();
    chart
        .draw_series(bars.iter().map(|&(x, v, label)| {
            Rectangle::new(
                [(x + 0.08 * slot, 0.0), (x + 0.92 * slot, v)],
                color_of(label).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(DashedLineSeries::new(
            [(-0.5, 1.0), (g as f32 - 0.5, 1.0)],
            8,
            5,
            BLACK.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    // Values above the bars when every bar is wide enough to hold its value, on white
    // boxes that interrupt the reference line rather than cross it.
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    let mut values = Vec::with_capacity(bars.len());
    for &(x, v, _) in &bars {
        let text = format!("{v:.2}");
        let (w, h) = plot_area
            .estimate_text_size(&text, &font)
            .map_err(|e| e.to_string())?;
        values.push((x, v, text, w as i32, h as i32));
    }
    let bar_px = chart.backend_coord(&(slot, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0;
    if values.iter().all(|&(.., w, _)| bar_px >= w + 4) {
        let base = plot_area.get_base_pixel();
        for (x, v, text, w, h) in values {
            let (cx, top) = chart.backend_coord(&(x + slot / 2.0, v));
            let (cx, top) = (cx - base.0, top - base.1);
            plot_area
                .draw(&Rectangle::new(
                    [(cx - w / 2 - 3, top - h - 8), (cx + w / 2 + 3, top - 1)],
                    WHITE.filled(),
                ))
                .map_err(|e| e.to_string())?;
            plot_area
                .draw(&Text::new(text, (cx - w / 2, top - h - 5), font.clone()))
                .map_err(|e| e.to_string())?;
        }
    }
    // The key: a swatch per label, then the reference line, each with its text centred on
    // it.
    let font = ("sans-serif", 15)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let middle = |k: usize| 58 + 26 * k as i32;
    for (k, &label) in labels.iter().enumerate() {
        let y = middle(k);
        key_area
            .draw(&Rectangle::new(
                [(8, y - 8), (24, y + 8)],
                color_of(label).filled(),
            ))
            .map_err(|e| e.to_string())?;
        key_area
            .draw(&Text::new(label.to_string(), (32, y), font.clone()))
            .map_err(|e| e.to_string())?;
    }
    let y = middle(labels.len());
    for x in [6, 13, 20] {
        key_area
            .draw(&PathElement::new(
                vec![(x, y), (x + 5, y)],
                BLACK.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
    }
    key_area
        .draw(&Text::new("1 = target's spread", (32, y), font))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A grouped bar chart of variance ratios (samples / target; see
/// `calmflow::metrics::dispersion`): one group of bars per method (`(method, [(label,
/// ratio)])`), one colour per ratio label (`"trace"`, `"PC1"`, …, `"rest"`) with a key
/// beside the chart, and a dashed line at 1 (the target's spread). The y axis runs from 0
/// to the larger of 1.5 and 1.1 × the largest ratio. A label missing from a group leaves
/// its place empty.
///
/// Errors: no groups, a group without bars or with a label twice, a ratio that is not
/// finite or is negative; a file name that is neither `.png` nor `.svg`.
pub fn dispersion_bars(
    path: &Path,
    title: &str,
    groups: &[(&str, Vec<(&str, f64)>)],
) -> Result<(), PlotError> {
    let labels = bar_labels(path, groups)?;
    // Each group is wide enough for its bars (34 px each) and for its name.
    register_font();
    let font = ("sans-serif", GROUP_FONT).into_font();
    let name_px = groups
        .iter()
        .map(|(name, _)| font.box_size(name).map_or(0, |(w, _)| w) + 24)
        .max()
        .unwrap_or(0);
    let group_px = ((labels.len() as f32 * 34.0 / GROUP_WIDTH) as u32).max(name_px);
    let size = (
        (groups.len() as u32 * group_px + 84 + KEY_WIDTH).max(760),
        480,
    );
    render(
        path,
        size,
        |a| draw_bars(a, title, groups, &labels),
        |a| draw_bars(a, title, groups, &labels),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_svg_are_written_and_bad_names_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Array2::from_shape_fn((50, 2), |(i, j)| (i as f32 * 0.1).sin() + j as f32);
        let b = Array2::from_shape_fn((50, 2), |(i, j)| (i as f32 * 0.2).cos() - j as f32);
        let series = [
            Series {
                label: "target",
                points: &a,
                color: TARGET,
            },
            Series {
                label: "samples",
                points: &b,
                color: CALMFLOW,
            },
        ];
        let png = dir.path().join("s.png");
        scatter(&png, "test", &series).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let svg = dir.path().join("s.svg");
        scatter(&svg, "test", &series).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg") && text.contains("samples"));
        let paths = Array3::from_shape_fn((5, 4, 2), |(i, k, j)| (i + k * j) as f32);
        trajectories(&dir.path().join("t.png"), "paths", &paths, Some(&a), 3).unwrap();
        assert!(scatter(&dir.path().join("s.jpg"), "x", &series).is_err());
        let one_d = Array2::<f32>::zeros((3, 1));
        let bad = [Series {
            label: "x",
            points: &one_d,
            color: TARGET,
        }];
        assert!(scatter(&png, "x", &bad).is_err());
        let sweep_png = dir.path().join("sweep.png");
        let points = [
            SweepPoint {
                setting: "P = 1",
                values: &[0.5, 0.6, f64::NAN],
            },
            SweepPoint {
                setting: "P = 2",
                values: &[0.4, 0.45, 0.5],
            },
        ];
        let w2 = [SweepMetric {
            name: "W2",
            points: &points,
        }];
        sweep(&sweep_png, "sweep", &w2).unwrap();
        assert_eq!(&std::fs::read(&sweep_png).unwrap()[1..4], b"PNG");
        let svg_text = {
            let p = dir.path().join("sweep.svg");
            sweep(&p, "sweep", &w2).unwrap();
            std::fs::read_to_string(&p).unwrap()
        };
        assert!(svg_text.contains("P = 2"));
        assert!(sweep(&sweep_png, "empty", &[]).is_err());
        let none = [SweepMetric {
            name: "W2",
            points: &[],
        }];
        assert!(sweep(&sweep_png, "no settings", &none).is_err());
        let other = [SweepPoint {
            setting: "P = 3",
            values: &[0.1],
        }];
        let disagree = [
            w2[0],
            SweepMetric {
                name: "energy",
                points: &other,
            },
        ];
        let e = sweep(&sweep_png, "disagree", &disagree).unwrap_err();
        assert!(e.message.contains("disagree on the settings"), "{e}");
        // Eight long names in one 720-pixel panel (about 80 pixels each) break into lines
        // under their ticks: no name is written whole, every word is written.
        let names: Vec<String> = (0..8)
            .map(|i| format!("N = {i}, bridge σ 1, context noise 1"))
            .collect();
        let crowded: Vec<SweepPoint<'_>> = names
            .iter()
            .map(|n| SweepPoint {
                setting: n,
                values: &[1.0, 1.5],
            })
            .collect();
        let p = dir.path().join("crowded.svg");
        let metric = [SweepMetric {
            name: "Fréchet",
            points: &crowded,
        }];
        sweep(&p, "crowded", &metric).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(!svg.contains("bridge σ 1, context noise 1"));
        assert_eq!(svg.matches("noise").count(), 8, "{svg}");
        // Only the finished files and t.png remain: no staging leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
    }

    /// Two moons (2000 points) and three methods: a fresh draw, a copy shrunk towards the
    /// mean, and a noisier draw with a few far outliers.
    fn moons_and_methods() -> (Array2<f32>, Vec<Array2<f32>>) {
        use calmflow::data::{Moons, Sampler, StandardNormal, seeded_rng};
        let moons = Moons::default();
        let target = moons.sample(2000, &mut seeded_rng(1));
        let good = moons.sample(2000, &mut seeded_rng(2));
        let mean = good.mean_axis(ndarray::Axis(0)).unwrap();
        let shrunk = (&good - &mean) * 0.6 + &mean;
        let noise = StandardNormal { dim: 2 }.sample(2000, &mut seeded_rng(3));
        let mut noisy = moons.sample(2000, &mut seeded_rng(4)) + noise * 0.4;
        for (i, mut row) in noisy.rows_mut().into_iter().take(5).enumerate() {
            row[0] = 40.0 + i as f32;
            row[1] = -30.0;
        }
        (target, vec![good, shrunk, noisy])
    }

    fn methods(sets: &[Array2<f32>]) -> Vec<Series<'_>> {
        ["CaLMFlow", "CaLMFlow (mean head)", "CFM"]
            .into_iter()
            .zip(sets)
            .zip([CALMFLOW, SOURCE, BASELINE])
            .map(|((label, points), color)| Series {
                label,
                points,
                color,
            })
            .collect()
    }

    fn dispersion_groups() -> Vec<(&'static str, Vec<(&'static str, f64)>)> {
        let labels = ["trace", "PC1", "PC2", "PC3", "rest"];
        [
            ("CaLMFlow", [0.98, 1.02, 0.95, 0.91, 1.04]),
            ("mean head", [0.71, 0.83, 0.74, 0.69, 0.7]),
            ("CFM", [1.12, 1.05, 1.18, 1.2, 1.1]),
        ]
        .into_iter()
        .map(|(name, values)| (name, labels.into_iter().zip(values).collect()))
        .collect()
    }

    fn non_empty(path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
    }

    #[test]
    fn panels_are_written_as_png_and_svg_with_one_panel_per_method() {
        let dir = tempfile::tempdir().unwrap();
        let (target, sets) = moons_and_methods();
        let methods = methods(&sets);
        let png = dir.path().join("panels.png");
        panels(&png, "samples against the target", &target, &methods).unwrap();
        assert!(non_empty(&png));
        assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
        let svg = dir.path().join("panels.svg");
        panels(&svg, "samples", &target, &methods[..2]).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg") && text.contains("CaLMFlow (mean head)"));
        // Four methods wrap onto a second row.
        assert_eq!(panel_grid(4), (2, 3));
        assert_eq!(panel_grid(1), (1, 1));
        let four = [methods.clone(), methods[..1].to_vec()].concat();
        panels(&png, "four", &target, &four).unwrap();
        assert!(non_empty(&png));
        // The far outliers of the third method are outside the shared axes.
        let axes = bounds(std::iter::once(&target).chain(&sets), PANEL_TAIL);
        assert!(axes.0.1 < 20.0 && axes.1.0 > -20.0, "{axes:?}");
        assert_eq!(
            sets[2]
                .rows()
                .into_iter()
                .filter(|r| !within(axes, r[0], r[1]))
                .count(),
            5
        );
    }

    /// A panel title shrinks until it fits its panel; a short one keeps the full size.
    #[test]
    fn long_panel_titles_shrink_to_fit() {
        register_font();
        let mut buffer = vec![0u8; 440 * 300 * 3];
        let area = BitMapBackend::with_buffer(&mut buffer, (440, 300)).into_drawing_area();
        let long = "CaLMFlow mixture / endpoint / σ 0.3 / N 4 / annealed (1 outside)";
        let size = fitting_size(&area, long, 18);
        let width = |s: u32| {
            area.estimate_text_size(long, &("sans-serif", s).into_font().into())
                .unwrap()
                .0
        };
        assert!(size < 18, "size {size}");
        assert!(
            width(size) + CAPTION_SLACK <= 440,
            "{} px at {size}",
            width(size)
        );
        assert!(
            width(size + 1) + CAPTION_SLACK > 440,
            "{size} + 1 would fit too"
        );
        assert_eq!(fitting_size(&area, "I-CFM", 18), 18);
    }

    #[test]
    fn panels_refuse_empty_and_non_2d_sets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let (target, sets) = moons_and_methods();
        let methods = methods(&sets);
        assert!(panels(&path, "none", &target, &[]).is_err());
        let empty = Array2::<f32>::zeros((0, 2));
        assert!(panels(&path, "x", &empty, &methods).is_err());
        let three_d = Array2::<f32>::zeros((10, 3));
        let one_d = Array2::<f32>::zeros((10, 1));
        for bad in [&empty, &three_d, &one_d] {
            let with_bad = [
                methods[0],
                Series {
                    label: "bad",
                    points: bad,
                    color: BASELINE,
                },
            ];
            let err = panels(&path, "x", &target, &with_bad).unwrap_err();
            assert!(err.message.contains("bad"), "{err}");
        }
        assert!(panels(&path, "x", &three_d, &methods).is_err());
        assert!(panels(&dir.path().join("p.jpg"), "x", &target, &methods).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn dispersion_bars_are_written_as_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let groups = dispersion_groups();
        let png = dir.path().join("bars.png");
        dispersion_bars(&png, "dispersion", &groups).unwrap();
        assert!(non_empty(&png));
        assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
        let svg = dir.path().join("bars.svg");
        // Groups may lack a label (`rest` needs D > 3); large ratios stretch the axis.
        let uneven = vec![
            ("low D", vec![("trace", 0.9), ("PC1", 0.8)]),
            ("high D", vec![("trace", 3.5), ("PC1", 1.0), ("rest", 2.0)]),
        ];
        dispersion_bars(&svg, "dispersion", &uneven).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("high D") && text.contains("rest") && text.contains("3.50"));
        assert_eq!(
            bar_labels(&svg, &uneven).unwrap(),
            vec!["trace", "PC1", "rest"]
        );
    }

    #[test]
    fn dispersion_bars_refuse_empty_and_non_finite_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.png");
        assert!(dispersion_bars(&path, "x", &[]).is_err());
        assert!(dispersion_bars(&path, "x", &[("m", vec![])]).is_err());
        for bad in [f64::NAN, f64::INFINITY, -0.5] {
            let err = dispersion_bars(&path, "x", &[("m", vec![("trace", 1.0), ("PC1", bad)])])
                .unwrap_err();
            assert!(err.message.contains("PC1"), "{err}");
        }
        let twice = [("m", vec![("PC1", 1.0), ("PC1", 0.9)])];
        assert!(dispersion_bars(&path, "x", &twice).is_err());
        assert!(dispersion_bars(&dir.path().join("b.pdf"), "x", &dispersion_groups()).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Renders the examples into `$TMPDIR/plots/` for a person to look at:
    /// `cargo test -p calmflow-cli --lib plot::tests::examples -- --ignored`.
    #[test]
    #[ignore = "writes example plots for inspection"]
    fn examples() {
        let dir = std::env::temp_dir().join("plots");
        std::fs::create_dir_all(&dir).unwrap();
        let (target, sets) = moons_and_methods();
        let methods = methods(&sets);
        for ext in ["png", "svg"] {
            let title = "two moons: three methods' samples";
            panels(&dir.join(format!("panels.{ext}")), title, &target, &methods).unwrap();
            let title = "dispersion: variance ratios, samples / target";
            dispersion_bars(
                &dir.join(format!("bars.{ext}")),
                title,
                &dispersion_groups(),
            )
            .unwrap();
        }
        // Layouts at the edges: one panel, a second row, bars missing a label, long names.
        panels(
            &dir.join("panels-1.png"),
            "one method",
            &target,
            &methods[..1],
        )
        .unwrap();
        let four = [methods.clone(), methods[..1].to_vec()].concat();
        panels(&dir.join("panels-4.png"), "four methods", &target, &four).unwrap();
        let uneven = vec![
            (
                "CaLMFlow, Gaussian head",
                vec![("trace", 0.4), ("PC1", 0.3)],
            ),
            (
                "CaLMFlow, flow head",
                vec![("trace", 3.5), ("PC1", 1.0), ("rest", 2.0)],
            ),
            (
                "CFM (exact OT)",
                vec![("trace", 1.1), ("PC1", 0.05), ("rest", 1.3)],
            ),
            (
                "mixture head",
                vec![("trace", 0.9), ("PC1", 0.95), ("rest", 0.8)],
            ),
        ];
        dispersion_bars(&dir.join("bars-uneven.png"), "uneven", &uneven).unwrap();
        // The other plots share the frame and grid styles.
        let over_target = [
            Series {
                label: "target",
                points: &target,
                color: TARGET,
            },
            methods[0],
        ];
        scatter(&dir.join("scatter.png"), "scatter", &over_target).unwrap();
        let points = [
            SweepPoint {
                setting: "P = 1",
                values: &[0.5, 0.6, 0.55],
            },
            SweepPoint {
                setting: "P = 2",
                values: &[0.4, 0.45, 0.5],
            },
        ];
        let long = [
            SweepPoint {
                setting: "N = 2",
                values: &[2.4, 2.6, 2.7],
            },
            SweepPoint {
                setting: "N = 8, bridge σ 1, context noise 1",
                values: &[2.6, 2.8, 3.1],
            },
            SweepPoint {
                setting: "N = 8, context noise 2",
                values: &[2.6, 2.7, 3.0],
            },
        ];
        sweep(
            &dir.join("sweep.png"),
            "sweep",
            &[
                SweepMetric {
                    name: "W2",
                    points: &points,
                },
                SweepMetric {
                    name: "W2 again",
                    points: &points,
                },
            ],
        )
        .unwrap();
        sweep(
            &dir.join("sweep-long-names.png"),
            "long setting names wrap under their tick",
            &[
                SweepMetric {
                    name: "Fréchet",
                    points: &long,
                },
                SweepMetric {
                    name: "energy",
                    points: &long,
                },
                SweepMetric {
                    name: "W2",
                    points: &long,
                },
            ],
        )
        .unwrap();
    }
}
