//! # calmflow-vie — Volterra integral equations, numerically
//!
//! Second-kind Volterra equations with vector-valued unknown `z ∈ R^d`:
//!
//! `z(t) = f(t) + ∫_0^t K(t, s, z(s)) ds`
//!
//! CaLMFlow's claim rests on this form: flow matching's ODE `dz/dt = v(z, t)` is the
//! special case `K = v(z, s)` ([`OdeKernel`]), and any quadrature turns the integral into
//! a lower-triangular sum `z_n = f_n + Σ_{j ≤ n} W[n, j] K(t_n, t_j, z_j)`
//! ([`quadrature::QuadratureRule::weight_matrix`]) — the shape of causal attention.
//!
//! This crate is plain Rust with `ndarray`: [`TimeGrid`]s, [`Kernel`]s, quadrature rules
//! ([`quadrature`], [`GaussLegendre`]), classic solvers ([`solver`]) with
//! [`SolveStats`], a [`residual`] to score any candidate solution, and
//! [`convergence`] studies that measure observed orders.
//!
//! ```
//! use calmflow_vie::{ImplicitTrapezoid, LinearKernel, TimeGrid, VieSolver, VolterraEquation};
//! use ndarray::array;
//! // Rotation: z = z0 + ∫ A z ds with A = [[0, −1], [1, 0]] ⇒ z(t) = (cos t, sin t).
//! let a = array![[0.0, -1.0], [1.0, 0.0]];
//! let eq = VolterraEquation::new(|_t: f64| array![1.0, 0.0], LinearKernel::new(2, move |_, _| a.clone()));
//! let sol = ImplicitTrapezoid::default().solve(&eq, &TimeGrid::uniform(201, 1.0).unwrap()).unwrap();
//! let z1 = sol.final_state();
//! assert!((z1[0] - 1f64.cos()).abs() < 1e-5 && (z1[1] - 1f64.sin()).abs() < 1e-5);
//! ```

pub mod convergence;
mod error;
mod gauss;
mod grid;
pub mod kernel;
pub mod quadrature;
pub mod solver;

pub use error::{Result, VieError};
pub use gauss::GaussLegendre;
pub use grid::TimeGrid;
pub use kernel::{
    ConvolutionKernel, FnKernel, Kernel, LinearKernel, OdeKernel, WeaklySingularKernel,
    scalar_kernel,
};
pub use solver::{
    ExplicitRectangle, ImplicitTrapezoid, Picard, ProductIntegration, SolveStats, StepControl,
    StepIteration, VieSolution, VieSolver, VolterraEquation, residual,
};
