//! Standardisation and principal component analysis, fitted on a sample.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};

use crate::error::{DataError, Result, ensure_finite};

fn check_dim(what: &str, expected: usize, x: ArrayView2<'_, f32>) -> Result<()> {
    if x.ncols() != expected {
        return Err(DataError::Shape {
            what: what.to_string(),
            expected: format!("{expected} columns"),
            actual: format!("{} columns", x.ncols()),
        });
    }
    Ok(())
}

fn check_fit_input(x: ArrayView2<'_, f32>, what: &str) -> Result<()> {
    if x.nrows() == 0 || x.ncols() == 0 {
        return Err(DataError::Empty(what.to_string()));
    }
    ensure_finite(x, what)
}

/// Per-feature standardisation `(x − mean) / std`.
///
/// Features with zero spread keep scale 1 (they are only centred), so that constant
/// columns do not turn into NaN.
///
/// ```
/// use calmflow_data::Standardizer;
/// let x = ndarray::array![[1.0f32, 10.0], [3.0, 10.0]];
/// let s = Standardizer::fit(x.view()).unwrap();
/// let z = s.transform(x.view()).unwrap();
/// assert_eq!(z, ndarray::array![[-1.0, 0.0], [1.0, 0.0]]);
/// assert_eq!(s.inverse_transform(z.view()).unwrap(), x);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    mean: Array1<f64>,
    scale: Array1<f64>,
}

impl Standardizer {
    /// Fits means and (population) standard deviations on `x`.
    pub fn fit(x: ArrayView2<'_, f32>) -> Result<Self> {
        check_fit_input(x, "standardiser input")?;
        let mean = calmflow_linalg::column_means(x);
        let n = x.nrows() as f64;
        let mut var = Array1::<f64>::zeros(x.ncols());
        for row in x.rows() {
            for ((v, &xi), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (xi as f64 - m).powi(2);
            }
        }
        let scale = var.mapv(|v| {
            let s = (v / n).sqrt();
            if s > 0.0 { s } else { 1.0 }
        });
        Ok(Self { mean, scale })
    }

    /// A standardiser with the given means and scales (as recorded in a checkpoint):
    /// one of each per feature, every mean finite and every scale finite and positive.
    pub fn from_parts(mean: Vec<f64>, scale: Vec<f64>) -> Result<Self> {
        if mean.is_empty() || mean.len() != scale.len() {
            return Err(DataError::invalid(
                "standardiser",
                format!(
                    "needs one mean and one scale per feature (got {} means, {} scales)",
                    mean.len(),
                    scale.len()
                ),
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::invalid(
                "standardiser",
                format!("mean {m} is not finite"),
            ));
        }
        if let Some(s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::invalid(
                "standardiser",
                format!("scale {s} must be finite and positive"),
            ));
        }
        Ok(Self {
            mean: Array1::from(mean),
            scale: Array1::from(scale),
        })
    }

    /// Feature means.
    pub fn mean(&self) -> &Array1<f64> {
        &self.mean
    }

    /// Feature scales (standard deviations, 1 for constant features).
    pub fn scale(&self) -> &Array1<f64> {
        &self.scale
    }

    /// `(x − mean) / scale`.
    pub fn transform(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_dim("standardiser transform", self.mean.len(), x)?;
        let mut out = x.mapv(|v| v as f64);
        out -= &self.mean.view().insert_axis(Axis(0));
        out /= &self.scale.view().insert_axis(Axis(0));
        Ok(out.mapv(|v| v as f32))
    }

    /// `z · scale + mean`.
    pub fn inverse_transform(&self, z: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_dim("standardiser inverse", self.mean.len(), z)?;
        let mut out = z.mapv(|v| v as f64);
        out *= &self.scale.view().insert_axis(Axis(0));
        out += &self.mean.view().insert_axis(Axis(0));
        Ok(out.mapv(|v| v as f32))
    }
}

/// Principal component analysis to `k` components: the top-`k` eigenvectors of the
/// sample covariance (`n − 1` normalisation), sign-fixed so that each component's largest
/// loading is positive.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    mean: Array1<f64>,
    /// `d × k`, orthonormal columns.
    components: Array2<f64>,
    explained_variance: Array1<f64>,
    total_variance: f64,
}

impl Pca {
    /// Fits `k` components on `x` (`1 ≤ k ≤ d`).
    pub fn fit(x: ArrayView2<'_, f32>, k: usize) -> Result<Self> {
        check_fit_input(x, "PCA input")?;
        let d = x.ncols();
        if k == 0 || k > d {
            return Err(DataError::invalid(
                "k",
                format!("must be in 1..={d}, got {k}"),
            ));
        }
        if x.nrows() < 2 {
            return Err(DataError::invalid("x", "PCA needs at least 2 points"));
        }
        let mean = calmflow_linalg::column_means(x);
        let cov = calmflow_linalg::covariance(x);
        let total_variance = cov.diag().sum();
        let (values, vectors) = calmflow_linalg::symmetric_eigen(&cov);
        let mut components = vectors.slice(s![.., ..k]).to_owned();
        for mut c in components.columns_mut() {
            let largest = c
                .iter()
                .copied()
                .fold(0.0_f64, |m, v| if v.abs() > m.abs() { v } else { m });
            if largest < 0.0 {
                c.mapv_inplace(|v| -v);
            }
        }
        let explained_variance = values.slice(s![..k]).mapv(|v| v.max(0.0));
        Ok(Self {
            mean,
            components,
            explained_variance,
            total_variance,
        })
    }

    /// A fitted PCA from its parts (as recorded in a checkpoint): the data mean (`d`), the
    /// `d × k` components, the variance along each component (`k`) and the data's total
    /// variance. The components' columns must be orthonormal (to 1e-6): the inverse map is
    /// their transpose.
    pub fn from_parts(
        mean: Vec<f64>,
        components: Array2<f64>,
        explained_variance: Vec<f64>,
        total_variance: f64,
    ) -> Result<Self> {
        let (d, k) = components.dim();
        if k == 0 || d != mean.len() || explained_variance.len() != k {
            return Err(DataError::invalid(
                "components",
                format!(
                    "a {d} × {k} matrix does not fit a mean of {} coordinates and {} variances",
                    mean.len(),
                    explained_variance.len()
                ),
            ));
        }
        let all_finite = mean
            .iter()
            .chain(components.iter())
            .chain(explained_variance.iter())
            .all(|v| v.is_finite());
        if !all_finite || !(total_variance >= 0.0) {
            return Err(DataError::invalid(
                "components",
                "the PCA record holds non-finite or negative values",
            ));
        }
        let gram = components.t().dot(&components);
        let worst = gram
            .indexed_iter()
            .map(|((i, j), &g)| (g - if i == j { 1.0 } else { 0.0 }).abs())
            .fold(0.0, f64::max);
        if worst > 1e-6 {
            return Err(DataError::invalid(
                "components",
                format!("the columns are not orthonormal (|CᵀC − I| up to {worst:.2e})"),
            ));
        }
        Ok(Self {
            mean: Array1::from(mean),
            components,
            explained_variance: Array1::from(explained_variance),
            total_variance,
        })
    }

    /// The data mean the components are centred on (`d`).
    pub fn mean(&self) -> &Array1<f64> {
        &self.mean
    }

    /// The data's total variance (the trace of its covariance).
    pub fn total_variance(&self) -> f64 {
        self.total_variance
    }

    /// Number of components `k`.
    pub fn n_components(&self) -> usize {
        self.components.ncols()
    }

    /// The `d × k` matrix of components (orthonormal columns).
    pub fn components(&self) -> &Array2<f64> {
        &self.components
    }

    /// Variance along each component (the top eigenvalues of the covariance).
    pub fn explained_variance(&self) -> &Array1<f64> {
        &self.explained_variance
    }

    /// Fraction of the total variance along each component.
    pub fn explained_variance_ratio(&self) -> Array1<f64> {
        if self.total_variance > 0.0 {
            &self.explained_variance / self.total_variance
        } else {
            Array1::zeros(self.n_components())
        }
    }

    /// Projects `x` (`n × d`) to component scores (`n × k`).
    pub fn transform(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_dim("PCA transform", self.mean.len(), x)?;
        let centred = x.mapv(|v| v as f64) - self.mean.view().insert_axis(Axis(0));
        Ok(centred.dot(&self.components).mapv(|v| v as f32))
    }

    /// Maps scores (`n × k`) back to the data space (`n × d`): `z Cᵀ + mean`.
    pub fn inverse_transform(&self, z: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_dim("PCA inverse transform", self.n_components(), z)?;
        let back =
            z.mapv(|v| v as f64).dot(&self.components.t()) + self.mean.view().insert_axis(Axis(0));
        Ok(back.mapv(|v| v as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    #[test]
    fn pca_rebuilt_from_its_parts_maps_as_the_fitted_one() {
        let mut rng = seeded_rng(5);
        let x = crate::StandardNormal { dim: 6 }.sample(200, &mut rng);
        let pca = Pca::fit(x.view(), 3).unwrap();
        let back = Pca::from_parts(
            pca.mean().to_vec(),
            pca.components().clone(),
            pca.explained_variance().to_vec(),
            pca.total_variance(),
        )
        .unwrap();
        assert_eq!(back, pca);
        let mut skewed = pca.components().clone();
        skewed[[0, 0]] += 0.1;
        let e = Pca::from_parts(
            pca.mean().to_vec(),
            skewed,
            pca.explained_variance().to_vec(),
            pca.total_variance(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not orthonormal"), "{e}");
        assert!(
            Pca::from_parts(vec![0.0; 5], pca.components().clone(), vec![1.0; 3], 1.0).is_err()
        );
    }
    use crate::synthetic::{Sampler, StandardNormal};

    /// Samples `N(m, A Aᵀ)` with a known covariance.
    fn correlated(n: usize) -> (Array2<f32>, Array2<f64>) {
        let a = ndarray::array![[3.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, -0.5, 0.2]];
        let z = StandardNormal { dim: 3 }.sample(n, &mut seeded_rng(11));
        let x = z.mapv(|v| v as f64).dot(&a.t())
            + ndarray::array![1.0, -2.0, 5.0].view().insert_axis(Axis(0));
        (x.mapv(|v| v as f32), a.dot(&a.t()))
    }

    #[test]
    fn pca_recovers_a_known_covariance() {
        let (x, cov) = correlated(200_000);
        let pca = Pca::fit(x.view(), 3).unwrap();
        let (values, vectors) = calmflow_linalg::symmetric_eigen(&cov);
        for i in 0..3 {
            let rel = (pca.explained_variance()[i] - values[i]).abs() / values[i];
            assert!(
                rel < 0.02,
                "eigenvalue {i}: {} vs {}",
                pca.explained_variance()[i],
                values[i]
            );
        }
        // Leading direction matches up to sign.
        let dot: f64 = pca.components().column(0).dot(&vectors.column(0));
        assert!(dot.abs() > 0.999, "{dot}");
        let ratio = pca.explained_variance_ratio();
        assert!((ratio.sum() - 1.0).abs() < 1e-9);
        // Full-rank PCA round-trips exactly (up to f32).
        let back = pca
            .inverse_transform(pca.transform(x.view()).unwrap().view())
            .unwrap();
        let err = (&back - &x).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn truncated_pca_keeps_the_largest_variance() {
        let (x, _) = correlated(5_000);
        let pca = Pca::fit(x.view(), 1).unwrap();
        let scores = pca.transform(x.view()).unwrap();
        let var = calmflow_linalg::covariance(scores.view())[[0, 0]];
        assert!((var - pca.explained_variance()[0]).abs() / var < 1e-4);
        assert!(Pca::fit(x.view(), 4).is_err());
        assert!(Pca::fit(x.view(), 0).is_err());
        assert!(
            pca.transform(ndarray::Array2::zeros((2, 2)).view())
                .is_err()
        );
    }

    #[test]
    fn standardizer_gives_zero_mean_unit_variance() {
        let (x, _) = correlated(10_000);
        let s = Standardizer::fit(x.view()).unwrap();
        let z = s.transform(x.view()).unwrap();
        let m = calmflow_linalg::column_means(z.view());
        assert!(m.iter().all(|v| v.abs() < 1e-5), "{m}");
        let back = s.inverse_transform(z.view()).unwrap();
        assert!((&back - &x).iter().all(|v| v.abs() < 1e-4));
        let bad = ndarray::array![[1.0f32, f32::NAN]];
        assert!(matches!(
            Standardizer::fit(bad.view()),
            Err(DataError::NonFinite { .. })
        ));
        assert!(Standardizer::fit(ndarray::Array2::<f32>::zeros((0, 2)).view()).is_err());
    }

    /// A standardiser rebuilt from its recorded parts maps exactly as the fitted one;
    /// mismatched lengths, non-finite means and non-positive scales are refused.
    #[test]
    fn standardizer_round_trips_through_its_parts() {
        let (x, _) = correlated(500);
        let s = Standardizer::fit(x.view()).unwrap();
        let t = Standardizer::from_parts(s.mean().to_vec(), s.scale().to_vec()).unwrap();
        assert_eq!(t, s);
        assert_eq!(
            t.transform(x.view()).unwrap(),
            s.transform(x.view()).unwrap()
        );
        let z = ndarray::array![[1.0f32, -1.0]];
        let u = Standardizer::from_parts(vec![10.0, -3.0], vec![2.0, 0.5]).unwrap();
        assert_eq!(
            u.inverse_transform(z.view()).unwrap(),
            ndarray::array![[12.0f32, -3.5]]
        );
        for (m, sc) in [
            (vec![0.0], vec![1.0, 1.0]),
            (vec![], vec![]),
            (vec![f64::NAN], vec![1.0]),
            (vec![0.0], vec![0.0]),
            (vec![0.0], vec![-1.0]),
            (vec![0.0], vec![f64::INFINITY]),
        ] {
            assert!(
                matches!(
                    Standardizer::from_parts(m.clone(), sc.clone()),
                    Err(DataError::InvalidParameter { .. })
                ),
                "{m:?} {sc:?}"
            );
        }
    }
}
