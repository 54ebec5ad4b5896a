//! # calmflow-cli
//!
//! The `calmflow` command-line program and the jobs behind it, as a library: training
//! CaLMFlow and the CFM baselines from a TOML run configuration, sampling from
//! checkpoints (conditioned on cell labels or prompts for models of cells), the demo, the
//! held-out single-cell study, plots and progress output. It composes the `calmflow`
//! facade (the layered crates and backend selection) and runs every job through
//! [`calmflow::backend::DeviceSpec`].
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | the TOML run configuration (`docs/config.md`) |
//! | [`app`] | train, sample and demo jobs (`app/train.rs`, `app/sample.rs`, `app/demo.rs`) |
//! | [`error`] | [`AppError`](error::AppError), what stops a command (also `app::AppError`) |
//! | [`cells`] | conditional runs on an AnnData file: loading, PCA, prompts, the checkpoint record, `--condition` |
//! | [`heldout`] | the unseen-condition experiment on single cells (docs/method.md §8) |
//! | [`plot`] | PNG/SVG scatter, trajectory and bar plots (`plot/scatter.rs`, `plot/trajectories.rs`, `plot/sweep.rs`, `plot/bars.rs`, `plot/images.rs`) |
//! | [`progress`] | the training progress bar |
//! | [`io`] | point files by extension (`.npy`, `.csv`) |

pub mod app;
pub mod cells;
pub mod config;
pub mod error;
pub mod heldout;
pub mod io;
pub mod plot;
pub mod progress;
