//! ODE solvers on burn tensors for sampling velocity fields: Euler, midpoint and RK4 with
//! fixed steps, and adaptive Dormand–Prince 5(4) ("dopri5", FSAL, error in the RMS norm of
//! `err / (atol + rtol·max(|y|, |y_new|))`, as torchdiffeq).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use calmflow_train::{OdeSolver, integrate};
//! let dev = Default::default();
//! let x0 = Tensor::<NdArray<f32>, 1>::from_floats([1.0], &dev);
//! // dx/dt = 3t²: RK4 integrates it exactly.
//! let sol = integrate(&OdeSolver::Rk4 { steps: 4 }, |x: Tensor<NdArray<f32>, 1>, t| {
//!     x.zeros_like() + 3.0 * t * t
//! }, x0, 0.0, 1.0, false).unwrap();
//! assert!((sol.state.into_scalar() - 2.0).abs() < 1e-6);
//! assert_eq!(sol.stats.nfe, 16);
//! ```

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, invalid};

/// Settings of the adaptive Dormand–Prince solver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveSettings {
    /// Relative tolerance (the paper: 1e-4).
    pub rtol: f64,
    /// Absolute tolerance (the paper: 1e-4).
    pub atol: f64,
    /// Safety factor on the optimal step (0 < safety ≤ 1).
    pub safety: f64,
    /// Smallest step before giving up with [`TrainError::StepSizeUnderflow`].
    pub min_step: f64,
    /// Largest step.
    pub max_step: f64,
    /// Step budget (accepted + rejected) before [`TrainError::TooManySteps`].
    pub max_steps: usize,
}

impl Default for AdaptiveSettings {
    fn default() -> Self {
        Self {
            rtol: 1e-4,
            atol: 1e-4,
            safety: 0.9,
            min_step: 1e-8,
            max_step: f64::INFINITY,
            max_steps: 10_000,
        }
    }
}

/// An ODE solver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum OdeSolver {
    /// Forward Euler, order 1.
    Euler {
        /// Number of equal steps.
        steps: usize,
    },
    /// Explicit midpoint, order 2.
    Midpoint {
        /// Number of equal steps.
        steps: usize,
    },
    /// Classical Runge–Kutta, order 4.
    Rk4 {
        /// Number of equal steps.
        steps: usize,
    },
    /// Adaptive Dormand–Prince 5(4).
    Dopri5(AdaptiveSettings),
}

impl Default for OdeSolver {
    fn default() -> Self {
        Self::Dopri5(AdaptiveSettings::default())
    }
}

/// Work done by a solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SolveStats {
    /// Evaluations of the velocity field (NFE).
    pub nfe: usize,
    /// Steps attempted (accepted + rejected).
    pub steps: usize,
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps (adaptive solver only).
    pub rejected: usize,
}

/// The final state, and the states at every accepted step when recorded.
#[derive(Debug, Clone)]
pub struct OdeSolution<B: Backend, const D: usize> {
    /// `x(t1)`.
    pub state: Tensor<B, D>,
    /// Times of the recorded states (`[t0, …, t1]`; only `[t0, t1]`' end when not recording).
    pub times: Vec<f64>,
    /// Recorded states (empty when not recording).
    pub path: Vec<Tensor<B, D>>,
    /// Work done.
    pub stats: SolveStats,
}

fn check_settings(solver: &OdeSolver, t0: f64, t1: f64) -> Result<()> {
    if !(t0.is_finite() && t1.is_finite() && t1 > t0) {
        return Err(invalid(format!(
            "ODE interval [{t0}, {t1}] must be finite with t1 > t0"
        )));
    }
    match solver {
        OdeSolver::Euler { steps } | OdeSolver::Midpoint { steps } | OdeSolver::Rk4 { steps } => {
            if *steps == 0 {
                return Err(invalid("ODE steps must be ≥ 1"));
            }
        }
        OdeSolver::Dopri5(s) => {
            let positive = |v: f64| v > 0.0 && !v.is_nan();
            if !(positive(s.rtol) && positive(s.atol) && s.rtol.is_finite() && s.atol.is_finite()) {
                return Err(invalid(format!(
                    "rtol = {} and atol = {} must be finite and > 0",
                    s.rtol, s.atol
                )));
            }
            if !(s.safety > 0.0 && s.safety <= 1.0) {
                return Err(invalid(format!("safety = {} must lie in (0, 1]", s.safety)));
            }
            if !(positive(s.min_step) && positive(s.max_step) && s.min_step < s.max_step) {
                return Err(invalid(format!(
                    "need 0 < min_step = {} < max_step = {}",
                    s.min_step, s.max_step
                )));
            }
            if s.max_steps == 0 {
                return Err(invalid("max_steps must be ≥ 1"));
            }
        }
    }
    Ok(())
}

/// Integrates `dx/dt = f(x, t)` from `x(t0) = x0` to `t1`.
pub fn integrate<B, const D: usize, F>(
    solver: &OdeSolver,
    mut f: F,
    x0: Tensor<B, D>,
    t0: f64,
    t1: f64,
    record: bool,
) -> Result<OdeSolution<B, D>>
where
    B: Backend,
    F: FnMut(Tensor<B, D>, f64) -> Tensor<B, D>,
{
    check_settings(solver, t0, t1)?;
    let mut stats = SolveStats::default();
    let mut times = vec![t0];
    let mut path = if record { vec![x0.clone()] } else { Vec::new() };
    let mut eval = |x: Tensor<B, D>, t: f64, stats: &mut SolveStats| {
        stats.nfe += 1;
        f(x, t)
    };
    let state = match *solver {
        OdeSolver::Dopri5(settings) => {
            return dopri5(settings, eval, x0, t0, t1, record);
        }
        OdeSolver::Euler { steps } | OdeSolver::Midpoint { steps } | OdeSolver::Rk4 { steps } => {
            let h = (t1 - t0) / steps as f64;
            let mut x = x0;
            for k in 0..steps {
                let t = t0 + k as f64 * h;
                x = match solver {
                    OdeSolver::Euler { .. } => {
                        let k1 = eval(x.clone(), t, &mut stats);
                        x + k1 * h
                    }
                    OdeSolver::Midpoint { .. } => {
                        let k1 = eval(x.clone(), t, &mut stats);
                        let k2 = eval(x.clone() + k1 * (h / 2.0), t + h / 2.0, &mut stats);
                        x + k2 * h
                    }
                    _ => {
                        let k1 = eval(x.clone(), t, &mut stats);
                        let k2 = eval(x.clone() + k1.clone() * (h / 2.0), t + h / 2.0, &mut stats);
                        let k3 = eval(x.clone() + k2.clone() * (h / 2.0), t + h / 2.0, &mut stats);
                        let k4 = eval(x.clone() + k3.clone() * h, t + h, &mut stats);
                        x + (k1 + k2 * 2.0 + k3 * 2.0 + k4) * (h / 6.0)
                    }
                };
                stats.steps += 1;
                stats.accepted += 1;
                let t_next = if k + 1 == steps {
                    t1
                } else {
                    t0 + (k + 1) as f64 * h
                };
                if record {
                    times.push(t_next);
                    path.push(x.clone());
                }
            }
            x
        }
    };
    if !record {
        times.push(t1);
    }
    Ok(OdeSolution {
        state,
        times,
        path,
        stats,
    })
}

// Dormand–Prince 5(4) tableau.
const C: [f64; 6] = [1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A: [&[f64]; 6] = [
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
    ],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
    &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// Fifth-order weights minus the embedded fourth-order ones (the error estimate).
const E: [f64; 7] = [
    35.0 / 384.0 - 5179.0 / 57600.0,
    0.0,
    500.0 / 1113.0 - 7571.0 / 16695.0,
    125.0 / 192.0 - 393.0 / 640.0,
    -2187.0 / 6784.0 + 92097.0 / 339200.0,
    11.0 / 84.0 - 187.0 / 2100.0,
    -1.0 / 40.0,
];

/// RMS of `e / (atol + rtol·max(|y0|, |y1|))`, read back to the host.
fn error_norm<B: Backend, const D: usize>(
    e: Tensor<B, D>,
    y0: &Tensor<B, D>,
    y1: &Tensor<B, D>,
    s: &AdaptiveSettings,
) -> f64 {
    let scale = y0.clone().abs().max_pair(y1.clone().abs()) * s.rtol + s.atol;
    let ratio = e / scale;
    let ms: f64 = burn::tensor::ElementConversion::elem(ratio.powi_scalar(2).mean().into_scalar());
    ms.sqrt()
}

fn dopri5<B, const D: usize, F>(
    s: AdaptiveSettings,
    mut eval: F,
    x0: Tensor<B, D>,
    t0: f64,
    t1: f64,
    record: bool,
) -> Result<OdeSolution<B, D>>
where
    B: Backend,
    F: FnMut(Tensor<B, D>, f64, &mut SolveStats) -> Tensor<B, D>,
{
    let mut stats = SolveStats::default();
    let mut times = vec![t0];
    let mut path = if record { vec![x0.clone()] } else { Vec::new() };
    let mut x = x0;
    let mut t = t0;
    let mut k1 = eval(x.clone(), t, &mut stats);
    // Hairer–Nørsett–Wanner's initial step: h ≈ 0.01·‖x‖/‖f‖, refined by a second
    // derivative estimate from one Euler step.
    let zero = x.zeros_like();
    let d0 = error_norm(x.clone(), &zero, &x, &s);
    let d1 = error_norm(k1.clone(), &zero, &x, &s);
    let h0 = if d0 < 1e-5 || d1 < 1e-5 || !d0.is_finite() || !d1.is_finite() {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    let x_probe = x.clone() + k1.clone() * h0;
    let k_probe = eval(x_probe, t + h0, &mut stats);
    let d2 = error_norm(k_probe - k1.clone(), &zero, &x, &s) / h0;
    let h1 = if d1.max(d2) <= 1e-15 || !d2.is_finite() {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(1.0 / 5.0)
    };
    let mut h = (100.0 * h0)
        .min(h1)
        .min(s.max_step)
        .min(t1 - t0)
        .max(s.min_step);
    while t < t1 {
        if stats.steps >= s.max_steps {
            return Err(TrainError::TooManySteps {
                max_steps: s.max_steps,
                t,
                t1,
            });
        }
        let last = t + h >= t1 || (t1 - (t + h)) < 1e-12 * (t1 - t0);
        let h_step = if last { t1 - t } else { h };
        let mut ks = vec![k1.clone()];
        for (stage, row) in A.iter().enumerate() {
            let mut incr = ks[0].clone() * row[0];
            for (j, &a) in row.iter().enumerate().skip(1) {
                if a != 0.0 {
                    incr = incr + ks[j].clone() * a;
                }
            }
            let xs = x.clone() + incr * h_step;
            let ts = if stage == 5 {
                t + h_step
            } else {
                t + C[stage] * h_step
            };
            ks.push(eval(xs, ts, &mut stats));
        }
        // The sixth stage's input is the fifth-order solution (FSAL).
        let mut x_new = ks[0].clone() * A[5][0];
        for (j, &a) in A[5].iter().enumerate().skip(1) {
            if a != 0.0 {
                x_new = x_new + ks[j].clone() * a;
            }
        }
        let x_new = x.clone() + x_new * h_step;
        let mut err = ks[0].clone() * E[0];
        for (j, &e) in E.iter().enumerate().skip(1) {
            if e != 0.0 {
                err = err + ks[j].clone() * e;
            }
        }
        let err_norm = error_norm(err * h_step, &x, &x_new, &s);
        stats.steps += 1;
        let factor = if err_norm.is_finite() {
            if err_norm == 0.0 {
                10.0
            } else {
                (s.safety * err_norm.powf(-1.0 / 5.0)).clamp(0.2, 10.0)
            }
        } else {
            0.2
        };
        if err_norm.is_finite() && err_norm <= 1.0 {
            stats.accepted += 1;
            t = if last { t1 } else { t + h_step };
            x = x_new;
            k1 = ks.pop().unwrap_or(k1);
            if record {
                times.push(t);
                path.push(x.clone());
            }
        } else {
            stats.rejected += 1;
        }
        let proposed = h_step * factor;
        if proposed < s.min_step && t < t1 {
            return Err(TrainError::StepSizeUnderflow {
                t,
                h: proposed,
                min_step: s.min_step,
            });
        }
        h = proposed.min(s.max_step);
    }
    if !record {
        times.push(t1);
    }
    Ok(OdeSolution {
        state: x,
        times,
        path,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f64>;
    type T1 = Tensor<B, 1>;

    fn scalar(x: T1) -> f64 {
        x.into_scalar()
    }

    fn one(v: f64) -> T1 {
        T1::from_floats([v], &Default::default())
    }

    fn decay_error(solver: OdeSolver) -> f64 {
        let sol = integrate(&solver, |x: T1, _| -x, one(1.0), 0.0, 1.0, false).unwrap();
        (scalar(sol.state) - (-1.0f64).exp()).abs()
    }

    /// Observed orders on dx/dt = −x, steps 10 → 20 → 40.
    #[test]
    fn fixed_step_solvers_reach_their_orders() {
        for (make, order) in [
            (
                &(|steps| OdeSolver::Euler { steps }) as &dyn Fn(usize) -> OdeSolver,
                1.0,
            ),
            (&|steps| OdeSolver::Midpoint { steps }, 2.0),
            (&|steps| OdeSolver::Rk4 { steps }, 4.0),
        ] {
            let errors: Vec<f64> = [10, 20, 40].iter().map(|&n| decay_error(make(n))).collect();
            for pair in errors.windows(2) {
                let observed = (pair[0] / pair[1]).log2();
                assert!((observed - order).abs() < 0.1, "{:?}: {observed}", make(1));
            }
        }
    }

    /// dx/dt = 3t²: Euler's error is exactly Σ 3t_k² h − 1 = −(3/(2n) − 1/(2n²)).
    #[test]
    fn euler_error_on_a_polynomial_field_is_the_closed_form() {
        let n = 8;
        let sol = integrate(
            &OdeSolver::Euler { steps: n },
            |x: T1, t| x.zeros_like() + 3.0 * t * t,
            one(0.0),
            0.0,
            1.0,
            true,
        )
        .unwrap();
        let nf = n as f64;
        let want = 1.0 - 3.0 / (2.0 * nf) + 1.0 / (2.0 * nf * nf);
        assert!((scalar(sol.state) - want).abs() < 1e-12);
        assert_eq!(sol.path.len(), n + 1);
        assert_eq!(sol.times.len(), n + 1);
        assert_eq!(sol.stats.nfe, n);
    }

    /// A full rotation returns to the start; tighter tolerances cost more evaluations and
    /// give smaller errors.
    #[test]
    fn dopri5_rotation_meets_its_tolerance() {
        let rotate = |x: Tensor<B, 2>, _t: f64| {
            let a = x.clone().narrow(1, 0, 1);
            let b = x.narrow(1, 1, 1);
            Tensor::cat(vec![-b, a], 1)
        };
        let x0 = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 2.0]], &Default::default());
        let mut last = (f64::INFINITY, 0);
        for tol in [1e-4, 1e-7, 1e-10] {
            let settings = AdaptiveSettings {
                rtol: tol,
                atol: tol,
                ..Default::default()
            };
            let sol = integrate(
                &OdeSolver::Dopri5(settings),
                rotate,
                x0.clone(),
                0.0,
                2.0 * std::f64::consts::PI,
                false,
            )
            .unwrap();
            let err: f64 = (sol.state - x0.clone()).abs().max().into_scalar();
            assert!(err < 200.0 * tol, "tol {tol}: error {err}");
            assert!(err < last.0 && sol.stats.nfe > last.1);
            assert_eq!(sol.stats.steps, sol.stats.accepted + sol.stats.rejected);
            last = (err, sol.stats.nfe);
        }
    }

    /// dx/dt = x² blows up at t = 1: integrating past it is a typed error.
    #[test]
    fn blow_up_is_a_step_size_underflow() {
        let settings = AdaptiveSettings {
            min_step: 1e-6,
            ..Default::default()
        };
        let result = integrate(
            &OdeSolver::Dopri5(settings),
            |x: T1, _| x.clone() * x,
            one(1.0),
            0.0,
            2.0,
            false,
        );
        assert!(
            matches!(result, Err(TrainError::StepSizeUnderflow { t, .. }) if (t - 1.0).abs() < 0.01),
            "{result:?}"
        );
        let bad = OdeSolver::Euler { steps: 0 };
        assert!(integrate(&bad, |x: T1, _| x, one(1.0), 0.0, 1.0, false).is_err());
    }
}
