//! Classic solvers for second-kind Volterra equations
//! `z(t) = f(t) + ∫_{t_0}^t K(t, s, z(s)) ds` on a [`TimeGrid`].
//!
//! | solver | discretisation | order |
//! | --- | --- | --- |
//! | [`ExplicitRectangle`] | left rectangle, explicit | 1 |
//! | [`ImplicitTrapezoid`] | trapezoid, per-step fixed point or Newton | 2 |
//! | [`Picard`] | damped whole-grid iteration on any rule's weight matrix | the rule's |
//! | [`ProductIntegration`] | exact weights for `(t − s)^(−α)`, weakly singular kernels | 2 (smooth `z`) |
//!
//! Every solver returns the solution on the grid with [`SolveStats`]; non-convergence
//! and blow-up are typed errors.
//!
//! ```
//! use calmflow_vie::{scalar_kernel, ImplicitTrapezoid, TimeGrid, VieSolver, VolterraEquation};
//! use ndarray::array;
//! // y(t) = 1 + ∫_0^t y(s) ds  ⇒  y = e^t.
//! let eq = VolterraEquation::new(|_t: f64| array![1.0], scalar_kernel(1, |_, _| 1.0));
//! let sol = ImplicitTrapezoid::default().solve(&eq, &TimeGrid::uniform(101, 1.0).unwrap()).unwrap();
//! assert!((sol.final_state()[0] - std::f64::consts::E).abs() < 1e-4);
//! ```

mod march;
mod picard;
mod product;
mod rectangle;
mod trapezoid;

use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1};

pub use picard::Picard;
pub use product::ProductIntegration;
pub use rectangle::ExplicitRectangle;
pub use trapezoid::ImplicitTrapezoid;

use crate::error::{Result, VieError};
use crate::grid::TimeGrid;
use crate::kernel::Kernel;
use crate::quadrature::QuadratureRule;

/// `z(t) = f(t) + ∫_{t_0}^t K(t, s, z(s)) ds`: a forcing function and a kernel.
pub struct VolterraEquation<F, K> {
    forcing: F,
    kernel: K,
}

impl<F: Fn(f64) -> Array1<f64>, K> VolterraEquation<F, K> {
    /// The equation with forcing `f` (returning a vector of the kernel's dimension) and
    /// kernel `K`.
    pub fn new(forcing: F, kernel: K) -> Self {
        Self { forcing, kernel }
    }

    /// The kernel.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// `f(t)`, checked for length `dim` and finiteness.
    pub fn forcing_at(&self, t: f64, dim: usize) -> Result<Array1<f64>> {
        let f = (self.forcing)(t);
        if f.len() != dim {
            return Err(VieError::DimensionMismatch {
                what: "forcing f(t)",
                expected: dim.to_string(),
                actual: f.len().to_string(),
            });
        }
        if f.iter().any(|v| !v.is_finite()) {
            return Err(VieError::NonFinite {
                what: "forcing f(t)",
                t,
            });
        }
        Ok(f)
    }
}

/// What a solver did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SolveStats {
    /// Kernel evaluations, including those of finite-difference Jacobians.
    pub kernel_evals: usize,
    /// Nonlinear iterations: summed over steps for step-by-step solvers, sweeps for Picard.
    pub iterations: usize,
    /// Sup norm of the discrete residual of the solved equations at the end.
    pub residual: f64,
    /// Picard: sup-norm change of each sweep. Empty for step-by-step solvers.
    pub history: Vec<f64>,
}

/// The solution `z_n ≈ z(t_n)` on a grid (an `N × d` array) and the solver's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct VieSolution {
    /// The grid solved on.
    pub grid: TimeGrid,
    /// `z[[n, k]]` is component `k` at time `t_n`.
    pub z: Array2<f64>,
    /// Statistics of the solve.
    pub stats: SolveStats,
}

impl VieSolution {
    /// The state at the last grid point.
    pub fn final_state(&self) -> ArrayView1<'_, f64> {
        self.z.row(self.z.nrows() - 1)
    }
}

/// A solver for equations with a regular (bounded) kernel.
pub trait VieSolver {
    /// Nominal convergence order at a fixed final time.
    fn order(&self) -> u32;

    /// Solves `eq` on `grid`.
    fn solve<F, K>(&self, eq: &VolterraEquation<F, K>, grid: &TimeGrid) -> Result<VieSolution>
    where
        F: Fn(f64) -> Array1<f64>,
        K: Kernel;
}

/// How the implicit equation `z = c + w K(t, t, z)` of one step is solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepIteration {
    /// `z ← c + w K(t, t, z)`; converges when `w·Lip(K) < 1`.
    FixedPoint,
    /// Newton on `z − c − w K(t, t, z) = 0` with the kernel's Jacobian, or finite
    /// differences when it has none.
    #[default]
    Newton,
}

/// Per-step nonlinear iteration settings shared by the implicit solvers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepControl {
    /// Fixed point or Newton.
    pub method: StepIteration,
    /// Stop when the sup-norm update is `≤ tolerance · (1 + ‖z‖_∞)`.
    pub tolerance: f64,
    /// Give up (typed error) after this many iterations in one step.
    pub max_iterations: usize,
    /// A state whose sup norm exceeds this is reported as a blow-up.
    pub blowup: f64,
}

impl Default for StepControl {
    fn default() -> Self {
        Self {
            method: StepIteration::Newton,
            tolerance: 1e-12,
            max_iterations: 50,
            blowup: 1e12,
        }
    }
}

/// Checks the stopping rule shared by every iterative solver.
pub(crate) fn validate_iteration(tolerance: f64, max_iterations: usize) -> Result<()> {
    if !(tolerance > 0.0 && tolerance.is_finite()) {
        return Err(VieError::InvalidParameter {
            name: "tolerance",
            value: tolerance,
            reason: "must be positive and finite",
        });
    }
    if max_iterations == 0 {
        return Err(VieError::InvalidParameter {
            name: "max_iterations",
            value: 0.0,
            reason: "must be at least 1",
        });
    }
    Ok(())
}

impl StepControl {
    pub(crate) fn validate(&self) -> Result<()> {
        validate_iteration(self.tolerance, self.max_iterations)?;
        if !(self.blowup > 0.0) {
            return Err(VieError::InvalidParameter {
                name: "blowup",
                value: self.blowup,
                reason: "must be positive",
            });
        }
        Ok(())
    }
}

/// Evaluates a regular kernel with length and finiteness checks, counting evaluations.
pub(crate) fn eval_kernel<K: Kernel>(
    kernel: &K,
    t: f64,
    s: f64,
    z: ArrayView1<'_, f64>,
    mut out: ArrayViewMut1<'_, f64>,
    evals: &mut usize,
) -> Result<()> {
    kernel.eval(t, s, z, out.view_mut());
    count_and_check(out.view(), evals, "kernel K(t, s, z)", t)
}

/// Counts one kernel evaluation and rejects a non-finite result.
pub(crate) fn count_and_check(
    out: ArrayView1<'_, f64>,
    evals: &mut usize,
    what: &'static str,
    t: f64,
) -> Result<()> {
    *evals += 1;
    if out.iter().any(|v| !v.is_finite()) {
        return Err(VieError::NonFinite { what, t });
    }
    Ok(())
}

/// Scores a candidate solution `z` (an `N × d` array on `grid`):
/// `max_n ‖z_n − f(t_n) − Σ_j W[n, j] K(t_n, t_j, z_j)‖_∞` with `W` the weight matrix
/// of `rule`. For the exact solution this is the quadrature error of `rule`.
pub fn residual<F, K>(
    eq: &VolterraEquation<F, K>,
    grid: &TimeGrid,
    z: &Array2<f64>,
    rule: &dyn QuadratureRule,
) -> Result<f64>
where
    F: Fn(f64) -> Array1<f64>,
    K: Kernel,
{
    let d = eq.kernel().dim();
    if z.dim() != (grid.len(), d) {
        return Err(VieError::DimensionMismatch {
            what: "candidate solution",
            expected: format!("({}, {d})", grid.len()),
            actual: format!("{:?}", z.dim()),
        });
    }
    let w = rule.weight_matrix(grid)?;
    let mut evals = 0;
    let mut worst: f64 = 0.0;
    for n in 0..grid.len() {
        let tn = grid.t(n);
        let history = weighted_history(eq.kernel(), grid, w.row(n), z, n, &mut evals)?;
        let r = &z.row(n) - &eq.forcing_at(tn, d)? - &history;
        worst = worst.max(sup_norm(r.view()));
    }
    Ok(worst)
}

/// The discrete Volterra integral at row `n`: `Σ_{j ≤ n} W[n, j] K(t_n, t_j, z_j)`, with
/// `weights` the row `W[n, ·]` (zero weights skip their kernel evaluation).
pub(crate) fn weighted_history<K: Kernel>(
    kernel: &K,
    grid: &TimeGrid,
    weights: ArrayView1<'_, f64>,
    z: &Array2<f64>,
    n: usize,
    evals: &mut usize,
) -> Result<Array1<f64>> {
    let tn = grid.t(n);
    let mut sum = Array1::zeros(kernel.dim());
    let mut k = Array1::zeros(kernel.dim());
    for j in 0..=n {
        if weights[j] != 0.0 {
            eval_kernel(kernel, tn, grid.t(j), z.row(j), k.view_mut(), evals)?;
            sum.scaled_add(weights[j], &k);
        }
    }
    Ok(sum)
}

pub(crate) fn sup_norm(v: ArrayView1<'_, f64>) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Solves the dense system `a x = b` in place (`b` becomes `x`) by Gaussian elimination
/// with partial pivoting; returns `false` when `a` is singular.
pub(crate) fn solve_dense(a: &mut Array2<f64>, b: &mut Array1<f64>) -> bool {
    let n = b.len();
    for col in 0..n {
        let (piv, max) = (col..n)
            .map(|r| (r, a[[r, col]].abs()))
            .fold((col, -1.0), |best, x| if x.1 > best.1 { x } else { best });
        if !(max > f64::EPSILON * 1e-3) {
            return false;
        }
        if piv != col {
            for c in 0..n {
                a.swap([piv, c], [col, c]);
            }
            b.swap(piv, col);
        }
        for r in col + 1..n {
            let f = a[[r, col]] / a[[col, col]];
            if f != 0.0 {
                for c in col..n {
                    a[[r, c]] -= f * a[[col, c]];
                }
                b[r] -= f * b[col];
            }
        }
    }
    for r in (0..n).rev() {
        let mut s = b[r];
        for c in r + 1..n {
            s -= a[[r, c]] * b[c];
        }
        b[r] = s / a[[r, r]];
    }
    b.iter().all(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn dense_solver_solves_and_detects_singularity() {
        let mut a = array![[0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [3.0, 0.0, 1.0]];
        let x = array![1.0, -2.0, 0.5];
        let mut b = a.dot(&x);
        assert!(solve_dense(&mut a, &mut b));
        for (u, v) in b.iter().zip(&x) {
            assert!((u - v).abs() < 1e-14);
        }
        let mut s = array![[1.0, 2.0], [2.0, 4.0]];
        let mut b = array![1.0, 1.0];
        assert!(!solve_dense(&mut s, &mut b));
    }
}
