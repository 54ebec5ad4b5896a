//! Energy distance `2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖` (V-statistic: all pairs,
//! including `i = j`, so the estimate is a squared MMD with a conditionally negative
//! definite kernel and is never negative).

use ndarray::{Array2, ArrayView2};

use crate::error::{Result, check_pair};

fn mean_distance(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let d = calmflow_linalg::pairwise_sq_dists(a.view(), b.view());
    d.iter().map(|v| v.sqrt()).sum::<f64>() / d.len() as f64
}

/// The energy distance between two point sets.
///
/// ```
/// let x = ndarray::array![[0.0f32], [2.0]];
/// let y = ndarray::array![[1.0f32]];
/// // 2·1 − (0 + 2 + 2 + 0)/4 − 0 = 1
/// assert!((calmflow_metrics::energy_distance(x.view(), y.view()).unwrap() - 1.0).abs() < 1e-12);
/// ```
pub fn energy_distance(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<f64> {
    let (xs, ys) = check_pair(x, y)?;
    Ok(2.0 * mean_distance(&xs, &ys) - mean_distance(&xs, &xs) - mean_distance(&ys, &ys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_nonnegative_zero_on_self() {
        let x = Array2::from_shape_fn((40, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.3);
        let y = Array2::from_shape_fn((30, 2), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.25 + 0.4);
        let a = energy_distance(x.view(), y.view()).unwrap();
        let b = energy_distance(y.view(), x.view()).unwrap();
        assert!((a - b).abs() < 1e-12);
        assert!(a > 0.0);
        assert!(energy_distance(x.view(), x.view()).unwrap().abs() < 1e-12);
    }
}
