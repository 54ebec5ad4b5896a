//! Grids of small grey-scale images (digits): one row of images per set, labelled on the
//! left, so that real and generated images can be compared by eye.

use std::path::Path;

use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{PlotError, error, fitting_size, render};

/// Pixels of one image cell's side (the image is scaled to fit, keeping its aspect).
const CELL: u32 = 56;
/// Gap between cells, in pixels.
const GAP: u32 = 4;
/// Width of the row labels, in pixels.
const LABEL_WIDTH: u32 = 260;
/// Height of the title band, in pixels.
const TITLE_HEIGHT: u32 = 40;

/// How the images of an [`image_grid`] are laid out and shaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageShape {
    /// Pixels per image row.
    pub width: usize,
    /// Image rows.
    pub height: usize,
    /// Images drawn per set (the first ones).
    pub per_row: usize,
    /// Values drawn white (`low`) and black (`high`); values outside are clamped.
    pub low: f32,
    /// See `low`.
    pub high: f32,
}

/// Font size of the row labels.
const LABEL_FONT: u32 = 14;

/// `label`, cut with an ellipsis where it would run into the images.
fn fitted_label<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, label: &str) -> String {
    let fits = |text: &str| {
        area.estimate_text_size(text, &("sans-serif", LABEL_FONT).into_font().into())
            .is_ok_and(|(w, _)| w + 20 <= LABEL_WIDTH)
    };
    if fits(label) {
        return label.to_string();
    }
    let chars: Vec<char> = label.chars().collect();
    (1..chars.len())
        .rev()
        .map(|n| chars[..n].iter().collect::<String>() + "…")
        .find(|t| fits(t))
        .unwrap_or_else(|| "…".to_string())
}

fn shade(v: f32, shape: &ImageShape) -> RGBColor {
    let t = ((v - shape.low) / (shape.high - shape.low)).clamp(0.0, 1.0);
    let g = (255.0 * (1.0 - t)).round() as u8;
    RGBColor(g, g, g)
}

fn draw_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[(&str, &Array2<f32>)],
    shape: &ImageShape,
) -> Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let size = fitting_size(area, title, 22);
    area.draw(&Text::new(
        title.to_string(),
        (12, 10),
        ("sans-serif", size).into_font(),
    ))
    .map_err(|e| e.to_string())?;
    let pixel = (CELL / shape.width.max(shape.height) as u32).max(1) as i32;
    for (r, (label, images)) in rows.iter().enumerate() {
        let top = (TITLE_HEIGHT + r as u32 * (CELL + GAP)) as i32;
        area.draw(&Text::new(
            fitted_label(area, label),
            (12, top + CELL as i32 / 2 - 8),
            ("sans-serif", LABEL_FONT).into_font(),
        ))
        .map_err(|e| e.to_string())?;
        for (c, image) in images.rows().into_iter().take(shape.per_row).enumerate() {
            let left = (LABEL_WIDTH + c as u32 * (CELL + GAP)) as i32;
            for (k, &v) in image.iter().enumerate() {
                let (y, x) = ((k / shape.width) as i32, (k % shape.width) as i32);
                let corner = (left + x * pixel, top + y * pixel);
                area.draw(&Rectangle::new(
                    [corner, (corner.0 + pixel, corner.1 + pixel)],
                    shade(v, shape).filled(),
                ))
                .map_err(|e| e.to_string())?;
            }
            let frame = [
                (left - 1, top - 1),
                (
                    left + shape.width as i32 * pixel,
                    top + shape.height as i32 * pixel,
                ),
            ];
            area.draw(&Rectangle::new(frame, RGBColor(200, 200, 200)))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One row of grey-scale images per set, labelled (a label too long for the margin is cut
/// with an ellipsis): row `i` draws the first
/// `shape.per_row` points of `rows[i].1`, each a `height × width` image stored row-major,
/// `low` white and `high` black (ink on paper, as digits are drawn).
///
/// Errors: no rows, a set with fewer points than `per_row` or a point of another length
/// than `width·height`, a non-finite pixel, `low ≥ high`, an empty shape, a file name that
/// is neither `.png` nor `.svg`.
pub fn image_grid(
    path: &Path,
    title: &str,
    rows: &[(&str, &Array2<f32>)],
    shape: ImageShape,
) -> Result<(), PlotError> {
    if rows.is_empty() {
        return Err(error(path, "an image grid needs at least one row"));
    }
    if shape.width == 0 || shape.height == 0 || shape.per_row == 0 {
        return Err(error(
            path,
            format!(
                "an image grid needs images of at least 1 × 1 pixels and one image a row, got \
                 {} × {} and {}",
                shape.height, shape.width, shape.per_row
            ),
        ));
    }
    if !(shape.low < shape.high && shape.low.is_finite() && shape.high.is_finite()) {
        return Err(error(
            path,
            format!(
                "the grey scale needs finite low < high, got {} and {}",
                shape.low, shape.high
            ),
        ));
    }
    for (label, images) in rows {
        let (n, d) = images.dim();
        if d != shape.width * shape.height {
            return Err(error(
                path,
                format!(
                    "{label}: points of {d} values are not {} × {} images",
                    shape.height, shape.width
                ),
            ));
        }
        if n < shape.per_row {
            return Err(error(
                path,
                format!(
                    "{label}: {n} images, fewer than the {} a row draws",
                    shape.per_row
                ),
            ));
        }
        if let Some(v) = images
            .rows()
            .into_iter()
            .take(shape.per_row)
            .flatten()
            .find(|v| !v.is_finite())
        {
            return Err(error(path, format!("{label}: a pixel is {v}")));
        }
    }
    let size = (
        LABEL_WIDTH + shape.per_row as u32 * (CELL + GAP) + 12,
        TITLE_HEIGHT + rows.len() as u32 * (CELL + GAP) + 8,
    );
    render(
        path,
        size,
        |a| draw_grid(a, title, rows, &shape),
        |a| draw_grid(a, title, rows, &shape),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digit_shape() -> ImageShape {
        ImageShape {
            width: 8,
            height: 8,
            per_row: 4,
            low: 0.0,
            high: 4.0,
        }
    }

    #[test]
    fn shades_run_from_white_to_black_and_clamp() {
        let s = digit_shape();
        assert_eq!(shade(0.0, &s), RGBColor(255, 255, 255));
        assert_eq!(shade(4.0, &s), RGBColor(0, 0, 0));
        assert_eq!(shade(2.0, &s), RGBColor(128, 128, 128));
        assert_eq!(shade(-3.0, &s), shade(0.0, &s));
        assert_eq!(shade(9.0, &s), shade(4.0, &s));
    }

    #[test]
    fn writes_a_png_of_the_expected_size() {
        let dir = std::env::temp_dir().join(format!("calmflow-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grid.png");
        let a = Array2::from_shape_fn((5, 64), |(i, k)| ((i + k) % 5) as f32);
        let b = Array2::from_shape_fn((4, 64), |(_, k)| (k % 8) as f32 * 0.5);
        image_grid(
            &path,
            "digits",
            &[("real", &a), ("model", &b)],
            digit_shape(),
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // PNG signature, then the IHDR chunk's width and height (big-endian).
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!(width, LABEL_WIDTH + 4 * (CELL + GAP) + 12);
        assert_eq!(height, TITLE_HEIGHT + 2 * (CELL + GAP) + 8);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_wrong_shapes_and_values() {
        let path = Path::new("grid.png");
        let a = Array2::<f32>::zeros((5, 64));
        let short = Array2::<f32>::zeros((2, 64));
        let wide = Array2::<f32>::zeros((5, 63));
        let mut nan = Array2::<f32>::zeros((5, 64));
        nan[[1, 3]] = f32::NAN;
        let shape = digit_shape();
        let message = |rows: &[(&str, &Array2<f32>)], shape| {
            image_grid(path, "t", rows, shape).unwrap_err().message
        };
        assert!(message(&[], shape).contains("at least one row"));
        assert!(message(&[("x", &short)], shape).contains("fewer than the 4"));
        assert!(message(&[("x", &wide)], shape).contains("63 values"));
        assert!(message(&[("x", &nan)], shape).contains("NaN"));
        let flat = ImageShape {
            low: 1.0,
            high: 1.0,
            ..shape
        };
        assert!(message(&[("x", &a)], flat).contains("low < high"));
        let text = std::env::temp_dir().join(format!("calmflow-grid-{}.txt", std::process::id()));
        assert!(
            image_grid(&text, "t", &[("x", &a)], shape)
                .unwrap_err()
                .message
                .contains(".png or .svg")
        );
    }
}
