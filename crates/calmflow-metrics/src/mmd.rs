//! Maximum mean discrepancy with Gaussian (RBF) kernels.
//!
//! `MMD²(x, y) = E k(x, x') + E k(y, y') − 2 E k(x, y)`: the biased (V-statistic) estimator
//! averages over all pairs including `i = j`; the unbiased (U-statistic) one drops the
//! diagonal terms of the within-set averages and can be slightly negative.

use ndarray::{Array2, ArrayView2};

use crate::error::{MetricsError, Result, check_pair};

/// torchcfm's bandwidths: the kernel is `Σ_σ exp(−‖x − y‖² / (2σ²))` over these.
pub const TORCHCFM_SIGMAS: [f64; 5] = [0.01, 0.1, 1.0, 10.0, 100.0];

/// The three squared-distance matrices of a pair of sets.
struct Distances {
    xx: Array2<f64>,
    yy: Array2<f64>,
    xy: Array2<f64>,
}

impl Distances {
    fn new(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<Self> {
        let (xs, ys) = check_pair(x, y)?;
        use calmflow_linalg::pairwise_sq_dists as d;
        Ok(Self {
            xx: d(xs.view(), xs.view()),
            yy: d(ys.view(), ys.view()),
            xy: d(xs.view(), ys.view()),
        })
    }

    fn mmd2(&self, kernel: impl Fn(f64) -> f64, unbiased: bool) -> Result<f64> {
        let within = |d: &Array2<f64>, which: &'static str| -> Result<f64> {
            let n = d.nrows();
            let total: f64 = d.iter().map(|&v| kernel(v)).sum();
            if unbiased {
                if n < 2 {
                    return Err(MetricsError::TooFewPoints {
                        which,
                        n,
                        metric: "unbiased MMD",
                        min: 2,
                    });
                }
                let diag: f64 = d.diag().iter().map(|&v| kernel(v)).sum();
                Ok((total - diag) / (n * (n - 1)) as f64)
            } else {
                Ok(total / (n * n) as f64)
            }
        };
        let kxx = within(&self.xx, "samples")?;
        let kyy = within(&self.yy, "target")?;
        let kxy = self.xy.iter().map(|&v| kernel(v)).sum::<f64>() / self.xy.len() as f64;
        Ok(kxx + kyy - 2.0 * kxy)
    }

    /// Median of the pairwise distances of the pooled sample (distinct points only).
    fn median_distance(&self) -> f64 {
        let n = self.xx.nrows();
        let m = self.yy.nrows();
        let mut all = Vec::with_capacity(n * (n - 1) / 2 + m * (m - 1) / 2 + n * m);
        for i in 0..n {
            all.extend((i + 1..n).map(|j| self.xx[[i, j]]));
        }
        for i in 0..m {
            all.extend((i + 1..m).map(|j| self.yy[[i, j]]));
        }
        all.extend(self.xy.iter().copied());
        let mid = all.len() / 2;
        let (_, median, _) = all.select_nth_unstable_by(mid, f64::total_cmp);
        median.sqrt()
    }
}

fn rbf_sum(sigmas: &[f64]) -> Result<impl Fn(f64) -> f64 + '_> {
    if sigmas.is_empty() {
        return Err(MetricsError::InvalidParameter {
            name: "sigmas",
            value: 0.0,
            reason: "need at least one bandwidth",
        });
    }
    if let Some(&s) = sigmas.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
        return Err(MetricsError::InvalidParameter {
            name: "sigma",
            value: s,
            reason: "must be positive and finite",
        });
    }
    Ok(move |d2: f64| sigmas.iter().map(|s| (-d2 / (2.0 * s * s)).exp()).sum())
}

/// Biased MMD² with the kernel `Σ_σ exp(−‖x − y‖²/(2σ²))` summed over `sigmas`
/// (torchcfm's convention with [`TORCHCFM_SIGMAS`]).
///
/// ```
/// use calmflow_metrics::{mmd2_biased, TORCHCFM_SIGMAS};
/// let x = ndarray::array![[0.0f32], [1.0]];
/// assert_eq!(mmd2_biased(x.view(), x.view(), &TORCHCFM_SIGMAS).unwrap(), 0.0);
/// ```
pub fn mmd2_biased(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>, sigmas: &[f64]) -> Result<f64> {
    let kernel = rbf_sum(sigmas)?;
    Distances::new(x, y)?.mmd2(kernel, false)
}

/// Biased MMD² with the single kernel `exp(−γ ‖x − y‖²)`, as the CaLMFlow authors report.
pub fn mmd2_rbf_gamma(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>, gamma: f64) -> Result<f64> {
    if !(gamma > 0.0 && gamma.is_finite()) {
        return Err(MetricsError::InvalidParameter {
            name: "gamma",
            value: gamma,
            reason: "must be positive and finite",
        });
    }
    Distances::new(x, y)?.mmd2(|d2| (-gamma * d2).exp(), false)
}

/// Unbiased MMD² with one RBF kernel `exp(−‖x − y‖²/(2σ²))` whose bandwidth `σ` is the
/// median pairwise distance of the pooled sample (the median heuristic). Returns
/// `(mmd², σ)`.
pub fn mmd2_unbiased_median(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<(f64, f64)> {
    let d = Distances::new(x, y)?;
    let sigma = d.median_distance();
    if !(sigma > 0.0) {
        return Err(MetricsError::Undefined(
            "median heuristic: all points coincide (median distance 0)".into(),
        ));
    }
    let value = d.mmd2(|d2| (-d2 / (2.0 * sigma * sigma)).exp(), true)?;
    Ok((value, sigma))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn points(n: usize, seed: u64, shift: f32) -> Array2<f32> {
        let mut s = seed;
        Array2::from_shape_fn((n, 3), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) + shift
        })
    }

    #[test]
    fn self_mmd_is_zero_and_shift_is_detected() {
        let x = points(200, 1, 0.0);
        let y = points(200, 2, 0.0);
        let z = points(200, 3, 1.0);
        assert!(
            mmd2_biased(x.view(), x.view(), &TORCHCFM_SIGMAS)
                .unwrap()
                .abs()
                < 1e-12
        );
        let (same, _) = mmd2_unbiased_median(x.view(), y.view()).unwrap();
        let (shifted, _) = mmd2_unbiased_median(x.view(), z.view()).unwrap();
        assert!(same.abs() < 0.01, "{same}");
        assert!(shifted > 20.0 * same.abs().max(1e-3), "{shifted} vs {same}");
        // The unbiased estimator of a set against itself is ≈ 0 (exactly 0 up to rounding
        // only for the biased one): k̄_xx(off-diagonal) + k̄_xx − 2 k̄_xx(all pairs) = O(1/n).
        let (self_u, _) = mmd2_unbiased_median(x.view(), x.view()).unwrap();
        assert!(self_u.abs() < 0.02, "{self_u}");
    }

    #[test]
    fn closed_form_two_point_case() {
        // x = {0}, y = {a}: biased MMD² = 2 − 2 exp(−a²/(2σ²)) per bandwidth.
        let x = array![[0.0f32]];
        let y = array![[2.0f32]];
        let got = mmd2_biased(x.view(), y.view(), &[1.0, 2.0]).unwrap();
        let want = 2.0 * (1.0 - (-2.0f64).exp()) + 2.0 * (1.0 - (-0.5f64).exp());
        assert!((got - want).abs() < 1e-12);
        let g = mmd2_rbf_gamma(x.view(), y.view(), 0.25).unwrap();
        assert!((g - 2.0 * (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn median_bandwidth_is_the_median_distance() {
        let x = array![[0.0f32], [1.0]];
        let y = array![[3.0f32], [6.0]];
        // Distances: xx 1; yy 3; xy 3, 6, 2, 5 → sorted 1 2 3 3 5 6, upper median 3.
        let (_, sigma) = mmd2_unbiased_median(x.view(), y.view()).unwrap();
        assert_eq!(sigma, 3.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = array![[0.0f32]];
        assert!(mmd2_biased(x.view(), x.view(), &[]).is_err());
        assert!(mmd2_biased(x.view(), x.view(), &[0.0]).is_err());
        assert!(mmd2_rbf_gamma(x.view(), x.view(), -1.0).is_err());
        assert!(matches!(
            mmd2_unbiased_median(x.view(), array![[1.0f32]].view()),
            Err(MetricsError::TooFewPoints { .. })
        ));
    }
}
