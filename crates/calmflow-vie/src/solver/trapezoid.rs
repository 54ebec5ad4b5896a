//! The implicit trapezoid method:
//! `z_n = f_n + Σ_j w_{n,j} K(t_n, t_j, z_j)` with trapezoid weights, `z_n` on both sides.

use ndarray::Array1;

use super::march::march;
use super::rectangle::Regular;
use super::{StepControl, VieSolution, VieSolver, VolterraEquation};
use crate::error::Result;
use crate::grid::TimeGrid;
use crate::kernel::Kernel;
use crate::quadrature::{QuadratureRule, Trapezoid};

/// Implicit trapezoid rule with a per-step fixed-point or Newton iteration: order 2.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ImplicitTrapezoid {
    /// How each step's implicit equation is solved.
    pub control: StepControl,
}

impl VieSolver for ImplicitTrapezoid {
    fn order(&self) -> u32 {
        Trapezoid.order()
    }

    fn solve<F, K>(&self, eq: &VolterraEquation<F, K>, grid: &TimeGrid) -> Result<VieSolution>
    where
        F: Fn(f64) -> Array1<f64>,
        K: Kernel,
    {
        let d = eq.kernel().dim();
        let (z, stats) = march(
            grid,
            |t| eq.forcing_at(t, d),
            &Regular(eq.kernel()),
            |n| Trapezoid.weights(&grid.points()[..=n]),
            &self.control,
        )?;
        Ok(VieSolution {
            grid: grid.clone(),
            z,
            stats,
        })
    }
}
