//! Fréchet distance between Gaussian fits, and the closed-form 2-Wasserstein (Bures)
//! distance between Gaussians.
//!
//! For `N(μ₁, Σ₁)` and `N(μ₂, Σ₂)`:
//! `W2² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{½} Σ₂ Σ₁^{½})^{½})`. The Fréchet distance (the
//! "FD" of FID) is this squared quantity for the Gaussians fitted to two samples.

use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{MetricsError, Result, check_pair};

/// `W2²` between two Gaussians given by means and covariances.
pub fn gaussian_w2_squared(
    mu1: &Array1<f64>,
    cov1: &Array2<f64>,
    mu2: &Array1<f64>,
    cov2: &Array2<f64>,
) -> Result<f64> {
    let d = mu1.len();
    if mu2.len() != d {
        return Err(MetricsError::DimensionMismatch { x: d, y: mu2.len() });
    }
    for (what, cov) in [("cov1", cov1), ("cov2", cov2)] {
        if cov.dim() != (d, d) {
            return Err(MetricsError::Undefined(format!(
                "{what} has shape {:?}, expected ({d}, {d})",
                cov.dim()
            )));
        }
    }
    let mean_term: f64 = (mu1 - mu2).mapv(|v| v * v).sum();
    let s1 = calmflow_linalg::sqrt_psd(cov1);
    let middle = s1.dot(cov2).dot(&s1);
    let (eig, _) = calmflow_linalg::symmetric_eigen(&middle);
    let cross: f64 = eig.iter().map(|v| v.max(0.0).sqrt()).sum();
    Ok((mean_term + cov1.diag().sum() + cov2.diag().sum() - 2.0 * cross).max(0.0))
}

/// The Bures (closed-form) 2-Wasserstein distance between two Gaussians: the oracle
/// against which empirical W2 estimates are checked.
///
/// ```
/// use ndarray::{array, Array2};
/// let eye = Array2::<f64>::eye(2);
/// let w = calmflow_metrics::bures_w2(&array![0.0, 0.0], &eye, &array![3.0, 4.0], &(&eye * 4.0)).unwrap();
/// // ‖μ‖² = 25, tr(I + 4I − 2·2I) = 2 → √27.
/// assert!((w - 27f64.sqrt()).abs() < 1e-12);
/// ```
pub fn bures_w2(
    mu1: &Array1<f64>,
    cov1: &Array2<f64>,
    mu2: &Array1<f64>,
    cov2: &Array2<f64>,
) -> Result<f64> {
    Ok(gaussian_w2_squared(mu1, cov1, mu2, cov2)?.sqrt())
}

/// Fréchet distance (squared, as in FID) between the Gaussians fitted to two samples
/// (means and unbiased covariances). Each set needs at least two points.
pub fn frechet_distance(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<f64> {
    let (xs, ys) = check_pair(x, y)?;
    for (which, n) in [("samples", xs.nrows()), ("target", ys.nrows())] {
        if n < 2 {
            return Err(MetricsError::TooFewPoints {
                which,
                n,
                metric: "the Fréchet distance",
                min: 2,
            });
        }
    }
    let (m1, c1) = (
        calmflow_linalg::column_means(xs.view()),
        calmflow_linalg::covariance(xs.view()),
    );
    let (m2, c2) = (
        calmflow_linalg::column_means(ys.view()),
        calmflow_linalg::covariance(ys.view()),
    );
    gaussian_w2_squared(&m1, &c1, &m2, &c2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn commuting_covariances_have_the_textbook_form() {
        // Diagonal covariances: tr term = Σ (√a − √b)².
        let c1 = Array2::from_diag(&array![1.0, 4.0, 9.0]);
        let c2 = Array2::from_diag(&array![4.0, 1.0, 0.25]);
        let mu = array![0.0, 0.0, 0.0];
        let got = gaussian_w2_squared(&mu, &c1, &mu, &c2).unwrap();
        let want = 1.0 + 1.0 + 6.25;
        assert!((got - want).abs() < 1e-10, "{got}");
        assert!(gaussian_w2_squared(&mu, &c1, &array![0.0], &c2).is_err());
    }

    #[test]
    fn frechet_of_a_sample_with_itself_is_zero() {
        let x = Array2::from_shape_fn((50, 4), |(i, j)| ((i * 13 + j * 7) % 17) as f32 / 17.0);
        assert!(frechet_distance(x.view(), x.view()).unwrap() < 1e-9);
        let y = &x + 1.0;
        assert!((frechet_distance(x.view(), y.view()).unwrap() - 4.0).abs() < 1e-6);
        assert!(frechet_distance(x.view(), array![[0.0f32, 0.0, 0.0, 0.0]].view()).is_err());
    }
}
