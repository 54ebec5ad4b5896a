//! Quadrature rules on grids, and the lower-triangular weight matrix of a rule.
//!
//! A rule turns `∫_{x_0}^{x_m} f(x) dx` into `Σ_j w_j f(x_j)`. Applied to every prefix
//! `x_0 … x_n` of a time grid it gives the lower-triangular matrix `W[n, j]` that turns a
//! Volterra integral into `z_n = f_n + Σ_{j ≤ n} W[n, j] K(t_n, t_j, z_j)` — the shape of
//! causal attention (see `docs/math.md`).
//!
//! ```
//! use calmflow_vie::quadrature::{QuadratureRule, Simpson, Trapezoid};
//! use calmflow_vie::TimeGrid;
//! let g = TimeGrid::uniform(3, 1.0).unwrap();
//! let x2: Vec<f64> = g.points().iter().map(|x| x * x).collect();
//! assert!((Simpson.integrate(g.points(), &x2).unwrap() - 1.0 / 3.0).abs() < 1e-15);
//! assert!((Trapezoid.integrate(g.points(), &x2).unwrap() - 0.375).abs() < 1e-15);
//! ```

use ndarray::Array2;

use crate::error::{Result, VieError};
use crate::grid::TimeGrid;

/// A rule that integrates tabulated values over the span of its nodes.
pub trait QuadratureRule {
    /// Short name, e.g. `"trapezoid"`.
    fn name(&self) -> &'static str;

    /// Nominal order `p`: the error of the composite rule on smooth integrands is `O(h^p)`.
    fn order(&self) -> u32;

    /// Weights `w_j` with `∫_{x_0}^{x_m} f ≈ Σ_j w_j f(x_j)`; `nodes` must be strictly
    /// increasing with at least one point (one point integrates to 0).
    fn weights(&self, nodes: &[f64]) -> Result<Vec<f64>>;

    /// `Σ_j w_j values[j]`.
    fn integrate(&self, nodes: &[f64], values: &[f64]) -> Result<f64> {
        if nodes.len() != values.len() {
            return Err(VieError::DimensionMismatch {
                what: "quadrature values",
                expected: nodes.len().to_string(),
                actual: values.len().to_string(),
            });
        }
        let w = self.weights(nodes)?;
        Ok(w.iter().zip(values).map(|(w, v)| w * v).sum())
    }

    /// The lower-triangular matrix `W[n, j]`: row `n` holds this rule's weights on the
    /// prefix `t_0 … t_n` of `grid` (row 0 is zero).
    fn weight_matrix(&self, grid: &TimeGrid) -> Result<Array2<f64>> {
        let n = grid.len();
        let mut w = Array2::zeros((n, n));
        for row in 1..n {
            let weights = self.weights(&grid.points()[..=row])?;
            for (j, wj) in weights.into_iter().enumerate() {
                w[[row, j]] = wj;
            }
        }
        Ok(w)
    }
}

fn check_nodes(nodes: &[f64]) -> Result<()> {
    if nodes.is_empty() {
        return Err(VieError::InvalidGrid(
            "a rule needs at least one node".into(),
        ));
    }
    if nodes.len() > 1 {
        TimeGrid::new(nodes.to_vec())?;
    } else if !nodes[0].is_finite() {
        return Err(VieError::InvalidGrid(format!("node 0 is {}", nodes[0])));
    }
    Ok(())
}

/// The left rectangle rule `Σ_{j<m} h_j f(x_j)`: order 1, explicit (ignores the last node).
#[derive(Debug, Clone, Copy, Default)]
pub struct LeftRectangle;

impl QuadratureRule for LeftRectangle {
    fn name(&self) -> &'static str {
        "left rectangle"
    }
    fn order(&self) -> u32 {
        1
    }
    fn weights(&self, nodes: &[f64]) -> Result<Vec<f64>> {
        check_nodes(nodes)?;
        let mut w = vec![0.0; nodes.len()];
        for j in 0..nodes.len() - 1 {
            w[j] = nodes[j + 1] - nodes[j];
        }
        Ok(w)
    }
}

/// The composite trapezoid rule on an arbitrary grid: order 2.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trapezoid;

impl QuadratureRule for Trapezoid {
    fn name(&self) -> &'static str {
        "trapezoid"
    }
    fn order(&self) -> u32 {
        2
    }
    fn weights(&self, nodes: &[f64]) -> Result<Vec<f64>> {
        check_nodes(nodes)?;
        let mut w = vec![0.0; nodes.len()];
        for j in 0..nodes.len() - 1 {
            let h = nodes[j + 1] - nodes[j];
            w[j] += 0.5 * h;
            w[j + 1] += 0.5 * h;
        }
        Ok(w)
    }
}

/// Composite Simpson on an arbitrary grid: order 4.
///
/// Pairs of intervals use the non-uniform Simpson formula. With an odd number of
/// intervals the last one is integrated with the quadratic through its last three nodes
/// (`h/12 · (−1, 8, 5)` on a uniform grid), which keeps order 4; a single interval falls
/// back to the trapezoid.
#[derive(Debug, Clone, Copy, Default)]
pub struct Simpson;

impl QuadratureRule for Simpson {
    fn name(&self) -> &'static str {
        "simpson"
    }
    fn order(&self) -> u32 {
        4
    }
    fn weights(&self, nodes: &[f64]) -> Result<Vec<f64>> {
        check_nodes(nodes)?;
        let m = nodes.len() - 1;
        if m <= 1 {
            return Trapezoid.weights(nodes);
        }
        let mut w = vec![0.0; nodes.len()];
        let pairs = m / 2;
        for p in 0..pairs {
            let j = 2 * p;
            let h0 = nodes[j + 1] - nodes[j];
            let h1 = nodes[j + 2] - nodes[j + 1];
            let s = h0 + h1;
            w[j] += s / 6.0 * (2.0 - h1 / h0);
            w[j + 1] += s * s * s / (6.0 * h0 * h1);
            w[j + 2] += s / 6.0 * (2.0 - h0 / h1);
        }
        if m % 2 == 1 {
            // ∫ over [x_{m-1}, x_m] of the quadratic through x_{m-2}, x_{m-1}, x_m.
            let h0 = nodes[m - 1] - nodes[m - 2];
            let h1 = nodes[m] - nodes[m - 1];
            w[m - 2] += -h1 * h1 * h1 / (6.0 * h0 * (h0 + h1));
            w[m - 1] += h1 * h1 / (6.0 * h0) + h1 / 2.0;
            w[m] += (h1 * h1 / 3.0 + h0 * h1 / 2.0) / (h0 + h1);
        }
        Ok(w)
    }
}

/// Product integration for `∫_{x_0}^{x_m} (x_m − s)^(−α) f(s) ds`: the singular factor is
/// integrated exactly against the piecewise-linear interpolant of `f`.
/// Order 2 for smooth `f` (lower when `f` itself is not smooth at `x_0`).
#[derive(Debug, Clone, Copy)]
pub struct ProductTrapezoid {
    alpha: f64,
}

impl ProductTrapezoid {
    /// Weights for the factor `(x_m − s)^(−alpha)`, `0 ≤ alpha < 1`.
    pub fn new(alpha: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&alpha) {
            return Err(VieError::InvalidParameter {
                name: "alpha",
                value: alpha,
                reason: "the singularity exponent must lie in [0, 1)",
            });
        }
        Ok(Self { alpha })
    }

    /// The exponent `α`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl QuadratureRule for ProductTrapezoid {
    fn name(&self) -> &'static str {
        "product trapezoid"
    }
    fn order(&self) -> u32 {
        2
    }
    fn weights(&self, nodes: &[f64]) -> Result<Vec<f64>> {
        check_nodes(nodes)?;
        let m = nodes.len() - 1;
        let t = nodes[m];
        let a1 = 1.0 - self.alpha;
        let a2 = 2.0 - self.alpha;
        let mut w = vec![0.0; nodes.len()];
        for j in 0..m {
            // u = t − s runs over [lo, hi] on the interval [x_j, x_{j+1}].
            let lo = t - nodes[j + 1];
            let hi = t - nodes[j];
            let h = nodes[j + 1] - nodes[j];
            let i0 = (hi.powf(a1) - lo.powf(a1)) / a1; // ∫ u^(-α) du
            let i1 = (hi.powf(a2) - lo.powf(a2)) / a2; // ∫ u^(1-α) du
            // f linear: f_j (u − lo)/h + f_{j+1} (hi − u)/h.
            w[j] += (i1 - lo * i0) / h;
            w[j + 1] += (hi * i0 - i1) / h;
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integrate_fn(rule: &dyn QuadratureRule, n: usize, f: impl Fn(f64) -> f64) -> f64 {
        let g = TimeGrid::uniform(n, 1.0).unwrap();
        let v: Vec<f64> = g.points().iter().map(|&x| f(x)).collect();
        rule.integrate(g.points(), &v).unwrap()
    }

    #[test]
    fn simpson_has_order_four_on_exp() {
        let exact = std::f64::consts::E - 1.0;
        // Both even and odd interval counts.
        // Even interval counts, and odd ones (last interval by the quadratic fallback).
        for (n_coarse, n_fine) in [(11, 21), (21, 41), (12, 34)] {
            let e1 = (integrate_fn(&Simpson, n_coarse, f64::exp) - exact).abs();
            let e2 = (integrate_fn(&Simpson, n_fine, f64::exp) - exact).abs();
            let h_ratio = (n_coarse - 1) as f64 / (n_fine - 1) as f64;
            let order = (e1 / e2).ln() / (1.0 / h_ratio).ln();
            assert!(
                (order - 4.0).abs() < 0.15,
                "order {order} for {n_coarse}->{n_fine}"
            );
        }
    }

    #[test]
    fn simpson_exactness_on_uniform_and_nonuniform_grids() {
        // Non-uniform grids: quadratics are exact for every node count ≥ 3.
        let nodes = [0.0, 0.1, 0.35, 0.5, 0.9, 1.0, 1.3];
        let f = |x: f64| -x * x + 2.0 * x + 3.0;
        let anti = |x: f64| -x * x * x / 3.0 + x * x + 3.0 * x;
        for m in 2..nodes.len() {
            let v: Vec<f64> = nodes[..=m].iter().map(|&x| f(x)).collect();
            let got = Simpson.integrate(&nodes[..=m], &v).unwrap();
            let want = anti(nodes[m]) - anti(0.0);
            assert!((got - want).abs() < 1e-12, "m = {m}: {got} vs {want}");
        }
        // Uniform grid with an even interval count: cubics are exact too.
        let g = TimeGrid::uniform(9, 2.0).unwrap();
        let v: Vec<f64> = g.points().iter().map(|&x| 2.0 * x * x * x - x).collect();
        let got = Simpson.integrate(g.points(), &v).unwrap();
        assert!((got - (8.0 - 2.0)).abs() < 1e-12, "{got}");
    }

    #[test]
    fn trapezoid_order_two_and_rectangle_order_one() {
        let exact = std::f64::consts::E - 1.0;
        let o = |rule: &dyn QuadratureRule| {
            let e1 = (integrate_fn(rule, 21, f64::exp) - exact).abs();
            let e2 = (integrate_fn(rule, 41, f64::exp) - exact).abs();
            (e1 / e2).log2()
        };
        assert!((o(&Trapezoid) - 2.0).abs() < 0.05);
        assert!((o(&LeftRectangle) - 1.0).abs() < 0.05);
    }

    #[test]
    fn product_weights_integrate_singular_monomials_exactly() {
        // ∫_0^1 (1 − s)^(−1/2) (a + b s) ds = 2a + b·4/3, exact for linear f.
        let rule = ProductTrapezoid::new(0.5).unwrap();
        let g = TimeGrid::new(vec![0.0, 0.2, 0.7, 1.0]).unwrap();
        let v: Vec<f64> = g.points().iter().map(|&s| 3.0 - 2.0 * s).collect();
        let got = rule.integrate(g.points(), &v).unwrap();
        assert!((got - (6.0 - 8.0 / 3.0)).abs() < 1e-13, "{got}");
        // α = 0 is the trapezoid rule.
        let w0 = ProductTrapezoid::new(0.0)
            .unwrap()
            .weights(g.points())
            .unwrap();
        let wt = Trapezoid.weights(g.points()).unwrap();
        for (a, b) in w0.iter().zip(&wt) {
            assert!((a - b).abs() < 1e-14);
        }
        assert!(ProductTrapezoid::new(-0.1).is_err());
    }

    #[test]
    fn weight_matrix_is_lower_triangular_prefix_rule() {
        let g = TimeGrid::uniform(5, 1.0).unwrap();
        let w = Trapezoid.weight_matrix(&g).unwrap();
        for n in 0..5 {
            for j in 0..5 {
                if j > n || n == 0 {
                    assert_eq!(w[[n, j]], 0.0);
                }
            }
            // Each row integrates 1 to t_n.
            let row_sum: f64 = w.row(n).sum();
            assert!((row_sum - g.t(n)).abs() < 1e-15);
        }
        assert_eq!(w[[2, 0]], 0.125);
        assert_eq!(w[[2, 1]], 0.25);
        assert_eq!(w[[2, 2]], 0.125);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Trapezoid.weights(&[]).is_err());
        assert!(Trapezoid.weights(&[0.0, 0.0]).is_err());
        assert!(Trapezoid.integrate(&[0.0, 1.0], &[1.0]).is_err());
        assert_eq!(Trapezoid.weights(&[0.5]).unwrap(), vec![0.0]);
    }
}
