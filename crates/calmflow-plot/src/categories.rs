//! Categorical x axes, shared by sweeps (settings) and bar charts (groups): a tick on
//! every category and each category's name wrapped under it.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Chart;

/// Categorical x axes put category `i` at `x = i` over `-0.5..n − 0.5`; asking for this
/// many ticks puts one on every integer (and on the half-integers between, which
/// [`draw_category_names`] leaves blank).
pub(super) fn category_ticks(n: usize) -> usize {
    n.max(1) * 2 + 1
}

/// Pixels between the x axis and the first line of a category's name, and between lines.
const CATEGORY_GAP: i32 = 8;

/// Each category's name broken at spaces into lines at most `slot` pixels wide at `font`
/// pixels (a single word wider than the slot keeps its own line): a long setting such as
/// `"N = 8, bridge σ 1, context noise 1"` would otherwise run over its neighbours.
pub(super) fn wrapped_names<DB: DrawingBackend>(
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
pub(super) fn category_area(lines: usize, font: u32) -> u32 {
    CATEGORY_GAP as u32 + lines.max(1) as u32 * (font + 2) + 6
}

/// Writes each category's (wrapped) name under the x axis, centred on `x = i`: the mesh
/// draws the ticks with blank labels, because plotters writes a label on one line
/// whatever its width.
pub(super) fn draw_category_names<DB: DrawingBackend>(
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
