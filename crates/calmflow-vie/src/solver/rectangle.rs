//! The explicit (left) rectangle method: `z_n = f_n + Σ_{j<n} h_j K(t_n, t_j, z_j)`.

use ndarray::{Array1, ArrayView1, ArrayViewMut1, ArrayViewMut2};

use super::march::{DiscreteKernel, march};
use super::{StepControl, VieSolution, VieSolver, VolterraEquation, eval_kernel};
use crate::error::Result;
use crate::grid::TimeGrid;
use crate::kernel::Kernel;
use crate::quadrature::{LeftRectangle, QuadratureRule};

/// Explicit rectangle rule: order 1, one kernel sweep per step, no iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExplicitRectangle {
    /// A state whose sup norm exceeds this is reported as a blow-up.
    pub blowup: f64,
}

impl Default for ExplicitRectangle {
    fn default() -> Self {
        Self {
            blowup: StepControl::default().blowup,
        }
    }
}

/// Adapts a regular [`Kernel`] to the marching engine.
pub(crate) struct Regular<'a, K>(pub &'a K);

impl<K: Kernel> DiscreteKernel for Regular<'_, K> {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn eval(
        &self,
        t: f64,
        s: f64,
        z: ArrayView1<'_, f64>,
        out: ArrayViewMut1<'_, f64>,
        evals: &mut usize,
    ) -> Result<()> {
        eval_kernel(self.0, t, s, z, out, evals)
    }
    fn jacobian(
        &self,
        t: f64,
        s: f64,
        z: ArrayView1<'_, f64>,
        jac: ArrayViewMut2<'_, f64>,
    ) -> bool {
        self.0.jacobian(t, s, z, jac)
    }
}

impl VieSolver for ExplicitRectangle {
    fn order(&self) -> u32 {
        LeftRectangle.order()
    }

    fn solve<F, K>(&self, eq: &VolterraEquation<F, K>, grid: &TimeGrid) -> Result<VieSolution>
    where
        F: Fn(f64) -> Array1<f64>,
        K: Kernel,
    {
        let d = eq.kernel().dim();
        let control = StepControl {
            blowup: self.blowup,
            ..StepControl::default()
        };
        let (z, stats) = march(
            grid,
            |t| eq.forcing_at(t, d),
            &Regular(eq.kernel()),
            |n| LeftRectangle.weights(&grid.points()[..=n]),
            &control,
        )?;
        Ok(VieSolution {
            grid: grid.clone(),
            z,
            stats,
        })
    }
}
