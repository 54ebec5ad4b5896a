//! The step-by-step engine shared by the rectangle, trapezoid and product-integration
//! solvers: `z_n = f_n + Σ_{j<n} w_{n,j} K(t_n, t_j, z_j) + w_{n,n} K(t_n, t_n, z_n)`.

use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1, ArrayViewMut2};

use super::{SolveStats, StepControl, StepIteration, solve_dense, sup_norm};
use crate::error::{Result, VieError};
use crate::grid::TimeGrid;

/// The discretised kernel as the engine sees it: evaluation (checked, counted) and an
/// optional analytic Jacobian.
pub(crate) trait DiscreteKernel {
    fn dim(&self) -> usize;
    fn eval(
        &self,
        t: f64,
        s: f64,
        z: ArrayView1<'_, f64>,
        out: ArrayViewMut1<'_, f64>,
        evals: &mut usize,
    ) -> Result<()>;
    fn jacobian(&self, t: f64, s: f64, z: ArrayView1<'_, f64>, jac: ArrayViewMut2<'_, f64>)
    -> bool;
}

/// Marches over `grid`, row `n` of the weights given by `weights_row(n)` (length `n + 1`).
pub(crate) fn march(
    grid: &TimeGrid,
    forcing: impl Fn(f64) -> Result<Array1<f64>>,
    kernel: &impl DiscreteKernel,
    weights_row: impl Fn(usize) -> Result<Vec<f64>>,
    control: &StepControl,
) -> Result<(Array2<f64>, SolveStats)> {
    control.validate()?;
    let d = kernel.dim();
    let n_pts = grid.len();
    let mut z = Array2::zeros((n_pts, d));
    let mut stats = SolveStats::default();
    z.row_mut(0).assign(&forcing(grid.t(0))?);
    check_state(z.row(0), 0, grid.t(0), control.blowup)?;

    let mut k = Array1::zeros(d);
    for n in 1..n_pts {
        let tn = grid.t(n);
        let w = weights_row(n)?;
        let mut c = forcing(tn)?;
        for (j, &wj) in w[..n].iter().enumerate() {
            if wj != 0.0 {
                kernel.eval(
                    tn,
                    grid.t(j),
                    z.row(j),
                    k.view_mut(),
                    &mut stats.kernel_evals,
                )?;
                c.scaled_add(wj, &k);
            }
        }
        let wnn = w[n];
        let zn = if wnn == 0.0 {
            c
        } else {
            // Start from the previous state: the solution is continuous in t.
            let start = z.row(n - 1).to_owned();
            solve_step(kernel, tn, &c, wnn, start, control, n, &mut stats)?
        };
        check_state(zn.view(), n, tn, control.blowup)?;
        z.row_mut(n).assign(&zn);
    }
    Ok((z, stats))
}

fn check_state(z: ArrayView1<'_, f64>, step: usize, t: f64, blowup: f64) -> Result<()> {
    let m = sup_norm(z);
    if !m.is_finite() || m > blowup || z.iter().any(|v| v.is_nan()) {
        return Err(VieError::BlowUp {
            step,
            t,
            magnitude: m,
        });
    }
    Ok(())
}

/// Solves `z = c + w K(t, t, z)`; updates `stats` and `stats.residual`.
#[allow(clippy::too_many_arguments)]
fn solve_step(
    kernel: &impl DiscreteKernel,
    t: f64,
    c: &Array1<f64>,
    w: f64,
    mut z: Array1<f64>,
    control: &StepControl,
    step: usize,
    stats: &mut SolveStats,
) -> Result<Array1<f64>> {
    let d = z.len();
    let mut k = Array1::zeros(d);
    let mut change = f64::INFINITY;
    for _ in 0..control.max_iterations {
        stats.iterations += 1;
        kernel.eval(t, t, z.view(), k.view_mut(), &mut stats.kernel_evals)?;
        // g = z − c − w K(z): the residual of the step equation.
        let g = &z - c - &(&k * w);
        let update = match control.method {
            StepIteration::FixedPoint => -&g,
            StepIteration::Newton => {
                let mut jac = Array2::zeros((d, d));
                if !kernel.jacobian(t, t, z.view(), jac.view_mut()) {
                    finite_difference_jacobian(kernel, t, &z, &k, &mut jac, stats)?;
                }
                let mut a = Array2::eye(d) - &(jac * w);
                let mut rhs = -&g;
                if !solve_dense(&mut a, &mut rhs) {
                    return Err(VieError::SingularJacobian { step, t });
                }
                rhs
            }
        };
        z += &update;
        change = sup_norm(update.view());
        if !change.is_finite() || sup_norm(z.view()) > control.blowup {
            return Err(VieError::BlowUp {
                step,
                t,
                magnitude: sup_norm(z.view()),
            });
        }
        if change <= control.tolerance * (1.0 + sup_norm(z.view())) {
            kernel.eval(t, t, z.view(), k.view_mut(), &mut stats.kernel_evals)?;
            let g = &z - c - &(&k * w);
            stats.residual = stats.residual.max(sup_norm(g.view()));
            return Ok(z);
        }
    }
    Err(VieError::NotConverged {
        step,
        t,
        iterations: control.max_iterations,
        change,
        tolerance: control.tolerance,
    })
}

fn finite_difference_jacobian(
    kernel: &impl DiscreteKernel,
    t: f64,
    z: &Array1<f64>,
    k0: &Array1<f64>,
    jac: &mut Array2<f64>,
    stats: &mut SolveStats,
) -> Result<()> {
    let d = z.len();
    let mut zp = z.clone();
    let mut kp = Array1::zeros(d);
    for col in 0..d {
        let h = f64::EPSILON.sqrt() * z[col].abs().max(1.0);
        zp[col] = z[col] + h;
        kernel.eval(t, t, zp.view(), kp.view_mut(), &mut stats.kernel_evals)?;
        zp[col] = z[col];
        for row in 0..d {
            jac[[row, col]] = (kp[row] - k0[row]) / h;
        }
    }
    Ok(())
}
