//! Datasets as numbers and strings: every integer and float type anndata writes (float16
//! included), checked against the file's length before anything is allocated.

use hdf5_reader::{ByteOrder, Dataset, Datatype};
use ndarray::Array2;

use super::reader::Reader;
use crate::error::Result;

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

impl Reader<'_> {
    pub(super) fn matrix(&self, ds: &Dataset, element: &str) -> Result<Array2<f32>> {
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

    pub(super) fn strings(&self, ds: &Dataset, element: &str) -> Result<Vec<String>> {
        self.len(ds, element)?;
        ds.read_strings()
            .map_err(|e| self.err(element, format!("is not a string array: {e}")))
    }

    /// Any integer or float dataset, as `f64`.
    pub(super) fn floats(&self, ds: &Dataset, element: &str) -> Result<Vec<f64>> {
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
    pub(super) fn ints(&self, ds: &Dataset, element: &str) -> Result<Vec<i64>> {
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
    pub(super) fn len(&self, ds: &Dataset, element: &str) -> Result<usize> {
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
