//! Trajectories over time: lines from `t = 0` to `t = 1` over an optional target cloud.

use std::path::Path;

use ndarray::{Array2, Array3};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::scatter::{bounds, check_2d, draw_cloud};
use super::{CALMFLOW, PlotError, SOURCE, TARGET, draw_legend, error, frame, render};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trajectories_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let a = Array2::from_shape_fn((50, 2), |(i, j)| (i as f32 * 0.1).sin() + j as f32);
        let paths = Array3::from_shape_fn((5, 4, 2), |(i, k, j)| (i + k * j) as f32);
        trajectories(&dir.path().join("t.png"), "paths", &paths, Some(&a), 3).unwrap();
        // Only the finished file remains: no staging leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
