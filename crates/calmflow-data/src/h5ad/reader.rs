//! Reading an `.h5ad` file through `hdf5-reader`: `X` (or a layer), `obs`, `var`, `obsm`.

use std::collections::BTreeMap;
use std::path::Path;

use hdf5_reader::group::Group;
use hdf5_reader::{ByteOrder, Dataset, Datatype, FilterRegistry, Hdf5File, OpenOptions};
use ndarray::Array2;

use super::lzf::{FILTER_LZF, lzf_decompress};
use super::types::{AnnData, Column, CsrMatrix, DataFrame, Expression, h5_error};
use crate::error::{DataError, Result};

/// A float as Python's `str()` writes it for the values categories hold: `1.0`, `0.5`,
/// `nan`, `inf`.
fn python_float(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

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

/// An IEEE half-precision number (anndata writes `X` as float16 when asked to).
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 == 0 { 1.0 } else { -1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f64::from(bits & 0x3ff);
    match exponent {
        0 => sign * fraction * 2f64.powi(-24),
        31 if fraction == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + fraction / 1024.0) * 2f64.powi(exponent - 15),
    }
}

/// The most bytes a dataset may decompress to per byte of the file: deflate's largest
/// ratio (about 1032 : 1) bounds gzip's, and LZF's is smaller.
const MAX_EXPANSION: u64 = 1032;

/// Declared sizes up to this many bytes are read whatever the file's length (a dataset
/// without stored chunks reads as its fill value).
const ALWAYS_ALLOWED_BYTES: u64 = 64 << 20;

struct Reader<'a> {
    file: &'a Hdf5File,
    path: &'a Path,
    options: &'a ReadOptions,
    /// The file's length in bytes.
    file_len: u64,
}

impl Reader<'_> {
    fn err(&self, element: &str, message: impl Into<String>) -> DataError {
        h5_error(Some(self.path), element, message.into())
    }

    fn read(&self) -> Result<AnnData> {
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
    fn layer_names(&self) -> Vec<String> {
        self.group("/layers")
            .ok()
            .and_then(|g| g.member_names().ok())
            .map(|(sparse, dense)| dense.into_iter().chain(sparse).collect())
            .unwrap_or_default()
    }

    /// The layer `name` as the expression matrix.
    fn layer(&self, name: &str) -> Result<Expression> {
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

    fn group(&self, element: &str) -> Result<Group> {
        self.file
            .group(element)
            .map_err(|e| self.err(element, format!("cannot open group: {e}")))
    }

    fn dataset(&self, element: &str) -> Result<Dataset> {
        self.file
            .dataset(element)
            .map_err(|e| self.err(element, format!("cannot open dataset: {e}")))
    }

    fn group_string_attr(
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

    fn encoding(&self, group: &Group, element: &str) -> Result<String> {
        self.group_string_attr(group, element, "encoding-type")?
            .ok_or_else(|| {
                self.err(
                    element,
                    "has no `encoding-type` attribute: files written by anndata < 0.8 are not \
                     supported (re-save it with a current anndata)",
                )
            })
    }

    fn sparse(&self, group: &Group, element: &str) -> Result<Expression> {
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

    /// The dataframe `name`, with only the columns `wanted` when given.
    fn dataframe(&self, name: &str, n_rows: usize, wanted: Option<&[String]>) -> Result<DataFrame> {
        let element = format!("/{name}");
        let group = self.group(&element)?;
        let encoding = self.encoding(&group, &element)?;
        if encoding != "dataframe" {
            return Err(self.err(
                &element,
                format!("encoding-type is `{encoding}`, not `dataframe`"),
            ));
        }
        let index_name = self
            .group_string_attr(&group, &element, "_index")?
            .unwrap_or_else(|| "_index".to_string());
        let index_el = format!("{element}/{index_name}");
        let index = self.strings(&self.dataset(&index_el)?, &index_el)?;
        if index.len() != n_rows {
            return Err(self.err(
                &index_el,
                format!("has {} rows, X has {n_rows} along this axis", index.len()),
            ));
        }
        // `column-order` is an empty float array when there are no columns.
        let order = match group.attribute("column-order") {
            Ok(a) if a.num_elements().unwrap_or(0) == 0 => Vec::new(),
            Ok(a) => a.read_strings().map_err(|e| {
                self.err(
                    &element,
                    format!("attribute `column-order` is unreadable: {e}"),
                )
            })?,
            Err(_) => Vec::new(),
        };
        let order = match wanted {
            None => order,
            Some(wanted) => {
                if let Some(missing) = wanted.iter().find(|w| !order.contains(w)) {
                    return Err(DataError::UnknownColumn {
                        frame: format!("{}: {name}", self.path.display()),
                        column: missing.clone(),
                        present: order.join(", "),
                    });
                }
                order.into_iter().filter(|c| wanted.contains(c)).collect()
            }
        };
        let (groups, _) = group
            .member_names()
            .map_err(|e| self.err(&element, e.to_string()))?;
        let mut columns = Vec::with_capacity(order.len());
        for col in order {
            let el = format!("{element}/{col}");
            let read = if groups.contains(&col) {
                self.group(&el).and_then(|g| self.group_column(&g, &el))
            } else {
                self.dataset(&el).and_then(|d| self.plain_column(&d, &el))
            };
            let read = read.and_then(|column| {
                let rows = column.len();
                self.with_rows(
                    column,
                    rows,
                    n_rows,
                    &el,
                    &format!("the dataframe has {n_rows}"),
                )
            });
            // A column nobody asks for must not make the file unreadable: keep the fault
            // and report it when the column is used.
            let column = match read {
                Ok(column) => column,
                Err(DataError::H5ad {
                    element, message, ..
                }) => Column::Unreadable {
                    rows: n_rows,
                    element,
                    message,
                },
                Err(e) => return Err(e),
            };
            columns.push((col, column));
        }
        Ok(DataFrame {
            index,
            columns,
            name: name.to_string(),
            file: self.path.to_path_buf(),
        })
    }

    fn group_column(&self, group: &Group, element: &str) -> Result<Column> {
        let encoding = self.encoding(group, element)?;
        let part = |name: &str| format!("{element}/{name}");
        match encoding.as_str() {
            "categorical" => {
                let categories = self.category_labels(&part("categories"))?;
                let codes_el = part("codes");
                let codes = self.ints(&self.dataset(&codes_el)?, &codes_el)?;
                if let Some(k) = codes
                    .iter()
                    .position(|&c| c < -1 || c >= categories.len() as i64)
                {
                    return Err(self.err(
                        &codes_el,
                        format!(
                            "code {} at row {k} is outside the {} categories",
                            codes[k],
                            categories.len()
                        ),
                    ));
                }
                let ordered = group
                    .attribute("ordered")
                    .ok()
                    .and_then(|a| a.read_scalar::<i8>().ok())
                    .is_some_and(|v| v != 0);
                Ok(Column::Categorical {
                    codes,
                    categories,
                    ordered,
                })
            }
            "nullable-string-array" => {
                let values_el = part("values");
                let values = self.strings(&self.dataset(&values_el)?, &values_el)?;
                Ok(Column::String(self.masked(values, &part("mask"))?))
            }
            "nullable-integer" | "nullable-boolean" => {
                let values_el = part("values");
                let values = self.ints(&self.dataset(&values_el)?, &values_el)?;
                let kept = self.masked(values, &part("mask"))?;
                Ok(if encoding == "nullable-integer" {
                    Column::Int(kept)
                } else {
                    Column::Bool(kept.into_iter().map(|v| v.map(|v| v != 0)).collect())
                })
            }
            other => Err(self.err(
                element,
                format!(
                    "column encoding `{other}` is not supported (categorical, nullable-integer, \
                     nullable-boolean, nullable-string-array, array, string-array are)"
                ),
            )),
        }
    }

    /// A categorical's categories as labels, whatever their dtype, printed as pandas
    /// prints them (`str()` of each value): strings as they are, integers in decimal,
    /// floats with a decimal point (`1.0`, `0.5`), booleans as `True` / `False`.
    fn category_labels(&self, element: &str) -> Result<Vec<String>> {
        let ds = self.dataset(element)?;
        Ok(match self.plain_column(&ds, element)? {
            Column::String(v) => v
                .into_iter()
                .map(|x| x.unwrap_or_else(|| "<NA>".into()))
                .collect(),
            Column::Int(v) => v
                .into_iter()
                .map(|x| x.map_or_else(|| "<NA>".into(), |x| x.to_string()))
                .collect(),
            Column::Bool(v) => v
                .into_iter()
                .map(|x| match x {
                    Some(true) => "True".into(),
                    Some(false) => "False".into(),
                    None => "<NA>".into(),
                })
                .collect(),
            Column::Float(v) => v.into_iter().map(python_float).collect(),
            other => {
                return Err(self.err(
                    element,
                    format!("categories of kind {other:?} are not supported"),
                ));
            }
        })
    }

    fn plain_column(&self, ds: &Dataset, element: &str) -> Result<Column> {
        if ds.attribute("categories").is_ok() {
            // anndata < 0.8 stored a categorical as its integer codes with a reference to
            // the categories: reading the codes as labels would silently misread it.
            return Err(self.err(
                element,
                "is a categorical in the encoding of anndata < 0.8 (integer codes with a \
                 `categories` reference); re-save the file with anndata ≥ 0.8",
            ));
        }
        if ds.ndim() != 1 {
            return Err(self.err(
                element,
                format!("a column must be 1-D, this has shape {:?}", ds.shape()),
            ));
        }
        match ds.dtype() {
            Datatype::String { .. } | Datatype::VarLen { .. } => Ok(Column::String(
                self.strings(ds, element)?.into_iter().map(Some).collect(),
            )),
            Datatype::FloatingPoint { .. } => Ok(Column::Float(self.floats(ds, element)?)),
            Datatype::FixedPoint { .. } => Ok(Column::Int(
                self.ints(ds, element)?.into_iter().map(Some).collect(),
            )),
            Datatype::Enum { .. } | Datatype::Bitfield { .. } => Ok(Column::Bool(
                self.ints(ds, element)?
                    .into_iter()
                    .map(|v| Some(v != 0))
                    .collect(),
            )),
            other => Err(self.err(
                element,
                format!("column datatype {other:?} is not supported"),
            )),
        }
    }

    /// `value` (with `rows` rows, read from `element`) if it has the `want` rows of its
    /// table; else the error "has `rows` rows, `table`" (what the table has).
    fn with_rows<T>(
        &self,
        value: T,
        rows: usize,
        want: usize,
        element: &str,
        table: &str,
    ) -> Result<T> {
        if rows == want {
            Ok(value)
        } else {
            Err(self.err(element, format!("has {rows} rows, {table}")))
        }
    }

    /// `values` with `None` where the boolean dataset `mask_el` (pandas' `isna`) is set.
    fn masked<T>(&self, values: Vec<T>, mask_el: &str) -> Result<Vec<Option<T>>> {
        let mask = self.ints(&self.dataset(mask_el)?, mask_el)?;
        if mask.len() != values.len() {
            return Err(self.err(
                mask_el,
                format!("has {} rows, values has {}", mask.len(), values.len()),
            ));
        }
        Ok(values
            .into_iter()
            .zip(mask)
            .map(|(v, m)| (m == 0).then_some(v))
            .collect())
    }

    fn matrix(&self, ds: &Dataset, element: &str) -> Result<Array2<f32>> {
        let &[rows, cols] = ds.shape() else {
            return Err(self.err(
                element,
                format!("must be a 2-D array, has shape {:?}", ds.shape()),
            ));
        };
        let values: Vec<f32> = self
            .floats(ds, element)?
            .into_iter()
            .map(|v| v as f32)
            .collect();
        Array2::from_shape_vec((rows as usize, cols as usize), values)
            .map_err(|e| self.err(element, e.to_string()))
    }

    fn strings(&self, ds: &Dataset, element: &str) -> Result<Vec<String>> {
        self.len(ds, element)?;
        ds.read_strings()
            .map_err(|e| self.err(element, format!("is not a string array: {e}")))
    }

    /// Any integer or float dataset, as `f64`.
    fn floats(&self, ds: &Dataset, element: &str) -> Result<Vec<f64>> {
        let n = self.len(ds, element)?;
        let read = |e: hdf5_reader::error::Error| self.err(element, format!("unreadable: {e}"));
        match ds.dtype() {
            Datatype::FloatingPoint { size: 4, .. } => {
                let mut v = vec![0f32; n];
                ds.read_into(&mut v).map_err(read)?;
                Ok(v.into_iter().map(f64::from).collect())
            }
            Datatype::FloatingPoint { size: 8, .. } => {
                let mut v = vec![0f64; n];
                ds.read_into(&mut v).map_err(read)?;
                Ok(v)
            }
            Datatype::FloatingPoint {
                size: 2,
                byte_order,
            } => {
                let big = matches!(byte_order, ByteOrder::BigEndian);
                let bytes = ds.read_raw_bytes().map_err(read)?;
                Ok(bytes
                    .chunks_exact(2)
                    .map(|b| {
                        let pair = [b[0], b[1]];
                        f16_to_f64(if big {
                            u16::from_be_bytes(pair)
                        } else {
                            u16::from_le_bytes(pair)
                        })
                    })
                    .collect())
            }
            // Integers, and booleans (h5py writes them as an enum FALSE/TRUE on int8).
            Datatype::FixedPoint { .. } | Datatype::Enum { .. } | Datatype::Bitfield { .. } => {
                Ok(self
                    .ints(ds, element)?
                    .into_iter()
                    .map(|v| v as f64)
                    .collect())
            }
            other => Err(self.err(element, format!("datatype {other:?} is not numeric"))),
        }
    }

    /// Any integer dataset (or an enum/bitfield on integers), as `i64`.
    fn ints(&self, ds: &Dataset, element: &str) -> Result<Vec<i64>> {
        let n = self.len(ds, element)?;
        let read = |e: hdf5_reader::error::Error| self.err(element, format!("unreadable: {e}"));
        macro_rules! as_i64 {
            ($t:ty) => {{
                let mut v = vec![<$t>::default(); n];
                ds.read_into(&mut v).map_err(read)?;
                v.into_iter()
                    .enumerate()
                    .map(|(k, x)| {
                        i64::try_from(x).map_err(|_| {
                            self.err(element, format!("entry {k} = {x} does not fit in i64"))
                        })
                    })
                    .collect()
            }};
        }
        let (size, signed) = match ds.dtype() {
            Datatype::FixedPoint { size, signed, .. } => (*size, *signed),
            Datatype::Bitfield { size, .. } => (*size, false),
            Datatype::Enum { base, .. } => match base.as_ref() {
                Datatype::FixedPoint { size, signed, .. } => (*size, *signed),
                other => {
                    return Err(self.err(element, format!("enum on {other:?} is not supported")));
                }
            },
            other => return Err(self.err(element, format!("datatype {other:?} is not an integer"))),
        };
        if matches!(ds.dtype(), Datatype::FixedPoint { .. }) {
            match (size, signed) {
                (1, true) => as_i64!(i8),
                (1, false) => as_i64!(u8),
                (2, true) => as_i64!(i16),
                (2, false) => as_i64!(u16),
                (4, true) => as_i64!(i32),
                (4, false) => as_i64!(u32),
                (8, true) => as_i64!(i64),
                (8, false) => as_i64!(u64),
                _ => Err(self.err(element, format!("{size}-byte integers are not supported"))),
            }
        } else {
            // Enums (h5py's booleans) and bitfields: decode the raw little/big-endian bytes.
            let bytes = ds.read_native_bytes().map_err(read)?;
            let size = size as usize;
            if size == 0 || size > 8 || bytes.len() != n * size {
                return Err(self.err(element, format!("cannot decode {size}-byte values")));
            }
            Ok(bytes
                .chunks_exact(size)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b[..size].copy_from_slice(c);
                    let v = i64::from_ne_bytes(b);
                    if signed && size < 8 && c[size - 1] & 0x80 != 0 {
                        v - (1i64 << (8 * size))
                    } else {
                        v
                    }
                })
                .collect())
        }
    }

    /// The dataset's element count, refused when the bytes it declares could not come out
    /// of a file this long (checked before anything is allocated for them).
    fn len(&self, ds: &Dataset, element: &str) -> Result<usize> {
        let n = ds
            .num_elements()
            .map_err(|e| self.err(element, e.to_string()))?;
        let size = ds.raw_element_size().unwrap_or(1).max(1) as u64;
        let declared = n.saturating_mul(size);
        let limit = self
            .file_len
            .saturating_mul(MAX_EXPANSION)
            .max(ALWAYS_ALLOWED_BYTES);
        if declared > limit {
            return Err(self.err(
                element,
                format!(
                    "declares {n} elements ({declared} bytes), more than a file of {} bytes \
                     can hold even compressed: the file is damaged",
                    self.file_len
                ),
            ));
        }
        usize::try_from(n)
            .map_err(|_| self.err(element, format!("{n} elements do not fit in memory")))
    }
}

fn to_usize(v: i64) -> Option<usize> {
    usize::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::f16_to_f64;

    #[test]
    fn half_precision_decodes_every_class() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
        assert_eq!(f16_to_f64(0x7bff), 65504.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(f16_to_f64(0x03ff), 1023.0 * 2f64.powi(-24));
        assert_eq!(f16_to_f64(0x8000), 0.0);
        assert!(f16_to_f64(0x8000).is_sign_negative());
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert_eq!(f16_to_f64(0xfc00), f64::NEG_INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
    }
}
