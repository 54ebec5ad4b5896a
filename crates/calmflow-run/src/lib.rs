//! # calmflow-run
//!
//! The run layer: what a run of calmflow is and how it runs, shared by the `calmflow`
//! program and the quality suite, so that a suite row and `calmflow train` with the same
//! configuration take one code path. A TOML run configuration ([`config::RunConfig`]:
//! its sections, validation and the defaults that follow the head), the jobs that train
//! CaLMFlow and the CFM baselines, sample from checkpoints, run the demo and the held-out
//! single-cell study ([`jobs`], one job per file, generic over the burn backend), and the
//! one error they return ([`error::AppError`]). The program is argument parsing plus calls
//! into this crate; it reaches it through the facade as `calmflow::run`, and runs each job
//! on the backend that `calmflow::backend::DeviceSpec` chose.
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | the TOML run configuration (`docs/config.md`) |
//! | [`jobs`] | train, sample, demo and held-out jobs (`jobs/train.rs`, `jobs/sample.rs`, `jobs/demo.rs`, `jobs/heldout.rs`) |
//! | [`error`] | [`AppError`](error::AppError), what stops a job (also `jobs::AppError`) |
//! | [`cells`] | conditional runs on an AnnData file: loading, PCA, prompts, the checkpoint record, `--condition` |
//! | [`progress`] | the training progress bar |
//! | [`io`] | point files by extension (`.npy`, `.csv`) |

pub mod cells;
pub mod config;
pub mod error;
pub mod io;
pub mod jobs;
pub mod progress;
