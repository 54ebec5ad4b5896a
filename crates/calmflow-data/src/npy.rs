//! NumPy `.npy` (format versions 1–3) reading and writing, and `.npz` reading.
//!
//! Reading accepts little- and big-endian `f4`, `f8`, signed and unsigned integers of
//! 1–8 bytes and booleans, of any dimensionality, in C order or in Fortran order (which
//! `np.save` writes for a transposed array; read back row-major); values are converted to
//! `f32`. Writing produces version-1 (or 2, for huge headers) little-endian `f4` files that
//! NumPy reads with `np.load`. Every fault is a [`DataError`] naming the file and byte.
//!
//! ```
//! use calmflow_data::npy::{read_npy_matrix, write_npy};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("x.npy");
//! let x = ndarray::array![[1.0f32, 2.0], [3.0, 4.5]];
//! write_npy(&path, x.view()).unwrap();
//! assert_eq!(read_npy_matrix(&path).unwrap(), x);
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, ArrayView2, IxDyn, ShapeBuilder};

use crate::atomic::write_atomically;
use crate::error::{DataError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Float,
    Int,
    Uint,
    Bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Dtype {
    kind: Kind,
    size: usize,
    big_endian: bool,
}

fn npy_err(path: &Path, offset: usize, message: impl Into<String>) -> DataError {
    DataError::Npy {
        path: path.to_path_buf(),
        offset,
        message: message.into(),
    }
}

fn unsupported(path: &Path, message: impl Into<String>) -> DataError {
    DataError::NpyUnsupported {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn parse_descr(descr: &str, path: &Path) -> Result<Dtype> {
    let bytes = descr.as_bytes();
    if bytes.len() < 3 {
        return Err(unsupported(path, format!("dtype '{descr}'")));
    }
    let big_endian = match bytes[0] {
        b'<' | b'|' | b'=' => false,
        b'>' => true,
        _ => {
            return Err(unsupported(
                path,
                format!("dtype '{descr}' (no byte-order mark)"),
            ));
        }
    };
    let kind = match bytes[1] {
        b'f' => Kind::Float,
        b'i' => Kind::Int,
        b'u' => Kind::Uint,
        b'b' => Kind::Bool,
        _ => {
            return Err(unsupported(
                path,
                format!("dtype '{descr}' (only float, int, uint, bool)"),
            ));
        }
    };
    let size: usize = descr[2..]
        .parse()
        .map_err(|_| unsupported(path, format!("dtype '{descr}'")))?;
    let ok = match kind {
        Kind::Float => matches!(size, 4 | 8),
        Kind::Int | Kind::Uint => matches!(size, 1 | 2 | 4 | 8),
        Kind::Bool => size == 1,
    };
    if !ok {
        return Err(unsupported(path, format!("dtype '{descr}' (size {size})")));
    }
    Ok(Dtype {
        kind,
        size,
        big_endian,
    })
}

/// The value of `'key':` in a NumPy header dict, as raw text up to the next top-level comma.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[start + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// The header's dtype, shape and whether the data are in Fortran (column-major) order.
fn parse_header(header: &str, path: &Path, offset: usize) -> Result<(Dtype, Vec<usize>, bool)> {
    let descr = header_value(header, "descr")
        .ok_or_else(|| npy_err(path, offset, "header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = parse_descr(descr, path)?;
    let fortran = match header_value(header, "fortran_order") {
        Some("False") => false,
        Some("True") => true,
        _ => return Err(npy_err(path, offset, "header has no valid 'fortran_order'")),
    };
    let shape_text = header_value(header, "shape")
        .ok_or_else(|| npy_err(path, offset, "header has no 'shape'"))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| npy_err(path, offset, format!("shape '{shape_text}' is not a tuple")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| {
            npy_err(
                path,
                offset,
                format!("shape '{shape_text}' is not a tuple of integers"),
            )
        })?;
    Ok((dtype, shape, fortran))
}

/// Parses the bytes of a `.npy` file; `path` names it in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<ArrayD<f32>> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(npy_err(path, 0, "bad magic: not a NumPy .npy file"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(npy_err(path, bytes.len(), "truncated header length"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(unsupported(path, format!("format version {v}"))),
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(npy_err(
            path,
            bytes.len(),
            format!("truncated header: needs {data_start} bytes"),
        ));
    }
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|e| npy_err(path, header_start + e.valid_up_to(), "header is not text"))?;
    let (dtype, shape, fortran) = parse_header(header, path, header_start)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| npy_err(path, header_start, "shape overflows"))?;
    let expected = count
        .checked_mul(dtype.size)
        .ok_or_else(|| npy_err(path, header_start, "shape overflows"))?;
    let data = &bytes[data_start..];
    if data.len() < expected {
        return Err(npy_err(
            path,
            bytes.len(),
            format!(
                "truncated data: shape {shape:?} needs {expected} bytes, file has {}",
                data.len()
            ),
        ));
    }
    if data.len() > expected {
        return Err(npy_err(
            path,
            data_start + expected,
            format!(
                "{} trailing bytes after the array data",
                data.len() - expected
            ),
        ));
    }
    let values: Vec<f32> = data
        .chunks_exact(dtype.size)
        .map(|c| decode(c, dtype))
        .collect();
    let shape_error =
        |e: ndarray::ShapeError| npy_err(path, data_start, format!("shape {shape:?}: {e}"));
    if fortran {
        // Column-major data (NumPy writes them for transposed arrays): read in that order,
        // then laid out row-major like every other array of this crate.
        let a = ArrayD::from_shape_vec(IxDyn(&shape).f(), values).map_err(shape_error)?;
        Ok(a.as_standard_layout().into_owned())
    } else {
        ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(shape_error)
    }
}

fn decode(chunk: &[u8], dtype: Dtype) -> f32 {
    let mut b = [0u8; 8];
    b[..dtype.size].copy_from_slice(chunk);
    if dtype.big_endian {
        b[..dtype.size].reverse();
    }
    match (dtype.kind, dtype.size) {
        (Kind::Float, 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        (Kind::Float, _) => f64::from_le_bytes(b) as f32,
        (Kind::Bool, _) => (b[0] != 0) as u8 as f32,
        (Kind::Uint, _) => u64::from_le_bytes(b) as f32,
        (Kind::Int, size) => {
            // Sign-extend from `size` bytes.
            let shift = 64 - 8 * size as u32;
            ((i64::from_le_bytes(b) << shift) >> shift) as f32
        }
    }
}

/// Reads a `.npy` file of any dimensionality as `f32`.
pub fn read_npy(path: impl AsRef<Path>) -> Result<ArrayD<f32>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy(&bytes, path)
}

/// Reads a `.npy` file as a matrix (one point per row): 2-D arrays as they are, 1-D
/// arrays as one column. Zero rows is an error.
pub fn read_npy_matrix(path: impl AsRef<Path>) -> Result<Array2<f32>> {
    let path = path.as_ref();
    into_matrix(read_npy(path)?, path)
}

fn into_matrix(a: ArrayD<f32>, path: &Path) -> Result<Array2<f32>> {
    let shape = a.shape().to_vec();
    let m = match shape.len() {
        1 => a.into_shape_with_order((shape[0], 1)),
        2 => a.into_shape_with_order((shape[0], shape[1])),
        _ => {
            return Err(unsupported(
                path,
                format!("{}-D array {shape:?}; expected 1-D or 2-D", shape.len()),
            ));
        }
    }
    .map_err(|e| unsupported(path, e.to_string()))?;
    if m.nrows() == 0 {
        return Err(DataError::Empty(path.display().to_string()));
    }
    Ok(m)
}

/// The bytes of a little-endian `f4` `.npy` file holding the matrix `x`.
pub fn encode_npy(x: ArrayView2<'_, f32>) -> Vec<u8> {
    encode_npy_nd(x.into_dyn())
}

/// The bytes of a little-endian `f4` `.npy` file holding `x`, of any number of axes
/// (trajectories `(n, N, D)`, for instance), in C order.
pub fn encode_npy_nd(x: ndarray::ArrayViewD<'_, f32>) -> Vec<u8> {
    let dims: Vec<String> = x.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let count: usize = x.len();
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so that magic + version + length + header is a multiple of 64.
    let mut version = 1u8;
    let mut prefix = 10;
    if dict.len() + 1 + prefix > u16::MAX as usize {
        version = 2;
        prefix = 12;
    }
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let mut header = dict.into_bytes();
    header.resize(total - prefix - 1, b' ');
    header.push(b'\n');
    let mut out = Vec::with_capacity(total + count * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&header);
    for v in x.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `x` as a little-endian `f4` `.npy` file, atomically.
pub fn write_npy(path: impl AsRef<Path>, x: ArrayView2<'_, f32>) -> Result<()> {
    write_npy_nd(path, x.into_dyn())
}

/// Writes an array of any number of axes as a little-endian `f4` `.npy` file, atomically.
pub fn write_npy_nd(path: impl AsRef<Path>, x: ndarray::ArrayViewD<'_, f32>) -> Result<()> {
    let bytes = encode_npy_nd(x);
    write_atomically(path.as_ref(), |w| w.write_all(&bytes))
}

/// Reads every `.npy` member of a `.npz` archive (stored or deflated), in archive order,
/// as `(name without ".npy", array)`.
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, ArrayD<f32>)>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| npy_err(path, 0, format!("not a valid .npz (zip) archive: {e}")))?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut member = archive
            .by_index(i)
            .map_err(|e| npy_err(path, 0, format!("archive member {i}: {e}")))?;
        let name = member.name().to_string();
        let Some(stem) = name.strip_suffix(".npy") else {
            continue;
        };
        let member_path: PathBuf = path.join(&name);
        let mut bytes = Vec::new();
        member
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(&member_path, e))?;
        out.push((stem.to_string(), parse_npy(&bytes, &member_path)?));
    }
    if out.is_empty() {
        return Err(DataError::Empty(format!(
            "{} (no .npy members)",
            path.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8], version: u8) -> Vec<u8> {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn p() -> &'static Path {
        Path::new("t.npy")
    }

    #[test]
    fn reads_every_supported_dtype() {
        let f8: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = parse_npy(&npy_bytes("<f8", false, "(2,)", &f8, 1), p()).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[1.5, -2.0]);
        let be: Vec<u8> = [3.25f32].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = parse_npy(&npy_bytes(">f4", false, "(1, 1)", &be, 2), p()).unwrap();
        assert_eq!(a.shape(), &[1, 1]);
        assert_eq!(a[[0, 0]], 3.25);
        let i2: Vec<u8> = [-3i16, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_npy(&npy_bytes("<i2", false, "(2,)", &i2, 1), p()).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[-3.0, 7.0]);
        let i8: Vec<u8> = [-9i64].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            parse_npy(&npy_bytes("<i8", false, "(1,)", &i8, 3), p()).unwrap()[[0]],
            -9.0
        );
        let a = parse_npy(&npy_bytes("|u1", false, "(3,)", &[0, 200, 255], 1), p()).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[0.0, 200.0, 255.0]);
        let a = parse_npy(&npy_bytes("|b1", false, "(2,)", &[1, 0], 1), p()).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[1.0, 0.0]);
        let a = parse_npy(
            &npy_bytes("<f4", false, "()", &1.0f32.to_le_bytes(), 1),
            p(),
        )
        .unwrap();
        assert_eq!(a.ndim(), 0);
    }

    #[test]
    fn malformed_files_are_typed_errors() {
        let four = 1.0f32.to_le_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04 not npy".to_vec(), "bad magic"),
            (npy_bytes("<f4", false, "(2,)", &four, 1), "truncated data"),
            (
                npy_bytes("<f4", false, "(1,)", &[0; 8], 1),
                "trailing bytes",
            ),
            (npy_bytes("<c8", false, "(1,)", &[0; 8], 1), "dtype"),
            (npy_bytes("<U3", false, "(1,)", &[0; 12], 1), "dtype"),
            (npy_bytes("<f4", false, "(a, b)", &four, 1), "shape"),
            (npy_bytes("<f4", false, "(1,)", &four, 9), "version"),
        ];
        for (bytes, needle) in cases {
            let err = parse_npy(&bytes, p()).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
            assert!(err.contains("t.npy"), "{err:?} does not name the file");
        }
        let mut cut = npy_bytes("<f4", false, "(1,)", &four, 1);
        cut.truncate(20);
        assert!(
            parse_npy(&cut, p())
                .unwrap_err()
                .to_string()
                .contains("truncated header")
        );
    }

    /// `np.save` of a transposed array writes `fortran_order: True` and the values column
    /// by column: read back as the same matrix, in row-major layout, for several dtypes,
    /// in one, two and three axes, and inside an `.npz`.
    #[test]
    fn fortran_ordered_arrays_are_read_in_their_logical_order() {
        // The 2 × 3 matrix [[1, 2, 3], [4, 5, 6]] stored column-major: 1 4 2 5 3 6.
        let column_major = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let expected = ndarray::array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]].into_dyn();
        let f8: Vec<u8> = column_major
            .iter()
            .flat_map(|v: &f64| v.to_le_bytes())
            .collect();
        let f4: Vec<u8> = column_major
            .iter()
            .flat_map(|&v| (v as f32).to_be_bytes())
            .collect();
        let i2: Vec<u8> = column_major
            .iter()
            .flat_map(|&v| (v as i16).to_le_bytes())
            .collect();
        for (descr, data) in [("<f8", &f8), (">f4", &f4), ("<i2", &i2)] {
            let a = parse_npy(&npy_bytes(descr, true, "(2, 3)", data, 1), p()).unwrap();
            assert_eq!(a, expected, "{descr}");
            assert!(a.is_standard_layout(), "{descr}");
            assert_eq!(a.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        }
        // One axis: the same either way.
        let v = parse_npy(&npy_bytes("<f8", true, "(3,)", &f8[..24], 1), p()).unwrap();
        assert_eq!(v.as_slice().unwrap(), &[1.0, 4.0, 2.0]);
        // Three axes (2, 2, 3): element [i, j, k] sits at i + 2j + 4k in the file.
        let n = 12;
        let data: Vec<u8> = (0..n)
            .flat_map(|flat| {
                let (i, j, k) = (flat % 2, (flat / 2) % 2, flat / 4);
                ((i * 100 + j * 10 + k) as f32).to_le_bytes()
            })
            .collect();
        let a = parse_npy(&npy_bytes("<f4", true, "(2, 2, 3)", &data, 1), p()).unwrap();
        for i in 0..2 {
            for j in 0..2 {
                for k in 0..3 {
                    assert_eq!(a[[i, j, k]], (i * 100 + j * 10 + k) as f32);
                }
            }
        }
        let matrix = into_matrix(
            parse_npy(&npy_bytes("<f8", true, "(2, 3)", &f8, 1), p()).unwrap(),
            p(),
        )
        .unwrap();
        assert_eq!(
            matrix,
            expected
                .clone()
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap()
        );
    }

    #[test]
    fn write_read_round_trip_and_alignment() {
        let x = Array2::from_shape_fn((7, 3), |(i, j)| i as f32 * 0.5 - j as f32);
        let bytes = encode_npy(x.view());
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let back = parse_npy(&bytes, p()).unwrap();
        assert_eq!(back.into_dimensionality::<ndarray::Ix2>().unwrap(), x);
    }

    #[test]
    fn three_and_one_axis_arrays_round_trip() {
        let x = ndarray::Array3::from_shape_fn((2, 4, 3), |(i, j, k)| (i * 12 + j * 3 + k) as f32);
        let back = parse_npy(&encode_npy_nd(x.view().into_dyn()), p()).unwrap();
        assert_eq!(back, x.into_dyn());
        let v = ndarray::Array1::from_vec(vec![1.5f32, -2.0]);
        let bytes = encode_npy_nd(v.view().into_dyn());
        assert!(String::from_utf8_lossy(&bytes).contains("'shape': (2,)"));
        assert_eq!(parse_npy(&bytes, p()).unwrap(), v.into_dyn());
    }

    #[test]
    fn matrix_reader_rejects_empty_and_3d() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e.npy");
        std::fs::write(&empty, npy_bytes("<f4", false, "(0, 3)", &[], 1)).unwrap();
        assert!(matches!(read_npy_matrix(&empty), Err(DataError::Empty(_))));
        let cube = dir.path().join("c.npy");
        std::fs::write(&cube, npy_bytes("<f4", false, "(1, 1, 1)", &[0; 4], 1)).unwrap();
        assert!(
            read_npy_matrix(&cube)
                .unwrap_err()
                .to_string()
                .contains("3-D")
        );
        let col = dir.path().join("v.npy");
        std::fs::write(&col, npy_bytes("<f4", false, "(2,)", &[0; 8], 1)).unwrap();
        assert_eq!(read_npy_matrix(&col).unwrap().dim(), (2, 1));
        assert!(matches!(
            read_npy_matrix(dir.path().join("missing.npy")),
            Err(DataError::Io { .. })
        ));
    }

    #[test]
    fn npz_members_are_read_stored_and_deflated() {
        use zip::write::SimpleFileOptions;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npz");
        let x = ndarray::array![[1.0f32, 2.0]];
        {
            let mut zw = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
            zw.start_file(
                "x.npy",
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
            )
            .unwrap();
            zw.write_all(&encode_npy(x.view())).unwrap();
            zw.start_file(
                "y.npy",
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
            )
            .unwrap();
            zw.write_all(&encode_npy((&x * 2.0).view())).unwrap();
            // The transpose of [[1, 2], [3, 4]] as np.savez writes it: column-major.
            zw.start_file(
                "t.npy",
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
            )
            .unwrap();
            let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            zw.write_all(&npy_bytes("<f4", true, "(2, 2)", &data, 1))
                .unwrap();
            zw.finish().unwrap();
        }
        let members = read_npz(&path).unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0].0, "x");
        assert_eq!(members[1].1[[0, 1]], 4.0);
        assert_eq!(
            members[2].1,
            ndarray::array![[1.0f32, 3.0], [2.0, 4.0]].into_dyn()
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(read_npz(&path).unwrap_err().to_string().contains("zip"));
    }
}
