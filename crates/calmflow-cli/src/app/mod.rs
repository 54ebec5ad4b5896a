//! What the `calmflow` program does, as library functions generic over the backend (run
//! through [`DeviceSpec::run`](calmflow::backend::DeviceSpec::run)): train CaLMFlow or a CFM
//! baseline from a [`RunConfig`](crate::config::RunConfig), sample from a checkpoint, and the
//! end-to-end demo.
//!
//! | file | what |
//! | --- | --- |
//! | `app/mod.rs` | what the jobs share: [`ModelKind`], the checkpoint's [`RunExtra`] |
//! | `app/train.rs` | [`TrainJob`]: preparing the data, training (`fit`), the temperature sweep |
//! | `app/sample.rs` | [`SampleJob`]: generating from a checkpoint, conditioned or not |
//! | `app/demo.rs` | [`DemoJob`]: CaLMFlow and I-CFM on 8-Gaussians → moons |

use std::path::PathBuf;

use calmflow::train::Standardization;
use serde::{Deserialize, Serialize};

use crate::cells::CellsRecord;
use crate::config::DataSection;

mod demo;
mod sample;
mod train;

pub use crate::error::{AppError, AppResult};
pub use demo::{DemoJob, DemoOutcome};
pub use sample::{CONDITIONAL_TEMPERATURE, SampleJob, SampleOutcome, SampledCells};
pub(crate) use train::{
    FitRun, bridge_note, create_out_dir, fit, load_pretrained, pretrained_shape,
};
pub use train::{TrainJob, TrainOutcome};

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
