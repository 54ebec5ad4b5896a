//! The real 8×8 handwritten digits set (1797 images, UCI via scikit-learn), embedded.

use ndarray::{Array2, s};

use crate::csv::{CsvOptions, Delimiter, Header, parse_csv};
use crate::error::{DataError, Result};

const DIGITS_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// Points with one integer class label each.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledData {
    /// `n × d` points.
    pub x: Array2<f32>,
    /// Class label of each point.
    pub labels: Vec<u32>,
}

/// The 1797 digits as 64-dimensional points (pixel intensities 0–16, row-major 8×8)
/// with labels 0–9. See `data/README.md` for provenance and licence.
///
/// ```
/// let d = calmflow_data::digits().unwrap();
/// assert_eq!(d.x.dim(), (1797, 64));
/// assert_eq!(d.labels.len(), 1797);
/// ```
pub fn digits() -> Result<LabeledData> {
    let reader = flate2::read::GzDecoder::new(DIGITS_GZ);
    let options = CsvOptions {
        delimiter: Delimiter::Comma,
        header: Header::No,
        require_finite: true,
    };
    let table = parse_csv(reader, "digits.csv.gz", &options)?;
    if table.data.ncols() != 65 {
        return Err(DataError::Shape {
            what: "digits.csv.gz".into(),
            expected: "65 columns".into(),
            actual: format!("{} columns", table.data.ncols()),
        });
    }
    let x = table.data.slice(s![.., ..64]).to_owned();
    let labels = table.data.column(64).iter().map(|&v| v as u32).collect();
    Ok(LabeledData { x, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_have_known_counts_and_ranges() {
        let d = digits().unwrap();
        assert_eq!(d.x.dim(), (1797, 64));
        let mut counts = [0usize; 10];
        for &l in &d.labels {
            counts[l as usize] += 1;
        }
        // The UCI test set's class counts, as in scikit-learn's documentation.
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        assert!(
            d.x.iter()
                .all(|&v| (0.0..=16.0).contains(&v) && v.fract() == 0.0)
        );
        // The first image is a 0 (scikit-learn's digits.images[0]).
        assert_eq!(d.labels[0], 0);
        assert_eq!(d.x[[0, 2]], 5.0);
    }
}
