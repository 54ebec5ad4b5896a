//! # calmflow-plot
//!
//! The plots of calmflow's program and quality suite, as PNG or SVG (by the file
//! extension), written atomically: scatter plots of samples against a target, side-by-side
//! panels of several methods against one target, trajectories over time, parameter sweeps
//! (a metric's mean ± std over seeds), grouped bars of dispersion ratios and grids of
//! grey-scale images (digits). Scatter plots and trajectories draw points of more than two
//! dimensions by their first two coordinates; panels take 2-D points only.
//!
//! | file | what |
//! | --- | --- |
//! | `scatter.rs` | [`scatter`], [`panels`] |
//! | `trajectories.rs` | [`trajectories`] |
//! | `sweep.rs` | [`sweep`] and its points ([`SweepPoint`], [`mean_std`]) |
//! | `bars.rs` | [`dispersion_bars`] |
//! | `categories.rs` | the category axes that sweeps and bars share |
//! | `images.rs` | [`image_grid`] |

use std::path::{Path, PathBuf};
use std::sync::Once;

use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;

mod bars;
mod categories;
mod images;
mod scatter;
mod sweep;
#[cfg(test)]
mod test_support;
mod trajectories;

pub use bars::dispersion_bars;
pub use images::{ImageShape, image_grid};
pub use scatter::{panels, scatter};
pub use sweep::{SweepMetric, SweepPoint, mean_std, sweep};
pub use trajectories::trajectories;

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

#[cfg(test)]
mod tests {
    use super::test_support::{dispersion_groups, methods, moons_and_methods};
    use super::*;

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

    /// Renders the examples into `$TMPDIR/plots/` for a person to look at:
    /// `cargo test -p calmflow-plot --lib tests::examples -- --ignored`.
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
