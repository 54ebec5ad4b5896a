//! Writing AnnData files in the encoding anndata ≥ 0.8 writes (`encoding-type` /
//! `encoding-version` on every element), so that `anndata.read_h5ad` and scanpy open
//! them: a dense float32 `X`, `obs` and `var` dataframes, and float32 `obsm` matrices.

use std::path::Path;

use hdf5_writer::{AttributeBuilder, DatasetBuilder, Hdf5Builder, WriteOptions};

use super::types::{AnnData, Column, DataFrame, Expression};
use crate::error::{DataError, Result};

fn h5_error(path: &Path, element: &str, message: impl Into<String>) -> DataError {
    DataError::H5ad {
        path: path.to_path_buf(),
        element: element.to_string(),
        message: message.into(),
    }
}

/// Turns an `hdf5-writer` failure into a [`DataError`] naming the element.
fn writer<T>(path: &Path, element: &str, r: hdf5_writer::Result<T>) -> Result<T> {
    r.map_err(|e| h5_error(path, element, format!("cannot encode: {e}")))
}

fn strings_attr(path: &Path, name: &str, values: &[&str]) -> Result<AttributeBuilder> {
    writer(path, name, AttributeBuilder::vlen_strings(name, values))
}

/// A scalar string attribute: anndata compares `encoding-type` and reads `_index` as one
/// string, where a one-element array would be an (unhashable) array.
fn string_attr(name: &str, value: &str) -> AttributeBuilder {
    AttributeBuilder::fixed_string(name, value)
}

/// The `encoding-type` / `encoding-version` pair anndata reads first on every element.
fn encoding(_path: &Path, kind: &str, version: &str) -> Result<[AttributeBuilder; 2]> {
    Ok([
        string_attr("encoding-type", kind),
        string_attr("encoding-version", version),
    ])
}

fn encoded_dataset(
    path: &Path,
    ds: DatasetBuilder,
    kind: &str,
    version: &str,
) -> Result<DatasetBuilder> {
    let [t, v] = encoding(path, kind, version)?;
    Ok(ds.attribute(t).attribute(v))
}

fn encoded_group(
    path: &Path,
    b: Hdf5Builder,
    group: &str,
    kind: &str,
    version: &str,
) -> Result<Hdf5Builder> {
    let [t, v] = encoding(path, kind, version)?;
    Ok(b.group_attribute(group, t).group_attribute(group, v))
}

fn string_array(path: &Path, name: &str, values: &[&str]) -> Result<DatasetBuilder> {
    let ds = writer(
        path,
        name,
        DatasetBuilder::vlen_string_data(name, [values.len() as u64], values),
    )?;
    encoded_dataset(path, ds, "string-array", "0.2.0")
}

fn numeric_array<T: hdf5_writer::H5WriteElement>(
    path: &Path,
    name: &str,
    shape: &[usize],
    values: &[T],
) -> Result<DatasetBuilder> {
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let ds = writer(path, name, DatasetBuilder::typed_data(name, shape, values))?;
    encoded_dataset(path, ds, "array", "0.2.0")
}

/// One dataframe column under `group/name`, as anndata encodes it.
fn column(
    path: &Path,
    mut b: Hdf5Builder,
    group: &str,
    name: &str,
    col: &Column,
) -> Result<Hdf5Builder> {
    let element = format!("{group}/{name}");
    match col {
        Column::Categorical {
            codes,
            categories,
            ordered,
        } => {
            b = encoded_group(path, b, &element, "categorical", "0.2.0")?;
            let ordered = writer(
                path,
                &element,
                AttributeBuilder::scalar("ordered", u8::from(*ordered)),
            )?;
            b = b.group_attribute(&element, ordered);
            let cats: Vec<&str> = categories.iter().map(String::as_str).collect();
            b = b.dataset(string_array(path, &format!("{element}/categories"), &cats)?);
            // pandas stores codes in the smallest signed type that holds the categories.
            let codes_name = format!("{element}/codes");
            let ds = if categories.len() < i8::MAX as usize {
                let c: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
                numeric_array(path, &codes_name, &[c.len()], &c)?
            } else if categories.len() < i16::MAX as usize {
                let c: Vec<i16> = codes.iter().map(|&c| c as i16).collect();
                numeric_array(path, &codes_name, &[c.len()], &c)?
            } else {
                let c: Vec<i32> = codes
                    .iter()
                    .map(|&c| i32::try_from(c).unwrap_or(-1))
                    .collect();
                numeric_array(path, &codes_name, &[c.len()], &c)?
            };
            Ok(b.dataset(ds))
        }
        Column::Float(v) => Ok(b.dataset(numeric_array(path, &element, &[v.len()], v)?)),
        Column::Int(v) => {
            let values: Vec<i64> = v.iter().map(|x| x.unwrap_or(0)).collect();
            if v.iter().all(Option::is_some) {
                return Ok(b.dataset(numeric_array(path, &element, &[v.len()], &values)?));
            }
            let mask: Vec<u8> = v.iter().map(|x| u8::from(x.is_none())).collect();
            b = encoded_group(path, b, &element, "nullable-integer", "0.1.0")?;
            let values_name = format!("{element}/values");
            let mask_name = format!("{element}/mask");
            Ok(b.dataset(writer(
                path,
                &values_name,
                DatasetBuilder::typed_data(&values_name, [v.len() as u64], &values),
            )?)
            .dataset(writer(
                path,
                &mask_name,
                DatasetBuilder::typed_data(&mask_name, [v.len() as u64], &mask),
            )?))
        }
        Column::String(v) => {
            let values: Option<Vec<&str>> = v.iter().map(Option::as_deref).collect();
            let values = values.ok_or_else(|| {
                h5_error(
                    path,
                    &element,
                    "a string column with missing values cannot be written (store it as a \
                     categorical)",
                )
            })?;
            Ok(b.dataset(string_array(path, &element, &values)?))
        }
        Column::Bool(_) => Err(h5_error(
            path,
            &element,
            "boolean columns are not written by calmflow (store them as categoricals)",
        )),
        Column::Unreadable { message, .. } => Err(h5_error(
            path,
            &element,
            format!("the column was not readable, so it cannot be written: {message}"),
        )),
    }
}

fn dataframe(
    path: &Path,
    mut b: Hdf5Builder,
    name: &str,
    frame: &DataFrame,
    rows: usize,
) -> Result<Hdf5Builder> {
    if frame.index.len() != rows {
        return Err(h5_error(
            path,
            name,
            format!(
                "the index has {} rows where the matrix has {rows}",
                frame.index.len()
            ),
        ));
    }
    b = encoded_group(path, b, name, "dataframe", "0.2.0")?;
    b = b.group_attribute(name, string_attr("_index", "_index"));
    // anndata reads `column-order` even when there are no columns.
    let order: Vec<&str> = frame.columns.iter().map(|(n, _)| n.as_str()).collect();
    b = b.group_attribute(name, strings_attr(path, "column-order", &order)?);
    let index: Vec<&str> = frame.index.iter().map(String::as_str).collect();
    b = b.dataset(string_array(path, &format!("{name}/_index"), &index)?);
    for (col_name, col) in &frame.columns {
        if col_name == "_index" || col_name.contains('/') {
            return Err(h5_error(
                path,
                &format!("{name}/{col_name}"),
                "a column cannot be called `_index` or contain '/'",
            ));
        }
        if col.len() != rows {
            return Err(h5_error(
                path,
                &format!("{name}/{col_name}"),
                format!("has {} rows where the matrix has {rows}", col.len()),
            ));
        }
        b = column(path, b, name, col_name, col)?;
    }
    Ok(b)
}

/// Writes `adata` to `path` (atomically: a reader never sees a half-written file) with a
/// dense float32 `X` (a CSR `X` is written dense), `obs`, `var` and `obsm`.
///
/// Columns are written in anndata's encodings: categoricals (codes and categories),
/// float and integer arrays (nullable integers as `values` + `mask`), string arrays.
/// Boolean columns, strings with missing values and columns that were not readable are
/// errors, as are mismatched row counts.
pub fn write_h5ad(path: impl AsRef<Path>, adata: &AnnData) -> Result<()> {
    let path = path.as_ref();
    let x = match &adata.x {
        Expression::Dense(x) => x.clone(),
        csr => csr.to_dense(),
    };
    let (n_obs, n_vars) = x.dim();
    let mut b = Hdf5Builder::new();
    let [t, v] = encoding(path, "anndata", "0.1.0")?;
    b = b.attribute(t).attribute(v);
    let flat: Vec<f32> = x.iter().copied().collect();
    b = b.dataset(numeric_array(path, "X", &[n_obs, n_vars], &flat)?);
    b = dataframe(path, b, "obs", &adata.obs, n_obs)?;
    b = dataframe(path, b, "var", &adata.var, n_vars)?;
    if !adata.obsm.is_empty() {
        b = encoded_group(path, b, "obsm", "dict", "0.1.0")?;
    }
    for (name, m) in &adata.obsm {
        let element = format!("obsm/{name}");
        if m.nrows() != n_obs || name.contains('/') {
            return Err(h5_error(
                path,
                &element,
                format!(
                    "has {} rows where the matrix has {n_obs} (and a name without '/')",
                    m.nrows()
                ),
            ));
        }
        let flat: Vec<f32> = m.iter().copied().collect();
        b = b.dataset(numeric_array(
            path,
            &element,
            &[m.nrows(), m.ncols()],
            &flat,
        )?);
    }
    let bytes = writer(
        path,
        "/",
        b.into_plan()
            .and_then(|p| p.encode(WriteOptions::default())),
    )?;
    crate::atomic::write_atomically(path, |w| std::io::Write::write_all(w, &bytes))
}
