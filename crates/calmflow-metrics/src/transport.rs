//! The transportation problem between two uniform empirical measures, solved exactly.
//!
//! `min_π Σ_ij π_ij c_ij` over couplings of `n` points of mass `1/n` with `m` points of mass
//! `1/m`. With `g = gcd(n, m)` the masses are integers in units of `1/F`, `F = n·m/g`: every
//! source supplies `m/g` units and every sink takes `n/g`, so an integral optimal plan
//! exists and successive shortest paths find one exactly (up to floating-point sums).
//! This is the problem POT's `emd` solves by network simplex; here each source's supply is
//! routed along shortest augmenting paths in the residual network, with Johnson
//! potentials so that Dijkstra sees non-negative reduced costs and may stop at the first
//! sink with demand left (the form the assignment solver uses for `n = m`).
//!
//! ```
//! use calmflow_metrics::uniform_transport_cost;
//! // Sources {0, 2} (mass ½ each), sinks {0, 1, 2} (mass ⅓ each), cost |x − y|:
//! // ⅓ stays at 0 and at 2; the sink at 1 takes ⅙ from each source, moving it 1.
//! let cost = [0.0, 1.0, 2.0, 2.0, 1.0, 0.0];
//! let c = uniform_transport_cost(&cost, 2, 3).unwrap();
//! assert!((c - 1.0 / 3.0).abs() < 1e-12);
//! ```

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::assignment::check_cost;
use crate::error::{MetricsError, Result};

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A node of the residual network: sources `0..n`, sinks `n..n + m`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    dist: f64,
    node: usize,
}

impl Eq for Entry {}

impl Ord for Entry {
    // Reversed: `BinaryHeap` is a max-heap and Dijkstra wants the nearest node first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .dist
            .total_cmp(&self.dist)
            .then(other.node.cmp(&self.node))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The optimal mean cost `Σ π_ij c_ij` of transporting `n` points of mass `1/n` onto `m`
/// points of mass `1/m`, for a row-major `n × m` cost matrix with finite entries.
pub fn uniform_transport_cost(cost: &[f64], n: usize, m: usize) -> Result<f64> {
    if n == 0 || m == 0 {
        return Err(MetricsError::Undefined(format!(
            "transport between {n} and {m} points"
        )));
    }
    check_cost("transport", cost, n, m)?;
    let g = gcd(n, m);
    let units = (n as u64 / g as u64) * m as u64;
    let mut supply = vec![(m / g) as u64; n];
    let mut demand = vec![(n / g) as u64; m];
    // Potentials: the reduced cost of a residual arc u → v, c + p(u) − p(v), stays ≥ 0;
    // a sink starts at its column's smallest cost, so that negative costs are allowed.
    let mut potential = vec![0.0f64; n + m];
    for j in 0..m {
        potential[n + j] = (0..n)
            .map(|i| cost[i * m + j])
            .fold(f64::INFINITY, f64::min);
    }
    // The plan, by sink: the sources that send it mass, with their units.
    let mut senders: Vec<Vec<(usize, u64)>> = vec![Vec::new(); m];
    let mut dist = vec![f64::INFINITY; n + m];
    let mut done = vec![false; n + m];
    let mut parent = vec![usize::MAX; n + m];
    let mut settled: Vec<usize> = Vec::new();
    let mut heap = BinaryHeap::new();
    for start in 0..n {
        while supply[start] > 0 {
            for &v in &settled {
                done[v] = false;
            }
            settled.clear();
            dist.fill(f64::INFINITY);
            heap.clear();
            dist[start] = 0.0;
            heap.push(Entry {
                dist: 0.0,
                node: start,
            });
            let mut target = None;
            while let Some(Entry { dist: d, node: u }) = heap.pop() {
                if done[u] || d > dist[u] {
                    continue;
                }
                done[u] = true;
                settled.push(u);
                if u < n {
                    // A source reaches every sink (forward arcs are uncapacitated).
                    let row = &cost[u * m..(u + 1) * m];
                    for (j, &c) in row.iter().enumerate() {
                        let v = n + j;
                        if done[v] {
                            continue;
                        }
                        let nd = d + (c + potential[u] - potential[v]).max(0.0);
                        if nd < dist[v] {
                            dist[v] = nd;
                            parent[v] = u;
                            heap.push(Entry { dist: nd, node: v });
                        }
                    }
                } else {
                    let j = u - n;
                    if demand[j] > 0 {
                        target = Some(j);
                        break;
                    }
                    // A full sink passes flow back to the sources that fill it.
                    for &(i, _) in &senders[j] {
                        if done[i] {
                            continue;
                        }
                        let nd = d + (potential[u] - cost[i * m + j] - potential[i]).max(0.0);
                        if nd < dist[i] {
                            dist[i] = nd;
                            parent[i] = u;
                            heap.push(Entry { dist: nd, node: i });
                        }
                    }
                }
            }
            let Some(sink) = target else {
                return Err(MetricsError::Undefined(
                    "transport: a source's supply found no sink with demand left".into(),
                ));
            };
            let reach = dist[n + sink];
            for &v in &settled {
                if dist[v] < reach {
                    potential[v] -= reach - dist[v];
                }
            }
            // The path, sink back to `start`: sink ← source (forward) ← sink (backward) …
            let mut delta = supply[start].min(demand[sink]);
            let mut v = n + sink;
            while v != start {
                let u = parent[v];
                if u >= n {
                    // Backward arc: sink u gives back units that source v sent it.
                    let sent = senders[u - n]
                        .iter()
                        .find(|(i, _)| *i == v)
                        .map_or(0, |&(_, f)| f);
                    delta = delta.min(sent);
                }
                v = u;
            }
            if delta == 0 {
                return Err(MetricsError::Undefined(
                    "transport: an augmenting path carries no flow".into(),
                ));
            }
            let mut v = n + sink;
            while v != start {
                let u = parent[v];
                if u < n {
                    let list = &mut senders[v - n];
                    match list.iter_mut().find(|(i, _)| *i == u) {
                        Some((_, f)) => *f += delta,
                        None => list.push((u, delta)),
                    }
                } else {
                    let list = &mut senders[u - n];
                    if let Some(k) = list.iter().position(|(i, _)| *i == v) {
                        list[k].1 -= delta;
                        if list[k].1 == 0 {
                            list.swap_remove(k);
                        }
                    }
                }
                v = u;
            }
            supply[start] -= delta;
            demand[sink] -= delta;
        }
    }
    let total: f64 = senders
        .iter()
        .enumerate()
        .flat_map(|(j, list)| list.iter().map(move |&(i, f)| (i, j, f)))
        .map(|(i, j, f)| f as f64 * cost[i * m + j])
        .sum();
    Ok(total / units as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::linear_sum_assignment;

    fn lcg(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f64 / (1u64 << 24) as f64) * 4.0 - 2.0
            })
            .collect()
    }

    /// The same problem as an assignment between the points replicated to lcm(n, m).
    fn replicated(x: &[f64], y: &[f64], cost: impl Fn(f64, f64) -> f64) -> f64 {
        let (n, m) = (x.len(), y.len());
        let l = n / gcd(n, m) * m;
        let c: Vec<f64> = (0..l * l)
            .map(|k| cost(x[(k / l) / (l / n)], y[(k % l) / (l / m)]))
            .collect();
        let p = linear_sum_assignment(&c, l).unwrap();
        p.iter()
            .enumerate()
            .map(|(i, &j)| c[i * l + j])
            .sum::<f64>()
            / l as f64
    }

    /// Against the replicated assignment, for sizes with small and large gcd and the
    /// costs |x − y| and |x − y|², in one dimension and in three.
    #[test]
    fn equals_the_replicated_assignment() {
        for (n, m, seed) in [
            (3, 7, 1),
            (12, 8, 2),
            (25, 10, 3),
            (9, 9, 4),
            (1, 5, 5),
            (30, 45, 6),
        ] {
            let x = lcg(n, seed);
            let y: Vec<f64> = lcg(m, seed + 100).iter().map(|v| 1.3 * v + 0.4).collect();
            for power in [1, 2] {
                let f = |a: f64, b: f64| (a - b).abs().powi(power);
                let cost: Vec<f64> = (0..n * m).map(|k| f(x[k / m], y[k % m])).collect();
                let got = uniform_transport_cost(&cost, n, m).unwrap();
                let want = replicated(&x, &y, f);
                assert!(
                    (got - want).abs() < 1e-9,
                    "n {n} m {m} p {power}: {got} vs {want}"
                );
            }
        }
        // Three dimensions: the cost is a general matrix, not a line's.
        let (n, m) = (14, 21);
        let xs = lcg(3 * n, 7);
        let ys = lcg(3 * m, 8);
        let d2 = |i: usize, j: usize| {
            (0..3)
                .map(|d| (xs[3 * i + d] - ys[3 * j + d]).powi(2))
                .sum::<f64>()
        };
        let cost: Vec<f64> = (0..n * m).map(|k| d2(k / m, k % m)).collect();
        let l = 42;
        let c: Vec<f64> = (0..l * l).map(|k| d2((k / l) / 3, (k % l) / 2)).collect();
        let p = linear_sum_assignment(&c, l).unwrap();
        let want = p
            .iter()
            .enumerate()
            .map(|(i, &j)| c[i * l + j])
            .sum::<f64>()
            / l as f64;
        let got = uniform_transport_cost(&cost, n, m).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    /// In one dimension with |x − y|² the optimum is the monotone (quantile) coupling:
    /// `∫₀¹ (F⁻¹(u) − G⁻¹(u))² du`, summed over the pieces where both quantile functions
    /// are constant, for coprime sizes whose lcm the replication could not afford.
    #[test]
    fn one_dimension_is_the_quantile_coupling() {
        let (n, m) = (101, 157);
        let mut x = lcg(n, 11);
        let mut y: Vec<f64> = lcg(m, 12).iter().map(|v| v * v - 0.5).collect();
        let cost: Vec<f64> = (0..n * m).map(|k| (x[k / m] - y[k % m]).powi(2)).collect();
        let got = uniform_transport_cost(&cost, n, m).unwrap();
        x.sort_by(f64::total_cmp);
        y.sort_by(f64::total_cmp);
        // Breakpoints of both quantile functions, as exact fractions k/n and k/m.
        let mut cuts: Vec<(u64, u64)> = (1..=n as u64)
            .map(|k| (k * m as u64, (n * m) as u64))
            .chain((1..=m as u64).map(|k| (k * n as u64, (n * m) as u64)))
            .collect();
        cuts.sort();
        cuts.dedup();
        let mut want = 0.0;
        let mut last = 0u64;
        for (num, den) in cuts {
            // The piece's midpoint (last + num)/(2·den) lies strictly inside it.
            let twice = last + num;
            let (i, j) = (
                (twice * n as u64 / (2 * den)) as usize,
                (twice * m as u64 / (2 * den)) as usize,
            );
            want += (num - last) as f64 / den as f64 * (x[i] - y[j]).powi(2);
            last = num;
        }
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    /// Negative costs: shifting every cost by a constant shifts the optimum by it.
    #[test]
    fn negative_costs_shift_the_optimum() {
        let (n, m) = (6, 4);
        let cost: Vec<f64> = lcg(n * m, 21).iter().map(|v| v * v).collect();
        let shifted: Vec<f64> = cost.iter().map(|c| c - 10.0).collect();
        let a = uniform_transport_cost(&cost, n, m).unwrap();
        let b = uniform_transport_cost(&shifted, n, m).unwrap();
        assert!((a - 10.0 - b).abs() < 1e-9, "{a} {b}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(uniform_transport_cost(&[], 0, 3).is_err());
        assert!(uniform_transport_cost(&[1.0, 2.0], 1, 3).is_err());
        assert!(uniform_transport_cost(&[1.0, f64::NAN], 1, 2).is_err());
        assert_eq!(uniform_transport_cost(&[2.5], 1, 1).unwrap(), 2.5);
    }
}
