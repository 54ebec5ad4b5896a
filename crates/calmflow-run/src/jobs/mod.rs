//! What the `calmflow` program and the quality suite run, as library functions generic
//! over the backend (the program runs them through `calmflow::backend::DeviceSpec::run`,
//! which picks the backend): train CaLMFlow or a CFM baseline from a
//! [`RunConfig`](crate::config::RunConfig), sample from a checkpoint, score and plot point
//! files, the end-to-end demo and the held-out single-cell study. One job per file:
//!
//! | file | what |
//! | --- | --- |
//! | `jobs/mod.rs` | what the jobs share: [`ModelKind`], the checkpoint's [`RunExtra`] |
//! | `jobs/train.rs` | [`TrainJob`]: preparing the data, training ([`fit_calmflow`], [`fit_cfm`]), the temperature sweep |
//! | `jobs/sample.rs` | [`SampleJob`]: generating from a checkpoint, conditioned or not |
//! | `jobs/demo.rs` | [`DemoJob`]: CaLMFlow and I-CFM on 8-Gaussians → moons |
//! | `jobs/evaluate.rs` | [`EvaluateJob`]: a sample file scored against a target file |
//! | `jobs/plot.rs` | [`PlotJob`]: point or trajectory files drawn as PNG or SVG |
//! | `jobs/heldout.rs` | [`HeldOutJob`]: the unseen-condition experiment on single cells (docs/method.md §8) |

use std::path::PathBuf;

use calmflow_train::Standardization;
use serde::{Deserialize, Serialize};

use crate::cells::CellsRecord;
use crate::config::DataSection;

mod demo;
mod evaluate;
mod heldout;
mod plot;
mod sample;
mod train;

pub use crate::error::{AppError, AppResult};
pub use demo::{DemoJob, DemoOutcome};
pub use evaluate::EvaluateJob;
pub use heldout::{
    ConditionResult, DEFAULT_HELD_OUT, DEFAULT_TEMPLATE, HeldOutJob, HeldOutOutcome, Scores,
    results_table,
};
pub use plot::PlotJob;
pub use sample::{CONDITIONAL_TEMPERATURE, SampleJob, SampleOutcome, SampledCells};
pub use train::{TrainJob, TrainOutcome, fit_calmflow, fit_cfm, init_calmflow, init_cfm};

/// What checkpoints record besides the model: how to draw source points again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunExtra {
    /// The `[data]` section of the run.
    pub data: DataSection,
    /// Directory that relative data paths are resolved against.
    pub base: PathBuf,
    /// The temperature chosen on validation data, when one was (`calmflow demo`).
    pub temperature: Option<f64>,
    /// The standardisation the model was trained in (`[data] standardize`), inverted on
    /// generated points.
    #[serde(default)]
    pub standardization: Option<Standardization>,
    /// The cells of a conditional run (`[data] h5ad`): conditions, prompts, PCA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells: Option<CellsRecord>,
}

/// Which model a training job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// CaLMFlow.
    CalmFlow,
    /// The CFM baseline of the `[cfm]` section.
    Cfm,
}
