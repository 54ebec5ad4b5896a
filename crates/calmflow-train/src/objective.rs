//! What a model is trained to do on a minibatch of coupled pairs: the one interface the
//! [`Trainer`](crate::Trainer) drives, implemented by CaLMFlow and by the CFM baseline.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use calmflow_data::Rng;
use calmflow_model::CalmFlowModel;
use calmflow_tokenize::{SpaceTimeLayout, pack};
use calmflow_vie::TimeGrid;
use ndarray::Array2;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::condition::{ConditionBatch, ConditionTable};
use crate::error::{Result, invalid, shape_error};
use crate::loss::{LossTerms, VolterraFlowLoss};
use crate::path::{ConditionalPath, Interpolant, NoiseSchedule};

/// A model trainable by flow matching on coupled `(x0, x1)` pairs.
pub trait FlowObjective<B: Backend>: Module<B> {
    /// The settings of the objective (paths, grid, loss weights).
    type Settings: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send;

    /// A short name of the model family, stored in checkpoints (`"calmflow"`, `"cfm"`).
    const KIND: &'static str;

    /// Coupled pairs consumed per training example (`P` trajectories per CaLMFlow
    /// sequence, 1 for CFM).
    fn pairs_per_example(settings: &Self::Settings) -> usize;

    /// Checks the settings against the model.
    fn check_settings(&self, settings: &Self::Settings) -> Result<()>;

    /// Checks that the model can read these conditions (`None`: unconditional data).
    fn check_conditions(&self, table: Option<&ConditionTable>) -> Result<()>;

    /// The loss on pairs `x0`, `x1` (`n × D`, `n` a multiple of
    /// [`FlowObjective::pairs_per_example`]); `conditions`, for conditional data, gives
    /// the condition of each example; `rng` draws any path noise or times.
    fn objective(
        &self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        conditions: Option<&ConditionBatch<'_>>,
        settings: &Self::Settings,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<LossTerms<B>>;
}

/// CaLMFlow's training problem: paths on `N` time points, `P` trajectories per sequence,
/// KL weight `β` (METHOD §2, §3, §6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalmFlowSettings {
    /// Time points `N` of the grid `t_i = i/(N−1)` (METHOD: 16).
    pub n_times: usize,
    /// Trajectories per sequence `P` (METHOD: 1).
    pub n_traj: usize,
    /// KL weight `β` (METHOD: 0.3).
    pub beta: f64,
    /// The conditional path (METHOD: straight, σ = 0).
    pub path: ConditionalPath,
}

impl Default for CalmFlowSettings {
    fn default() -> Self {
        Self {
            n_times: 16,
            n_traj: 1,
            beta: 0.3,
            path: ConditionalPath::straight(),
        }
    }
}

impl CalmFlowSettings {
    /// The space-time layout of one sequence for a model with `n_space` tokens per state.
    pub fn layout(&self, n_space: usize) -> Result<SpaceTimeLayout> {
        Ok(SpaceTimeLayout::new(self.n_times, self.n_traj, n_space)?)
    }
}

/// Host trajectories `(n, N, D)` of pairs along `path` on the model grid, as one
/// row-major buffer.
pub(crate) fn trajectories(
    x0: &Array2<f32>,
    x1: &Array2<f32>,
    path: &ConditionalPath,
    n_times: usize,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    let grid = TimeGrid::model(n_times)?;
    let (n, d) = x0.dim();
    let mut out = vec![0.0f32; n * n_times * d];
    for (i, chunk) in out.chunks_exact_mut(n_times * d).enumerate() {
        let a: Vec<f32> = x0.row(i).to_vec();
        let b: Vec<f32> = x1.row(i).to_vec();
        path.trajectory(grid.points(), &a, &b, rng, chunk);
    }
    Ok(out)
}

impl<B: Backend> FlowObjective<B> for CalmFlowModel<B> {
    type Settings = CalmFlowSettings;
    const KIND: &'static str = "calmflow";

    fn pairs_per_example(settings: &CalmFlowSettings) -> usize {
        settings.n_traj
    }

    fn check_settings(&self, settings: &CalmFlowSettings) -> Result<()> {
        settings.layout(self.n_space())?;
        settings.path.validate()?;
        if self.markov_slots() > 0 && self.markov_slots() != settings.n_traj {
            return Err(invalid(format!(
                "the model's Markov context has markov_slots = {}, the flow has n_traj = {}: \
                 they must be equal",
                self.markov_slots(),
                settings.n_traj
            )));
        }
        if self.predict().steps_to_endpoint() {
            if settings.path.interpolant != Interpolant::Straight {
                return Err(invalid(format!(
                    "predict = \"{}\" steps along straight paths: use the straight \
                     interpolant",
                    self.predict()
                )));
            }
            let sigma = match settings.path.noise {
                NoiseSchedule::Bridge => settings.path.sigma,
                NoiseSchedule::Constant => 0.0,
            };
            if (sigma - self.bridge_sigma()).abs() > 1e-12 {
                return Err(invalid(format!(
                    "predict = \"{}\" adds the paths' Brownian-bridge noise when \
                     sampling: the model has bridge_sigma = {}, the paths have {sigma}",
                    self.predict(),
                    self.bridge_sigma()
                )));
            }
        }
        if !(settings.beta >= 0.0 && settings.beta.is_finite()) {
            return Err(invalid(format!(
                "beta = {} must be finite and ≥ 0",
                settings.beta
            )));
        }
        Ok(())
    }

    fn check_conditions(&self, table: Option<&ConditionTable>) -> Result<()> {
        match table {
            None => Ok(()),
            Some(t) if !t.has_prompts() => Err(invalid(
                "CaLMFlow reads conditions as prompts, and these conditions have none \
                 (give a prompt template)",
            )),
            Some(t) => t.check_vocab(self.backbone().vocab_size()),
        }
    }

    fn objective(
        &self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        conditions: Option<&ConditionBatch<'_>>,
        settings: &CalmFlowSettings,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<LossTerms<B>> {
        let layout = settings.layout(self.n_space())?;
        let (n, d) = x0.dim();
        let paths = trajectories(x0, x1, &settings.path, settings.n_times, rng)?;
        let paths =
            Tensor::<B, 3>::from_data(TensorData::new(paths, [n, settings.n_times, d]), device);
        let slots = pack(paths, &layout)?;
        let prompt = match conditions {
            None => None,
            Some(c) => {
                if c.conditions.len() * settings.n_traj != n {
                    return Err(shape_error(
                        "conditions",
                        format!("one per sequence ({})", n / settings.n_traj.max(1)),
                        c.conditions.len(),
                    ));
                }
                Some(c.table.embed(self, c.conditions, device)?)
            }
        };
        let terms = self.head_loss(slots, prompt.as_ref(), &layout)?;
        VolterraFlowLoss {
            beta: settings.beta,
        }
        .combine(terms)
    }
}
