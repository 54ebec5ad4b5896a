//! Parameter sweeps: a metric's mean ± std over seeds at each setting, one panel per
//! metric.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::categories::{category_area, category_ticks, draw_category_names, wrapped_names};
use super::{
    BOLD_GRID, CALMFLOW, LIGHT_GRID, PlotError, TARGET, TICK_FONT, draw_legend, error,
    fitting_size, render,
};

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
/// let (m, s) = calmflow_plot::mean_std(&[1.0, 3.0, f64::NAN]).unwrap();
/// assert_eq!((m, s), (2.0, 2f64.sqrt()));
/// assert!(calmflow_plot::mean_std(&[f64::NAN]).is_none());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_are_written_and_long_setting_names_wrap() {
        let dir = tempfile::tempdir().unwrap();
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
        // Only the finished files remain: no staging leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
