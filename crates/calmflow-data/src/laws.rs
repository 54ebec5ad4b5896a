//! Synthetic laws that a mixture of a few diagonal Gaussians does not model exactly: a
//! curved two-dimensional surface embedded in `D` dimensions, a multi-scale heavy-tailed
//! law, and Gaussian mixtures with unequal weights and anisotropic, rotated covariances.
//! The quality suite scores the heads on them beside the real data sets, so that a head
//! tuned to isotropic mixtures cannot pass by construction.
//!
//! Each law is fixed by a construction seed (its frequencies, rotations, means), separate
//! from the seed of the draws.

use ndarray::{Array1, Array2};
use rand_distr::{ChiSquared, Distribution};

use crate::error::{DataError, Result};
use crate::rng::{Rng, index, normal, seeded_rng, uniform};
use crate::synthetic::{Sampler, fill};

/// A Haar-random `D × D` orthogonal matrix: the eigenvectors of a symmetric Gaussian
/// matrix (the Gaussian orthogonal ensemble, whose eigenvector law is invariant under
/// rotations).
fn random_rotation(dim: usize, rng: &mut Rng) -> Array2<f64> {
    let g = Array2::from_shape_fn((dim, dim), |_| normal(rng));
    let symmetric = &g + &g.t();
    calmflow_linalg::symmetric_eigen(&symmetric).1
}

fn check_dim(dim: usize, min: usize) -> Result<()> {
    if dim < min {
        return Err(DataError::invalid(
            "dim",
            format!("must be at least {min}, got {dim}"),
        ));
    }
    Ok(())
}

fn check_scale(name: &'static str, v: f64) -> Result<()> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(DataError::invalid(
            name,
            format!("must be finite and ≥ 0, got {v}"),
        ));
    }
    Ok(())
}

/// A smooth two-dimensional surface curved in every one of `D` coordinates, plus isotropic
/// noise: latent `u ~ U([0, 1]²)`, `x_j = √2 · sin(2π a_j·u + φ_j) + noise·ε_j`, with
/// fixed frequencies `a_j ~ N(0, I_2)` and phases `φ_j ~ U[0, 2π)`. Each coordinate has
/// about one period over the square, so the surface bends in all directions; its
/// covariance is spread over many principal directions although the data lie near a
/// 2-dimensional set.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvedSurface {
    frequencies: Array2<f64>,
    phases: Array1<f64>,
    noise: f64,
}

impl CurvedSurface {
    /// The surface in `dim ≥ 3` dimensions with noise standard deviation `noise`, built
    /// from `construction_seed`.
    ///
    /// ```
    /// use calmflow_data::{CurvedSurface, Sampler, seeded_rng};
    /// let s = CurvedSurface::new(10, 0.05, 1).unwrap();
    /// let x = s.sample(4, &mut seeded_rng(0));
    /// assert_eq!(x.dim(), (4, 10));
    /// // Without noise every coordinate lies on the sine's range [−√2, √2].
    /// let clean = CurvedSurface::new(10, 0.0, 1).unwrap().sample(500, &mut seeded_rng(0));
    /// assert!(clean.iter().all(|v| v.abs() <= 2f32.sqrt() + 1e-6));
    /// ```
    pub fn new(dim: usize, noise: f64, construction_seed: u64) -> Result<Self> {
        check_dim(dim, 3)?;
        check_scale("noise", noise)?;
        let mut rng = seeded_rng(construction_seed);
        let frequencies = Array2::from_shape_fn((dim, 2), |_| normal(&mut rng));
        let phases = Array1::from_shape_fn(dim, |_| std::f64::consts::TAU * uniform(&mut rng));
        Ok(Self {
            frequencies,
            phases,
            noise,
        })
    }

    /// The noise-free point of latent coordinates `u ∈ [0, 1]²`.
    pub fn point(&self, u: [f64; 2]) -> Array1<f64> {
        Array1::from_shape_fn(self.phases.len(), |j| {
            let a = self.frequencies.row(j);
            std::f64::consts::SQRT_2
                * (std::f64::consts::TAU * (a[0] * u[0] + a[1] * u[1]) + self.phases[j]).sin()
        })
    }
}

impl Sampler for CurvedSurface {
    fn name(&self) -> String {
        format!("curved-surface{}", self.dim())
    }
    fn dim(&self) -> usize {
        self.phases.len()
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        fill(n, self.dim(), |p| {
            let u = [uniform(rng), uniform(rng)];
            for (v, clean) in p.iter_mut().zip(self.point(u)) {
                *v = clean + self.noise * normal(rng);
            }
        })
    }
}

/// A multivariate Student t with `ν` degrees of freedom whose principal scales span two
/// orders of magnitude, in a rotated frame: `x = R (s ⊙ z) / √(w/ν)`, `z ~ N(0, I_D)`,
/// `w ~ χ²_ν` shared by the coordinates, `s_j` log-spaced from `min_scale` to
/// `max_scale`, `R` a fixed random rotation. Heavy tails in every direction, one shared
/// radial factor (so the coordinates are dependent though uncorrelated in the rotated
/// frame), and no axis-aligned structure for a diagonal law to exploit. Its covariance is
/// `ν/(ν − 2) · R diag(s²) Rᵀ` for `ν > 2`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiScaleStudent {
    rotation: Array2<f64>,
    scales: Array1<f64>,
    dof: f64,
}

impl MultiScaleStudent {
    /// The law in `dim ≥ 2` dimensions with `dof > 2` degrees of freedom and principal
    /// scales from `min_scale` to `max_scale` (`0 < min ≤ max`), built from
    /// `construction_seed`.
    ///
    /// ```
    /// use calmflow_data::{MultiScaleStudent, Sampler, seeded_rng};
    /// let t = MultiScaleStudent::new(10, 5.0, 0.1, 3.0, 2).unwrap();
    /// assert_eq!(t.scales().len(), 10);
    /// assert!((t.scales()[0] - 0.1).abs() < 1e-12 && (t.scales()[9] - 3.0).abs() < 1e-12);
    /// assert_eq!(t.sample(3, &mut seeded_rng(0)).dim(), (3, 10));
    /// assert!(MultiScaleStudent::new(10, 2.0, 0.1, 3.0, 2).is_err()); // no variance
    /// ```
    pub fn new(
        dim: usize,
        dof: f64,
        min_scale: f64,
        max_scale: f64,
        construction_seed: u64,
    ) -> Result<Self> {
        check_dim(dim, 2)?;
        if !(dof > 2.0 && dof.is_finite()) {
            return Err(DataError::invalid(
                "dof",
                format!("must be finite and > 2 (a finite covariance), got {dof}"),
            ));
        }
        if !(min_scale > 0.0 && min_scale <= max_scale && max_scale.is_finite()) {
            return Err(DataError::invalid(
                "scales",
                format!("need 0 < min_scale ≤ max_scale < ∞, got {min_scale} and {max_scale}"),
            ));
        }
        let ratio = (max_scale / min_scale).ln();
        let scales = Array1::from_shape_fn(dim, |j| {
            min_scale * (ratio * j as f64 / (dim - 1) as f64).exp()
        });
        let mut rng = seeded_rng(construction_seed);
        Ok(Self {
            rotation: random_rotation(dim, &mut rng),
            scales,
            dof,
        })
    }

    /// The principal scales `s_j`, smallest first.
    pub fn scales(&self) -> &Array1<f64> {
        &self.scales
    }

    /// The covariance `ν/(ν − 2) · R diag(s²) Rᵀ`.
    pub fn covariance(&self) -> Array2<f64> {
        let scaled = &self.rotation * &self.scales.mapv(|s| s * s);
        scaled.dot(&self.rotation.t()) * (self.dof / (self.dof - 2.0))
    }
}

impl Sampler for MultiScaleStudent {
    fn name(&self) -> String {
        format!("student{}-t{}", self.dim(), self.dof)
    }
    fn dim(&self) -> usize {
        self.scales.len()
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        let chi = ChiSquared::new(self.dof).expect("dof > 2 checked at construction");
        let dim = self.dim();
        let mut z = vec![0.0; dim];
        fill(n, dim, |p| {
            let w: f64 = chi.sample(rng);
            let radial = (self.dof / w).sqrt();
            for (zj, s) in z.iter_mut().zip(&self.scales) {
                *zj = s * normal(rng) * radial;
            }
            for (v, row) in p.iter_mut().zip(self.rotation.rows()) {
                *v = row.iter().zip(&z).map(|(r, zj)| r * zj).sum();
            }
        })
    }
}

/// A Gaussian mixture with unequal weights and full, anisotropic covariances:
/// `Σ_k w_k N(m_k, L_k L_kᵀ)`, `L_k = R_k diag(σ_k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnisotropicMixture {
    weights: Vec<f64>,
    means: Array2<f64>,
    factors: Vec<Array2<f64>>,
}

impl AnisotropicMixture {
    /// `k` components in `dim ≥ 2` dimensions built from `construction_seed`: weights
    /// proportional to `1, 1/2, …, 1/k` (Zipf), means drawn from `N(0, spread² I)`, and
    /// per-component principal scales log-spaced from `0.1` to `0.6`, shuffled and rotated
    /// by a random rotation of each component's own.
    ///
    /// ```
    /// use calmflow_data::{AnisotropicMixture, Sampler, seeded_rng};
    /// let m = AnisotropicMixture::seeded(3, 10, 2.0, 3).unwrap();
    /// let w = m.weights();
    /// assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    /// assert!((w[0] / w[2] - 3.0).abs() < 1e-12); // Zipf: 1 : 1/2 : 1/3
    /// assert_eq!(m.sample(5, &mut seeded_rng(0)).dim(), (5, 10));
    /// ```
    pub fn seeded(k: usize, dim: usize, spread: f64, construction_seed: u64) -> Result<Self> {
        check_dim(dim, 2)?;
        if k == 0 {
            return Err(DataError::invalid("k", "need at least one component"));
        }
        check_scale("spread", spread)?;
        let mut rng = seeded_rng(construction_seed);
        let harmonic: f64 = (1..=k).map(|i| 1.0 / i as f64).sum();
        let weights = (1..=k).map(|i| 1.0 / (i as f64 * harmonic)).collect();
        let means = Array2::from_shape_fn((k, dim), |_| spread * normal(&mut rng));
        let factors = (0..k)
            .map(|_| {
                let mut scales: Vec<f64> = (0..dim)
                    .map(|j| 0.1 * (6f64.ln() * j as f64 / (dim - 1) as f64).exp())
                    .collect();
                for i in (1..dim).rev() {
                    scales.swap(i, index(&mut rng, i + 1));
                }
                random_rotation(dim, &mut rng) * &Array1::from(scales)
            })
            .collect();
        Ok(Self {
            weights,
            means,
            factors,
        })
    }

    /// The component weights (summing to 1).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The `K × D` means.
    pub fn means(&self) -> &Array2<f64> {
        &self.means
    }

    /// The covariance `L_k L_kᵀ` of component `k`.
    pub fn covariance(&self, k: usize) -> Array2<f64> {
        self.factors[k].dot(&self.factors[k].t())
    }
}

impl Sampler for AnisotropicMixture {
    fn name(&self) -> String {
        format!("anisotropic-gmm{}x{}", self.weights.len(), self.dim())
    }
    fn dim(&self) -> usize {
        self.means.ncols()
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        let dim = self.dim();
        let mut z = vec![0.0; dim];
        fill(n, dim, |p| {
            let mut u = uniform(rng);
            let mut k = self.weights.len() - 1;
            for (i, w) in self.weights.iter().enumerate() {
                if u < *w {
                    k = i;
                    break;
                }
                u -= w;
            }
            z.iter_mut().for_each(|v| *v = normal(rng));
            let m = self.means.row(k);
            for ((v, row), mu) in p.iter_mut().zip(self.factors[k].rows()).zip(m) {
                *v = mu + row.iter().zip(&z).map(|(l, zj)| l * zj).sum::<f64>();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_covariance(x: &Array2<f32>) -> Array2<f64> {
        calmflow_linalg::covariance(x.view())
    }

    fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    #[test]
    fn rotations_are_orthogonal() {
        let r = random_rotation(7, &mut seeded_rng(4));
        let eye = r.t().dot(&r);
        assert!(max_abs_diff(&eye, &Array2::eye(7)) < 1e-10);
    }

    #[test]
    fn student_covariance_matches_its_closed_form() {
        // ν = 12 keeps the eighth moment finite, so that 200 000 draws estimate the
        // covariance and the kurtosis with a finite variance.
        let t = MultiScaleStudent::new(5, 12.0, 0.2, 2.0, 9).unwrap();
        let x = t.sample(200_000, &mut seeded_rng(1));
        let diff = max_abs_diff(&sample_covariance(&x), &t.covariance());
        let scale = t.covariance().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(diff < 0.02 * scale, "covariance off by {diff} of {scale}");
        // Heavier tails than a Gaussian of the same covariance: excess kurtosis of the
        // radial part: every coordinate is a scaled univariate t_ν, excess kurtosis
        // 6/(ν − 4) = 0.75.
        let c = t.covariance();
        let first = x.column(0).mapv(f64::from);
        let var = c[[0, 0]];
        let kurtosis = first.mapv(|v| v.powi(4)).mean().unwrap() / (var * var) - 3.0;
        assert!((kurtosis - 0.75).abs() < 0.2, "excess kurtosis {kurtosis}");
    }

    #[test]
    fn mixture_moments_match_their_closed_form() {
        let m = AnisotropicMixture::seeded(3, 4, 2.0, 5).unwrap();
        let x = m.sample(200_000, &mut seeded_rng(2));
        // Mean Σ w_k m_k; covariance Σ w_k (C_k + m_k m_kᵀ) − μ μᵀ.
        let w = Array1::from(m.weights().to_vec());
        let mean = m.means().t().dot(&w);
        let mut second = Array2::<f64>::zeros((4, 4));
        for k in 0..3 {
            let mk = m.means().row(k).to_owned().insert_axis(ndarray::Axis(1));
            second = second + (m.covariance(k) + mk.dot(&mk.t())) * w[k];
        }
        let mu = mean.clone().insert_axis(ndarray::Axis(1));
        let cov = second - mu.dot(&mu.t());
        let sample_mean = calmflow_linalg::column_means(x.view());
        let mean_err = (&sample_mean - &mean)
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(mean_err < 0.02, "mean off by {mean_err}");
        let cov_err = max_abs_diff(&sample_covariance(&x), &cov);
        assert!(cov_err < 0.05, "covariance off by {cov_err}");
        // Each component's principal scales are 0.1 … 0.6 whatever its rotation.
        let (eig, _) = calmflow_linalg::symmetric_eigen(&m.covariance(1));
        let mut sd: Vec<f64> = eig.iter().map(|v| v.sqrt()).collect();
        sd.sort_by(f64::total_cmp);
        assert!(
            (sd[0] - 0.1).abs() < 1e-9 && (sd[3] - 0.6).abs() < 1e-9,
            "{sd:?}"
        );
    }

    #[test]
    fn surface_points_lie_on_the_closed_form() {
        let s = CurvedSurface::new(6, 0.0, 3).unwrap();
        let p = s.point([0.25, 0.5]);
        let a = s.frequencies.row(2);
        let expected = std::f64::consts::SQRT_2
            * (std::f64::consts::TAU * (0.25 * a[0] + 0.5 * a[1]) + s.phases[2]).sin();
        assert!((p[2] - expected).abs() < 1e-12);
        // With noise σ the sample's mean squared distance to the clean coordinates is
        // σ²·D: measured on draws whose latent is replayed from the same stream.
        let noisy = CurvedSurface::new(6, 0.1, 3).unwrap();
        let mut rng = seeded_rng(11);
        let x = noisy.sample(20_000, &mut rng);
        let mut replay = seeded_rng(11);
        let mut sq = 0.0;
        for row in x.rows() {
            let u = [uniform(&mut replay), uniform(&mut replay)];
            for _ in 0..6 {
                normal(&mut replay);
            }
            let clean = noisy.point(u);
            sq += row
                .iter()
                .zip(&clean)
                .map(|(v, c)| (f64::from(*v) - c).powi(2))
                .sum::<f64>();
        }
        let per_coordinate = sq / (20_000.0 * 6.0);
        assert!((per_coordinate - 0.01).abs() < 5e-4, "{per_coordinate}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(CurvedSurface::new(2, 0.1, 0).is_err());
        assert!(CurvedSurface::new(10, -0.1, 0).is_err());
        assert!(MultiScaleStudent::new(10, 5.0, 0.0, 1.0, 0).is_err());
        assert!(MultiScaleStudent::new(10, 5.0, 2.0, 1.0, 0).is_err());
        assert!(AnisotropicMixture::seeded(0, 10, 1.0, 0).is_err());
        assert!(AnisotropicMixture::seeded(3, 1, 1.0, 0).is_err());
    }
}
