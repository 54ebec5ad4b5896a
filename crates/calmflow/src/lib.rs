//! # calmflow
//!
//! The reference implementation of CaLMFlow (arXiv 2410.05292): flow matching recast as a
//! Volterra integral equation and solved by a causal transformer over space-time tokens.
//!
//! This crate is the facade: it re-exports the layered crates and owns backend selection
//! ([`backend`]), so that a program moves from the CPU to a GPU by a cargo feature and a
//! `--device` flag. The `calmflow` command-line program, its run configuration, jobs,
//! plots and studies are the `calmflow-cli` crate, built on this one.
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

pub mod backend;

pub use calmflow_data as data;
pub use calmflow_metrics as metrics;
pub use calmflow_model as model;
pub use calmflow_tokenize as tokenize;
pub use calmflow_train as train;
pub use calmflow_vie as vie;
