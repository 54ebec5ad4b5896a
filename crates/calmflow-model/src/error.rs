//! The typed errors of `calmflow-model`.

use calmflow_tokenize::TokenizeError;

/// Why a model could not be built, run, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration field is out of range.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// An input tensor has the wrong shape.
    #[error("shape mismatch in {what}: expected {expected}, got {actual}")]
    Shape {
        /// What was being checked.
        what: &'static str,
        /// Expected shape.
        expected: String,
        /// Actual shape.
        actual: String,
    },
    /// Prompt token ids were given to a model without a token-embedding table.
    #[error(
        "this model has no token-embedding table (vocab_size = 0): it cannot embed prompt tokens"
    )]
    NoVocabulary,
    /// A token-layout error.
    #[error(transparent)]
    Layout(#[from] TokenizeError),
    /// A pretrained checkpoint (directory, config.json, safetensors) is unusable.
    #[error("{path}: {message}")]
    Pretrained {
        /// File or directory concerned.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor the backbone needs is not in the safetensors file.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The safetensors file.
        path: String,
        /// The Hugging Face tensor name.
        name: String,
    },
    /// A tensor has another shape than the configuration implies.
    #[error("{path}: tensor `{name}` has shape {actual}, the configuration needs {expected}")]
    TensorShape {
        /// The safetensors file.
        path: String,
        /// The Hugging Face tensor name.
        name: String,
        /// Shape the configuration implies.
        expected: String,
        /// Shape in the file.
        actual: String,
    },
    /// Saving or loading weights failed.
    #[error("{path}: {message}")]
    Record {
        /// File concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

pub(crate) fn shape_error(
    what: &'static str,
    expected: impl Into<String>,
    actual: impl std::fmt::Debug,
) -> ModelError {
    ModelError::Shape {
        what,
        expected: expected.into(),
        actual: format!("{actual:?}"),
    }
}
