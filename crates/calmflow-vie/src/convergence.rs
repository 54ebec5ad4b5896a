//! Convergence checks: observed orders `log2(e_h / e_{h/2})` over a sequence of grids.
//!
//! ```
//! use calmflow_vie::convergence::ConvergenceStudy;
//! // Errors of a second-order method: e = C h², h = 1/(n − 1).
//! let study = ConvergenceStudy::run(&[11, 21, 41], |n| Ok(3.0 / ((n - 1) as f64).powi(2))).unwrap();
//! assert!(study.orders().iter().all(|p| (p - 2.0).abs() < 1e-12));
//! ```

use crate::error::{Result, VieError};

/// Observed order between two errors at step sizes `h` and `h / ratio`:
/// `ln(e_h / e_{h/ratio}) / ln(ratio)`.
pub fn observed_order(e_coarse: f64, e_fine: f64, ratio: f64) -> f64 {
    (e_coarse / e_fine).ln() / ratio.ln()
}

/// Errors of a method on a sequence of grids and the orders they imply.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvergenceStudy {
    /// Grid sizes `N` (number of points).
    pub sizes: Vec<usize>,
    /// Error on each grid.
    pub errors: Vec<f64>,
}

impl ConvergenceStudy {
    /// Calls `error(n)` for every grid size `n` (number of points; the step is
    /// `T / (n − 1)`) and records the errors.
    pub fn run(sizes: &[usize], mut error: impl FnMut(usize) -> Result<f64>) -> Result<Self> {
        if sizes.len() < 2 {
            return Err(VieError::InvalidParameter {
                name: "sizes",
                value: sizes.len() as f64,
                reason: "a convergence study needs at least two grids",
            });
        }
        let errors = sizes
            .iter()
            .map(|&n| error(n))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            sizes: sizes.to_vec(),
            errors,
        })
    }

    /// Observed order between consecutive grids, using the ratio of their step sizes.
    pub fn orders(&self) -> Vec<f64> {
        self.sizes
            .windows(2)
            .zip(self.errors.windows(2))
            .map(|(n, e)| {
                let ratio = (n[1] - 1) as f64 / (n[0] - 1) as f64;
                observed_order(e[0], e[1], ratio)
            })
            .collect()
    }
}
