//! # calmflow
//!
//! The reference implementation of CaLMFlow (arXiv 2410.05292): flow matching recast as a
//! Volterra integral equation and solved by a causal transformer over space-time tokens.
//!
//! This crate is the facade: it re-exports the layered crates and owns backend selection
//! ([`backend`]), so that a program moves from the CPU to a GPU by a cargo feature and a
//! `--device` flag. The `calmflow` command-line program (the `calmflow-cli` crate) is
//! argument parsing over this crate: its run configuration and jobs are [`run`], its plots
//! [`plot`].
//!
//! | module | crate | what |
//! | --- | --- | --- |
//! | [`vie`] | `calmflow-vie` | Volterra integral equations: grids, kernels, quadrature, solvers |
//! | [`data`] | `calmflow-data` | samplers, npy/npz/csv, digits, standardisation, PCA, splits |
//! | [`metrics`] | `calmflow-metrics` | W2, Sinkhorn, MMD, energy, Fréchet, R² |
//! | [`tokenize`] | `calmflow-tokenize` | space-time token layout, packing, loss masks |
//! | [`model`] | `calmflow-model` | encoder, causal backbone with KV cache, variational decoder |
//! | [`train`] | `calmflow-train` | paths, couplings, loss, trainer, generation, CFM, ODE solvers |
//! | [`plot`] | `calmflow-plot` | scatter panels, trajectories, sweeps, dispersion bars, image grids (PNG/SVG) |
//! | [`run`] | `calmflow-run` | the TOML run configuration and the jobs of the program and the quality suite |
//! | [`backend`] | this crate | `--device` parsing and dispatch to the compiled burn backends |

pub mod backend;

pub use calmflow_data as data;
pub use calmflow_metrics as metrics;
pub use calmflow_model as model;
pub use calmflow_plot as plot;
pub use calmflow_run as run;
pub use calmflow_tokenize as tokenize;
pub use calmflow_train as train;
pub use calmflow_vie as vie;
