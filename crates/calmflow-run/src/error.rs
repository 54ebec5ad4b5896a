//! The jobs' one error type: every way a job of the program or the suite can stop, each one
//! clear line.

use calmflow_data::DataError;
use calmflow_metrics::MetricsError;
use calmflow_train::TrainError;

use crate::config::ConfigError;
use calmflow_plot::PlotError;

/// Everything that can stop a job, each variant one clear line.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Training, sampling, checkpoints.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Data files.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Metrics.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Plots.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// Shorthand for results of the jobs.
pub type AppResult<T> = Result<T, AppError>;
