//! Solvers against Volterra equations with closed-form solutions: observed orders
//! `log2(e_h / e_{h/2})` at the final time over N = 10, 20, 40, 80 steps.

use calmflow_vie::convergence::ConvergenceStudy;
use calmflow_vie::quadrature::Trapezoid;
use calmflow_vie::{
    ConvolutionKernel, ExplicitRectangle, FnKernel, ImplicitTrapezoid, Kernel, LinearKernel,
    OdeKernel, Picard, ProductIntegration, StepControl, StepIteration, TimeGrid, VieError,
    VieSolver, VolterraEquation, WeaklySingularKernel, residual, scalar_kernel,
};
use ndarray::{Array1, ArrayView1, array};

const STEPS: [usize; 4] = [10, 20, 40, 80];

/// Final-time sup-norm errors over `STEPS` and the observed orders.
fn orders<F, K>(
    solver: &impl VieSolver,
    eq: &VolterraEquation<F, K>,
    t_end: f64,
    exact: impl Fn(f64) -> Array1<f64>,
) -> Vec<f64>
where
    F: Fn(f64) -> Array1<f64>,
    K: Kernel,
{
    let sizes: Vec<usize> = STEPS.iter().map(|n| n + 1).collect();
    let study = ConvergenceStudy::run(&sizes, |n| {
        let grid = TimeGrid::uniform(n, t_end)?;
        let sol = solver.solve(eq, &grid)?;
        let err = (&sol.final_state() - &exact(t_end))
            .iter()
            .fold(0.0_f64, |m, v| m.max(v.abs()));
        Ok(err)
    })
    .unwrap();
    study.orders()
}

/// Asserts rectangle order `rect` and trapezoid order 2: the finest pair (40 → 80)
/// within ±0.1 of nominal, and the deviation shrinking as the grid is refined (within
/// ±0.2 throughout): first-order methods approach their order from below on fast-growing
/// solutions (0.82 → 0.90 → 0.95 on tan t), while the trapezoid is within ±0.02 at once.
fn assert_orders<F, K>(
    name: &str,
    eq: &VolterraEquation<F, K>,
    t_end: f64,
    rect: f64,
    exact: impl Fn(f64) -> Array1<f64> + Copy,
) where
    F: Fn(f64) -> Array1<f64>,
    K: Kernel,
{
    let observed = [
        (
            "rectangle",
            rect,
            orders(&ExplicitRectangle::default(), eq, t_end, exact),
        ),
        (
            "trapezoid",
            2.0,
            orders(&ImplicitTrapezoid::default(), eq, t_end, exact),
        ),
    ];
    for (solver, nominal, ps) in observed {
        eprintln!("{name}: {solver} orders {ps:.3?}");
        let dev: Vec<f64> = ps.iter().map(|p| (p - nominal).abs()).collect();
        assert!(
            dev[dev.len() - 1] <= 0.1,
            "{name}: {solver} finest order off nominal {nominal}: {ps:?}"
        );
        assert!(
            dev.iter().all(|&d| d <= 0.2),
            "{name}: {solver} orders {ps:?}"
        );
        assert!(
            dev.windows(2).all(|w| w[1] <= w[0] + 0.01),
            "{name}: {solver} orders not settling: {ps:?}"
        );
    }
}

fn one(_t: f64) -> Array1<f64> {
    array![1.0]
}

#[test]
fn exponential_growth_and_decay() {
    let eq = VolterraEquation::new(one, scalar_kernel(1, |_, _| 1.0));
    assert_orders("y = 1 + ∫y", &eq, 1.0, 1.0, |t| array![t.exp()]);
    let eq = VolterraEquation::new(one, scalar_kernel(1, |_, _| -1.0));
    assert_orders("y = 1 − ∫y", &eq, 1.0, 1.0, |t| array![(-t).exp()]);
}

#[test]
fn difference_kernels_give_cosh_cos_sin() {
    let eq = VolterraEquation::new(one, ConvolutionKernel::new(1, |u| u));
    assert_orders("y = 1 + ∫(t−s)y", &eq, 1.0, 1.0, |t| array![t.cosh()]);
    let eq = VolterraEquation::new(one, ConvolutionKernel::new(1, |u| -u));
    assert_orders("y = 1 − ∫(t−s)y", &eq, 1.0, 1.0, |t| array![t.cos()]);
    let eq = VolterraEquation::new(|t: f64| array![t], ConvolutionKernel::new(1, |u| -u));
    // K(t, s, y) = −(t − s) y vanishes at s = t and y(0) = 0, so the rectangle rule's
    // O(h) end-point error cancels: it is second order here.
    assert_orders("y = t − ∫(t−s)y", &eq, 1.0, 2.0, |t| array![t.sin()]);
}

#[test]
fn exponential_convolution_kernels() {
    let eq = VolterraEquation::new(one, ConvolutionKernel::new(1, |u: f64| (-u).exp()));
    assert_orders("y = 1 + ∫e^{−(t−s)}y", &eq, 1.0, 1.0, |t| {
        array![1.0 + t]
    });
    let eq = VolterraEquation::new(one, ConvolutionKernel::new(1, |u: f64| u.exp()));
    assert_orders("y = 1 + ∫e^{t−s}y", &eq, 1.0, 1.0, |t| {
        array![(1.0 + (2.0 * t).exp()) / 2.0]
    });
}

#[test]
fn separable_kernel_gives_gaussian_growth() {
    let eq = VolterraEquation::new(one, scalar_kernel(1, |_, s| 2.0 * s));
    assert_orders("y = 1 + ∫2s·y", &eq, 1.0, 1.0, |t| array![(t * t).exp()]);
}

#[test]
fn nonlinear_kernels() {
    let square = |_: f64, _: f64, z: ArrayView1<'_, f64>| z.mapv(|v| v * v);
    let eq = VolterraEquation::new(one, FnKernel::new(1, square));
    assert_orders("y = 1 + ∫y²", &eq, 0.5, 1.0, |t| array![1.0 / (1.0 - t)]);
    let eq = VolterraEquation::new(|t: f64| array![t], FnKernel::new(1, square));
    assert_orders("y = t + ∫y²", &eq, 1.0, 1.0, |t| array![t.tan()]);
    let logistic = OdeKernel::new(1, |z: ArrayView1<'_, f64>, _| z.mapv(|v| v * (1.0 - v)));
    let eq = VolterraEquation::new(|_: f64| array![0.1], logistic);
    assert_orders("logistic", &eq, 2.0, 1.0, |t| {
        array![1.0 / (1.0 + 9.0 * (-t).exp())]
    });
}

#[test]
fn rotation_system() {
    let a = array![[0.0, -1.0], [1.0, 0.0]];
    let eq = VolterraEquation::new(
        |_: f64| array![1.0, 0.0],
        LinearKernel::new(2, move |_, _| a.clone()),
    );
    assert_orders("rotation", &eq, 1.0, 1.0, |t| array![t.cos(), t.sin()]);
}

/// `erfc(x)` for `0 ≤ x ≤ 1.5` from the Maclaurin series of erf (absolute error < 1e-15).
fn erfc(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    for n in 1..60 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
}

#[test]
fn abel_equation_by_product_integration() {
    // y = 1 − ∫ y(s) / √(π (t − s)) ds  ⇒  y = e^t erfc(√t).
    let g = |_: f64, _: f64, z: ArrayView1<'_, f64>| z.mapv(|v| -v / std::f64::consts::PI.sqrt());
    let eq = VolterraEquation::new(one, WeaklySingularKernel::new(1, 0.5, g).unwrap());
    let exact = erfc(1.0) * 1f64.exp();
    let sizes: Vec<usize> = STEPS.iter().map(|n| n + 1).collect();
    let study = ConvergenceStudy::run(&sizes, |n| {
        let sol = ProductIntegration::default().solve(&eq, &TimeGrid::uniform(n, 1.0)?)?;
        Ok((sol.final_state()[0] - exact).abs())
    })
    .unwrap();
    // The solution behaves like 1 − 2√t/√π near 0, so the rule's nominal order 2 is lost:
    // measured 1.55, 1.53, 1.52 at t = 1.
    for p in study.orders() {
        assert!(
            (p - 1.5).abs() <= 0.1,
            "Abel final-time order {p} ({:?})",
            study.errors
        );
    }
    // Over the whole grid the error peaks near t = h and the order is ≈ 1.
    let sup = ConvergenceStudy::run(&sizes, |n| {
        let grid = TimeGrid::uniform(n, 1.0)?;
        let sol = ProductIntegration::default().solve(&eq, &grid)?;
        Ok(grid
            .points()
            .iter()
            .enumerate()
            .map(|(i, &t)| (sol.z[[i, 0]] - erfc(t.sqrt()) * t.exp()).abs())
            .fold(0.0, f64::max))
    })
    .unwrap();
    // Measured 0.90, 0.93, 0.95: approaching 1 from below.
    let sup_orders = sup.orders();
    assert!(
        sup_orders.iter().all(|p| (p - 1.0).abs() <= 0.15),
        "{sup_orders:?}"
    );
    assert!((sup_orders[2] - 1.0).abs() <= 0.1, "{sup_orders:?}");
    assert!(study.errors[3] < 1e-4, "{:?}", study.errors);
}

/// The Gaussian OT velocity field of the straight path from N(0, I) to N(μ, σ² I).
fn gaussian_ot_equation(
    x0: Array1<f64>,
    mu: Array1<f64>,
    sigma: f64,
) -> VolterraEquation<impl Fn(f64) -> Array1<f64>, impl Kernel> {
    let d = x0.len();
    let v = move |x: ArrayView1<'_, f64>, s: f64| {
        &mu + &((&x - &(&mu * s)) * ((sigma - 1.0) / (1.0 + s * (sigma - 1.0))))
    };
    VolterraEquation::new(move |_: f64| x0.clone(), OdeKernel::new(d, v))
}

#[test]
fn flow_matching_vie_is_exact_on_any_grid() {
    let x0 = array![0.3, -1.2, 2.0];
    let mu = array![1.0, 4.0, -2.0];
    let sigma = 0.5;
    let eq = gaussian_ot_equation(x0.clone(), mu.clone(), sigma);
    let grids = [
        TimeGrid::uniform(7, 1.0).unwrap(),
        TimeGrid::new(vec![0.0, 0.03, 0.2, 0.21, 0.6, 0.95, 1.0]).unwrap(),
        TimeGrid::uniform(2, 1.0).unwrap(),
    ];
    for grid in &grids {
        let solutions = [
            ExplicitRectangle::default().solve(&eq, grid).unwrap(),
            ImplicitTrapezoid::default().solve(&eq, grid).unwrap(),
            Picard::default().solve(&eq, grid).unwrap(),
        ];
        for sol in &solutions {
            for (n, &t) in grid.points().iter().enumerate() {
                let exact = &x0 * (1.0 + t * (sigma - 1.0)) + &mu * t;
                let err = (&sol.z.row(n) - &exact)
                    .iter()
                    .fold(0.0_f64, |m, v| m.max(v.abs()));
                assert!(err < 1e-12, "t = {t}: error {err:e}");
            }
        }
    }
}

#[test]
fn picard_change_shrinks_factorially() {
    // y = 1 + ∫y: the k-th Picard change at t = 1 is 1/k! (up to quadrature error).
    let eq = VolterraEquation::new(one, scalar_kernel(1, |_, _| 1.0));
    let grid = TimeGrid::uniform(401, 1.0).unwrap();
    let sol = Picard::default().solve(&eq, &grid).unwrap();
    let mut factorial = 1.0;
    for (k, change) in sol.stats.history.iter().take(9).enumerate() {
        factorial *= (k + 1) as f64;
        let ratio = change * factorial;
        assert!(
            (ratio - 1.0).abs() < 1e-3,
            "sweep {}: change {change:e}, ·k! = {ratio}",
            k + 1
        );
    }
    assert_eq!(sol.stats.iterations, sol.stats.history.len());
    assert!(sol.stats.residual <= 1e-12);
    // The converged iterate is the implicit trapezoid solution.
    let trap = ImplicitTrapezoid::default().solve(&eq, &grid).unwrap();
    let diff = (&sol.z - &trap.z)
        .iter()
        .fold(0.0_f64, |m, v| m.max(v.abs()));
    assert!(diff < 1e-11, "{diff:e}");
}

#[test]
fn damped_picard_converges_to_the_same_solution() {
    let eq = VolterraEquation::new(one, ConvolutionKernel::new(1, |u| -u));
    let grid = TimeGrid::uniform(41, 1.0).unwrap();
    let plain = Picard::default().solve(&eq, &grid).unwrap();
    let damped = Picard {
        damping: 0.5,
        ..Picard::default()
    }
    .solve(&eq, &grid)
    .unwrap();
    assert!(damped.stats.iterations > plain.stats.iterations);
    let diff = (&plain.z - &damped.z)
        .iter()
        .fold(0.0_f64, |m, v| m.max(v.abs()));
    assert!(diff < 1e-10);
    let few = Picard {
        max_iterations: 3,
        ..Picard::default()
    }
    .solve(&eq, &grid);
    assert!(
        matches!(few, Err(VieError::NotConverged { iterations: 3, .. })),
        "{few:?}"
    );
    assert!(
        Picard {
            damping: 0.0,
            ..Picard::default()
        }
        .solve(&eq, &grid)
        .is_err()
    );
}

#[test]
fn newton_fixed_point_and_finite_differences_agree() {
    let square = |_: f64, _: f64, z: ArrayView1<'_, f64>| z.mapv(|v| v * v);
    let eq = VolterraEquation::new(one, FnKernel::new(1, square));
    let grid = TimeGrid::uniform(51, 0.5).unwrap();
    let newton = ImplicitTrapezoid::default().solve(&eq, &grid).unwrap();
    let fixed = ImplicitTrapezoid {
        control: StepControl {
            method: StepIteration::FixedPoint,
            ..StepControl::default()
        },
    }
    .solve(&eq, &grid)
    .unwrap();
    let diff = (&newton.z - &fixed.z)
        .iter()
        .fold(0.0_f64, |m, v| m.max(v.abs()));
    assert!(diff < 1e-10, "{diff:e}");
    // Newton needs fewer iterations than the fixed point.
    assert!(newton.stats.iterations < fixed.stats.iterations);
    assert!(newton.stats.residual < 1e-10 && fixed.stats.residual < 1e-10);
}

#[test]
fn blow_up_is_a_typed_error() {
    // y = 1 + ∫y² blows up at t = 1.
    let square = |_: f64, _: f64, z: ArrayView1<'_, f64>| z.mapv(|v| v * v);
    let eq = VolterraEquation::new(one, FnKernel::new(1, square));
    let grid = TimeGrid::uniform(61, 1.5).unwrap();
    for result in [
        ExplicitRectangle::default().solve(&eq, &grid),
        ImplicitTrapezoid::default().solve(&eq, &grid),
        Picard::default().solve(&eq, &grid),
    ] {
        match result {
            Err(VieError::BlowUp { t, .. }) => assert!(t > 0.9, "blow-up reported at t = {t}"),
            Err(VieError::NotConverged { t, .. }) => assert!(t > 0.9),
            other => panic!("expected a blow-up error, got {other:?}"),
        }
    }
}

#[test]
fn bad_user_functions_are_typed_errors() {
    let grid = TimeGrid::uniform(5, 1.0).unwrap();
    let eq = VolterraEquation::new(|_: f64| array![1.0, 2.0], scalar_kernel(1, |_, _| 1.0));
    assert!(matches!(
        ImplicitTrapezoid::default().solve(&eq, &grid),
        Err(VieError::DimensionMismatch { .. })
    ));
    let eq = VolterraEquation::new(
        |t: f64| array![1.0 / (t - 0.5)],
        scalar_kernel(1, |_, _| 1.0),
    );
    assert!(matches!(
        ExplicitRectangle::default().solve(&eq, &grid),
        Err(VieError::NonFinite { .. })
    ));
    let eq = VolterraEquation::new(one, FnKernel::new(1, |_, _, _| array![1.0, 1.0]));
    assert!(matches!(
        Picard::default().solve(&eq, &grid),
        Err(VieError::NonFinite { .. })
    ));
    let bad_tol = ImplicitTrapezoid {
        control: StepControl {
            tolerance: -1.0,
            ..StepControl::default()
        },
    };
    assert!(matches!(
        bad_tol.solve(
            &VolterraEquation::new(one, scalar_kernel(1, |_, _| 1.0)),
            &grid
        ),
        Err(VieError::InvalidParameter {
            name: "tolerance",
            ..
        })
    ));
}

#[test]
fn residual_scores_candidates() {
    let eq = VolterraEquation::new(one, scalar_kernel(1, |_, _| 1.0));
    let exact_on = |n: usize| {
        let grid = TimeGrid::uniform(n, 1.0).unwrap();
        let z = ndarray::Array2::from_shape_fn((n, 1), |(i, _)| grid.t(i).exp());
        (grid, z)
    };
    // The exact solution's residual is the trapezoid error: O(h²).
    let (g1, z1) = exact_on(21);
    let (g2, z2) = exact_on(41);
    let r1 = residual(&eq, &g1, &z1, &Trapezoid).unwrap();
    let r2 = residual(&eq, &g2, &z2, &Trapezoid).unwrap();
    assert!(((r1 / r2).log2() - 2.0).abs() < 0.05, "{r1:e} {r2:e}");
    // The solver's own solution has (near) zero discrete residual; a wrong one does not.
    let sol = ImplicitTrapezoid::default().solve(&eq, &g1).unwrap();
    assert!(residual(&eq, &g1, &sol.z, &Trapezoid).unwrap() < 1e-12);
    let wrong = ndarray::Array2::from_elem((21, 1), 1.0);
    assert!(residual(&eq, &g1, &wrong, &Trapezoid).unwrap() > 0.5);
    assert!(matches!(
        residual(&eq, &g1, &ndarray::Array2::zeros((20, 1)), &Trapezoid),
        Err(VieError::DimensionMismatch { .. })
    ));
}

#[test]
fn stats_count_kernel_evaluations() {
    // Linear kernel, explicit rectangle: step n evaluates K at j = 0..n−1 → N(N−1)/2 calls.
    let eq = VolterraEquation::new(one, scalar_kernel(1, |_, _| 1.0));
    let n = 11;
    let sol = ExplicitRectangle::default()
        .solve(&eq, &TimeGrid::uniform(n, 1.0).unwrap())
        .unwrap();
    assert_eq!(sol.stats.kernel_evals, n * (n - 1) / 2);
    assert_eq!(sol.stats.iterations, 0);
}
