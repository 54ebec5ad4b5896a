//! LZF decompression (Marc Lehmann's liblzf format), for HDF5's filter 32000: h5py's
//! `compression="lzf"`, which scanpy users pick for speed.
//!
//! A stream is a sequence of runs: a control byte `c < 32` copies the next `c + 1` bytes
//! literally; otherwise `len = c >> 5` (7 means `7 + next byte`) and the back-reference
//! copies `len + 2` bytes starting `((c & 31) << 8) + next byte + 1` bytes behind the
//! output's end (the copy may overlap what it writes).
//!
//! ```
//! # use calmflow_data::h5ad::lzf_decompress;
//! // "ab", then 4 bytes from 2 back ("abab"), then "c".
//! let stream = [1, b'a', b'b', 0b010_00000, 1, 0, b'c'];
//! assert_eq!(lzf_decompress(&stream, 7).unwrap(), b"abababc");
//! ```

/// HDF5's registered filter id of LZF (h5py's `lzf_filter.c`).
pub const FILTER_LZF: u16 = 32000;

/// Why an LZF stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LzfError {
    /// The stream ends inside a run.
    #[error("the LZF stream ends inside a run at byte {0}")]
    Truncated(usize),
    /// A back-reference points before the start of the output.
    #[error("an LZF back-reference at byte {at} reaches {distance} bytes back, before the start")]
    BadReference {
        /// Input offset of the run.
        at: usize,
        /// How far back it points.
        distance: usize,
    },
    /// The output grows beyond the size the chunk declares.
    #[error("the LZF stream decodes to more than the declared {0} bytes")]
    TooLong(usize),
}

/// Decodes `input` into at most `max_len` bytes.
pub fn lzf_decompress(input: &[u8], max_len: usize) -> Result<Vec<u8>, LzfError> {
    // LZF expands at most 132-fold (a 2-byte reference yields up to 264 bytes).
    let mut out = Vec::with_capacity(max_len.min(input.len().saturating_mul(132)));
    let mut i = 0;
    while i < input.len() {
        let at = i;
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            let literal = input.get(i..i + run).ok_or(LzfError::Truncated(at))?;
            if out.len() + run > max_len {
                return Err(LzfError::TooLong(max_len));
            }
            out.extend_from_slice(literal);
            i += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i).ok_or(LzfError::Truncated(at))? as usize;
                i += 1;
            }
            let low = *input.get(i).ok_or(LzfError::Truncated(at))? as usize;
            i += 1;
            let distance = ((ctrl & 31) << 8) + low + 1;
            let len = len + 2;
            if distance > out.len() {
                return Err(LzfError::BadReference { at, distance });
            }
            if out.len() + len > max_len {
                return Err(LzfError::TooLong(max_len));
            }
            let start = out.len() - distance;
            // Byte by byte: an overlapping reference repeats what it has just written.
            for k in 0..len {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_runs_and_references_decode() {
        // 32 literal bytes need two literal runs (at most 32 bytes each: c = 31 → 32).
        let data: Vec<u8> = (0..40).collect();
        let mut stream = vec![31];
        stream.extend_from_slice(&data[..32]);
        stream.push(7);
        stream.extend_from_slice(&data[32..]);
        assert_eq!(lzf_decompress(&stream, 40).unwrap(), data);

        // A long reference (len field 7 + extension): 7 + 3 + 2 = 12 copies of one byte.
        let stream = [0, b'x', 0b111_00000, 3, 0];
        assert_eq!(lzf_decompress(&stream, 13).unwrap(), vec![b'x'; 13]);

        // A reference whose distance needs the high bits: 300 bytes back.
        let mut data: Vec<u8> = (0..300u32).map(|v| (v * 7 % 251) as u8).collect();
        let mut stream = Vec::new();
        for chunk in data.chunks(32) {
            stream.push(chunk.len() as u8 - 1);
            stream.extend_from_slice(chunk);
        }
        let distance = 300 - 1;
        stream.extend_from_slice(&[(1 << 5) | (distance >> 8) as u8, (distance & 255) as u8]);
        let copied = data[..3].to_vec();
        data.extend_from_slice(&copied);
        assert_eq!(lzf_decompress(&stream, 303).unwrap(), data);
    }

    #[test]
    fn damaged_streams_are_errors() {
        assert_eq!(lzf_decompress(&[3, 1, 2], 10), Err(LzfError::Truncated(0)));
        assert_eq!(
            lzf_decompress(&[0, 1, 0b001_00000], 10),
            Err(LzfError::Truncated(2))
        );
        assert_eq!(
            lzf_decompress(&[0, 1, 0b001_00000, 5], 10),
            Err(LzfError::BadReference { at: 2, distance: 6 })
        );
        assert_eq!(lzf_decompress(&[2, 1, 2, 3], 2), Err(LzfError::TooLong(2)));
        assert_eq!(lzf_decompress(&[], 4), Ok(Vec::new()));
    }
}
