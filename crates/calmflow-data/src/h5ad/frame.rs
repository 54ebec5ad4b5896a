//! Reading anndata dataframes (`obs`, `var`): the index, and each column by its
//! encoding (categorical, nullable, string and numeric arrays).

use hdf5_reader::group::Group;
use hdf5_reader::{Dataset, Datatype};

use super::reader::Reader;
use super::types::{Column, DataFrame, frame_in_file};
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

impl Reader<'_> {
    /// The dataframe `name`, with only the columns `wanted` when given.
    pub(super) fn dataframe(
        &self,
        name: &str,
        n_rows: usize,
        wanted: Option<&[String]>,
    ) -> Result<DataFrame> {
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
                        frame: frame_in_file(self.path, name),
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

    pub(super) fn group_column(&self, group: &Group, element: &str) -> Result<Column> {
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
    pub(super) fn category_labels(&self, element: &str) -> Result<Vec<String>> {
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

    pub(super) fn plain_column(&self, ds: &Dataset, element: &str) -> Result<Column> {
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
    pub(super) fn with_rows<T>(
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
    pub(super) fn masked<T>(&self, values: Vec<T>, mask_el: &str) -> Result<Vec<Option<T>>> {
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
}
