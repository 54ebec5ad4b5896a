//! The typed errors of `calmflow-train`.

use calmflow_data::DataError;
use calmflow_metrics::MetricsError;
use calmflow_model::ModelError;
use calmflow_tokenize::TokenizeError;
use calmflow_vie::VieError;

/// Why training, sampling or solving failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range; the message names the field.
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    /// The loss became NaN or infinite.
    #[error(
        "the loss became non-finite ({loss}) at step {step}: lower the learning rate, \
         enable gradient clipping or check the data for extreme values"
    )]
    NonFiniteLoss {
        /// The step (1-based) whose loss was not finite.
        step: usize,
        /// The offending value.
        loss: f64,
    },
    /// Input arrays do not fit together.
    #[error("shape mismatch in {what}: expected {expected}, got {actual}")]
    Shape {
        /// What was being checked.
        what: String,
        /// Expected shape.
        expected: String,
        /// Actual shape.
        actual: String,
    },
    /// The adaptive ODE solver's step fell below its minimum.
    #[error(
        "step size underflow at t = {t:.6}: h = {h:.3e} is below min_step = {min_step:.3e} \
         (the field is stiff or not finite there; loosen rtol/atol or lower min_step)"
    )]
    StepSizeUnderflow {
        /// Time reached.
        t: f64,
        /// Proposed step.
        h: f64,
        /// The configured minimum.
        min_step: f64,
    },
    /// The adaptive ODE solver used up its step budget.
    #[error("the ODE solver reached max_steps = {max_steps} at t = {t:.6} before t1 = {t1}")]
    TooManySteps {
        /// The configured budget.
        max_steps: usize,
        /// Time reached.
        t: f64,
        /// Target time.
        t1: f64,
    },
    /// A checkpoint directory is missing, incomplete or of another model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The directory or file concerned.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The replicas of a data-parallel run could not agree (joining the collective, an
    /// all-reduce, a replica that stopped).
    #[error("data-parallel training: {0}")]
    Collective(String),
    /// A replica of a data-parallel run failed; the run stopped on every device.
    #[error("replica {peer} (device {device}) failed, training stopped on every device: {source}")]
    Peer {
        /// The replica (0 is the trainer's own device).
        peer: usize,
        /// Its device, as the backend names it.
        device: String,
        /// What went wrong there.
        #[source]
        source: Box<TrainError>,
    },
    /// A model error.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A data error.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A metrics error (couplings, evaluation).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A token-layout error.
    #[error(transparent)]
    Layout(#[from] TokenizeError),
    /// A time-grid error.
    #[error(transparent)]
    Grid(#[from] VieError),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn invalid(message: impl Into<String>) -> TrainError {
    TrainError::InvalidConfig(message.into())
}

pub(crate) fn shape_error(
    what: impl Into<String>,
    expected: impl Into<String>,
    actual: impl std::fmt::Debug,
) -> TrainError {
    TrainError::Shape {
        what: what.into(),
        expected: expected.into(),
        actual: format!("{actual:?}"),
    }
}
