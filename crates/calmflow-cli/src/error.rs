//! The program's error type: every way a command can stop, each one clear line.

use calmflow::data::DataError;
use calmflow::metrics::MetricsError;
use calmflow::train::TrainError;

use crate::config::ConfigError;
use crate::plot::PlotError;

/// Everything that can stop a command, each variant one clear line.
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

/// Shorthand for results of the program.
pub type AppResult<T> = Result<T, AppError>;
