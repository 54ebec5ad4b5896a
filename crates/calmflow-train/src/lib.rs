//! # calmflow-train — training and sampling CaLMFlow and its baselines
//!
//! - [`ConditionalPath`] (straight, variance-preserving; constant or bridge noise) and
//!   [`Coupling`] (independent, exact minibatch OT, entropic) turn source/target pairs into
//!   training paths (docs/method.md §2).
//! - [`VolterraFlowLoss`]: `L_rec + β·L_KL` over the space-time layout (docs/method.md §6).
//! - [`Trainer`]: AdamW with warm-up and decay, global-norm clipping, validation, a
//!   JSON-lines log, crash-safe [`Checkpoint`]s and exact resumption, for any
//!   [`FlowObjective`] — CaLMFlow's [`CalmFlowModel`](calmflow_model::CalmFlowModel) or
//!   the CFM baseline's [`VelocityMlp`].
//! - [`generate`]: autoregressive roll-out with the KV cache at temperature `τ`;
//!   [`choose_temperature`] picks `τ` on validation data.
//! - [`cfm_sample`] and [`integrate`]: Euler, midpoint, RK4 and adaptive Dormand–Prince.

mod cfm;
mod checkpoint;
mod clip;
mod condition;
mod coupling;
mod data;
mod error;
mod generate;
mod log;
mod loss;
mod objective;
mod ode;
mod parallel;
mod path;
mod prefetch;
mod schedule;
mod seed;
mod task;
mod train_config;
mod trainer;

pub use cfm::{CfmSamples, CfmSettings, CfmVariant, VelocityMlp, VelocityMlpConfig, cfm_sample};
pub use checkpoint::{CHECKPOINT_FORMAT, Checkpoint, TrainState};
pub use clip::{clip_global_norm, global_grad_norm};
pub use condition::{ConditionBatch, ConditionTable};
pub use coupling::Coupling;
pub use data::{ConditionData, FlowData, PointSource, STANDARDIZE_FIT_DRAWS, Standardization};
pub use error::{Result, TrainError};
pub use generate::{
    Generated, GenerationOptions, TEMPERATURE_GRID, TemperatureScore, TemperatureSweep,
    choose_temperature, generate,
};
pub use log::{LogRecord, LogWindow};
pub use loss::{LossTerms, VolterraFlowLoss};
pub use objective::{
    CalmFlowSettings, DrawnBatch, FlowObjective, MIXTURE_INIT_PAIRS, MixtureInit,
    RECOMMENDED_ANNEAL_TEMPERATURE, RECOMMENDED_MIXTURE_INIT,
};
pub use ode::{AdaptiveSettings, OdeSolution, OdeSolver, SolveStats, integrate};
pub use parallel::panic_message;
pub use path::{ConditionalPath, Interpolant, NoiseSchedule};
pub use schedule::{LrDecay, LrSchedule};
pub use task::{BackendTask, ParallelBackendTask};
pub use train_config::TrainConfig;
pub use trainer::{Silent, TrainObserver, TrainSummary, Trainer};
