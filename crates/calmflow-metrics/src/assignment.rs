//! The linear assignment problem, solved exactly.

use crate::error::{MetricsError, Result};

/// Solves `min_π Σ_i cost[i][π(i)]` over permutations of a square `n × n` cost matrix
/// (row-major, `cost.len() == n²`) by shortest augmenting paths with dual potentials
/// (the Hungarian method in its Jonker–Volgenant form): `O(n³)` worst case.
/// Returns `π` as `assignment[row] = column`; a cost of the wrong length or with
/// non-finite entries is an error.
///
/// ```
/// let cost = [4.0, 1.0, 3.0,
///             2.0, 0.0, 5.0,
///             3.0, 2.0, 2.0];
/// let p = calmflow_metrics::linear_sum_assignment(&cost, 3).unwrap();
/// assert_eq!(p, vec![1, 0, 2]); // 1 + 2 + 2 = 5
/// ```
pub fn linear_sum_assignment(cost: &[f64], n: usize) -> Result<Vec<usize>> {
    if cost.len() != n * n {
        return Err(MetricsError::Undefined(format!(
            "assignment cost has {} entries, expected {n} × {n}",
            cost.len()
        )));
    }
    if let Some(i) = cost.iter().position(|c| !c.is_finite()) {
        return Err(MetricsError::Undefined(format!("assignment cost entry {i} is {}", cost[i])));
    }
    // 1-based columns; column 0 is the virtual start of each augmenting path.
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; n + 1];
    let mut row_of = vec![0usize; n + 1]; // row_of[j]: 1-based row matched to column j
    let mut way = vec![0usize; n + 1];
    let mut min_v = vec![0.0f64; n + 1];
    let mut used = vec![false; n + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        min_v.fill(f64::INFINITY);
        used.fill(false);
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let row = &cost[(i0 - 1) * n..i0 * n];
            let ui0 = u[i0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = row[j - 1] - ui0 - v[j];
                    if cur < min_v[j] {
                        min_v[j] = cur;
                        way[j] = j0;
                    }
                    if min_v[j] < delta {
                        delta = min_v[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_v[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut assignment = vec![0; n];
    for j in 1..=n {
        if row_of[j] > 0 {
            assignment[row_of[j] - 1] = j - 1;
        }
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(cost: &[f64], n: usize) -> f64 {
        fn rec(cost: &[f64], n: usize, row: usize, used: &mut Vec<bool>, acc: f64, best: &mut f64) {
            if row == n {
                *best = best.min(acc);
                return;
            }
            for j in 0..n {
                if !used[j] {
                    used[j] = true;
                    rec(cost, n, row + 1, used, acc + cost[row * n + j], best);
                    used[j] = false;
                }
            }
        }
        let mut best = f64::INFINITY;
        rec(cost, n, 0, &mut vec![false; n], 0.0, &mut best);
        best
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        // A small LCG: deterministic, no RNG dependency.
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in 1..=7 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n).map(|_| (next() * 10.0).round() - 3.0).collect();
                let p = linear_sum_assignment(&cost, n).unwrap();
                let mut seen = vec![false; n];
                for &j in &p {
                    assert!(!seen[j]);
                    seen[j] = true;
                }
                let total: f64 = p.iter().enumerate().map(|(i, &j)| cost[i * n + j]).sum();
                assert!((total - brute_force(&cost, n)).abs() < 1e-9);
            }
        }
        assert!(linear_sum_assignment(&[1.0, 2.0], 2).is_err());
        assert!(linear_sum_assignment(&[f64::NAN], 1).is_err());
        assert_eq!(linear_sum_assignment(&[], 0).unwrap(), Vec::<usize>::new());
    }
}
