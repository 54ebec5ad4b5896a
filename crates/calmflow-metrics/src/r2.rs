//! R² between the per-feature means of two sets (single-cell convention): the squared
//! Pearson correlation of the mean vectors, and its average over conditions.

use ndarray::ArrayView2;

use crate::error::{MetricsError, Result, check_pair};

/// Squared Pearson correlation between the column means of `x` and of `y`.
///
/// ```
/// let x = ndarray::array![[1.0f32, 2.0, 3.0]];
/// let y = ndarray::array![[2.0f32, 4.0, 6.0], [0.0, 0.0, 0.0]];
/// // Means (1, 2, 3) and (1, 2, 3): perfectly correlated.
/// assert!((calmflow_metrics::r2_means(x.view(), y.view()).unwrap() - 1.0).abs() < 1e-12);
/// ```
pub fn r2_means(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<f64> {
    let (xs, ys) = check_pair(x, y)?;
    let a = calmflow_linalg::column_means(xs.view());
    let b = calmflow_linalg::column_means(ys.view());
    if a.len() < 2 {
        return Err(MetricsError::Undefined(
            "R² of means needs at least 2 features".into(),
        ));
    }
    let (ma, mb) = (a.mean().unwrap_or(0.0), b.mean().unwrap_or(0.0));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (u, v) in a.iter().zip(&b) {
        sab += (u - ma) * (v - mb);
        saa += (u - ma) * (u - ma);
        sbb += (v - mb) * (v - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return Err(MetricsError::Undefined(
            "R² of means is undefined: one mean vector is constant".into(),
        ));
    }
    Ok(sab * sab / (saa * sbb))
}

/// Applies `metric` to each condition's `(generated, real)` pair and returns the
/// per-condition values and their mean.
pub fn per_condition<'a>(
    pairs: impl IntoIterator<Item = (ArrayView2<'a, f32>, ArrayView2<'a, f32>)>,
    metric: impl Fn(ArrayView2<'a, f32>, ArrayView2<'a, f32>) -> Result<f64>,
) -> Result<(Vec<f64>, f64)> {
    let values = pairs
        .into_iter()
        .map(|(x, y)| metric(x, y))
        .collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        return Err(MetricsError::Empty {
            which: "conditions",
        });
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    Ok((values, mean))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn anticorrelated_and_partial_cases() {
        let x = array![[1.0f32, 2.0, 3.0]];
        let y = array![[3.0f32, 2.0, 1.0]];
        assert!((r2_means(x.view(), y.view()).unwrap() - 1.0).abs() < 1e-12);
        let z = array![[1.0f32, 3.0, 2.0]];
        // Pearson r of (1,2,3) and (1,3,2) is 0.5.
        assert!((r2_means(x.view(), z.view()).unwrap() - 0.25).abs() < 1e-12);
        assert!(r2_means(x.view(), array![[1.0f32, 1.0, 1.0]].view()).is_err());
    }

    #[test]
    fn averages_over_conditions() {
        let a = array![[1.0f32, 2.0, 3.0]];
        let b = array![[1.0f32, 3.0, 2.0]];
        let (v, m) = per_condition([(a.view(), a.view()), (a.view(), b.view())], r2_means).unwrap();
        assert_eq!(v.len(), 2);
        assert!((m - 0.625).abs() < 1e-12);
        let none: Vec<(ArrayView2<'_, f32>, ArrayView2<'_, f32>)> = vec![];
        assert!(per_condition(none, r2_means).is_err());
    }
}
