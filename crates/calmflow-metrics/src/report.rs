//! One entry point that scores a generated set against a target set with every metric.

use ndarray::ArrayView2;
use serde::Serialize;

use crate::error::{MetricsError, Result, check_pair};
use crate::{
    DispersionReport, KNN_K, PrecisionRecall, SinkhornOptions, SinkhornResult, TORCHCFM_SIGMAS,
    dispersion, energy_distance, frechet_distance, knn_precision_recall, mmd2_biased,
    mmd2_rbf_gamma, mmd2_unbiased_median, normalized_sinkhorn_cost, r2_means, sinkhorn_divergence,
    w1_exact, w2_exact,
};

/// Which metrics [`evaluate`] computes and with which parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Compute the exact W2 (an `O(n³)` assignment).
    pub exact_ot: bool,
    /// With `exact_ot`, compute the exact W1 as well (a second assignment, as costly).
    pub exact_w1: bool,
    /// Regularisation of the Sinkhorn divergence, in squared data units (default 1: a
    /// blur of about one unit; smaller values approach W2² but converge more slowly).
    pub sinkhorn_reg: f64,
    /// Compute the Sinkhorn divergence and the authors' normalised Sinkhorn cost
    /// (`O(n²)` per iteration, thousands of iterations: slow for large sets).
    pub sinkhorn: bool,
    /// `γ` of the single-kernel MMD (`exp(−γ‖x − y‖²)`).
    pub gamma: f64,
    /// Neighbours `k` of the k-NN precision and recall (0: not computed).
    pub knn_k: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            exact_ot: true,
            exact_w1: true,
            sinkhorn_reg: 1.0,
            sinkhorn: true,
            gamma: 1.0,
            knn_k: KNN_K,
        }
    }
}

/// Every metric of a generated set against a target set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Number of generated points.
    pub n_samples: usize,
    /// Number of target points.
    pub n_target: usize,
    /// Dimension of a point.
    pub dim: usize,
    /// Exact 2-Wasserstein distance (absent when not computed).
    pub w2: Option<f64>,
    /// Exact 1-Wasserstein distance (absent when not computed).
    pub w1: Option<f64>,
    /// Sinkhorn divergence at `sinkhorn_reg` (absent when not computed).
    pub sinkhorn_divergence: Option<f64>,
    /// The regularisation used for it.
    pub sinkhorn_reg: f64,
    /// The CaLMFlow authors' normalised Sinkhorn cost (absent when not computed).
    pub normalized_sinkhorn: Option<SinkhornResult>,
    /// Biased MMD² summed over torchcfm's bandwidths.
    pub mmd2_multiscale: f64,
    /// Unbiased MMD² with the median-heuristic bandwidth.
    pub mmd2_median: f64,
    /// The median-heuristic bandwidth σ.
    pub mmd_median_bandwidth: f64,
    /// Biased MMD² with `exp(−γ‖x − y‖²)`.
    pub mmd2_gamma: f64,
    /// The `γ` used.
    pub gamma: f64,
    /// Energy distance.
    pub energy: f64,
    /// Fréchet distance of Gaussian fits (squared, FID convention); absent for sets of
    /// fewer than two points.
    pub frechet: Option<f64>,
    /// R² between per-feature means; absent when undefined (one feature, constant means).
    pub r2_means: Option<f64>,
    /// Variance ratios, generated over target, in total and along the target's principal
    /// directions (near 1 when the spread matches, below 1 for under-dispersed samples);
    /// absent for sets of fewer than two points or a target without variance.
    pub dispersion: Option<DispersionReport>,
    /// k-NN precision and recall (absent when not asked for or when a set has at most
    /// `k` points).
    pub knn: Option<PrecisionRecall>,
}

impl MetricsReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// `(name, value)` rows of the scalar metrics that were computed, for tables. The
    /// dispersion ratios are `dispersion_trace`, `dispersion_pc1` … `dispersion_pc3` (the
    /// target's leading principal directions) and `dispersion_rest`.
    pub fn rows(&self) -> Vec<(&'static str, f64)> {
        let mut rows = Vec::new();
        let mut push = |name, v: Option<f64>| {
            if let Some(v) = v {
                rows.push((name, v));
            }
        };
        push("w2", self.w2);
        push("w1", self.w1);
        push("sinkhorn_divergence", self.sinkhorn_divergence);
        push(
            "normalized_sinkhorn",
            self.normalized_sinkhorn.map(|s| s.transport_cost),
        );
        push("mmd2_multiscale", Some(self.mmd2_multiscale));
        push("mmd2_median", Some(self.mmd2_median));
        push("mmd2_gamma", Some(self.mmd2_gamma));
        push("energy", Some(self.energy));
        push("frechet", self.frechet);
        push("r2_means", self.r2_means);
        if let Some(d) = &self.dispersion {
            push("dispersion_trace", Some(d.trace_ratio));
            for (name, v) in DISPERSION_ROWS.iter().zip(&d.leading) {
                push(name, Some(*v));
            }
            push("dispersion_rest", d.rest);
        }
        if let Some(pr) = &self.knn {
            push("knn_precision", Some(pr.precision));
            push("knn_recall", Some(pr.recall));
        }
        rows
    }
}

/// Row names of the per-direction dispersion ratios.
const DISPERSION_ROWS: [&str; crate::DISPERSION_DIRECTIONS] =
    ["dispersion_pc1", "dispersion_pc2", "dispersion_pc3"];

/// Keeps a value, or turns an "undefined for this input" error into `None`.
fn optional(r: Result<f64>) -> Result<Option<f64>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MetricsError::Undefined(_) | MetricsError::TooFewPoints { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Scores `samples` against `target` with every metric of this crate.
///
/// ```
/// use calmflow_metrics::{evaluate, EvalOptions};
/// let x = ndarray::array![[0.0f32, 0.0], [1.0, 0.5], [0.2, 2.0]];
/// let r = evaluate(x.view(), x.view(), &EvalOptions::default()).unwrap();
/// assert!(r.w2.unwrap() < 1e-12 && r.energy.abs() < 1e-12);
/// assert!(r.to_json().contains("\"mmd2_multiscale\""));
/// // W2 without its costly W1 companion; a shifted copy is W2 = W1 = the shift.
/// let y = x.mapv(|v| v + 3.0);
/// let options = EvalOptions { exact_w1: false, ..EvalOptions::default() };
/// let r = evaluate(x.view(), y.view(), &options).unwrap();
/// assert!((r.w2.unwrap() - 18f64.sqrt()).abs() < 1e-5 && r.w1.is_none());
/// // A shift leaves the spread alone: every dispersion ratio is 1.
/// let d = r.dispersion.as_ref().unwrap();
/// assert!((d.trace_ratio - 1.0).abs() < 1e-5 && d.leading.iter().all(|v| (v - 1.0).abs() < 1e-5));
/// assert!(r.rows().iter().any(|(name, _)| *name == "dispersion_pc2"));
/// // Three points are too few for 5-NN balls: precision and recall are left out.
/// assert!(r.knn.is_none());
/// ```
pub fn evaluate(
    samples: ArrayView2<'_, f32>,
    target: ArrayView2<'_, f32>,
    options: &EvalOptions,
) -> Result<MetricsReport> {
    let (xs, _) = check_pair(samples, target)?;
    let (w2, w1) = if options.exact_ot {
        (
            Some(w2_exact(samples, target)?),
            if options.exact_w1 {
                Some(w1_exact(samples, target)?)
            } else {
                None
            },
        )
    } else {
        (None, None)
    };
    let (sinkhorn_div, normalized) = if options.sinkhorn {
        let o = SinkhornOptions {
            reg: options.sinkhorn_reg,
            ..SinkhornOptions::default()
        };
        (
            Some(sinkhorn_divergence(samples, target, &o)?),
            Some(normalized_sinkhorn_cost(samples, target)?),
        )
    } else {
        (None, None)
    };
    let (mmd2_median, bandwidth) = match mmd2_unbiased_median(samples, target) {
        Ok(v) => v,
        Err(MetricsError::Undefined(_) | MetricsError::TooFewPoints { .. }) => (f64::NAN, f64::NAN),
        Err(e) => return Err(e),
    };
    Ok(MetricsReport {
        n_samples: samples.nrows(),
        n_target: target.nrows(),
        dim: xs.ncols(),
        w2,
        w1,
        sinkhorn_divergence: sinkhorn_div,
        sinkhorn_reg: options.sinkhorn_reg,
        normalized_sinkhorn: normalized,
        mmd2_multiscale: mmd2_biased(samples, target, &TORCHCFM_SIGMAS)?,
        mmd2_median,
        mmd_median_bandwidth: bandwidth,
        mmd2_gamma: mmd2_rbf_gamma(samples, target, options.gamma)?,
        gamma: options.gamma,
        energy: energy_distance(samples, target)?,
        frechet: optional(frechet_distance(samples, target))?,
        r2_means: optional(r2_means(samples, target))?,
        dispersion: match dispersion(samples, target) {
            Ok(d) => Some(d),
            Err(MetricsError::Undefined(_) | MetricsError::TooFewPoints { .. }) => None,
            Err(e) => return Err(e),
        },
        knn: if options.knn_k == 0 {
            None
        } else {
            match knn_precision_recall(samples, target, options.knn_k) {
                Ok(pr) => Some(pr),
                Err(MetricsError::TooFewPoints { .. }) => None,
                Err(e) => return Err(e),
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_carries_the_dispersion_ratios() {
        // Target ±2 on axis 0, ±1 on axes 1..4 (D = 5, so a "rest" exists); samples halved.
        let y = ndarray::Array2::from_shape_fn((10, 5), |(i, j)| {
            let a = if j == 0 { 2.0 } else { 1.0 + j as f32 * 0.1 };
            if i / 2 == j {
                if i % 2 == 0 { a } else { -a }
            } else {
                0.0
            }
        });
        let x = y.mapv(|v| 0.5 * v);
        let options = EvalOptions {
            exact_ot: false,
            sinkhorn: false,
            ..EvalOptions::default()
        };
        let r = evaluate(x.view(), y.view(), &options).unwrap();
        let d = r.dispersion.clone().unwrap();
        assert!((d.trace_ratio - 0.25).abs() < 1e-12);
        assert_eq!(d.leading.len(), 3);
        assert!((d.rest.unwrap() - 0.25).abs() < 1e-12);
        let names: Vec<&str> = r.rows().iter().map(|r| r.0).collect();
        for name in [
            "dispersion_trace",
            "dispersion_pc1",
            "dispersion_pc2",
            "dispersion_pc3",
            "dispersion_rest",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["dispersion"]["leading"].as_array().unwrap().len(), 3);
        assert!((json["dispersion"]["rest"].as_f64().unwrap() - 0.25).abs() < 1e-12);

        // One generated point: no covariance, so no ratios, and the other metrics stand.
        let r = evaluate(x.slice(ndarray::s![..1, ..]), y.view(), &options).unwrap();
        assert_eq!(r.dispersion, None);
        assert!(!r.rows().iter().any(|r| r.0.starts_with("dispersion")));
        assert!(r.to_json().contains("\"dispersion\": null"));
    }
}
