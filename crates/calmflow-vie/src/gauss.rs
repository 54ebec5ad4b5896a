//! Gauss–Legendre quadrature with nodes and weights computed for any `n ≥ 1`.
//!
//! The `n` nodes are the roots of the Legendre polynomial `P_n`, found by Newton's method
//! from Tricomi-style initial guesses; weights are `2 / ((1 − x²) P_n'(x)²)`. The rule is
//! exact for polynomials of degree `≤ 2n − 1`.
//!
//! ```
//! use calmflow_vie::GaussLegendre;
//! let rule = GaussLegendre::new(3).unwrap();
//! // ∫_0^2 x^5 dx = 64/6, exact with 3 points (degree 5 = 2·3 − 1).
//! let v = rule.integrate(|x| x.powi(5), 0.0, 2.0);
//! assert!((v - 64.0 / 6.0).abs() < 1e-12);
//! ```

use crate::error::{Result, VieError};

/// An `n`-point Gauss–Legendre rule (nodes and weights on `[−1, 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussLegendre {
    nodes: Vec<f64>,
    weights: Vec<f64>,
}

/// `(P_n(x), P_n'(x))` by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    let dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, dp)
}

impl GaussLegendre {
    /// Computes the `n`-point rule; `n` must be at least 1.
    pub fn new(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(VieError::InvalidParameter {
                name: "n",
                value: 0.0,
                reason: "a Gauss–Legendre rule needs at least one node",
            });
        }
        let mut nodes = vec![0.0; n];
        let mut weights = vec![0.0; n];
        let nf = n as f64;
        for i in 0..n.div_ceil(2) {
            // Initial guess for the i-th largest root.
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
            for _ in 0..100 {
                let (p, dp) = legendre(n, x);
                let dx = p / dp;
                x -= dx;
                if dx.abs() < 1e-16 {
                    break;
                }
            }
            let (_, dp) = legendre(n, x);
            let w = 2.0 / ((1.0 - x * x) * dp * dp);
            nodes[i] = -x;
            nodes[n - 1 - i] = x;
            weights[i] = w;
            weights[n - 1 - i] = w;
        }
        if n % 2 == 1 {
            nodes[n / 2] = 0.0;
        }
        Ok(Self { nodes, weights })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a rule has at least one node.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Exactness degree `2n − 1`.
    pub fn degree(&self) -> usize {
        2 * self.nodes.len() - 1
    }

    /// Nominal order `2n` of the rule applied panel by panel (error `O(h^{2n})`).
    pub fn order(&self) -> u32 {
        2 * self.nodes.len() as u32
    }

    /// Nodes and weights mapped affinely to `[a, b]`.
    pub fn nodes_weights(&self, a: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
        let half = 0.5 * (b - a);
        let mid = 0.5 * (a + b);
        let x = self.nodes.iter().map(|x| mid + half * x).collect();
        let w = self.weights.iter().map(|w| half * w).collect();
        (x, w)
    }

    /// `∫_a^b f(x) dx` by this rule.
    pub fn integrate(&self, f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
        let (x, w) = self.nodes_weights(a, b);
        x.iter().zip(&w).map(|(&x, &w)| w * f(x)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_up_to_degree_2n_minus_1_and_not_beyond() {
        for n in 1..=12 {
            let rule = GaussLegendre::new(n).unwrap();
            let (a, b): (f64, f64) = (-0.3, 1.7);
            for k in 0..2 * n {
                let k32 = k as i32;
                let exact = (b.powi(k32 + 1) - a.powi(k32 + 1)) / (k as f64 + 1.0);
                let got = rule.integrate(|x| x.powi(k32), a, b);
                let rel = (got - exact).abs() / exact.abs().max(1.0);
                assert!(rel < 1e-12, "n={n} k={k}: {got} vs {exact}");
            }
            // Degree 2n: the error on [−1, 1] is 2^(2n+1) (n!)^4 / ((2n+1) ((2n)!)^2) ≠ 0.
            let k = 2 * n as i32;
            let got = rule.integrate(|x| x.powi(k), -1.0, 1.0);
            let exact = 2.0 / (k as f64 + 1.0);
            assert!(
                (got - exact).abs() / exact > 1e-8,
                "n={n}: degree 2n unexpectedly exact"
            );
        }
    }

    #[test]
    fn weights_sum_to_length_and_nodes_are_sorted() {
        for n in [1, 2, 5, 20, 64] {
            let rule = GaussLegendre::new(n).unwrap();
            assert_eq!((rule.degree(), rule.order()), (2 * n - 1, 2 * n as u32));
            let (x, w) = rule.nodes_weights(0.0, 3.0);
            assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-12);
            assert!(x.windows(2).all(|p| p[0] < p[1]));
        }
        assert!(GaussLegendre::new(0).is_err());
    }
}
