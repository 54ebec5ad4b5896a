//! The typed errors of `calmflow-vie`.

/// Everything that can go wrong when building a grid, a rule or solving an equation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VieError {
    /// A time grid is not a finite, strictly increasing sequence of at least two points.
    #[error("invalid time grid: {0}")]
    InvalidGrid(String),
    /// A numerical parameter is outside its valid range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name as in the API.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the valid range is.
        reason: &'static str,
    },
    /// A vector has the wrong length (forcing, kernel output, candidate solution).
    #[error("dimension mismatch in {what}: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// What was being checked.
        what: &'static str,
        /// Expected length or shape.
        expected: String,
        /// Actual length or shape.
        actual: String,
    },
    /// The per-step nonlinear iteration did not reach its tolerance.
    #[error(
        "no convergence at step {step} (t = {t}): {iterations} iterations, last change {change:e} > tolerance {tolerance:e}"
    )]
    NotConverged {
        /// Grid index (for whole-grid iterations: the grid length).
        step: usize,
        /// Time of that step.
        t: f64,
        /// Iterations performed.
        iterations: usize,
        /// Sup-norm change of the last iteration.
        change: f64,
        /// The tolerance asked for.
        tolerance: f64,
    },
    /// The solution left the finite range (overflow, NaN) or exceeded the blow-up bound.
    #[error("solution blew up at step {step} (t = {t}): |z| = {magnitude:e}")]
    BlowUp {
        /// Grid index where it happened.
        step: usize,
        /// Time of that step.
        t: f64,
        /// Sup norm (or NaN) of the offending value.
        magnitude: f64,
    },
    /// Newton's linear system at a step was singular.
    #[error("singular Newton system at step {step} (t = {t})")]
    SingularJacobian {
        /// Grid index.
        step: usize,
        /// Time of that step.
        t: f64,
    },
    /// A user-supplied function returned NaN or infinity.
    #[error("{what} returned a non-finite value at t = {t}")]
    NonFinite {
        /// Which function (forcing, kernel, integrand).
        what: &'static str,
        /// Time argument of that call.
        t: f64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, VieError>;
