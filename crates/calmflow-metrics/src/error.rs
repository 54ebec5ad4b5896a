//! The typed errors of `calmflow-metrics`, and input validation.

use ndarray::{Array2, ArrayView2};

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A point set has no points (or points of dimension 0).
    #[error("the {which} set is empty")]
    Empty {
        /// `"samples"`, `"target"`, ...
        which: &'static str,
    },
    /// The two sets have points of different dimensions.
    #[error("dimension mismatch: samples have {x} coordinates, target has {y}")]
    DimensionMismatch {
        /// Dimension of the first set.
        x: usize,
        /// Dimension of the second set.
        y: usize,
    },
    /// A coordinate is NaN or infinite.
    #[error("non-finite value {value} in the {which} set at row {row}, column {column}")]
    NonFinite {
        /// Which set.
        which: &'static str,
        /// 0-based row.
        row: usize,
        /// 0-based column.
        column: usize,
        /// The value.
        value: f64,
    },
    /// Exact transport would need a cost matrix larger than the limit.
    #[error(
        "exact transport between {n} and {m} points needs an {n} × {m} cost matrix, more than \
         {limit} entries; subsample or use the Sinkhorn divergence"
    )]
    TransportTooLarge {
        /// Size of the first set.
        n: usize,
        /// Size of the second set.
        m: usize,
        /// The largest number of cost entries allowed.
        limit: usize,
    },
    /// A set has too few points for the metric (e.g. a covariance needs two).
    #[error("the {which} set has {n} points; {metric} needs at least {min}")]
    TooFewPoints {
        /// Which set.
        which: &'static str,
        /// Its size.
        n: usize,
        /// The metric.
        metric: &'static str,
        /// Minimum size.
        min: usize,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// The valid range.
        reason: &'static str,
    },
    /// A statistic is undefined for these inputs (e.g. R² of constant means).
    #[error("{0}")]
    Undefined(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Checks one set (non-empty, finite) and converts it to `f64`.
pub(crate) fn check_set(x: ArrayView2<'_, f32>, which: &'static str) -> Result<Array2<f64>> {
    if x.nrows() == 0 || x.ncols() == 0 {
        return Err(MetricsError::Empty { which });
    }
    for ((row, column), &v) in x.indexed_iter() {
        if !v.is_finite() {
            return Err(MetricsError::NonFinite {
                which,
                row,
                column,
                value: v as f64,
            });
        }
    }
    Ok(x.mapv(|v| v as f64))
}

/// Checks a pair of sets: both valid and of the same dimension.
pub(crate) fn check_pair(
    x: ArrayView2<'_, f32>,
    y: ArrayView2<'_, f32>,
) -> Result<(Array2<f64>, Array2<f64>)> {
    let xs = check_set(x, "samples")?;
    let ys = check_set(y, "target")?;
    if xs.ncols() != ys.ncols() {
        return Err(MetricsError::DimensionMismatch {
            x: xs.ncols(),
            y: ys.ncols(),
        });
    }
    Ok((xs, ys))
}
