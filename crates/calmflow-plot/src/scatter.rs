//! Scatter plots of samples against a target, and side-by-side panels of several methods
//! against one target on shared axes; the point clouds and axis bounds that trajectories
//! reuse.

use std::path::Path;

use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Chart, PlotError, Series, TARGET, draw_legend, error, fitting_size, frame, render};

/// How far beyond the quantiles of [`bounds`] (as a fraction of their span) a coordinate
/// still counts as the distribution's tail rather than an outlier.
const OUTLIER_GAP: f32 = 0.25;

/// Axis ranges `((x0, x1), (y0, y1))` over the first two coordinates of every set, with a
/// 5 % margin. `tail` is the fraction of coordinates that may fall outside at each end of
/// each axis: 0 covers every point; 0.005 covers the 0.5–99.5 % quantiles, widened to take
/// in every coordinate less than [`OUTLIER_GAP`] × their span beyond them, so that a
/// distribution's tails stay in view and only far outliers are left out. Non-finite
/// coordinates are ignored.
pub(super) fn bounds<'a>(
    sets: impl Iterator<Item = &'a Array2<f32>>,
    tail: f64,
) -> ((f32, f32), (f32, f32)) {
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

pub(super) fn check_2d(path: &Path, sets: &[&Array2<f32>]) -> Result<(), PlotError> {
    if let Some(bad) = sets.iter().find(|s| s.ncols() < 2) {
        return Err(error(
            path,
            format!("plots need points of dimension ≥ 2, got {}", bad.ncols()),
        ));
    }
    Ok(())
}

/// Whether `(x, y)` lies inside the axis ranges `((x0, x1), (y0, y1))` (never for NaN).
fn within(((xa, xb), (ya, yb)): ((f32, f32), (f32, f32)), x: f32, y: f32) -> bool {
    (xa..=xb).contains(&x) && (ya..=yb).contains(&y)
}

/// A labelled point cloud (first two coordinates) at opacity `alpha`; points outside the
/// axes (or not finite) are left out rather than drawn over the margins.
pub(super) fn draw_cloud<'a, DB: DrawingBackend + 'a>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{methods, moons_and_methods, non_empty};
    use crate::{BASELINE, CALMFLOW};

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
        assert!(scatter(&dir.path().join("s.jpg"), "x", &series).is_err());
        let one_d = Array2::<f32>::zeros((3, 1));
        let bad = [Series {
            label: "x",
            points: &one_d,
            color: TARGET,
        }];
        assert!(scatter(&png, "x", &bad).is_err());
        // Only the finished files remain: no staging leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
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
}
