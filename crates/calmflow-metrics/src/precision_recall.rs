//! k-NN precision and recall (Kynkäänniemi et al., NeurIPS 2019): each set's manifold is
//! the union of balls around its points with radius the distance to the point's k-th
//! nearest neighbour in its own set (the point itself excluded); precision is the share of
//! generated points inside the target's manifold, recall the share of target points inside
//! the generated one.
//!
//! Precision falls when samples leave the data (blurred or blotchy images, points between
//! modes); recall falls when regions or modes of the data are missed. Both are near 1 for a
//! second sample of the data itself, and that floor, not 1, is what to compare with.
//!
//! ```
//! use calmflow_metrics::knn_precision_recall;
//! // Target: 0, 1, …, 9 on a line, so every target radius at k = 1 is 1.
//! let y = ndarray::Array2::from_shape_fn((10, 1), |(i, _)| i as f32);
//! // 0.5 lies within 1 of a target point, 20 does not.
//! let x = ndarray::array![[0.5f32], [20.0]];
//! let pr = knn_precision_recall(x.view(), y.view(), 1).unwrap();
//! assert_eq!(pr.precision, 0.5);
//! // Both generated radii are 19.5, so every target point is covered.
//! assert_eq!(pr.recall, 1.0);
//! ```

use ndarray::{Array1, Array2, ArrayView2, s};
use serde::Serialize;

use crate::error::{MetricsError, Result, check_pair};

/// The `k` of k-NN precision and recall that Kynkäänniemi et al. recommend and that the
/// quality suite reports.
pub const KNN_K: usize = 5;

/// Rows of one distance block: bounds the memory of a block to `BLOCK × n` doubles.
const BLOCK: usize = 256;

/// k-NN precision and recall of a generated set against a target set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrecisionRecall {
    /// Share of generated points inside some target point's k-NN ball.
    pub precision: f64,
    /// Share of target points inside some generated point's k-NN ball.
    pub recall: f64,
    /// The `k` used.
    pub k: usize,
}

/// Squared distance from every point of `x` to its `k`-th nearest neighbour in `x`,
/// the point itself excluded (a duplicate of it counts as a neighbour at distance 0).
fn kth_neighbour_sq(x: &Array2<f64>, k: usize) -> Array1<f64> {
    let n = x.nrows();
    let mut radii = Array1::zeros(n);
    let mut row = Vec::with_capacity(n);
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let d = calmflow_linalg::pairwise_sq_dists(x.slice(s![start..end, ..]), x.view());
        for (offset, dists) in d.rows().into_iter().enumerate() {
            let i = start + offset;
            row.clear();
            row.extend(
                dists
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &v)| v),
            );
            let (_, kth, _) = row.select_nth_unstable_by(k - 1, f64::total_cmp);
            radii[i] = *kth;
        }
    }
    radii
}

/// Share of the points of `a` that lie within the radius of some point of `b`
/// (`‖a − b_j‖² ≤ r_j²`).
fn coverage(a: &Array2<f64>, b: &Array2<f64>, radii_sq: &Array1<f64>) -> f64 {
    let mut inside = 0usize;
    for start in (0..a.nrows()).step_by(BLOCK) {
        let end = (start + BLOCK).min(a.nrows());
        let d = calmflow_linalg::pairwise_sq_dists(a.slice(s![start..end, ..]), b.view());
        inside += d
            .rows()
            .into_iter()
            .filter(|row| row.iter().zip(radii_sq).any(|(&v, &r)| v <= r))
            .count();
    }
    inside as f64 / a.nrows() as f64
}

/// k-NN precision and recall of `samples` against `target`, with `k ≥ 1` neighbours.
/// Each set needs more than `k` points (a radius is a distance to the k-th *other* point).
/// Costs `O((n + m)² D)` time and `O(256 (n + m))` memory.
pub fn knn_precision_recall(
    samples: ArrayView2<'_, f32>,
    target: ArrayView2<'_, f32>,
    k: usize,
) -> Result<PrecisionRecall> {
    if k == 0 {
        return Err(MetricsError::InvalidParameter {
            name: "k",
            value: 0.0,
            reason: "k-NN precision and recall need k ≥ 1",
        });
    }
    let (xs, ys) = check_pair(samples, target)?;
    for (which, n) in [("samples", xs.nrows()), ("target", ys.nrows())] {
        if n <= k {
            return Err(MetricsError::TooFewPoints {
                which,
                n,
                metric: "k-NN precision and recall",
                min: k + 1,
            });
        }
    }
    let target_radii = kth_neighbour_sq(&ys, k);
    let sample_radii = kth_neighbour_sq(&xs, k);
    Ok(PrecisionRecall {
        precision: coverage(&xs, &ys, &target_radii),
        recall: coverage(&ys, &xs, &sample_radii),
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Squares of a regular 2-D lattice, so that every radius is known.
    fn lattice(side: usize, spacing: f32, offset: (f32, f32)) -> Array2<f32> {
        Array2::from_shape_fn((side * side, 2), |(i, j)| {
            let (r, c) = (i / side, i % side);
            if j == 0 {
                offset.0 + r as f32 * spacing
            } else {
                offset.1 + c as f32 * spacing
            }
        })
    }

    #[test]
    fn identical_sets_cover_each_other() {
        let y = lattice(20, 1.0, (0.0, 0.0));
        let pr = knn_precision_recall(y.view(), y.view(), KNN_K).unwrap();
        assert_eq!((pr.precision, pr.recall, pr.k), (1.0, 1.0, 5));
    }

    #[test]
    fn lattice_radii_give_the_closed_form_shares() {
        // On a unit lattice an interior point's neighbours lie at 1, 1, 1, 1, √2, …, an
        // edge point's at 1, 1, 1, √2, …, a corner's at 1, 1, √2, 2, …: with k = 4 the
        // squared radii are 1, 2 and 4.
        let side = 30;
        let y = lattice(side, 1.0, (0.0, 0.0));
        let radii = kth_neighbour_sq(&y.mapv(f64::from), 4);
        assert_eq!(radii[side + 1], 1.0);
        assert_eq!(radii[1], 2.0);
        assert_eq!(radii[0], 4.0);
        // Samples on the half-shifted lattice are 0.5 (squared) from four target points,
        // inside every target ball.
        let x = lattice(side - 1, 1.0, (0.5, 0.5));
        let pr = knn_precision_recall(x.view(), y.view(), 4).unwrap();
        assert_eq!(pr.precision, 1.0);
        assert_eq!(pr.recall, 1.0);
        // Lifted 2 off the target's plane in a third coordinate, every sample is at
        // squared distance ≥ 0.5 + 4 from every target point, beyond the largest squared
        // radius (4) of either set: both shares are exactly 0.
        let lift = |a: &Array2<f32>, z: f32| {
            ndarray::concatenate![
                ndarray::Axis(1),
                a.view(),
                Array2::from_elem((a.nrows(), 1), z)
            ]
        };
        let pr = knn_precision_recall(lift(&x, 2.0).view(), lift(&y, 0.0).view(), 4).unwrap();
        assert_eq!(pr.precision, 0.0);
        assert_eq!(pr.recall, 0.0);
    }

    #[test]
    fn a_collapsed_sample_has_precision_but_no_recall() {
        // Generated points all at one target point: precise, and their own radii are 0, so
        // they cover only that one target point.
        let y = lattice(10, 1.0, (0.0, 0.0));
        let x = Array2::from_elem((50, 2), 3.0f32);
        let pr = knn_precision_recall(x.view(), y.view(), KNN_K).unwrap();
        assert_eq!(pr.precision, 1.0);
        assert_eq!(pr.recall, 1.0 / 100.0);
    }

    #[test]
    fn refuses_bad_k_and_small_sets() {
        let y = lattice(3, 1.0, (0.0, 0.0));
        assert!(matches!(
            knn_precision_recall(y.view(), y.view(), 0),
            Err(MetricsError::InvalidParameter { name: "k", .. })
        ));
        assert!(matches!(
            knn_precision_recall(y.slice(s![..5, ..]), y.view(), 5),
            Err(MetricsError::TooFewPoints {
                which: "samples",
                n: 5,
                min: 6,
                ..
            })
        ));
        assert!(matches!(
            knn_precision_recall(y.view(), y.slice(s![..2, ..]), 2),
            Err(MetricsError::TooFewPoints {
                which: "target",
                ..
            })
        ));
    }
}
