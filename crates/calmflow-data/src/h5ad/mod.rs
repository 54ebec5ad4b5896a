//! AnnData `.h5ad` files, the format single-cell users hold, read without any C library.
//!
//! An `.h5ad` file is HDF5 with anndata's on-disk encoding (anndata ≥ 0.8, the
//! `encoding-type` / `encoding-version` attributes): the expression matrix `X` (a dense
//! array, or a `csr_matrix` / `csc_matrix` group of `data`, `indices`, `indptr` and a
//! `shape` attribute), the cell and gene tables `obs` and `var` (dataframes whose columns
//! are numeric or string arrays, `categorical` groups of `codes` and `categories`, or
//! `nullable-*` groups of `values` and `mask`) and the per-cell matrices of `obsm`. HDF5 is
//! decoded by the pure-Rust `hdf5-reader` crate (gzip and shuffle filters included), so a
//! machine with only Rust reads these files; see `docs/architecture.md` for why.
//!
//! Everything malformed or outside that encoding is a
//! [`DataError::H5ad`](crate::DataError::H5ad) naming the file, the HDF5 element
//! (`/X/indptr`, `/obs/cell_type/codes`, …) and what was wrong with it. A dataframe
//! column or an `obsm` entry that cannot be decoded does not fail the file: the column is
//! kept as [`Column::Unreadable`] (an error when it is asked for) and the matrix is listed
//! in [`AnnData::unreadable_obsm`], so an exotic column beside the conditions never stops
//! a run.
//!
//! [`write_h5ad`] writes the same encoding back (dense float32 `X`, dataframes, `obsm`),
//! atomically, for generated cells that scanpy opens.
//!
//! ```no_run
//! let adata = calmflow_data::h5ad::read_h5ad("data/pbmc68k_reduced/pbmc68k_reduced.h5ad")?;
//! let x = adata.x.to_dense();
//! let cell_types = adata.obs.labels("cell_type")?;
//! assert_eq!(x.nrows(), cell_types.len());
//! # Ok::<(), calmflow_data::DataError>(())
//! ```
//!
//! | file | what |
//! | --- | --- |
//! | `h5ad/types.rs` | the AnnData types: [`AnnData`], [`Expression`], [`CsrMatrix`], [`DataFrame`], [`Column`] |
//! | `h5ad/reader.rs` | [`read_h5ad`], [`read_h5ad_with`] and its [`ReadOptions`] |
//! | `h5ad/write.rs` | [`write_h5ad`] |
//! | `h5ad/lzf.rs` | h5py's LZF filter ([`lzf_decompress`]) |

use std::path::{Path, PathBuf};

mod frame;
mod lzf;
mod reader;
mod types;
mod values;
mod write;

pub use lzf::{FILTER_LZF, LzfError, lzf_decompress};
pub use reader::{ReadOptions, read_h5ad, read_h5ad_with};
pub use types::{AnnData, Column, CsrMatrix, DataFrame, Expression};
pub use write::write_h5ad;

/// Where a test or example finds the copy of the real pbmc68k_reduced file that ships
/// with this crate.
pub fn bundled_pbmc68k_reduced() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pbmc68k_reduced/pbmc68k_reduced.h5ad")
}
