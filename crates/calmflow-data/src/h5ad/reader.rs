//! Reading an `.h5ad` file through `hdf5-reader`: `X` (or a layer), `obs`, `var`, `obsm`.

use std::collections::BTreeMap;
use std::path::Path;

use hdf5_reader::group::Group;
use hdf5_reader::{Dataset, FilterRegistry, Hdf5File, OpenOptions};

use super::lzf::{FILTER_LZF, lzf_decompress};
use super::types::{AnnData, CsrMatrix, Expression, h5_error};
use crate::error::{DataError, Result};

/// Reads an `.h5ad` file: `X`, `obs`, `var` and `obsm` (`layers`, `uns`, `obsp`, … are
/// not read). [`read_h5ad_with`] reads a layer instead of `X`, or only some columns.
pub fn read_h5ad(path: impl AsRef<Path>) -> Result<AnnData> {
    read_h5ad_with(path, &ReadOptions::default())
}

/// What [`read_h5ad_with`] reads; the default reads everything [`read_h5ad`] does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The expression matrix: this entry of `layers` instead of `X` (which then need not
    /// exist).
    pub layer: Option<String>,
    /// Only these `obs` columns (`None`: all); each must exist (the error lists those that
    /// do). Columns not asked for are never decoded.
    pub obs_columns: Option<Vec<String>>,
    /// Only these `var` columns (`None`: all; an empty list: the gene names only).
    pub var_columns: Option<Vec<String>>,
    /// Leave `obsm` out.
    pub skip_obsm: bool,
}

impl ReadOptions {
    /// What a conditional run needs: the expression (`X` or `layer`), the given `obs`
    /// columns and the obs and var indices.
    pub fn conditions(columns: &[String], layer: Option<String>) -> Self {
        Self {
            layer,
            obs_columns: Some(columns.to_vec()),
            var_columns: Some(Vec::new()),
            skip_obsm: true,
        }
    }
}

/// Reads the parts of an `.h5ad` file that `options` names (see [`ReadOptions`]).
pub fn read_h5ad_with(path: impl AsRef<Path>, options: &ReadOptions) -> Result<AnnData> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let file = Hdf5File::open_with_options(path, open_options())
        .map_err(|e| h5_error(Some(path), "/", format!("not a readable HDF5 file: {e}")))?;
    let read = Reader {
        file: &file,
        path,
        options,
        file_len: std::fs::metadata(path).map_or(u64::MAX, |m| m.len()),
    }
    .read();
    // A cut file fails wherever the reader first looks past its end, with a message about
    // an offset; the superblock's end-of-file address says what the fault is.
    let superblock = file.superblock();
    let declared = superblock
        .base_address
        .saturating_add(superblock.eof_address);
    match (read, std::fs::metadata(path).map(|m| m.len())) {
        (
            Err(DataError::H5ad {
                path,
                element,
                message,
            }),
            Ok(len),
        ) if len < declared => Err(DataError::H5ad {
            path,
            element,
            message: format!(
                "the file is truncated: it has {len} bytes of the {declared} its header \
                 declares ({message})"
            ),
        }),
        (read, _) => read,
    }
}

/// The HDF5 reader's built-in filters plus LZF (h5py's filter 32000), whose client data
/// are `[filter version, LZF version, chunk bytes]`.
fn open_options() -> OpenOptions {
    let mut filters = FilterRegistry::new();
    filters.register(
        FILTER_LZF,
        Box::new(|filter, data, _| {
            let declared = filter.client_data.get(2).copied().unwrap_or(0) as usize;
            let max_len = if declared > 0 {
                declared
            } else {
                data.len().saturating_mul(132)
            };
            lzf_decompress(data, max_len)
                .map_err(|e| hdf5_reader::error::Error::DecompressionError(e.to_string()))
        }),
    );
    OpenOptions::default().with_filter_registry(filters)
}

/// One open file and what to read from it; its methods are split by concern over
/// `reader.rs` (the file's layout), `frame.rs` (dataframes) and `values.rs` (datasets as
/// numbers and strings).
pub(super) struct Reader<'a> {
    pub(super) file: &'a Hdf5File,
    pub(super) path: &'a Path,
    pub(super) options: &'a ReadOptions,
    /// The file's length in bytes.
    pub(super) file_len: u64,
}

impl Reader<'_> {
    pub(super) fn err(&self, element: &str, message: impl Into<String>) -> DataError {
        h5_error(Some(self.path), element, message.into())
    }

    pub(super) fn read(&self) -> Result<AnnData> {
        let damaged =
            |e: hdf5_reader::error::Error| self.err("/", format!("the root group is damaged: {e}"));
        let root = self.file.root_group().map_err(damaged)?;
        let (groups, datasets) = root.member_names().map_err(damaged)?;
        // anndata writes obs and var into every file: a root without them was not written
        // by it, or its list of members is damaged.
        if !["obs", "var"]
            .iter()
            .any(|name| groups.iter().any(|g| g == name))
        {
            let members: Vec<&str> = groups.iter().chain(&datasets).map(String::as_str).collect();
            return Err(self.err(
                "/",
                format!(
                    "the root group holds neither obs nor var, which anndata writes into \
                     every file (it lists {}): its root group is damaged, or it is not an \
                     AnnData file",
                    if members.is_empty() {
                        "nothing".to_string()
                    } else {
                        members.join(", ")
                    }
                ),
            ));
        }
        let x = if let Some(layer) = &self.options.layer {
            self.layer(layer)?
        } else if datasets.iter().any(|d| d == "X") {
            let ds = self.dataset("/X")?;
            Expression::Dense(self.matrix(&ds, "/X")?)
        } else if groups.iter().any(|g| g == "X") {
            self.sparse(&self.group("/X")?, "/X")?
        } else {
            // Dense layers are datasets, sparse ones groups.
            let layers: Vec<String> = self
                .group("/layers")
                .ok()
                .and_then(|g| g.member_names().ok())
                .map(|(dense, sparse)| dense.into_iter().chain(sparse).collect())
                .unwrap_or_default();
            return Err(self.err(
                "/X",
                if layers.is_empty() {
                    "the file has no expression matrix X".to_string()
                } else {
                    format!(
                        "the file has no expression matrix X, only layers ({}); choose one \
                         ([data] layer = \"{}\", or ReadOptions::layer)",
                        layers.join(", "),
                        layers[0]
                    )
                },
            ));
        };
        let (n_obs, n_vars) = x.shape();
        let obs = self.dataframe("obs", n_obs, self.options.obs_columns.as_deref())?;
        let var = self.dataframe("var", n_vars, self.options.var_columns.as_deref())?;
        let mut obsm = BTreeMap::new();
        let mut unreadable_obsm = BTreeMap::new();
        if !self.options.skip_obsm && groups.iter().any(|g| g == "obsm") {
            let group = self.group("/obsm")?;
            let (_, names) = group
                .member_names()
                .map_err(|e| self.err("/obsm", e.to_string()))?;
            for name in names {
                let element = format!("/obsm/{name}");
                let read = self
                    .dataset(&element)
                    .and_then(|d| self.matrix(&d, &element))
                    .and_then(|m| {
                        let rows = m.nrows();
                        self.with_rows(m, rows, n_obs, &element, &format!("X has {n_obs} cells"))
                    });
                match read {
                    Ok(m) => {
                        obsm.insert(name, m);
                    }
                    // Like a column: an obsm entry nobody asks for does not fail the file.
                    Err(DataError::H5ad { message, .. }) => {
                        unreadable_obsm.insert(name, message);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(AnnData {
            x,
            obs,
            var,
            obsm,
            unreadable_obsm,
        })
    }

    /// The names in `/layers` (dense layers are datasets, sparse ones groups).
    pub(super) fn layer_names(&self) -> Vec<String> {
        self.group("/layers")
            .ok()
            .and_then(|g| g.member_names().ok())
            .map(|(sparse, dense)| dense.into_iter().chain(sparse).collect())
            .unwrap_or_default()
    }

    /// The layer `name` as the expression matrix.
    pub(super) fn layer(&self, name: &str) -> Result<Expression> {
        let element = format!("/layers/{name}");
        let no_layers = || {
            self.err(
                &element,
                format!("the file has no layers, so no layer `{name}` (omit the layer to read X)"),
            )
        };
        let group = self.group("/layers").map_err(|_| no_layers())?;
        let (sparse, dense) = group
            .member_names()
            .map_err(|e| self.err("/layers", e.to_string()))?;
        if sparse.is_empty() && dense.is_empty() {
            return Err(no_layers());
        }
        if dense.iter().any(|d| d == name) {
            let ds = self.dataset(&element)?;
            Ok(Expression::Dense(self.matrix(&ds, &element)?))
        } else if sparse.iter().any(|g| g == name) {
            self.sparse(&self.group(&element)?, &element)
        } else {
            Err(self.err(
                &element,
                format!(
                    "no layer `{name}`; layers: {}",
                    self.layer_names().join(", ")
                ),
            ))
        }
    }

    pub(super) fn group(&self, element: &str) -> Result<Group> {
        self.file
            .group(element)
            .map_err(|e| self.err(element, format!("cannot open group: {e}")))
    }

    pub(super) fn dataset(&self, element: &str) -> Result<Dataset> {
        self.file
            .dataset(element)
            .map_err(|e| self.err(element, format!("cannot open dataset: {e}")))
    }

    pub(super) fn group_string_attr(
        &self,
        group: &Group,
        element: &str,
        name: &str,
    ) -> Result<Option<String>> {
        match group.attribute(name) {
            Ok(a) => a
                .read_string()
                .or_else(|_| a.read_strings().map(|v| v.concat()))
                .map(Some)
                .map_err(|e| self.err(element, format!("attribute `{name}` is not a string: {e}"))),
            Err(_) => Ok(None),
        }
    }

    pub(super) fn encoding(&self, group: &Group, element: &str) -> Result<String> {
        self.group_string_attr(group, element, "encoding-type")?
            .ok_or_else(|| {
                self.err(
                    element,
                    "has no `encoding-type` attribute: files written by anndata < 0.8 are not \
                     supported (re-save it with a current anndata)",
                )
            })
    }

    pub(super) fn sparse(&self, group: &Group, element: &str) -> Result<Expression> {
        let encoding = self.encoding(group, element)?;
        let shape = group
            .attribute("shape")
            .and_then(|a| a.read_1d::<i64>())
            .map_err(|e| self.err(element, format!("attribute `shape` is unreadable: {e}")))?;
        let &[rows, cols] = shape.as_slice() else {
            return Err(self.err(element, format!("attribute `shape` = {shape:?} is not 2-D")));
        };
        let (rows, cols) = (to_usize(rows), to_usize(cols));
        let (Some(rows), Some(cols)) = (rows, cols) else {
            return Err(self.err(
                element,
                format!("attribute `shape` = {shape:?} is negative"),
            ));
        };
        let part = |name: &str| format!("{element}/{name}");
        let data = self.floats(&self.dataset(&part("data"))?, &part("data"))?;
        let index = |name: &str| -> Result<Vec<usize>> {
            let el = part(name);
            self.ints(&self.dataset(&el)?, &el)?
                .into_iter()
                .enumerate()
                .map(|(k, v)| {
                    to_usize(v).ok_or_else(|| self.err(&el, format!("entry {k} is negative ({v})")))
                })
                .collect()
        };
        let (indices, indptr) = (index("indices")?, index("indptr")?);
        let data: Vec<f32> = data.into_iter().map(|v| v as f32).collect();
        match encoding.as_str() {
            "csr_matrix" => Ok(Expression::Csr(CsrMatrix::validated(
                (rows, cols),
                data,
                indices,
                indptr,
                Some(self.path),
                element,
            )?)),
            // CSC is CSR of the transpose.
            "csc_matrix" => {
                let t = CsrMatrix::validated(
                    (cols, rows),
                    data,
                    indices,
                    indptr,
                    Some(self.path),
                    element,
                )?;
                Ok(Expression::Dense(
                    t.to_dense().reversed_axes().as_standard_layout().to_owned(),
                ))
            }
            other => Err(self.err(
                element,
                format!("encoding-type `{other}` is not a matrix (csr_matrix or csc_matrix)"),
            )),
        }
    }
}

pub(super) fn to_usize(v: i64) -> Option<usize> {
    usize::try_from(v).ok()
}
