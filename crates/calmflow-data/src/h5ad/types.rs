//! The AnnData types: what [`read_h5ad`](super::read_h5ad) returns and
//! [`write_h5ad`](super::write_h5ad) writes.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array2;

use crate::error::{DataError, Result};

/// The expression matrix `X`, kept in the layout the file stores.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    /// A dense `n_obs × n_vars` matrix.
    Dense(Array2<f32>),
    /// A compressed sparse row matrix.
    Csr(CsrMatrix),
}

impl Expression {
    /// `(n_obs, n_vars)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Self::Dense(x) => x.dim(),
            Self::Csr(m) => m.shape,
        }
    }

    /// The matrix as a dense array (zeros where a sparse matrix stores nothing).
    pub fn to_dense(&self) -> Array2<f32> {
        match self {
            Self::Dense(x) => x.clone(),
            Self::Csr(m) => m.to_dense(),
        }
    }
}

/// A validated CSR matrix: row `i` holds `data[indptr[i]..indptr[i+1]]` at columns
/// `indices[indptr[i]..indptr[i+1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    /// `(rows, columns)`.
    pub shape: (usize, usize),
    /// Stored values.
    pub data: Vec<f32>,
    /// Column of each stored value.
    pub indices: Vec<usize>,
    /// Row offsets into `data`, `rows + 1` non-decreasing entries from 0 to `data.len()`.
    pub indptr: Vec<usize>,
}

impl CsrMatrix {
    /// Checks the invariants; `element` names the group in errors.
    pub fn new(
        shape: (usize, usize),
        data: Vec<f32>,
        indices: Vec<usize>,
        indptr: Vec<usize>,
        element: &str,
    ) -> Result<Self> {
        Self::validated(shape, data, indices, indptr, None, element)
    }

    /// [`CsrMatrix::new`], with errors naming the file they came from.
    pub(super) fn validated(
        shape: (usize, usize),
        data: Vec<f32>,
        indices: Vec<usize>,
        indptr: Vec<usize>,
        path: Option<&Path>,
        element: &str,
    ) -> Result<Self> {
        let bad =
            |what: &str, message: String| h5_error(path, &format!("{element}/{what}"), message);
        if indptr.len() != shape.0 + 1 {
            return Err(bad(
                "indptr",
                format!(
                    "has {} entries, the shape {shape:?} needs {}",
                    indptr.len(),
                    shape.0 + 1
                ),
            ));
        }
        if indices.len() != data.len() {
            return Err(bad(
                "indices",
                format!("has {} entries but data has {}", indices.len(), data.len()),
            ));
        }
        if indptr[0] != 0 || indptr[shape.0] != data.len() {
            return Err(bad(
                "indptr",
                format!(
                    "must run from 0 to {} (the number of stored values), runs from {} to {}",
                    data.len(),
                    indptr[0],
                    indptr[shape.0]
                ),
            ));
        }
        if let Some(i) = indptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(bad("indptr", format!("decreases at row {i}")));
        }
        if let Some(k) = indices.iter().position(|&j| j >= shape.1) {
            return Err(bad(
                "indices",
                format!(
                    "entry {k} is column {} of a matrix with {} columns",
                    indices[k], shape.1
                ),
            ));
        }
        Ok(Self {
            shape,
            data,
            indices,
            indptr,
        })
    }

    /// The dense matrix (duplicate entries of one cell are summed, as scipy does).
    pub fn to_dense(&self) -> Array2<f32> {
        let mut x = Array2::zeros(self.shape);
        for i in 0..self.shape.0 {
            for k in self.indptr[i]..self.indptr[i + 1] {
                x[[i, self.indices[k]]] += self.data[k];
            }
        }
        x
    }
}

/// One dataframe column.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// A pandas categorical: `codes[i]` indexes `categories`, −1 marks a missing value.
    Categorical {
        /// Per-row category index (−1: missing).
        codes: Vec<i64>,
        /// The category labels.
        categories: Vec<String>,
        /// Whether the categories are ordered.
        ordered: bool,
    },
    /// Floating-point values (NaN where pandas has NaN).
    Float(Vec<f64>),
    /// Integer values; `None` where a nullable integer column is masked.
    Int(Vec<Option<i64>>),
    /// Boolean values; `None` where a nullable boolean column is masked.
    Bool(Vec<Option<bool>>),
    /// Strings; `None` where a nullable string column is masked.
    String(Vec<Option<String>>),
    /// A column this reader cannot decode (an encoding it does not support, or damaged
    /// data). The file still reads; asking for this column is the error.
    Unreadable {
        /// Rows of the dataframe.
        rows: usize,
        /// The HDF5 element at fault.
        element: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Self::Categorical { codes, .. } => codes.len(),
            Self::Float(v) => v.len(),
            Self::Int(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Unreadable { rows, .. } => *rows,
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dataframe (`obs` or `var`): the row index and named columns in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataFrame {
    /// Row names (cell barcodes for `obs`, gene names for `var`).
    pub index: Vec<String>,
    /// Columns in the order of the `column-order` attribute.
    pub columns: Vec<(String, Column)>,
    /// Which dataframe this is (`obs`, `var`), for error messages.
    pub name: String,
    /// The file it was read from, for error messages.
    pub file: std::path::PathBuf,
}

/// A dataframe's name for messages: `FILE: obs`, or `obs` when no file is known.
pub(super) fn frame_in_file(file: &std::path::Path, name: &str) -> String {
    if file.as_os_str().is_empty() {
        name.to_string()
    } else {
        format!("{}: {name}", file.display())
    }
}

impl DataFrame {
    /// The column called `name` (an error if it is absent or [`Column::Unreadable`]).
    pub fn column(&self, name: &str) -> Result<&Column> {
        match self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c) {
            Some(Column::Unreadable {
                element, message, ..
            }) => Err(h5_error(Some(&self.file), element, message.clone())),
            found => found.ok_or_else(|| DataError::UnknownColumn {
                frame: frame_in_file(&self.file, &self.name),
                column: name.to_string(),
                present: self
                    .columns
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Column `name` as one string label per row: categories by name, strings as they
    /// are, integers and booleans printed. Missing values and float columns are errors
    /// (a label must name a discrete condition).
    pub fn labels(&self, name: &str) -> Result<Vec<String>> {
        let missing = |row: usize| {
            h5_error(
                Some(&self.file),
                &format!("/{}/{name}", self.name),
                format!("row {row} has a missing value; conditions need a label on every row"),
            )
        };
        match self.column(name)? {
            Column::Categorical {
                codes, categories, ..
            } => codes
                .iter()
                .enumerate()
                .map(|(row, &c)| {
                    usize::try_from(c)
                        .ok()
                        .and_then(|c| categories.get(c).cloned())
                        .ok_or_else(|| missing(row))
                })
                .collect(),
            Column::String(v) => v
                .iter()
                .enumerate()
                .map(|(row, x)| x.clone().ok_or_else(|| missing(row)))
                .collect(),
            Column::Int(v) => v
                .iter()
                .enumerate()
                .map(|(row, x)| x.map(|x| x.to_string()).ok_or_else(|| missing(row)))
                .collect(),
            Column::Bool(v) => v
                .iter()
                .enumerate()
                .map(|(row, x)| x.map(|x| x.to_string()).ok_or_else(|| missing(row)))
                .collect(),
            Column::Float(_) => Err(h5_error(
                Some(&self.file),
                &format!("/{}/{name}", self.name),
                "is a floating-point column; conditions need categorical, string, integer or \
                 boolean labels"
                    .into(),
            )),
            Column::Unreadable {
                element, message, ..
            } => Err(h5_error(Some(&self.file), element, message.clone())),
        }
    }

    /// Column `name` as numbers (categorical codes are not numbers: an error).
    pub fn numeric(&self, name: &str) -> Result<Vec<f64>> {
        match self.column(name)? {
            Column::Float(v) => Ok(v.clone()),
            Column::Int(v) => Ok(v.iter().map(|x| x.map_or(f64::NAN, |x| x as f64)).collect()),
            Column::Bool(v) => Ok(v
                .iter()
                .map(|x| x.map_or(f64::NAN, |x| f64::from(u8::from(x))))
                .collect()),
            _ => Err(h5_error(
                Some(&self.file),
                &format!("/{}/{name}", self.name),
                "is not a numeric column".into(),
            )),
        }
    }
}

/// The parts of an AnnData file that calmflow uses.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnData {
    /// The expression matrix, `n_obs × n_vars`.
    pub x: Expression,
    /// Per-cell annotations.
    pub obs: DataFrame,
    /// Per-gene annotations.
    pub var: DataFrame,
    /// Per-cell matrices (`X_pca`, `X_umap`, …), each with `n_obs` rows.
    pub obsm: BTreeMap<String, Array2<f32>>,
    /// `obsm` entries this reader cannot decode (e.g. a boolean matrix), with the reason:
    /// left out of `obsm` rather than failing the file.
    pub unreadable_obsm: BTreeMap<String, String>,
}

impl AnnData {
    /// Number of cells.
    pub fn n_obs(&self) -> usize {
        self.x.shape().0
    }

    /// Number of genes.
    pub fn n_vars(&self) -> usize {
        self.x.shape().1
    }
}

/// A [`DataError::H5ad`] about `element` of the file at `path`.
pub(super) fn h5_error(path: Option<&Path>, element: &str, message: String) -> DataError {
    DataError::H5ad {
        path: path.map(Path::to_path_buf).unwrap_or_default(),
        element: element.to_string(),
        message,
    }
}
