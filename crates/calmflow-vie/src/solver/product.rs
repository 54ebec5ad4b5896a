//! Product integration for weakly singular kernels `(t − s)^(−α) g(t, s, z)`:
//! `z_n = f_n + Σ_{j ≤ n} w^α_{n,j} g(t_n, t_j, z_j)` with the exact weights of
//! [`ProductTrapezoid`], implicit in `z_n`.

use ndarray::{Array1, ArrayView1, ArrayViewMut1, ArrayViewMut2};

use super::march::{DiscreteKernel, march};
use super::{StepControl, VieSolution, VolterraEquation, count_and_check};
use crate::error::Result;
use crate::grid::TimeGrid;
use crate::kernel::WeaklySingularKernel;
use crate::quadrature::{ProductTrapezoid, QuadratureRule};

/// Product-trapezoid solver for weakly singular kernels; order 2 for smooth solutions
/// (solutions of Abel equations behave like `√t` near 0, which lowers it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProductIntegration {
    /// How each step's implicit equation is solved.
    pub control: StepControl,
}

struct RegularPart<'a, G>(&'a WeaklySingularKernel<G>);

impl<G: Fn(f64, f64, ArrayView1<'_, f64>) -> Array1<f64>> DiscreteKernel for RegularPart<'_, G> {
    fn dim(&self) -> usize {
        use crate::kernel::Kernel;
        self.0.dim()
    }
    fn eval(
        &self,
        t: f64,
        s: f64,
        z: ArrayView1<'_, f64>,
        mut out: ArrayViewMut1<'_, f64>,
        evals: &mut usize,
    ) -> Result<()> {
        self.0.eval_regular(t, s, z, out.view_mut());
        count_and_check(out.view(), evals, "regular part g(t, s, z)", t)
    }
    fn jacobian(&self, _: f64, _: f64, _: ArrayView1<'_, f64>, _: ArrayViewMut2<'_, f64>) -> bool {
        false
    }
}

impl ProductIntegration {
    /// Nominal order for smooth solutions.
    pub fn order(&self) -> u32 {
        2
    }

    /// Solves `z(t) = f(t) + ∫ (t − s)^(−α) g(t, s, z(s)) ds` on `grid`.
    pub fn solve<F, G>(
        &self,
        eq: &VolterraEquation<F, WeaklySingularKernel<G>>,
        grid: &TimeGrid,
    ) -> Result<VieSolution>
    where
        F: Fn(f64) -> Array1<f64>,
        G: Fn(f64, f64, ArrayView1<'_, f64>) -> Array1<f64>,
    {
        let kernel = RegularPart(eq.kernel());
        let rule = ProductTrapezoid::new(eq.kernel().alpha())?;
        let d = kernel.dim();
        let (z, stats) = march(
            grid,
            |t| eq.forcing_at(t, d),
            &kernel,
            |n| rule.weights(&grid.points()[..=n]),
            &self.control,
        )?;
        Ok(VieSolution {
            grid: grid.clone(),
            z,
            stats,
        })
    }
}
