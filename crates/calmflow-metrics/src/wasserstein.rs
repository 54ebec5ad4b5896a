//! Exact Wasserstein distances between empirical distributions with uniform weights.
//!
//! `W_p(x, y) = (min_π (1/n) Σ_i ‖x_i − y_π(i)‖^p)^(1/p)` for equal sizes, an assignment
//! problem solved exactly by [`crate::linear_sum_assignment`]. For sizes `n ≠ m` each
//! point is replicated `L/n` (resp. `L/m`) times, `L = lcm(n, m)`: an optimal transport
//! plan between uniform measures with masses in multiples of `1/L` is a vertex of the
//! transport polytope, hence a permutation of the replicated points, so this is exact.
//!
//! ```
//! use calmflow_metrics::w2_exact;
//! let x = ndarray::array![[0.0f32, 0.0], [1.0, 0.0]];
//! let y = &x + 3.0;
//! // Shifting every point by c = (3, 3) moves the distribution by ‖c‖ = 3√2.
//! assert!((w2_exact(x.view(), y.view()).unwrap() - 18f64.sqrt()).abs() < 1e-6);
//! ```

use ndarray::{Array2, ArrayView2};

use crate::assignment::linear_sum_assignment;
use crate::error::{MetricsError, Result, check_pair};

/// Largest assignment (after replication for unequal sizes) that exact transport solves.
pub const MAX_EXACT_SIZE: usize = 6000;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The cost `‖x_i − y_j‖^p` after replicating rows to a common size `L`.
fn replicated_cost(x: &Array2<f64>, y: &Array2<f64>, power: f64) -> Result<(Vec<f64>, usize)> {
    let (n, m) = (x.nrows(), y.nrows());
    let lcm = n / gcd(n, m) * m;
    if lcm > MAX_EXACT_SIZE {
        return Err(MetricsError::UnequalSizes {
            n,
            m,
            lcm,
            limit: MAX_EXACT_SIZE,
        });
    }
    let d2 = calmflow_linalg::pairwise_sq_dists(x.view(), y.view());
    let (rx, ry) = (lcm / n, lcm / m);
    let mut cost = Vec::with_capacity(lcm * lcm);
    for i in 0..lcm {
        let row = d2.row(i / rx);
        cost.extend((0..lcm).map(|j| {
            let c = row[j / ry];
            if power == 2.0 {
                c
            } else {
                c.sqrt().powf(power)
            }
        }));
    }
    Ok((cost, lcm))
}

/// `min_π (1/L) Σ ‖x_i − y_π(i)‖^p` over the (replicated) sets.
fn transport_cost(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>, power: f64) -> Result<f64> {
    let (xs, ys) = check_pair(x, y)?;
    let (cost, l) = replicated_cost(&xs, &ys, power)?;
    let p = linear_sum_assignment(&cost, l)?;
    Ok(p.iter()
        .enumerate()
        .map(|(i, &j)| cost[i * l + j])
        .sum::<f64>()
        / l as f64)
}

/// Exact 2-Wasserstein distance `sqrt(min_π mean ‖x_i − y_π(i)‖²)`.
pub fn w2_exact(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<f64> {
    Ok(transport_cost(x, y, 2.0)?.max(0.0).sqrt())
}

/// Exact 1-Wasserstein distance `min_π mean ‖x_i − y_π(i)‖`.
pub fn w1_exact(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<f64> {
    transport_cost(x, y, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, array};

    fn lcg_points(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut s = seed;
        Array2::from_shape_fn((n, d), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
    }

    #[test]
    fn identical_sets_and_translations() {
        let x = lcg_points(50, 3, 1);
        assert!(w2_exact(x.view(), x.view()).unwrap() < 1e-12);
        let c = Array1::from(vec![0.5f32, -1.0, 2.0]);
        let y = &x + &c;
        let norm = (c.mapv(|v| (v * v) as f64).sum()).sqrt();
        assert!((w2_exact(x.view(), y.view()).unwrap() - norm).abs() < 1e-5);
        assert!((w1_exact(x.view(), y.view()).unwrap() - norm).abs() < 1e-5);
    }

    #[test]
    fn one_dimensional_w2_is_the_sorted_matching() {
        let x = lcg_points(200, 1, 2);
        let y = lcg_points(200, 1, 3).mapv(|v| v * 1.7 + 0.3);
        let mut xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut ys: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        xs.sort_by(f64::total_cmp);
        ys.sort_by(f64::total_cmp);
        let sorted = (xs
            .iter()
            .zip(&ys)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / 200.0)
            .sqrt();
        assert!((w2_exact(x.view(), y.view()).unwrap() - sorted).abs() < 1e-9);
    }

    #[test]
    fn unequal_sizes_by_replication() {
        // Two points vs the same two points each duplicated: distance 0.
        let x = array![[0.0f32], [1.0]];
        let y = array![[0.0f32], [0.0], [1.0], [1.0]];
        assert!(w2_exact(x.view(), y.view()).unwrap() < 1e-12);
        // One point at 0 vs {−1, 1}: every unit of mass moves distance 1.
        let z = array![[0.0f32]];
        let w = array![[-1.0f32], [1.0]];
        assert!((w2_exact(z.view(), w.view()).unwrap() - 1.0).abs() < 1e-12);
        let big = Array2::<f32>::zeros((4999, 1));
        let other = Array2::<f32>::zeros((4998, 1));
        assert!(matches!(
            w2_exact(big.view(), other.view()),
            Err(MetricsError::UnequalSizes { .. })
        ));
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let x = array![[0.0f32, 1.0]];
        let y = array![[0.0f32]];
        assert!(matches!(
            w2_exact(x.view(), y.view()),
            Err(MetricsError::DimensionMismatch { .. })
        ));
        let e = Array2::<f32>::zeros((0, 2));
        assert!(matches!(
            w2_exact(e.view(), x.view()),
            Err(MetricsError::Empty { .. })
        ));
        let nan = array![[f32::NAN, 0.0]];
        assert!(matches!(
            w2_exact(x.view(), nan.view()),
            Err(MetricsError::NonFinite { .. })
        ));
    }
}
