//! # calmflow
//!
//! The reference implementation of CaLMFlow (arXiv 2410.05292): flow matching recast as a
//! Volterra integral equation and solved by a causal transformer over space-time tokens.
//!
//! This crate is the facade: it re-exports the layered crates and owns backend selection
//! ([`backend`]), so that a program moves from the CPU to a GPU by a cargo feature and a
//! `--device` flag.
//!
//! | module | crate | what |
//! | --- | --- | --- |
//! | [`vie`] | `calmflow-vie` | Volterra integral equations: grids, kernels, quadrature, solvers |
//! | [`data`] | `calmflow-data` | samplers, npy/npz/csv, digits, standardisation, PCA, splits |
//! | [`metrics`] | `calmflow-metrics` | W2, Sinkhorn, MMD, energy, Fréchet, R² |
//! | [`tokenize`] | `calmflow-tokenize` | space-time token layout, packing, loss masks |
//! | [`model`] | `calmflow-model` | encoder, causal backbone with KV cache, variational decoder |
//! | [`train`] | `calmflow-train` | paths, couplings, loss, trainer, generation, CFM, ODE solvers |
//! | [`backend`] | this crate | `--device` parsing and dispatch to the compiled burn backends |
//! | [`config`] | this crate | the TOML run configuration (`docs/config.md`) |
//! | [`app`] | this crate | train, sample and demo jobs behind the command-line program |
//! | [`plot`] | this crate | PNG/SVG scatter and trajectory plots |
//! | [`io`] | this crate | point files by extension (`.npy`, `.csv`) |

pub mod app;
pub mod backend;
pub mod cells;
pub mod config;
pub mod heldout;
pub mod io;
pub mod plot;
pub mod progress;

pub use calmflow_data as data;
pub use calmflow_metrics as metrics;
pub use calmflow_model as model;
pub use calmflow_tokenize as tokenize;
pub use calmflow_train as train;
pub use calmflow_vie as vie;
