//! Point files by extension: `.npy` and `.csv` (comma, tab or whitespace separated, with
//! an optional header), as the command-line program reads and writes them.

use std::path::Path;

use calmflow_data::csv::{CsvOptions, Delimiter, read_csv, write_csv};
use calmflow_data::npy::{read_npy_matrix, write_npy};
use calmflow_data::{DataError, ensure_finite};
use ndarray::{Array2, ArrayView2};

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn unknown_extension(path: &Path) -> DataError {
    DataError::InvalidParameter {
        name: "path",
        reason: format!(
            "{}: unknown file type; use a .npy or .csv file",
            path.display()
        ),
    }
}

/// Reads an `n × d` point set from a `.npy` or `.csv` file; every value must be finite.
pub fn read_points(path: &Path) -> Result<Array2<f32>, DataError> {
    let x = match extension(path).as_str() {
        "npy" => read_npy_matrix(path)?,
        "csv" | "tsv" | "txt" => read_csv(path, &CsvOptions::default())?.data,
        _ => return Err(unknown_extension(path)),
    };
    ensure_finite(x.view(), &path.display().to_string())?;
    Ok(x)
}

/// Writes an `n × d` point set to a `.npy` or `.csv` file, atomically.
pub fn write_points(path: &Path, x: ArrayView2<'_, f32>) -> Result<(), DataError> {
    match extension(path).as_str() {
        "npy" => write_npy(path, x),
        "csv" => write_csv(path, x, None, Delimiter::Comma),
        _ => Err(unknown_extension(path)),
    }
}
