//! Equal-weight Gaussian mixtures in any dimension, and the source→target mixture pairs
//! of CaLMFlow's high-dimensional experiments.

use ndarray::Array2;

use crate::error::{DataError, Result};
use crate::rng::{Rng, index, normal};
use crate::synthetic::{Pair, Sampler, StandardNormal, fill};

/// `K` equal-weight isotropic Gaussians `N(m_k, std² I_D)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMixture {
    means: Array2<f64>,
    std: f64,
}

impl GaussianMixture {
    /// A mixture with the given `K × D` means and common standard deviation.
    pub fn new(means: Array2<f64>, std: f64) -> Result<Self> {
        if means.nrows() == 0 || means.ncols() == 0 {
            return Err(DataError::invalid(
                "means",
                "need at least one component of dimension ≥ 1",
            ));
        }
        if means.iter().any(|v| !v.is_finite()) {
            return Err(DataError::invalid("means", "must be finite"));
        }
        if !(std >= 0.0 && std.is_finite()) {
            return Err(DataError::invalid(
                "std",
                format!("must be finite and ≥ 0, got {std}"),
            ));
        }
        Ok(Self { means, std })
    }

    /// `k` components with means drawn from `N(0, spread² I_D)`.
    pub fn seeded(k: usize, dim: usize, spread: f64, std: f64, rng: &mut Rng) -> Result<Self> {
        let means = Array2::from_shape_fn((k, dim), |_| spread * normal(rng));
        Self::new(means, std)
    }

    /// `k` (even) well-separated components at `± (separation/2) · v_i`, `i < k/2`, the
    /// `v_i` orthonormal cosine vectors `v_i[j] ∝ cos(π (i + 1)(j + ½)/D)`, which spread
    /// every mean over all `D` coordinates; pairwise mean distances are `separation`
    /// (antipodal pairs) or `separation/√2`. Needs `k/2 < D`; `k = 1` gives one component at 0.
    pub fn cross_polytope(k: usize, dim: usize, separation: f64, std: f64) -> Result<Self> {
        if k == 1 {
            return Self::new(Array2::zeros((1, dim)), std);
        }
        if k == 0 || k % 2 == 1 {
            return Err(DataError::invalid(
                "k",
                format!("must be 1 or even, got {k}"),
            ));
        }
        if k / 2 >= dim {
            return Err(DataError::invalid(
                "dim",
                format!("{k} cross-polytope means need dim > {}, got {dim}", k / 2),
            ));
        }
        let d = dim as f64;
        let mut means = Array2::zeros((k, dim));
        for i in 0..k / 2 {
            for j in 0..dim {
                let v = (std::f64::consts::PI * (i + 1) as f64 * (j as f64 + 0.5) / d).cos()
                    * (2.0 / d).sqrt();
                means[[2 * i, j]] = 0.5 * separation * v;
                means[[2 * i + 1, j]] = -0.5 * separation * v;
            }
        }
        Self::new(means, std)
    }

    /// The `K × D` component means.
    pub fn means(&self) -> &Array2<f64> {
        &self.means
    }

    /// The common standard deviation.
    pub fn std(&self) -> f64 {
        self.std
    }

    /// Number of components `K`.
    pub fn components(&self) -> usize {
        self.means.nrows()
    }
}

impl Sampler for GaussianMixture {
    fn name(&self) -> String {
        format!("gmm{}x{}", self.components(), self.means.ncols())
    }
    fn dim(&self) -> usize {
        self.means.ncols()
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        let k = self.components();
        fill(n, self.dim(), |p| {
            let m = self.means.row(index(rng, k));
            for (v, mu) in p.iter_mut().zip(m) {
                *v = mu + self.std * normal(rng);
            }
        })
    }
}

/// The high-dimensional source→target pairs of CaLMFlow's experiments (docs/method.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixturePair {
    /// 2 Gaussians → 4 Gaussians (the multi-trajectory ablation's pair).
    TwoToFour,
    /// 4 Gaussians → 8 Gaussians.
    FourToEight,
    /// `N(0, I_D)` → 8 Gaussians.
    NormalToEight,
}

impl MixturePair {
    /// Target and source in dimension `dim`. The target is the cross-polytope mixture
    /// ([`GaussianMixture::cross_polytope`], separation 10, unit std); the source means sit
    /// midway (at the same radius 5) between pairs of neighbouring target means, so that
    /// every source component must split across two target components.
    pub fn build(self, dim: usize) -> Result<(GaussianMixture, Box<dyn Sampler>)> {
        let (k_src, k_tgt) = match self {
            MixturePair::TwoToFour => (2, 4),
            MixturePair::FourToEight => (4, 8),
            MixturePair::NormalToEight => (0, 8),
        };
        let target = GaussianMixture::cross_polytope(k_tgt, dim, 10.0, 1.0)?;
        let source: Box<dyn Sampler> = if k_src == 0 {
            Box::new(StandardNormal { dim })
        } else {
            // Source means: the target's means rotated by 45° in each (v_{2i}, v_{2i+1})
            // plane, i.e. midway between target means, at the same radius.
            let tm = target.means();
            let mut means = Array2::zeros((k_src, dim));
            for i in 0..k_src / 2 {
                let a = tm.row(4 * i);
                let b = tm.row(4 * i + 2);
                let mid = (&a + &b) * std::f64::consts::FRAC_1_SQRT_2;
                means.row_mut(2 * i).assign(&mid);
                means.row_mut(2 * i + 1).assign(&(-&mid));
            }
            Box::new(GaussianMixture::new(means, 1.0)?)
        };
        Ok((target, source))
    }

    /// The pair as a [`Pair`].
    pub fn pair(self, dim: usize) -> Result<Pair> {
        let (target, source) = self.build(dim)?;
        Pair::new(source, Box::new(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    #[test]
    fn cross_polytope_means_are_well_separated() {
        let g = GaussianMixture::cross_polytope(8, 100, 10.0, 1.0).unwrap();
        let m = g.means();
        for a in 0..8 {
            let norm = m.row(a).dot(&m.row(a)).sqrt();
            assert!((norm - 5.0).abs() < 1e-9, "{norm}");
            for b in 0..a {
                let d = (&m.row(a) - &m.row(b)).mapv(|v| v * v).sum().sqrt();
                let antipodal = a / 2 == b / 2;
                let want = if antipodal { 10.0 } else { 10.0 / 2f64.sqrt() };
                assert!((d - want).abs() < 1e-9, "{a} {b} {d}");
            }
        }
        assert!(GaussianMixture::cross_polytope(8, 4, 10.0, 1.0).is_err());
        assert!(GaussianMixture::cross_polytope(3, 10, 10.0, 1.0).is_err());
    }

    #[test]
    fn mixture_samples_have_the_mixture_mean_and_spread() {
        let g = GaussianMixture::cross_polytope(4, 10, 10.0, 0.5).unwrap();
        let x = g.sample(40_000, &mut seeded_rng(0));
        let mean = calmflow_linalg::column_means(x.view());
        assert!(mean.iter().all(|v| v.abs() < 0.05), "{mean}");
        // Total variance = std² D + mean ‖m_k‖² = 0.25·10 + 25.
        let total: f64 = calmflow_linalg::covariance(x.view()).diag().sum();
        assert!((total - 27.5).abs() < 0.4, "{total}");
    }

    #[test]
    fn paper_pairs_build_in_high_dimension() {
        for kind in [
            MixturePair::TwoToFour,
            MixturePair::FourToEight,
            MixturePair::NormalToEight,
        ] {
            let pair = kind.pair(100).unwrap();
            let (x0, x1) = pair.sample(50, &mut seeded_rng(1));
            assert_eq!((x0.ncols(), x1.ncols()), (100, 100));
        }
        let (target, _) = MixturePair::TwoToFour.build(1000).unwrap();
        assert_eq!(target.components(), 4);
        assert!(MixturePair::FourToEight.pair(3).is_err());
    }

    #[test]
    fn bad_mixtures_are_rejected() {
        assert!(GaussianMixture::new(Array2::zeros((0, 3)), 1.0).is_err());
        assert!(GaussianMixture::new(Array2::zeros((2, 3)), -1.0).is_err());
        assert!(GaussianMixture::new(Array2::from_elem((1, 1), f64::NAN), 1.0).is_err());
    }
}
