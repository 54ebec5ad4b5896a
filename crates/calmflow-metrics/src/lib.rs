//! # calmflow-metrics — distances between point clouds
//!
//! The metrics by which CaLMFlow, torchcfm and their peers score generated samples against
//! a target sample: exact Wasserstein distances ([`w2_exact`], [`w1_exact`], on an exact
//! [`linear_sum_assignment`]), entropic transport ([`sinkhorn_divergence`] and the
//! authors' [`normalized_sinkhorn_cost`]), MMD ([`mmd2_biased`], [`mmd2_unbiased_median`],
//! [`mmd2_rbf_gamma`]), [`energy_distance`], [`frechet_distance`] with the Gaussian oracle
//! [`bures_w2`], [`r2_means`], and the [`dispersion()`] ratios (generated over target
//! variance, in total and along the target's principal directions) that expose
//! under-dispersed samples, and [`knn_precision_recall`] (samples off the data manifold,
//! regions of the data missed). [`evaluate`] computes them all into a serialisable
//! [`MetricsReport`].
//!
//! Sets are `n × d` `f32` arrays (one point a row); sums accumulate in `f64`. Empty sets,
//! mismatched dimensions and non-finite points are [`MetricsError`]s.
//!
//! ```
//! use calmflow_metrics::{w2_exact, mmd2_biased, TORCHCFM_SIGMAS};
//! let x = ndarray::array![[0.0f32, 0.0], [2.0, 0.0]];
//! let y = ndarray::array![[0.0f32, 1.0], [2.0, 1.0]];
//! assert!((w2_exact(x.view(), y.view()).unwrap() - 1.0).abs() < 1e-12);
//! assert!(mmd2_biased(x.view(), y.view(), &TORCHCFM_SIGMAS).unwrap() > 0.0);
//! ```

mod assignment;
mod dispersion;
mod energy;
mod error;
mod frechet;
mod mmd;
mod precision_recall;
mod r2;
mod report;
mod sinkhorn;
mod transport;
mod wasserstein;

pub use assignment::linear_sum_assignment;
pub use dispersion::{DISPERSION_DIRECTIONS, DispersionReport, dispersion};
pub use energy::energy_distance;
pub use error::{MetricsError, Result};
pub use frechet::{bures_w2, frechet_distance, gaussian_w2_squared};
pub use mmd::{TORCHCFM_SIGMAS, mmd2_biased, mmd2_rbf_gamma, mmd2_unbiased_median};
pub use precision_recall::{KNN_K, PrecisionRecall, knn_precision_recall};
pub use r2::{per_condition, r2_means};
pub use report::{EvalOptions, MetricsReport, evaluate};
pub use sinkhorn::{
    SinkhornOptions, SinkhornResult, normalized_sinkhorn_cost, sinkhorn, sinkhorn_cost,
    sinkhorn_divergence, sinkhorn_plan,
};
pub use transport::uniform_transport_cost;
pub use wasserstein::{MAX_EXACT_ENTRIES, w1_exact, w2_exact};
