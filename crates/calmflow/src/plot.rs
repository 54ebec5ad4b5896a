//! Scatter plots of samples against a target, trajectories over time and parameter sweeps
//! (a metric's mean ± std over seeds), as PNG or SVG
//! (by the file extension), written atomically. Points of more than two dimensions are
//! drawn by their first two coordinates.

use std::path::{Path, PathBuf};
use std::sync::Once;

use ndarray::{Array2, Array3};
use plotters::coord::Shift;
use plotters::prelude::*;

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
            include_bytes!("../assets/DejaVuSans.ttf"),
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
            calmflow_data::write_atomically(path, |w| std::io::Write::write_all(w, text.as_bytes()))
                .map_err(|e| error(path, e))
        }
    }
}

fn bounds<'a>(sets: impl Iterator<Item = &'a Array2<f32>>) -> ((f32, f32), (f32, f32)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for set in sets {
        for row in set.rows() {
            if row.len() >= 2 && row[0].is_finite() && row[1].is_finite() {
                x0 = x0.min(row[0]);
                x1 = x1.max(row[0]);
                y0 = y0.min(row[1]);
                y1 = y1.max(row[1]);
            }
        }
    }
    if x0 > x1 {
        return ((-1.0, 1.0), (-1.0, 1.0));
    }
    let pad = |a: f32, b: f32| {
        let m = 0.05 * (b - a).max(1e-3);
        (a - m, b + m)
    };
    (pad(x0, x1), pad(y0, y1))
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

/// A white canvas with a title, axes and a grid over `((x0, x1), (y0, y1))`.
fn frame<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    ((xa, xb), (ya, yb)): ((f32, f32), (f32, f32)),
) -> Result<Chart<'a, DB>, String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(xa..xb, ya..yb)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().draw().map_err(|e| e.to_string())?;
    Ok(chart)
}

fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// A labelled point cloud (first two coordinates) at opacity `alpha`.
fn draw_cloud<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &Array2<f32>,
    label: &str,
    color: (u8, u8, u8),
    alpha: f64,
) -> Result<(), String> {
    let color = RGBColor(color.0, color.1, color.2);
    chart
        .draw_series(
            points
                .rows()
                .into_iter()
                .map(|r| Circle::new((r[0], r[1]), 2, color.mix(alpha).filled())),
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
    let mut chart = frame(area, title, bounds(series.iter().map(|s| s.points)))?;
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
    let mut chart = frame(area, title, bounds([&flat].into_iter().chain(target)))?;
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
/// let (m, s) = calmflow::plot::mean_std(&[1.0, 3.0, f64::NAN]).unwrap();
/// assert_eq!((m, s), (2.0, 2f64.sqrt()));
/// assert!(calmflow::plot::mean_std(&[f64::NAN]).is_none());
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

fn draw_sweep<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    points: &[SweepPoint<'_>],
) -> Result<(), String> {
    let finite = points
        .iter()
        .flat_map(|p| p.values.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let pad = 0.08 * (hi - lo).max(1e-6 * hi.abs().max(1e-12));
    let x_range = (-0.5f32, points.len() as f32 - 0.5);
    let y_range = ((lo - pad) as f32, (hi + pad) as f32);
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
        .map_err(|e| e.to_string())?;
    let label_of = |x: &f32| {
        let i = x.round();
        if (x - i).abs() < 1e-3 && i >= 0.0 {
            points
                .get(i as usize)
                .map(|p| p.setting.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(points.len().max(1) * 2 + 1)
        .x_label_formatter(&label_of)
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
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

/// A parameter sweep: the metric's mean ± std over seeds at each setting, joined by a
/// line, with each seed's value beside it.
pub fn sweep(
    path: &Path,
    title: &str,
    y_label: &str,
    points: &[SweepPoint<'_>],
) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(error(path, "a sweep plot needs at least one setting"));
    }
    render(
        path,
        (720, 480),
        |a| draw_sweep(a, title, y_label, points),
        |a| draw_sweep(a, title, y_label, points),
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
        sweep(&sweep_png, "sweep", "W2", &points).unwrap();
        assert_eq!(&std::fs::read(&sweep_png).unwrap()[1..4], b"PNG");
        let svg_text = {
            let p = dir.path().join("sweep.svg");
            sweep(&p, "sweep", "W2", &points).unwrap();
            std::fs::read_to_string(&p).unwrap()
        };
        assert!(svg_text.contains("P = 2"));
        assert!(sweep(&sweep_png, "empty", "W2", &[]).is_err());
        // Only the finished files and t.png remain: no staging leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
    }
}
