//! # calmflow-linalg — the dense statistics shared by data and metrics
//!
//! Column means, covariances, symmetric eigendecompositions (via `nalgebra`'s
//! `SymmetricEigen`, sorted by decreasing eigenvalue), square roots of positive
//! semi-definite matrices and pairwise squared distances. Inputs are `f32` or `f64`
//! sample matrices (rows are points); everything is accumulated in `f64`.
//!
//! ```
//! use calmflow_linalg::{covariance, symmetric_eigen};
//! use ndarray::array;
//! let x = array![[1.0f32, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]];
//! let c = covariance(x.view());
//! // Unbiased (n − 1) covariance: diag(2/3, 8/3).
//! assert!((c[[0, 0]] - 2.0 / 3.0).abs() < 1e-12 && (c[[1, 1]] - 8.0 / 3.0).abs() < 1e-12);
//! let (values, _vectors) = symmetric_eigen(&c);
//! assert!((values[0] - 8.0 / 3.0).abs() < 1e-12);
//! ```

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Element types accepted as sample matrices.
pub trait Real: Copy {
    /// Widening conversion to `f64`.
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// Converts a sample matrix to `f64`.
pub fn to_f64<T: Real>(x: ArrayView2<'_, T>) -> Array2<f64> {
    x.mapv(Real::to_f64)
}

/// Mean of each column (the empty mean is zero).
pub fn column_means<T: Real>(x: ArrayView2<'_, T>) -> Array1<f64> {
    let n = x.nrows();
    let mut m = Array1::zeros(x.ncols());
    for row in x.rows() {
        m.zip_mut_with(&row, |a, &b| *a += b.to_f64());
    }
    if n > 0 {
        m /= n as f64;
    }
    m
}

/// Unbiased sample covariance (divides by `n − 1`; by 1 when `n = 1`).
pub fn covariance<T: Real>(x: ArrayView2<'_, T>) -> Array2<f64> {
    let mean = column_means(x);
    let centred = to_f64(x) - mean.view().insert_axis(Axis(0));
    let denom = (x.nrows().max(2) - 1) as f64;
    centred.t().dot(&centred) / denom
}

/// Eigen-decomposition of a symmetric matrix: eigenvalues in decreasing order and the
/// matching unit eigenvectors as the columns of the second array.
///
/// Only the lower triangle is read after symmetrisation `(A + Aᵀ)/2`, so small
/// asymmetries from rounding are harmless.
pub fn symmetric_eigen(a: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = a.nrows();
    let m = nalgebra::DMatrix::from_fn(n, n, |i, j| 0.5 * (a[[i, j]] + a[[j, i]]));
    let eig = nalgebra::SymmetricEigen::new(m);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let values = Array1::from_iter(order.iter().map(|&i| eig.eigenvalues[i]));
    let vectors = Array2::from_shape_fn((n, n), |(r, c)| eig.eigenvectors[(r, order[c])]);
    (values, vectors)
}

/// The symmetric square root of a positive semi-definite matrix; negative eigenvalues
/// (rounding noise) are clamped to zero.
pub fn sqrt_psd(a: &Array2<f64>) -> Array2<f64> {
    let (values, vectors) = symmetric_eigen(a);
    let scaled = &vectors
        * &values
            .mapv(|v| v.max(0.0).sqrt())
            .view()
            .insert_axis(Axis(0));
    scaled.dot(&vectors.t())
}

/// Squared Euclidean distances `‖x_i − y_j‖²` between the rows of `x` and `y`
/// (computed directly, not by the cancellation-prone `‖x‖² + ‖y‖² − 2x·y`: a point's
/// distance to itself is exactly 0).
///
/// Rows of the result are computed in parallel (rayon), and each sum with four partial
/// sums that the compiler can vectorise; every entry is the same whatever the number of
/// threads.
pub fn pairwise_sq_dists<T: Real>(x: ArrayView2<'_, T>, y: ArrayView2<'_, T>) -> Array2<f64> {
    // Row-major copies, whatever the layout of the views (a transposed view maps to a
    // column-major array, whose rows are not slices).
    let x = to_f64(x).as_standard_layout().into_owned();
    let y = to_f64(y).as_standard_layout().into_owned();
    let (n, m) = (x.nrows(), y.nrows());
    let mut d = Array2::<f64>::zeros((n, m));
    if n == 0 || m == 0 {
        return d;
    }
    let rows: Vec<&[f64]> = y
        .rows()
        .into_iter()
        .map(|r| r.to_slice().expect("rows of a row-major array are slices"))
        .collect();
    let out = d
        .as_slice_mut()
        .expect("a freshly allocated array is contiguous");
    out.par_chunks_mut(m).enumerate().for_each(|(i, row)| {
        let xi = x.row(i);
        let xi = xi.to_slice().expect("rows of a row-major array are slices");
        for (dij, yj) in row.iter_mut().zip(&rows) {
            *dij = sq_dist(xi, yj);
        }
    });
    d
}

/// `Σ (a_k − b_k)²` with four partial sums (sequential below four terms).
fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut acc = [0.0f64; 4];
    for (p, q) in ca.zip(cb) {
        for k in 0..4 {
            let t = p[k] - q[k];
            acc[k] += t * t;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(p, q)| (p - q) * (p - q)).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn eigen_reconstructs_and_sorts() {
        let a = array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]];
        let (v, q) = symmetric_eigen(&a);
        assert!(v[0] >= v[1] && v[1] >= v[2]);
        let rebuilt = (&q * &v.view().insert_axis(Axis(0))).dot(&q.t());
        for (x, y) in rebuilt.iter().zip(a.iter()) {
            assert!((x - y).abs() < 1e-12);
        }
        let q_t_q = q.t().dot(&q);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((q_t_q[[i, j]] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn sqrt_psd_squares_back() {
        let a = array![[2.0, 0.6], [0.6, 1.0]];
        let s = sqrt_psd(&a);
        let back = s.dot(&s);
        for (x, y) in back.iter().zip(a.iter()) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn pairwise_distances_match_definition() {
        let x = array![[0.0f32, 0.0], [1.0, 1.0]];
        let y = array![[3.0f32, 4.0]];
        let d = pairwise_sq_dists(x.view(), y.view());
        assert_eq!(d, array![[25.0], [13.0]]);
    }

    /// Long rows (the four partial sums and the tail), transposed views, empty sets,
    /// and exact zeros on the diagonal, against a sequential f64 re-computation.
    #[test]
    fn pairwise_distances_of_long_rows_and_any_layout() {
        let x = Array2::from_shape_fn((7, 11), |(i, k)| ((i * 13 + k * 7) % 17) as f64 / 3.0 - 2.0);
        let y = Array2::from_shape_fn((11, 5), |(k, j)| ((k * 5 + j * 3) % 11) as f64 / 7.0);
        let yt = y.t(); // 5 × 11, column-major
        let d = pairwise_sq_dists(x.view(), yt);
        assert_eq!(d.dim(), (7, 5));
        for i in 0..7 {
            for j in 0..5 {
                let want: f64 = (0..11).map(|k| (x[[i, k]] - yt[[j, k]]).powi(2)).sum();
                assert!(
                    (d[[i, j]] - want).abs() <= 1e-12 * want.max(1.0),
                    "({i}, {j})"
                );
            }
        }
        let own = pairwise_sq_dists(x.view(), x.view());
        assert!((0..7).all(|i| own[[i, i]] == 0.0));
        assert_eq!(
            pairwise_sq_dists(x.view(), x.slice(ndarray::s![..0, ..])).dim(),
            (7, 0)
        );
    }
}
