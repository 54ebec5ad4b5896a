//! Damped Picard iteration on the whole grid:
//! `z^{k+1} = (1 − ω) z^k + ω (f + W K(z^k))`, `W` a rule's lower-triangular weight matrix.

use ndarray::{Array1, Array2};

use super::{
    SolveStats, VieSolution, VieSolver, VolterraEquation, validate_iteration, weighted_history,
};
use crate::error::{Result, VieError};
use crate::grid::TimeGrid;
use crate::kernel::Kernel;
use crate::quadrature::{QuadratureRule, Trapezoid};

/// Whole-grid fixed-point (Picard) iteration, started from `z^0 = f`.
///
/// For Lipschitz kernels the undamped iteration converges on any finite interval (the
/// `k`-th change is bounded by `(L t)^k / k!`); damping `ω < 1` trades speed for
/// robustness on stiff kernels. The converged iterate solves the discrete equations of
/// the chosen rule (trapezoid by default, i.e. the same solution as
/// [`super::ImplicitTrapezoid`]).
pub struct Picard<R = Trapezoid> {
    /// Quadrature rule whose weight matrix discretises the integral.
    pub rule: R,
    /// Smoothing factor `ω ∈ (0, 1]`.
    pub damping: f64,
    /// Stop when the sup-norm change of a sweep is `≤ tolerance`.
    pub tolerance: f64,
    /// Give up (typed error) after this many sweeps.
    pub max_iterations: usize,
    /// A state whose sup norm exceeds this is reported as a blow-up.
    pub blowup: f64,
}

impl Default for Picard<Trapezoid> {
    fn default() -> Self {
        Self {
            rule: Trapezoid,
            damping: 1.0,
            tolerance: 1e-12,
            max_iterations: 500,
            blowup: 1e12,
        }
    }
}

impl<R: QuadratureRule> Picard<R> {
    fn validate(&self) -> Result<()> {
        if !(self.damping > 0.0 && self.damping <= 1.0) {
            return Err(VieError::InvalidParameter {
                name: "damping",
                value: self.damping,
                reason: "the smoothing factor must lie in (0, 1]",
            });
        }
        validate_iteration(self.tolerance, self.max_iterations)
    }
}

impl<R: QuadratureRule> VieSolver for Picard<R> {
    fn order(&self) -> u32 {
        self.rule.order()
    }

    fn solve<F, K>(&self, eq: &VolterraEquation<F, K>, grid: &TimeGrid) -> Result<VieSolution>
    where
        F: Fn(f64) -> Array1<f64>,
        K: Kernel,
    {
        self.validate()?;
        let d = eq.kernel().dim();
        let n_pts = grid.len();
        let w = self.rule.weight_matrix(grid)?;
        let mut f = Array2::zeros((n_pts, d));
        for n in 0..n_pts {
            f.row_mut(n).assign(&eq.forcing_at(grid.t(n), d)?);
        }
        let mut z = f.clone();
        let mut stats = SolveStats::default();
        let mut change = f64::INFINITY;
        for _ in 0..self.max_iterations {
            stats.iterations += 1;
            // F(z)_n = f_n + Σ_j W[n, j] K(t_n, t_j, z_j).
            let mut next = f.clone();
            for n in 1..n_pts {
                let history =
                    weighted_history(eq.kernel(), grid, w.row(n), &z, n, &mut stats.kernel_evals)?;
                next.row_mut(n).scaled_add(1.0, &history);
            }
            // ‖F(z) − z‖ is the residual of the current iterate; the step is ω times it.
            let raw = &next - &z;
            stats.residual = raw.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            let delta = raw * self.damping;
            change = stats.residual * self.damping;
            z += &delta;
            stats.history.push(change);
            let magnitude = z.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            if !change.is_finite() || !magnitude.is_finite() || magnitude > self.blowup {
                let step = (0..n_pts)
                    .find(|&n| {
                        z.row(n)
                            .iter()
                            .any(|v| !v.is_finite() || v.abs() > self.blowup)
                    })
                    .unwrap_or(n_pts - 1);
                return Err(VieError::BlowUp {
                    step,
                    t: grid.t(step),
                    magnitude,
                });
            }
            if change <= self.tolerance {
                return Ok(VieSolution {
                    grid: grid.clone(),
                    z,
                    stats,
                });
            }
        }
        Err(VieError::NotConverged {
            step: n_pts,
            t: grid.end(),
            iterations: self.max_iterations,
            change,
            tolerance: self.tolerance,
        })
    }
}
