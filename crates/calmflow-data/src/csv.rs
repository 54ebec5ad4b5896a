//! Numeric CSV reading and writing: optional header, delimiter `,`, tab or whitespace.
//!
//! ```
//! use calmflow_data::csv::{parse_csv, CsvOptions};
//! let t = parse_csv("x,y\n1,2\n3,4.5\n".as_bytes(), "mem.csv", &CsvOptions::default()).unwrap();
//! assert_eq!(t.header.as_deref(), Some(&["x".to_string(), "y".to_string()][..]));
//! assert_eq!(t.data[[1, 1]], 4.5);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};

use crate::atomic::write_atomically;
use crate::error::{DataError, Result};

/// Field separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delimiter {
    /// Guess from the first line: tab, then comma, then whitespace.
    #[default]
    Auto,
    /// `,`
    Comma,
    /// `\t`
    Tab,
    /// Runs of spaces or tabs.
    Whitespace,
}

/// Whether the first line is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Header {
    /// A header when any field of the first line is not a number.
    #[default]
    Auto,
    /// The first line is a header.
    Yes,
    /// The first line is data.
    No,
}

/// How to read a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field separator.
    pub delimiter: Delimiter,
    /// Header detection.
    pub header: Header,
    /// Reject NaN and infinite values (default `true`).
    pub require_finite: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: Delimiter::Auto,
            header: Header::Auto,
            require_finite: true,
        }
    }
}

/// A numeric table: optional column names and an `n × d` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvTable {
    /// Column names when the file had a header.
    pub header: Option<Vec<String>>,
    /// The values, one row per data line.
    pub data: Array2<f32>,
}

fn split(line: &str, delimiter: Delimiter) -> Vec<&str> {
    match delimiter {
        Delimiter::Comma => line.split(',').map(str::trim).collect(),
        Delimiter::Tab => line.split('\t').map(str::trim).collect(),
        Delimiter::Whitespace | Delimiter::Auto => line.split_whitespace().collect(),
    }
}

fn guess(line: &str) -> Delimiter {
    if line.contains('\t') {
        Delimiter::Tab
    } else if line.contains(',') {
        Delimiter::Comma
    } else {
        Delimiter::Whitespace
    }
}

/// Parses numeric CSV from any reader; `name` identifies the source in errors.
pub fn parse_csv(
    reader: impl Read,
    name: impl AsRef<Path>,
    options: &CsvOptions,
) -> Result<CsvTable> {
    let path: PathBuf = name.as_ref().to_path_buf();
    let mut header = None;
    let mut values = Vec::new();
    let mut width = None;
    let mut delimiter = options.delimiter;
    let mut first = true;
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| DataError::io(&path, e))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if delimiter == Delimiter::Auto {
            delimiter = guess(line);
        }
        let fields = split(line, delimiter);
        if first {
            first = false;
            let numeric = fields.iter().all(|f| f.parse::<f32>().is_ok());
            let is_header = match options.header {
                Header::Yes => true,
                Header::No => false,
                Header::Auto => !numeric,
            };
            if is_header {
                width = Some(fields.len());
                header = Some(
                    fields
                        .iter()
                        .map(|s| s.trim_matches('"').to_string())
                        .collect(),
                );
                continue;
            }
        }
        let expected = *width.get_or_insert(fields.len());
        if fields.len() != expected {
            return Err(DataError::Csv {
                path,
                line: line_no,
                column: 0,
                message: format!("ragged row: {} fields, expected {expected}", fields.len()),
            });
        }
        for (j, field) in fields.iter().enumerate() {
            let v: f32 = field.parse().map_err(|_| DataError::Csv {
                path: path.clone(),
                line: line_no,
                column: j + 1,
                message: format!("not a number: {field:?}"),
            })?;
            if options.require_finite && !v.is_finite() {
                return Err(DataError::Csv {
                    path,
                    line: line_no,
                    column: j + 1,
                    message: format!("non-finite value {field:?}"),
                });
            }
            values.push(v);
        }
    }
    let d = width.unwrap_or(0);
    if values.is_empty() || d == 0 {
        return Err(DataError::Empty(path.display().to_string()));
    }
    let n = values.len() / d;
    let data = Array2::from_shape_vec((n, d), values).map_err(|e| DataError::Shape {
        what: path.display().to_string(),
        expected: format!("({n}, {d})"),
        actual: e.to_string(),
    })?;
    Ok(CsvTable { header, data })
}

/// Reads a numeric CSV file.
pub fn read_csv(path: impl AsRef<Path>, options: &CsvOptions) -> Result<CsvTable> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    parse_csv(file, path, options)
}

/// Writes `data` as CSV with `delimiter` (`Auto` writes commas) and an optional header,
/// atomically. Values use Rust's shortest round-trip formatting.
pub fn write_csv(
    path: impl AsRef<Path>,
    data: ArrayView2<'_, f32>,
    header: Option<&[String]>,
    delimiter: Delimiter,
) -> Result<()> {
    let path = path.as_ref();
    if let Some(h) = header
        && h.len() != data.ncols()
    {
        return Err(DataError::Shape {
            what: format!("CSV header of {}", path.display()),
            expected: format!("{} names", data.ncols()),
            actual: format!("{} names", h.len()),
        });
    }
    let sep = match delimiter {
        Delimiter::Tab => "\t",
        Delimiter::Whitespace => " ",
        Delimiter::Comma | Delimiter::Auto => ",",
    };
    write_atomically(path, |w| {
        if let Some(h) = header {
            writeln!(w, "{}", h.join(sep))?;
        }
        for row in data.rows() {
            let line: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            writeln!(w, "{}", line.join(sep))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CsvTable> {
        parse_csv(text.as_bytes(), "t.csv", &CsvOptions::default())
    }

    #[test]
    fn delimiters_and_headers() {
        let a = parse("1\t2\n3\t4\n").unwrap();
        assert_eq!(a.data, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
        assert!(a.header.is_none());
        let b = parse("  1  2 \n 3 4\n\n").unwrap();
        assert_eq!(b.data, a.data);
        let c = parse("\"a\",b\r\n1,2\r\n3,4\r\n").unwrap();
        assert_eq!(c.header.unwrap(), vec!["a", "b"]);
        assert_eq!(c.data, a.data);
        let opts = CsvOptions {
            header: Header::Yes,
            ..CsvOptions::default()
        };
        let d = parse_csv("1,2\n3,4\n".as_bytes(), "t.csv", &opts).unwrap();
        assert_eq!(d.data.nrows(), 1);
    }

    #[test]
    fn malformed_input_names_line_and_column() {
        let e = parse("a,b\n1,2\n3\n").unwrap_err().to_string();
        assert!(e.contains("t.csv: line 3") && e.contains("ragged"), "{e}");
        let e = parse("1,2\n3,x4\n").unwrap_err().to_string();
        assert!(e.contains("line 2, column 2") && e.contains("x4"), "{e}");
        let e = parse("1,2\n3,nan\n").unwrap_err().to_string();
        assert!(
            e.contains("line 2, column 2") && e.contains("non-finite"),
            "{e}"
        );
        let e = parse("1,inf\n").unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
        assert!(matches!(parse("a,b\n"), Err(DataError::Empty(_))));
        assert!(matches!(parse(""), Err(DataError::Empty(_))));
        let lenient = CsvOptions {
            require_finite: false,
            ..CsvOptions::default()
        };
        assert!(
            parse_csv("1,nan\n".as_bytes(), "t.csv", &lenient)
                .unwrap()
                .data[[0, 1]]
            .is_nan()
        );
    }

    #[test]
    fn write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.csv");
        let x = ndarray::array![[0.1f32, -2.5e-8], [1e10, 3.0]];
        let names = vec!["u".to_string(), "v".to_string()];
        write_csv(&path, x.view(), Some(&names), Delimiter::Tab).unwrap();
        let t = read_csv(&path, &CsvOptions::default()).unwrap();
        assert_eq!(t.data, x);
        assert_eq!(t.header.unwrap(), names);
        assert!(write_csv(&path, x.view(), Some(&names[..1]), Delimiter::Comma).is_err());
    }
}
