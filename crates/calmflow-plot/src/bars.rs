//! Grouped bar charts of dispersion ratios (samples / target), with a key beside them.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::categories::{category_area, category_ticks, draw_category_names, wrapped_names};
use super::{
    BOLD_GRID, LIGHT_GRID, PlotError, TICK_FONT, error, fitting_size, register_font, render,
};

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
    use crate::test_support::{dispersion_groups, non_empty};

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
}
