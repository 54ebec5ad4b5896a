//! Dispersion of generated samples relative to a target: `tr Σ_X / tr Σ_Y`, and
//! `u_kᵀ Σ_X u_k / λ_k` along the eigenvectors `u_k` of `Σ_Y` (`λ₁ ≥ λ₂ ≥ …`).
//!
//! ```
//! use calmflow_metrics::dispersion;
//! // Target covariance diag(8/3, 2/3): axis 0 leads. Samples: a copy shrunk by half.
//! let y = ndarray::array![[2.0f32, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]];
//! let x = y.mapv(|v| 0.5 * v);
//! let r = dispersion(x.view(), y.view()).unwrap();
//! assert!((r.trace_ratio - 0.25).abs() < 1e-12);
//! assert_eq!(r.leading.len(), 2);
//! assert!(r.leading.iter().all(|v| (v - 0.25).abs() < 1e-12));
//! assert_eq!(r.rest, None); // D = 2: nothing beyond the leading directions
//! ```
//!
//! A model that collapses onto conditional means keeps its samples near the target's
//! centre: every ratio well below 1, most visibly outside the leading directions. A correct
//! model has ratios near 1 everywhere (docs/method.md §10). Covariances are unbiased
//! (`n − 1`). "The rest" is the whole orthogonal complement of the leading directions, so
//! X's variance where the target has none counts there (and in `trace_ratio`); when the
//! target has no variance outside its leading directions, `rest` is absent and only
//! `trace_ratio` sees it.

use ndarray::{ArrayView2, Axis};
use serde::Serialize;

use crate::error::{MetricsError, Result, check_pair};

/// How many of the target's principal directions get a ratio of their own.
pub const DISPERSION_DIRECTIONS: usize = 3;

/// Target variances below this fraction of `tr Σ_Y` count as zero (rounding noise of the
/// eigendecomposition is about `D · 1e-16` of it).
const NULL_VARIANCE: f64 = 1e-12;

/// Variance ratios of generated samples `X` to target samples `Y` (1 = matched spread,
/// below 1 = under-dispersed, above 1 = over-dispersed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DispersionReport {
    /// `tr Cov(X) / tr Cov(Y)`: total variance ratio.
    pub trace_ratio: f64,
    /// `u_kᵀ Cov(X) u_k / λ_k` for the target's top [`DISPERSION_DIRECTIONS`] principal
    /// directions, largest variance first; fewer when `D` (or the rank of `Cov(Y)`) is
    /// smaller.
    pub leading: Vec<f64>,
    /// The same ratio for the rest of the space: `Σ_{k>3} u_kᵀ Cov(X) u_k / Σ_{k>3} λ_k`
    /// (X's variance outside the leading directions over Y's). Absent when the target has
    /// no variance there (always for `D ≤ 3`).
    pub rest: Option<f64>,
}

/// The dispersion of `samples` (n × D) relative to `target` (m × D).
///
/// Errors: empty sets, mismatched dimensions, non-finite values, fewer than two points in
/// either set ([`MetricsError::TooFewPoints`]) and a target without variance
/// ([`MetricsError::Undefined`]).
///
/// ```
/// use calmflow_metrics::dispersion;
/// // Target: ±3 on axis 0, ±1 on axis 1 (covariance diag(6, 2/3)); samples: axis 0 kept,
/// // axis 1 doubled. Ratios: 1 along the leading axis, 4 along the second.
/// let y = ndarray::array![[3.0f32, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]];
/// let x = ndarray::array![[3.0f32, 0.0], [-3.0, 0.0], [0.0, 2.0], [0.0, -2.0]];
/// let r = dispersion(x.view(), y.view()).unwrap();
/// assert!((r.leading[0] - 1.0).abs() < 1e-12 && (r.leading[1] - 4.0).abs() < 1e-12);
/// assert!((r.trace_ratio - (6.0 + 8.0 / 3.0) / (6.0 + 2.0 / 3.0)).abs() < 1e-12);
/// ```
pub fn dispersion(
    samples: ArrayView2<'_, f32>,
    target: ArrayView2<'_, f32>,
) -> Result<DispersionReport> {
    let (xs, ys) = check_pair(samples, target)?;
    for (which, n) in [("samples", xs.nrows()), ("target", ys.nrows())] {
        if n < 2 {
            return Err(MetricsError::TooFewPoints {
                which,
                n,
                metric: "a covariance",
                min: 2,
            });
        }
    }
    let cx = calmflow_linalg::covariance(xs.view());
    let cy = calmflow_linalg::covariance(ys.view());
    let trace_y = cy.diag().sum();
    // Coinciding points leave at most rounding noise (~1e-32 of the mean square).
    let mean_square = ys.iter().map(|v| v * v).sum::<f64>() / ys.nrows() as f64;
    if trace_y <= 1e-24 * mean_square {
        return Err(MetricsError::Undefined(
            "dispersion ratios need a target with nonzero variance (all target points coincide)"
                .into(),
        ));
    }
    let (values, vectors) = calmflow_linalg::symmetric_eigen(&cy);
    let null = NULL_VARIANCE * trace_y;
    let n_leading = values
        .iter()
        .take(DISPERSION_DIRECTIONS)
        .take_while(|&&v| v > null)
        .count();
    // u_kᵀ Σ_X u_k for every k at once: the column sums of U ∘ (Σ_X U).
    let projected = (&vectors * &cx.dot(&vectors)).sum_axis(Axis(0));
    let leading = (0..n_leading).map(|k| projected[k] / values[k]).collect();
    let rest_x: f64 = projected.iter().skip(n_leading).sum();
    let rest_y: f64 = values.iter().skip(n_leading).map(|v| v.max(0.0)).sum();
    Ok(DispersionReport {
        trace_ratio: cx.diag().sum() / trace_y,
        leading,
        rest: (rest_y > null).then(|| rest_x / rest_y),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `±a_j` on axis `j`, one pair of points per axis: mean 0 and covariance
    /// `diag(2 a_j² / (2D − 1))`, exactly diagonal.
    fn axis_pairs(a: &[f64]) -> Array2<f32> {
        let d = a.len();
        Array2::from_shape_fn((2 * d, d), |(i, j)| {
            if i / 2 == j {
                (if i % 2 == 0 { a[j] } else { -a[j] }) as f32
            } else {
                0.0
            }
        })
    }

    /// Rotates the rows of `y` by `theta` in the plane of axes `p` and `q`.
    fn rotate(y: &Array2<f32>, p: usize, q: usize, theta: f64) -> Array2<f32> {
        let (c, s) = (theta.cos(), theta.sin());
        let mut x = y.mapv(f64::from);
        for mut row in x.rows_mut() {
            let (a, b) = (row[p], row[q]);
            row[p] = c * a - s * b;
            row[q] = s * a + c * b;
        }
        x.mapv(|v| v as f32)
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn scaled_copy_has_every_ratio_equal_to_the_squared_scale() {
        // Unsorted axis scales: the leading directions are axes 1, 2, 4 (3, 2, 1.5).
        let y = axis_pairs(&[1.0, 3.0, 2.0, 0.5, 1.5]);
        for scale in [0.25f32, 1.0, 1.5] {
            let x = y.mapv(|v| v * scale);
            let r = dispersion(x.view(), y.view()).unwrap();
            let s2 = f64::from(scale).powi(2);
            close(r.trace_ratio, s2, 1e-12);
            assert_eq!(r.leading.len(), 3);
            for v in &r.leading {
                close(*v, s2, 1e-12);
            }
            close(r.rest.unwrap(), s2, 1e-12);
        }
    }

    #[test]
    fn per_axis_scaling_is_reported_in_the_targets_variance_order() {
        let a = [1.0, 3.0, 2.0, 0.5, 1.5];
        let s = [0.5, 2.0, 1.0, 3.0, 0.125]; // exact in f32, like a and a·s
        let y = axis_pairs(&a);
        let x = Array2::from_shape_fn(y.dim(), |(i, j)| y[[i, j]] * s[j] as f32);
        let r = dispersion(x.view(), y.view()).unwrap();
        // Cov(X)_jj = s_j² Cov(Y)_jj, Cov(Y)_jj ∝ a_j²: ratios s_j² in the order 1, 2, 4.
        for (got, j) in r.leading.iter().zip([1, 2, 4]) {
            close(*got, s[j] * s[j], 1e-12);
        }
        let var = |j: usize| a[j] * a[j];
        let rest = (s[0] * s[0] * var(0) + s[3] * s[3] * var(3)) / (var(0) + var(3));
        close(r.rest.unwrap(), rest, 1e-12);
        let total: f64 =
            (0..5).map(|j| s[j] * s[j] * var(j)).sum::<f64>() / (0..5).map(var).sum::<f64>();
        close(r.trace_ratio, total, 1e-12);
    }

    #[test]
    fn rotation_against_the_principal_axes_has_a_closed_form() {
        // Cov(Y) = c·diag(4, 1); X = R_θ Y: Cov(X) = R diag(4, 1) Rᵀ, so along e₁
        // (4cos²θ + sin²θ)/4 and along e₂ 4sin²θ + cos²θ; the trace is unchanged.
        let y = axis_pairs(&[2.0, 1.0]);
        for theta in [
            0.0,
            std::f64::consts::FRAC_PI_6,
            1.0,
            std::f64::consts::FRAC_PI_2,
        ] {
            let x = rotate(&y, 0, 1, theta);
            let r = dispersion(x.view(), y.view()).unwrap();
            let (c2, s2) = (theta.cos().powi(2), theta.sin().powi(2));
            close(r.trace_ratio, 1.0, 1e-6);
            close(r.leading[0], (4.0 * c2 + s2) / 4.0, 1e-6);
            close(r.leading[1], 4.0 * s2 + c2, 1e-6);
            assert_eq!(r.rest, None);
        }
    }

    #[test]
    fn rotation_into_the_rest_moves_variance_between_leading_and_rest() {
        // Variances ∝ 9, 4, 2.25, 1: rotating axes 0 and 3 by θ leaves the second and third
        // directions alone and swaps a share sin²θ of variance between the first and the rest.
        let a = [3.0, 2.0, 1.5, 1.0];
        let y = axis_pairs(&a);
        let theta = 0.7f64;
        let x = rotate(&y, 0, 3, theta);
        let r = dispersion(x.view(), y.view()).unwrap();
        let (c2, s2) = (theta.cos().powi(2), theta.sin().powi(2));
        close(r.trace_ratio, 1.0, 1e-6);
        close(r.leading[0], (9.0 * c2 + s2) / 9.0, 1e-6);
        close(r.leading[1], 1.0, 1e-6);
        close(r.leading[2], 1.0, 1e-6);
        close(r.rest.unwrap(), 9.0 * s2 + c2, 1e-6);
    }

    #[test]
    fn low_dimensions_and_low_rank_report_as_many_directions_as_exist() {
        let y1 = axis_pairs(&[2.0]);
        let r = dispersion(y1.view(), y1.view()).unwrap();
        assert_eq!((r.leading.len(), r.rest), (1, None));
        let y3 = axis_pairs(&[1.0, 2.0, 3.0]);
        let r = dispersion(y3.view(), y3.view()).unwrap();
        assert_eq!(r.leading.len(), 3);
        assert_eq!(r.rest, None);
        // Rank 2 in D = 5: two leading directions, no target variance anywhere else.
        let flat = axis_pairs(&[2.0, 1.0, 0.0, 0.0, 0.0]);
        let r = dispersion(axis_pairs(&[1.0; 5]).view(), flat.view()).unwrap();
        assert_eq!(r.leading.len(), 2);
        assert_eq!(r.rest, None);
        // Both traces are 10/9: all of X's variance counts, on the target's support or not.
        close(r.trace_ratio, 1.0, 1e-12);
    }

    #[test]
    fn degenerate_inputs_are_typed_errors() {
        let y = axis_pairs(&[1.0, 2.0]);
        let one = ndarray::array![[1.0f32, 2.0]];
        assert!(matches!(
            dispersion(one.view(), y.view()),
            Err(MetricsError::TooFewPoints {
                which: "samples",
                n: 1,
                ..
            })
        ));
        assert!(matches!(
            dispersion(y.view(), one.view()),
            Err(MetricsError::TooFewPoints {
                which: "target",
                n: 1,
                ..
            })
        ));
        let wide = axis_pairs(&[1.0, 2.0, 3.0]);
        assert_eq!(
            dispersion(wide.view(), y.view()),
            Err(MetricsError::DimensionMismatch { x: 3, y: 2 })
        );
        let mut bad = y.clone();
        bad[[2, 1]] = f32::NAN;
        assert!(matches!(
            dispersion(bad.view(), y.view()),
            Err(MetricsError::NonFinite {
                which: "samples",
                row: 2,
                column: 1,
                ..
            })
        ));
        bad[[2, 1]] = f32::INFINITY;
        assert!(matches!(
            dispersion(y.view(), bad.view()),
            Err(MetricsError::NonFinite {
                which: "target",
                ..
            })
        ));
        let empty = Array2::<f32>::zeros((0, 2));
        assert!(matches!(
            dispersion(empty.view(), y.view()),
            Err(MetricsError::Empty { which: "samples" })
        ));
        for constant in [
            Array2::<f32>::zeros((4, 2)),
            Array2::<f32>::from_elem((3, 2), 0.1),
            Array2::<f32>::from_elem((7, 2), -123.456),
        ] {
            assert!(matches!(
                dispersion(y.view(), constant.view()),
                Err(MetricsError::Undefined(_))
            ));
        }
    }
}
