//! The typed errors of `calmflow-data`.

use std::path::PathBuf;

/// Everything that can go wrong when sampling, reading, writing or splitting data.
///
/// File errors name the file and, where there is one, the position (byte offset, line,
/// column or array element) of the fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused a read or write.
    #[error("{path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `.npy`/`.npz` file is malformed (bad magic, header, truncated data, ...).
    #[error("{path}: invalid NumPy file at byte {offset}: {message}")]
    Npy {
        /// File concerned (for `.npz` members: `archive.npz/member.npy`).
        path: PathBuf,
        /// Byte offset of the fault.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A well-formed `.npy` file whose contents calmflow cannot use.
    #[error("{path}: unsupported NumPy array: {message}")]
    NpyUnsupported {
        /// File concerned.
        path: PathBuf,
        /// What is unsupported (dtype, format version, dimensionality).
        message: String,
    },
    /// A CSV file is malformed.
    #[error("{path}: line {line}, column {column}: {message}")]
    Csv {
        /// File concerned.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column number (0 when the whole line is at fault).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that must be finite is NaN or infinite.
    #[error("{source_name}: non-finite value {value} at row {row}, column {column}")]
    NonFinite {
        /// File or array concerned.
        source_name: String,
        /// 0-based row.
        row: usize,
        /// 0-based column.
        column: usize,
        /// The value.
        value: f64,
    },
    /// A data set or file holds no rows.
    #[error("{0}: no data rows")]
    Empty(String),
    /// Arrays disagree in shape.
    #[error("shape mismatch in {what}: expected {expected}, got {actual}")]
    Shape {
        /// What was being checked.
        what: String,
        /// Expected shape.
        expected: String,
        /// Actual shape.
        actual: String,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Parameter name as in the API.
        name: &'static str,
        /// What the valid range is.
        reason: String,
    },
    /// A data set name that no sampler has.
    #[error("unknown data set `{name}`; known: {known}")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// Names that exist, comma-separated.
        known: String,
    },
    /// An AnnData (`.h5ad`) element is missing, malformed or in an unsupported encoding.
    #[error("{path}: {element}: {message}")]
    H5ad {
        /// File concerned.
        path: PathBuf,
        /// The HDF5 element (`/X/indptr`, `/obs/cell_type/codes`, ...).
        element: String,
        /// What is wrong.
        message: String,
    },
    /// A dataframe column that does not exist.
    #[error("`{frame}` has no column `{column}`; columns: {present}")]
    UnknownColumn {
        /// The dataframe (`obs`, `var`), after the file it was read from when there is one.
        frame: String,
        /// The column asked for.
        column: String,
        /// Columns present, comma-separated.
        present: String,
    },
    /// A label (condition value) that does not occur in the data.
    #[error("unknown label `{label}` in column `{column}`; present: {present}")]
    UnknownLabel {
        /// Column (condition) name.
        column: String,
        /// The label asked for.
        label: String,
        /// Labels present, comma-separated.
        present: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        DataError::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, DataError>;

/// Checks that every value of `x` is finite; the error names `source_name` and the cell.
pub fn ensure_finite(x: ndarray::ArrayView2<'_, f32>, source_name: &str) -> Result<()> {
    for ((row, column), &v) in x.indexed_iter() {
        if !v.is_finite() {
            return Err(DataError::NonFinite {
                source_name: source_name.to_string(),
                row,
                column,
                value: v as f64,
            });
        }
    }
    Ok(())
}
