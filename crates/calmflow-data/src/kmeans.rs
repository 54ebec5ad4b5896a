//! k-means clustering (Lloyd's iterations from greedy k-means++ seeds, Arthur &
//! Vassilvitskii 2007): `argmin_C Σ_i min_k ‖x_i − c_k‖²`, the best of several seeded starts.
//!
//! calmflow fits it on a sample of a mixture head's targets to place the components'
//! means before training (`docs/heads.md`, "Components placed by k-means").
//!
//! ```
//! use calmflow_data::{seeded_rng, KMeans};
//! let x = ndarray::array![[0.0f32, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]];
//! let fit = KMeans::fit(x.view(), 2, 4, &mut seeded_rng(0)).unwrap();
//! let mut centres: Vec<[f64; 2]> = fit.centres().rows().into_iter().map(|c| [c[0], c[1]]).collect();
//! centres.sort_by(|a, b| a[0].total_cmp(&b[0]));
//! assert_eq!(centres, vec![[0.0, 0.5], [10.0, 0.5]]);
//! assert_eq!(fit.inertia(), 1.0); // four points, each 0.5 from its centre
//! ```

use ndarray::{Array2, ArrayView2};
use rand::Rng as _;

use crate::error::{DataError, Result, ensure_finite};
use crate::rng::Rng;

/// Lloyd iterations per start at most; each start stops earlier once no point changes
/// cluster.
pub const KMEANS_MAX_ITERATIONS: usize = 100;

/// A fitted k-means clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    centres: Array2<f64>,
    inertia: f64,
}

impl KMeans {
    /// Fits `k` centres to the rows of `x` (`1 ≤ k ≤ n`), keeping the start with the
    /// smallest inertia among `restarts ≥ 1` k-means++ starts drawn from `rng`.
    pub fn fit(x: ArrayView2<'_, f32>, k: usize, restarts: usize, rng: &mut Rng) -> Result<Self> {
        if x.nrows() == 0 {
            return Err(DataError::Empty("k-means input".into()));
        }
        if x.ncols() == 0 {
            return Err(DataError::invalid("x", "k-means input has no columns"));
        }
        ensure_finite(x, "k-means input")?;
        if k == 0 || k > x.nrows() {
            return Err(DataError::invalid(
                "k",
                format!(
                    "must be in 1..={} (the number of points), got {k}",
                    x.nrows()
                ),
            ));
        }
        if restarts == 0 {
            return Err(DataError::invalid("restarts", "must be ≥ 1"));
        }
        let x = x.mapv(f64::from);
        let mut best: Option<Self> = None;
        for _ in 0..restarts {
            let fit = lloyd(&x, plus_plus_seeds(&x, k, rng));
            if best.as_ref().is_none_or(|b| fit.inertia < b.inertia) {
                best = Some(fit);
            }
        }
        Ok(best.expect("restarts ≥ 1"))
    }

    /// The centres, one per row (`k × d`).
    pub fn centres(&self) -> &Array2<f64> {
        &self.centres
    }

    /// `Σ_i min_k ‖x_i − c_k‖²` on the fitted points.
    pub fn inertia(&self) -> f64 {
        self.inertia
    }
}

fn sq_dist(a: ndarray::ArrayView1<'_, f64>, b: ndarray::ArrayView1<'_, f64>) -> f64 {
    a.iter().zip(b).map(|(u, v)| (u - v).powi(2)).sum()
}

/// Greedy k-means++ (as scikit-learn's): the first centre uniformly; for each next one,
/// `2 + ⌊ln k⌋` candidates drawn with probability proportional to the squared distance to
/// the nearest centre so far, keeping the candidate that lowers the potential
/// `Σ_i min_c ‖x_i − c‖²` most. In high dimension the squared distances within and
/// between clusters differ little, so a single draw per centre often lands two centres in
/// one cluster; the candidates make that rare.
fn plus_plus_seeds(x: &Array2<f64>, k: usize, rng: &mut Rng) -> Array2<f64> {
    let n = x.nrows();
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut centres = Array2::<f64>::zeros((k, x.ncols()));
    centres.row_mut(0).assign(&x.row(rng.random_range(0..n)));
    let mut nearest: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| sq_dist(r, centres.row(0)))
        .collect();
    for c in 1..k {
        let total: f64 = nearest.iter().sum();
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let pick = if total > 0.0 {
                let mut u = rng.random::<f64>() * total;
                // Rounding can leave `u ≥ 0` after the last weight: fall back on the last
                // point with weight, never on one that is already a centre.
                nearest
                    .iter()
                    .position(|&w| {
                        u -= w;
                        u < 0.0
                    })
                    .or_else(|| nearest.iter().rposition(|&w| w > 0.0))
                    .unwrap_or(n - 1)
            } else {
                // Every point coincides with a centre already: any row will do.
                rng.random_range(0..n)
            };
            let updated: Vec<f64> = nearest
                .iter()
                .zip(x.rows())
                .map(|(&d, r)| d.min(sq_dist(r, x.row(pick))))
                .collect();
            let potential: f64 = updated.iter().sum();
            if best.as_ref().is_none_or(|b| potential < b.0) {
                best = Some((potential, pick, updated));
            }
        }
        let (_, pick, updated) = best.expect("at least two trials");
        centres.row_mut(c).assign(&x.row(pick));
        nearest = updated;
    }
    centres
}

/// Lloyd's iterations from `centres`. A cluster left empty takes the point farthest from
/// its own centre, so that no centre is left where no point is.
fn lloyd(x: &Array2<f64>, mut centres: Array2<f64>) -> KMeans {
    let (n, d) = x.dim();
    let k = centres.nrows();
    let mut label = vec![usize::MAX; n];
    let mut dist = vec![0.0; n];
    for _ in 0..KMEANS_MAX_ITERATIONS {
        let mut changed = false;
        for (i, r) in x.rows().into_iter().enumerate() {
            let (j, dj) = (0..k)
                .map(|j| (j, sq_dist(r, centres.row(j))))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("k ≥ 1");
            changed |= label[i] != j;
            label[i] = j;
            dist[i] = dj;
        }
        if !changed {
            break;
        }
        let mut sums = Array2::<f64>::zeros((k, d));
        let mut counts = vec![0usize; k];
        for (i, r) in x.rows().into_iter().enumerate() {
            sums.row_mut(label[i]).scaled_add(1.0, &r);
            counts[label[i]] += 1;
        }
        for (j, &count) in counts.iter().enumerate() {
            if count > 0 {
                centres.row_mut(j).assign(&(&sums.row(j) / count as f64));
            } else {
                let far = (0..n)
                    .max_by(|&a, &b| dist[a].total_cmp(&dist[b]))
                    .expect("n ≥ 1");
                centres.row_mut(j).assign(&x.row(far));
                dist[far] = 0.0;
            }
        }
    }
    let inertia = x
        .rows()
        .into_iter()
        .map(|r| {
            (0..k)
                .map(|j| sq_dist(r, centres.row(j)))
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    KMeans { centres, inertia }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{normal, seeded_rng};

    /// Eight well-separated blobs of 200 points each: every start recovers the blobs'
    /// sample means to rounding, and the inertia is the within-blob sum of squares.
    #[test]
    fn recovers_separated_blobs_exactly() {
        let mut rng = seeded_rng(3);
        let (k, d, per) = (8, 5, 200);
        let mut x = Array2::<f32>::zeros((k * per, d));
        for (i, mut row) in x.rows_mut().into_iter().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let centre = if j == (i / per) % d { 20.0 } else { 0.0 }
                    * if i / per >= d { -1.0 } else { 1.0 };
                *v = (centre + 0.5 * normal(&mut rng)) as f32;
            }
        }
        let fit = KMeans::fit(x.view(), k, 3, &mut seeded_rng(0)).unwrap();
        let mut within = 0.0;
        for b in 0..k {
            let block = x
                .slice(ndarray::s![b * per..(b + 1) * per, ..])
                .mapv(f64::from);
            let mean = block.mean_axis(ndarray::Axis(0)).unwrap();
            let nearest = fit
                .centres()
                .rows()
                .into_iter()
                .map(|c| sq_dist(c, mean.view()))
                .fold(f64::INFINITY, f64::min);
            assert!(
                nearest < 1e-18,
                "blob {b}: nearest centre {nearest:.2e} away"
            );
            within += block
                .rows()
                .into_iter()
                .map(|r| sq_dist(r, mean.view()))
                .sum::<f64>();
        }
        assert!(
            (fit.inertia() - within).abs() < 1e-9 * within,
            "{} vs {within}",
            fit.inertia()
        );
    }

    /// One cluster: the centre is the mean and the inertia the total sum of squares.
    #[test]
    fn one_cluster_is_the_mean() {
        let x = ndarray::array![[1.0f32, 2.0], [3.0, 6.0], [5.0, 1.0]];
        let fit = KMeans::fit(x.view(), 1, 1, &mut seeded_rng(0)).unwrap();
        assert_eq!(fit.centres(), &ndarray::array![[3.0, 3.0]]);
        assert_eq!(fit.inertia(), 4.0 + 1.0 + 0.0 + 9.0 + 4.0 + 4.0);
    }

    /// Repeated points: k = n = 3 on two distinct values puts a centre on each value
    /// (inertia 0) even when the k-means++ weights vanish.
    #[test]
    fn as_many_centres_as_points() {
        let x = ndarray::array![[1.0f32], [1.0], [4.0]];
        let fit = KMeans::fit(x.view(), 3, 2, &mut seeded_rng(5)).unwrap();
        assert_eq!(fit.inertia(), 0.0);
        let mut c: Vec<f64> = fit.centres().iter().copied().collect();
        c.sort_by(f64::total_cmp);
        assert_eq!(c[0], 1.0);
        assert_eq!(c[2], 4.0);
        assert!(c[1] == 1.0 || c[1] == 4.0, "{c:?}");
    }

    #[test]
    fn same_seed_same_centres() {
        let mut rng = seeded_rng(9);
        let x = Array2::from_shape_fn((300, 3), |_| normal(&mut rng) as f32);
        let a = KMeans::fit(x.view(), 5, 2, &mut seeded_rng(1)).unwrap();
        let b = KMeans::fit(x.view(), 5, 2, &mut seeded_rng(1)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_bad_input() {
        let x = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
        let err = |x: ArrayView2<'_, f32>, k, r| {
            KMeans::fit(x, k, r, &mut seeded_rng(0))
                .unwrap_err()
                .to_string()
        };
        assert!(err(x.view(), 0, 1).contains("`k`"));
        assert!(err(x.view(), 3, 1).contains("1..=2"));
        assert!(err(x.view(), 1, 0).contains("`restarts`"));
        let empty = Array2::<f32>::zeros((0, 2));
        assert!(err(empty.view(), 1, 1).contains("no data rows"));
        let no_columns = Array2::<f32>::zeros((3, 0));
        assert!(err(no_columns.view(), 1, 1).contains("no columns"));
        let nan = ndarray::array![[1.0f32, f32::NAN]];
        assert!(err(nan.view(), 1, 1).contains("non-finite value NaN at row 0, column 1"));
    }
}
