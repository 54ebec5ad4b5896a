//! The linear assignment problem, solved exactly.

use crate::error::{MetricsError, Result};

/// Checks that a row-major `rows × cols` cost matrix has that many entries, all finite.
pub(crate) fn check_cost(what: &str, cost: &[f64], rows: usize, cols: usize) -> Result<()> {
    if cost.len() != rows * cols {
        return Err(MetricsError::Undefined(format!(
            "{what} cost has {} entries, expected {rows} × {cols}",
            cost.len()
        )));
    }
    if let Some(i) = cost.iter().position(|c| !c.is_finite()) {
        return Err(MetricsError::Undefined(format!(
            "{what} cost entry {i} is {}",
            cost[i]
        )));
    }
    Ok(())
}

/// Solves `min_π Σ_i cost[i][π(i)]` over permutations of a square `n × n` cost matrix
/// (row-major, `cost.len() == n²`) by shortest augmenting paths with dual potentials
/// (the Jonker–Volgenant / Crouse form of the Hungarian method): one Dijkstra search per
/// row over the columns not yet scanned, potentials updated once per augmentation;
/// `O(n³)` worst case, far less on typical costs.
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
    check_cost("assignment", cost, n, n)?;
    let mut v = vec![0.0f64; n];
    let mut col_of_row = vec![FREE; n];
    let mut row_of_col = vec![FREE; n];
    let free_rows = jv_initialise(cost, n, &mut v, &mut col_of_row, &mut row_of_col);
    // Dual feasibility u_i + v_j ≤ c_ij with equality on matched edges: u_i is the row's
    // smallest reduced cost, attained at its column when it has one.
    let mut u: Vec<f64> = (0..n)
        .map(|i| {
            let row = &cost[i * n..(i + 1) * n];
            match col_of_row[i] {
                FREE => row
                    .iter()
                    .zip(&v)
                    .map(|(c, vj)| c - vj)
                    .fold(f64::INFINITY, f64::min),
                j => row[j] - v[j],
            }
        })
        .collect();
    let mut path = vec![FREE; n];
    let mut shortest = vec![f64::INFINITY; n];
    let mut remaining: Vec<usize> = Vec::with_capacity(n);
    let mut scanned_rows: Vec<usize> = Vec::with_capacity(n);
    let mut scanned_cols: Vec<usize> = Vec::with_capacity(n);
    for start in free_rows {
        // Dijkstra from `start` over reduced costs until a free column is reached.
        shortest.fill(f64::INFINITY);
        remaining.clear();
        remaining.extend((0..n).rev());
        scanned_rows.clear();
        scanned_cols.clear();
        let mut i = start;
        let mut min_val = 0.0;
        let sink = loop {
            scanned_rows.push(i);
            let row = &cost[i * n..(i + 1) * n];
            let ui = u[i];
            let mut lowest = f64::INFINITY;
            let mut index = 0;
            for (k, &j) in remaining.iter().enumerate() {
                let r = min_val + row[j] - ui - v[j];
                if r < shortest[j] {
                    path[j] = i;
                    shortest[j] = r;
                }
                // Prefer a free column among ties: the search ends sooner.
                if shortest[j] < lowest || (shortest[j] == lowest && row_of_col[j] == FREE) {
                    lowest = shortest[j];
                    index = k;
                }
            }
            min_val = lowest;
            let j = remaining.swap_remove(index);
            scanned_cols.push(j);
            if row_of_col[j] == FREE {
                break j;
            }
            i = row_of_col[j];
        };
        u[start] += min_val;
        for &r in &scanned_rows[1..] {
            u[r] += min_val - shortest[col_of_row[r]];
        }
        for &c in &scanned_cols {
            v[c] -= min_val - shortest[c];
        }
        let mut j = sink;
        loop {
            let r = path[j];
            row_of_col[j] = r;
            std::mem::swap(&mut col_of_row[r], &mut j);
            if r == start {
                break;
            }
        }
    }
    Ok(col_of_row)
}

const FREE: usize = usize::MAX;

/// Jonker–Volgenant initialisation: column reduction, reduction transfer and two passes
/// of augmenting row reduction. Cheaply matches most rows while keeping `v` dual-feasible
/// (each matched row's column minimises its reduced cost `c_ij − v_j`); returns the rows
/// left free for the shortest-path phase.
fn jv_initialise(
    cost: &[f64],
    n: usize,
    v: &mut [f64],
    col_of_row: &mut [usize],
    row_of_col: &mut [usize],
) -> Vec<usize> {
    let c = |i: usize, j: usize| cost[i * n + j];
    // Column reduction: v_j = min_i c_ij; each column goes to its minimising row unless
    // that row already holds a cheaper column.
    let mut matches = vec![0usize; n];
    for j in (0..n).rev() {
        let (imin, min) = (0..n)
            .map(|i| (i, c(i, j)))
            .fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
        v[j] = min;
        matches[imin] += 1;
        if matches[imin] == 1 {
            col_of_row[imin] = j;
            row_of_col[j] = imin;
        } else if v[j] < v[col_of_row[imin]] {
            let j1 = col_of_row[imin];
            col_of_row[imin] = j;
            row_of_col[j] = imin;
            row_of_col[j1] = FREE;
        } else {
            row_of_col[j] = FREE;
        }
    }
    // Reduction transfer: a row matched once lowers its column's price to its second-best.
    let mut free = Vec::new();
    for i in 0..n {
        match matches[i] {
            0 => free.push(i),
            1 => {
                let j1 = col_of_row[i];
                let min = (0..n)
                    .filter(|&j| j != j1)
                    .map(|j| c(i, j) - v[j])
                    .fold(f64::INFINITY, f64::min);
                if min.is_finite() {
                    v[j1] -= min;
                }
            }
            _ => {}
        }
    }
    // Augmenting row reduction, two passes. Displaced rows are retried at once, which can
    // ping-pong between two rows for many rounds on near-ties: after `n` retries a pass
    // leaves displaced rows to the shortest-path phase (any state here is dual-feasible).
    for _ in 0..2 {
        let mut k = 0;
        let mut retries = 0;
        let previous = std::mem::take(&mut free);
        let mut queue = previous;
        while k < queue.len() {
            let i = queue[k];
            k += 1;
            let (mut umin, mut usub) = (f64::INFINITY, f64::INFINITY);
            let (mut j1, mut j2) = (0, 0);
            for (j, &vj) in v.iter().enumerate() {
                let h = c(i, j) - vj;
                if h < usub {
                    if h >= umin {
                        usub = h;
                        j2 = j;
                    } else {
                        usub = umin;
                        j2 = j1;
                        umin = h;
                        j1 = j;
                    }
                }
            }
            let mut i0 = row_of_col[j1];
            if umin < usub {
                v[j1] -= usub - umin;
            } else if i0 != FREE {
                j1 = j2;
                i0 = row_of_col[j2];
            }
            if i0 != FREE {
                col_of_row[i0] = FREE;
            }
            col_of_row[i] = j1;
            row_of_col[j1] = i;
            if i0 != FREE {
                if umin < usub && retries < n {
                    // The displaced row is retried at once.
                    retries += 1;
                    k -= 1;
                    queue[k] = i0;
                } else {
                    free.push(i0);
                }
            }
        }
    }
    free
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
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
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
