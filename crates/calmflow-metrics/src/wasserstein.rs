//! Exact Wasserstein distances between empirical distributions with uniform weights.
//!
//! `W_p(x, y) = (min_π (1/n) Σ_i ‖x_i − y_π(i)‖^p)^(1/p)` for equal sizes, an assignment
//! problem solved exactly by [`crate::linear_sum_assignment`]. For sizes `n ≠ m` it is the
//! transportation problem between masses `1/n` and `1/m`, solved exactly by
//! [`crate::uniform_transport_cost`] (e.g. 2000 generated points against 20 000 held-out
//! cells). Both need the `n × m` cost matrix: at most [`MAX_EXACT_ENTRIES`] entries.
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
use crate::transport::uniform_transport_cost;

/// Largest cost matrix (`n · m` entries, 8 bytes each: 320 MB) that exact transport
/// builds; equal sizes up to 6324 points.
pub const MAX_EXACT_ENTRIES: usize = 40_000_000;

/// The row-major cost `‖x_i − y_j‖^p`.
fn cost_matrix(x: &Array2<f64>, y: &Array2<f64>, power: f64) -> Result<Vec<f64>> {
    let (n, m) = (x.nrows(), y.nrows());
    if n.saturating_mul(m) > MAX_EXACT_ENTRIES {
        return Err(MetricsError::TransportTooLarge {
            n,
            m,
            limit: MAX_EXACT_ENTRIES,
        });
    }
    let d2 = calmflow_linalg::pairwise_sq_dists(x.view(), y.view());
    Ok(d2
        .iter()
        .map(|&c| {
            if power == 2.0 {
                c
            } else {
                c.sqrt().powf(power)
            }
        })
        .collect())
}

/// `min_π Σ π_ij ‖x_i − y_j‖^p` over couplings of the uniform measures on the two sets.
fn transport_cost(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>, power: f64) -> Result<f64> {
    let (xs, ys) = check_pair(x, y)?;
    let (n, m) = (xs.nrows(), ys.nrows());
    let cost = cost_matrix(&xs, &ys, power)?;
    if n == m {
        let p = linear_sum_assignment(&cost, n)?;
        Ok(p.iter()
            .enumerate()
            .map(|(i, &j)| cost[i * n + j])
            .sum::<f64>()
            / n as f64)
    } else {
        uniform_transport_cost(&cost, n, m)
    }
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
    fn unequal_sizes_are_a_transportation_problem() {
        // Two points vs the same two points each duplicated: distance 0.
        let x = array![[0.0f32], [1.0]];
        let y = array![[0.0f32], [0.0], [1.0], [1.0]];
        assert!(w2_exact(x.view(), y.view()).unwrap() < 1e-12);
        // One point at 0 vs {−1, 1}: every unit of mass moves distance 1.
        let z = array![[0.0f32]];
        let w = array![[-1.0f32], [1.0]];
        assert!((w2_exact(z.view(), w.view()).unwrap() - 1.0).abs() < 1e-12);
        // Coprime sizes whose lcm (9797) the replicated assignment could not afford: in one
        // dimension W2 is the quantile coupling's, computed by sorting.
        let a = lcg_points(97, 1, 4);
        let b = lcg_points(101, 1, 5).mapv(|v| 0.5 * v * v);
        let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = (
            a.iter().map(|&v| v as f64).collect(),
            b.iter().map(|&v| v as f64).collect(),
        );
        xs.sort_by(f64::total_cmp);
        ys.sort_by(f64::total_cmp);
        let (n, m) = (97usize, 101usize);
        // Pieces of [0, 1) between consecutive multiples of 1/n and 1/m, in units 1/(n·m).
        let mut cuts: Vec<usize> = (1..=n)
            .map(|k| k * m)
            .chain((1..=m).map(|k| k * n))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut quantile = 0.0;
        let mut last = 0;
        for c in cuts {
            let twice = last + c;
            let (i, j) = (twice * n / (2 * n * m), twice * m / (2 * n * m));
            quantile += (c - last) as f64 / (n * m) as f64 * (xs[i] - ys[j]).powi(2);
            last = c;
        }
        let w2 = w2_exact(a.view(), b.view()).unwrap();
        assert!(
            (w2 - quantile.sqrt()).abs() < 1e-9,
            "{w2} vs {}",
            quantile.sqrt()
        );
        let big = Array2::<f32>::zeros((8000, 1));
        let other = Array2::<f32>::zeros((5001, 1));
        assert!(matches!(
            w2_exact(big.view(), other.view()),
            Err(MetricsError::TransportTooLarge { .. })
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
