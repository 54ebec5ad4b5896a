//! Conditional probability paths between a source point `x0` and a target point `x1`.
//!
//! `z_t = α_t x0 + β_t x1 + σ_t ε`: the straight path (`α = 1 − t`, `β = t`, the default),
//! the variance-preserving trigonometric path (`α = cos(πt/2)`, `β = sin(πt/2)`), with no
//! noise, constant noise `σ_t = σ`, or Brownian-bridge noise `σ_t = σ√(t(1−t))`
//! (docs/method.md §2; torchcfm's `ConditionalFlowMatcher`, `VariancePreservingConditionalFlowMatcher`
//! and `SchrodingerBridgeConditionalFlowMatcher`). The conditional velocity is
//! `u_t = α'_t x0 + β'_t x1 + (σ'_t/σ_t)(z_t − μ_t)`.
//!
//! ```
//! use calmflow_train::{ConditionalPath, Interpolant};
//! let path = ConditionalPath::straight();
//! let (a, b) = path.coefficients(0.25);
//! assert_eq!((a, b), (0.75, 0.25));
//! let vp = ConditionalPath { interpolant: Interpolant::VariancePreserving, ..path };
//! let (a, b) = vp.coefficients(0.5);
//! assert!((a * a + b * b - 1.0).abs() < 1e-12);
//! ```

use std::f64::consts::FRAC_PI_2;

use calmflow_data::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};

/// The mean of the path between `x0` and `x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolant {
    /// `μ_t = (1 − t) x0 + t x1`.
    #[default]
    Straight,
    /// `μ_t = cos(πt/2) x0 + sin(πt/2) x1`.
    VariancePreserving,
}

/// How the path's noise scale depends on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseSchedule {
    /// `σ_t = σ` (torchcfm's I-CFM and OT-CFM).
    #[default]
    Constant,
    /// `σ_t = σ√(t(1−t))`, zero at both ends (Schrödinger-bridge CFM). Whole trajectories
    /// are drawn as a scaled Brownian bridge, so neighbouring time points are correlated.
    Bridge,
}

/// A conditional path: interpolant, noise schedule and noise scale `σ ≥ 0`. A field
/// left out of a configuration keeps the straight, noiseless path's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConditionalPath {
    /// The mean of the path.
    pub interpolant: Interpolant,
    /// The time dependence of the noise.
    pub noise: NoiseSchedule,
    /// The noise scale `σ` (0: deterministic paths).
    pub sigma: f64,
}

impl Default for ConditionalPath {
    fn default() -> Self {
        Self::straight()
    }
}

fn normal(rng: &mut Rng) -> f64 {
    StandardNormal.sample(rng)
}

impl ConditionalPath {
    /// The straight, noise-free path (CaLMFlow's default).
    pub fn straight() -> Self {
        Self {
            interpolant: Interpolant::Straight,
            noise: NoiseSchedule::Constant,
            sigma: 0.0,
        }
    }

    /// Checks `σ`.
    pub fn validate(&self) -> Result<()> {
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            return Err(invalid(format!(
                "path sigma = {} must be finite and ≥ 0",
                self.sigma
            )));
        }
        Ok(())
    }

    /// `(α_t, β_t)`: `μ_t = α_t x0 + β_t x1`.
    pub fn coefficients(&self, t: f64) -> (f64, f64) {
        match self.interpolant {
            Interpolant::Straight => (1.0 - t, t),
            Interpolant::VariancePreserving => ((FRAC_PI_2 * t).cos(), (FRAC_PI_2 * t).sin()),
        }
    }

    /// `(α'_t, β'_t)`.
    pub fn derivatives(&self, t: f64) -> (f64, f64) {
        match self.interpolant {
            Interpolant::Straight => (-1.0, 1.0),
            Interpolant::VariancePreserving => (
                -FRAC_PI_2 * (FRAC_PI_2 * t).sin(),
                FRAC_PI_2 * (FRAC_PI_2 * t).cos(),
            ),
        }
    }

    /// The noise scale `σ_t`.
    pub fn sigma_t(&self, t: f64) -> f64 {
        match self.noise {
            NoiseSchedule::Constant => self.sigma,
            NoiseSchedule::Bridge => self.sigma * (t * (1.0 - t)).max(0.0).sqrt(),
        }
    }

    /// `σ'_t / σ_t`, the factor of `z_t − μ_t` in the conditional velocity (0 where the
    /// noise vanishes or is constant).
    pub fn noise_velocity_factor(&self, t: f64) -> f64 {
        match self.noise {
            NoiseSchedule::Constant => 0.0,
            NoiseSchedule::Bridge => {
                let v = t * (1.0 - t);
                if self.sigma == 0.0 || v <= 0.0 {
                    0.0
                } else {
                    (1.0 - 2.0 * t) / (2.0 * v)
                }
            }
        }
    }

    /// One point of the path at time `t` and its conditional velocity, written into
    /// `z` and `u` (all slices of length `D`).
    pub fn point(
        &self,
        t: f64,
        x0: &[f32],
        x1: &[f32],
        rng: &mut Rng,
        z: &mut [f32],
        u: &mut [f32],
    ) {
        let (a, b) = self.coefficients(t);
        let (da, db) = self.derivatives(t);
        let s = self.sigma_t(t);
        let k = self.noise_velocity_factor(t);
        for d in 0..x0.len() {
            let (p, q) = (x0[d] as f64, x1[d] as f64);
            let noise = if s > 0.0 { s * normal(rng) } else { 0.0 };
            z[d] = (a * p + b * q + noise) as f32;
            u[d] = (da * p + db * q + k * noise) as f32;
        }
    }

    /// A whole path on the grid `times`, written row-major into `out` (`times.len() × D`):
    /// `z_i = μ_{t_i} + σ_{t_i} ε_i` with independent `ε_i` for constant noise, or a scaled
    /// Brownian bridge for bridge noise.
    pub fn trajectory(
        &self,
        times: &[f64],
        x0: &[f32],
        x1: &[f32],
        rng: &mut Rng,
        out: &mut [f32],
    ) {
        let dim = x0.len();
        let mut bridge = vec![
            0.0f64;
            if self.noise == NoiseSchedule::Bridge && self.sigma > 0.0 {
                times.len() * dim
            } else {
                0
            }
        ];
        if !bridge.is_empty() {
            // Brownian motion W on the grid, then B_t = W_t − t·W_1 (for t in [0, 1]).
            let mut w = vec![0.0f64; dim];
            let mut prev = times[0];
            for (i, &t) in times.iter().enumerate() {
                let dt = (t - prev).max(0.0);
                for (d, wd) in w.iter_mut().enumerate() {
                    *wd += dt.sqrt() * normal(rng);
                    bridge[i * dim + d] = *wd;
                }
                prev = t;
            }
            let (t_first, t_last) = (times[0], times[times.len() - 1]);
            let span = t_last - t_first;
            for (i, &t) in times.iter().enumerate() {
                let frac = if span > 0.0 {
                    (t - t_first) / span
                } else {
                    0.0
                };
                for d in 0..dim {
                    bridge[i * dim + d] -= frac * w[d];
                }
            }
        }
        for (i, &t) in times.iter().enumerate() {
            let (a, b) = self.coefficients(t);
            for d in 0..dim {
                let noise = match self.noise {
                    _ if self.sigma == 0.0 => 0.0,
                    NoiseSchedule::Constant => self.sigma * normal(rng),
                    NoiseSchedule::Bridge => self.sigma * bridge[i * dim + d],
                };
                out[i * dim + d] = (a * x0[d] as f64 + b * x1[d] as f64 + noise) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calmflow_data::seeded_rng;

    /// Finite differences of the noise-free mean agree with the analytic velocity.
    #[test]
    fn velocity_is_the_time_derivative_of_the_mean() {
        for interpolant in [Interpolant::Straight, Interpolant::VariancePreserving] {
            let path = ConditionalPath {
                interpolant,
                ..ConditionalPath::straight()
            };
            let (x0, x1) = ([0.3f32, -1.0], [2.0f32, 0.5]);
            let mut rng = seeded_rng(0);
            let (mut z, mut u) = ([0.0f32; 2], [0.0f32; 2]);
            let (mut zp, mut zm, mut scratch) = ([0.0f32; 2], [0.0f32; 2], [0.0f32; 2]);
            let (t, h) = (0.37, 1e-3);
            path.point(t, &x0, &x1, &mut rng, &mut z, &mut u);
            path.point(t + h, &x0, &x1, &mut rng, &mut zp, &mut scratch);
            path.point(t - h, &x0, &x1, &mut rng, &mut zm, &mut scratch);
            for d in 0..2 {
                let fd = (zp[d] as f64 - zm[d] as f64) / (2.0 * h);
                assert!(
                    (fd - u[d] as f64).abs() < 1e-3,
                    "{interpolant:?}: {fd} vs {}",
                    u[d]
                );
            }
        }
    }

    /// Bridge noise: pinned at both ends, variance σ² t(1−t) in between (Monte Carlo,
    /// 20 000 paths, 3-σ tolerance of the variance estimate).
    #[test]
    fn bridge_trajectories_have_the_bridge_variance() {
        let path = ConditionalPath {
            noise: NoiseSchedule::Bridge,
            sigma: 0.5,
            ..ConditionalPath::straight()
        };
        let times: Vec<f64> = (0..5).map(|i| i as f64 / 4.0).collect();
        let mut rng = seeded_rng(1);
        let n = 20_000;
        let mut sum2 = [0.0f64; 5];
        let mut out = [0.0f32; 5];
        for _ in 0..n {
            path.trajectory(&times, &[0.0], &[0.0], &mut rng, &mut out);
            for i in 0..5 {
                sum2[i] += (out[i] as f64).powi(2);
            }
        }
        assert_eq!(sum2[0], 0.0);
        assert!(sum2[4] < 1e-9 * n as f64);
        for i in 1..4 {
            let t = times[i];
            let want = 0.25 * t * (1.0 - t);
            let got = sum2[i] / n as f64;
            let tol = 3.0 * want * (2.0 / n as f64).sqrt();
            assert!((got - want).abs() < tol, "t = {t}: {got} vs {want}");
        }
    }

    /// Bridge velocity: `u = x1 − x0 + (1−2t)/(2t(1−t))·(z − μ)` (torchcfm's SB-CFM).
    #[test]
    fn bridge_velocity_matches_torchcfm() {
        let path = ConditionalPath {
            noise: NoiseSchedule::Bridge,
            sigma: 0.3,
            ..ConditionalPath::straight()
        };
        let (x0, x1) = ([1.0f32], [3.0f32]);
        let (mut z, mut u) = ([0.0f32], [0.0f32]);
        let t = 0.2;
        path.point(t, &x0, &x1, &mut seeded_rng(5), &mut z, &mut u);
        let mu = 0.8 * 1.0 + 0.2 * 3.0;
        let want = 2.0 + (1.0 - 2.0 * t) / (2.0 * t * (1.0 - t)) * (z[0] as f64 - mu);
        assert!((u[0] as f64 - want).abs() < 1e-5);
        assert!(path.validate().is_ok());
        assert!(
            ConditionalPath {
                sigma: -1.0,
                ..path
            }
            .validate()
            .is_err()
        );
    }
}
