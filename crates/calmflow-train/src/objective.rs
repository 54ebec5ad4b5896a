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

/// One step's examples after the step's host-side random draws (the points on the
/// conditional paths), before any device work: what a device turns into a loss.
///
/// A data-parallel run draws the whole batch once, exactly as a single device does, and
/// gives each peer a contiguous [`share`](DrawnBatch::share) of the examples; every loss
/// is a mean over examples, so the peers' losses average to the one-device loss.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnBatch {
    fields: Vec<Array2<f32>>,
    per_example: usize,
    conditions: Option<Vec<usize>>,
    progress: Option<f64>,
}

impl DrawnBatch {
    /// `fields`: per-pair inputs, one row per pair, all with the same rows (a multiple of
    /// `per_example`); `conditions`: one per example, for conditional data.
    pub fn new(
        fields: Vec<Array2<f32>>,
        per_example: usize,
        conditions: Option<Vec<usize>>,
    ) -> Result<Self> {
        let rows = fields.first().map_or(0, Array2::nrows);
        if per_example == 0 || rows == 0 || !rows.is_multiple_of(per_example) {
            return Err(shape_error(
                "drawn batch",
                format!("a positive multiple of {per_example} pairs"),
                rows,
            ));
        }
        if let Some(f) = fields.iter().find(|f| f.nrows() != rows) {
            return Err(shape_error(
                "drawn batch fields",
                format!("{rows} rows in every field"),
                f.nrows(),
            ));
        }
        if let Some(c) = &conditions
            && c.len() * per_example != rows
        {
            return Err(shape_error(
                "conditions",
                format!("one per example ({})", rows / per_example),
                c.len(),
            ));
        }
        Ok(Self {
            fields,
            per_example,
            conditions,
            progress: None,
        })
    }

    /// Marks the batch as a training step's, drawn after the fraction `progress ∈ [0, 1)`
    /// of the run's steps (what schedules inside the loss, such as the mixture's
    /// annealing, follow). Batches without it (validation) get the loss itself.
    pub fn at_progress(mut self, progress: f64) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The fraction of the run's steps done before this training batch was drawn.
    pub fn progress(&self) -> Option<f64> {
        self.progress
    }

    /// Examples (CaLMFlow sequences, CFM pairs).
    pub fn examples(&self) -> usize {
        self.pairs() / self.per_example
    }

    /// Pairs (rows of every field).
    pub fn pairs(&self) -> usize {
        self.fields[0].nrows()
    }

    /// The `k`-th per-pair input.
    pub fn field(&self, k: usize) -> Option<&Array2<f32>> {
        self.fields.get(k)
    }

    /// The condition of each example (conditional data).
    pub fn conditions(&self) -> Option<&[usize]> {
        self.conditions.as_deref()
    }

    /// Examples `[peer·E/peers, (peer+1)·E/peers)` of the `E` examples: peer `peer`'s
    /// share of a batch split evenly among `peers`.
    pub fn share(&self, peer: usize, peers: usize) -> Result<Self> {
        let examples = self.examples();
        if peers == 0 || peer >= peers || !examples.is_multiple_of(peers) {
            return Err(invalid(format!(
                "a batch of {examples} examples cannot be split evenly among {peers} peers \
                 (asked for share {peer})"
            )));
        }
        let each = examples / peers;
        let (first, last) = (peer * each, (peer + 1) * each);
        let rows = ndarray::s![first * self.per_example..last * self.per_example, ..];
        Ok(Self {
            fields: self
                .fields
                .iter()
                .map(|f| f.slice(rows).to_owned())
                .collect(),
            per_example: self.per_example,
            conditions: self.conditions.as_ref().map(|c| c[first..last].to_vec()),
            progress: self.progress,
        })
    }
}

/// A model trainable by flow matching on coupled `(x0, x1)` pairs.
///
/// A step is split in two: [`draw`](FlowObjective::draw) makes every host-side random
/// draw of the step (path noise, times), and [`batch_loss`](FlowObjective::batch_loss)
/// runs the device work, on the whole batch or on one peer's share of it.
pub trait FlowObjective<B: Backend>: Module<B> {
    /// The settings of the objective (paths, grid, loss weights).
    type Settings: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync;

    /// A short name of the model family, stored in checkpoints (`"calmflow"`, `"cfm"`).
    const KIND: &'static str;

    /// Settings fields that only shape a fresh model's start
    /// ([`initialize`](FlowObjective::initialize)): a resumed run loads its weights over
    /// the start, so these may differ from the checkpoint's.
    const START_SETTINGS: &'static [&'static str] = &[];

    /// Coupled pairs consumed per training example (`P` trajectories per CaLMFlow
    /// sequence, 1 for CFM).
    fn pairs_per_example(settings: &Self::Settings) -> usize;

    /// Checks the settings against the model.
    fn check_settings(&self, settings: &Self::Settings) -> Result<()>;

    /// Checks that the model can read these conditions (`None`: unconditional data).
    fn check_conditions(&self, table: Option<&ConditionTable>) -> Result<()>;

    /// The host-side draws of a step on pairs `x0`, `x1` (`n × D`, `n` a multiple of
    /// [`FlowObjective::pairs_per_example`]); `conditions`, for conditional data, gives
    /// the condition of each example; `rng` draws any path noise or times.
    fn draw(
        &self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        conditions: Option<&[usize]>,
        settings: &Self::Settings,
        rng: &mut Rng,
    ) -> Result<DrawnBatch>;

    /// A fresh model's data-dependent start, before its first step, from a sample of
    /// coupled training pairs `x0`, `x1` (`n × D`); `rng` draws any path noise and seeds
    /// any clustering. A resumed
    /// run loads its weights over it. The default leaves the model as initialised; CaLMFlow's
    /// `mixture` head places its components by k-means when
    /// [`CalmFlowSettings::mixture_init`] asks for it.
    fn initialize(
        self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        settings: &Self::Settings,
        rng: &mut Rng,
    ) -> Result<Self> {
        let _ = (x0, x1, settings, rng);
        Ok(self)
    }

    /// Whether [`initialize`](FlowObjective::initialize) reads data under these settings
    /// (when not, the trainer draws no pairs for it).
    fn initializes_from_data(&self, settings: &Self::Settings) -> bool {
        let _ = settings;
        false
    }

    /// The loss on drawn examples; `table` is the condition table of conditional data.
    fn batch_loss(
        &self,
        batch: &DrawnBatch,
        table: Option<&ConditionTable>,
        settings: &Self::Settings,
        device: &B::Device,
    ) -> Result<LossTerms<B>>;

    /// [`draw`](FlowObjective::draw) then [`batch_loss`](FlowObjective::batch_loss): the
    /// loss on pairs `x0`, `x1`.
    fn objective(
        &self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        conditions: Option<&ConditionBatch<'_>>,
        settings: &Self::Settings,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<LossTerms<B>> {
        let batch = self.draw(x0, x1, conditions.map(|c| c.conditions), settings, rng)?;
        self.batch_loss(&batch, conditions.map(|c| c.table), settings, device)
    }
}

/// The condition table and the batch's conditions, which come together or not at all.
pub(crate) fn batch_conditions<'a>(
    batch: &'a DrawnBatch,
    table: Option<&'a ConditionTable>,
) -> Result<Option<ConditionBatch<'a>>> {
    match (table, batch.conditions()) {
        (None, None) => Ok(None),
        (Some(table), Some(conditions)) => Ok(Some(ConditionBatch { table, conditions })),
        (Some(_), None) => Err(invalid(
            "conditional data, but the batch carries no conditions",
        )),
        (None, Some(_)) => Err(invalid(
            "the batch carries conditions, but no condition table was given",
        )),
    }
}

/// The mixture's annealing start that `calmflow train` uses for heads stepping toward
/// sampled endpoints: 1, no annealing (`CalmFlowSettings::anneal_temperature`). Annealing
/// from `T₀ = D` had stopped randomly started components from merging pairs of modes at
/// D = 100 (Fréchet 3.06 → 2.94); components placed by k-means
/// ([`RECOMMENDED_MIXTURE_INIT`]) start on separate modes, and annealing would pull them
/// back together (`docs/heads.md`).
pub const RECOMMENDED_ANNEAL_TEMPERATURE: f64 = 1.0;

/// How the `mixture` head's components start ([`CalmFlowSettings::mixture_init`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixtureInit {
    /// As the output layer is initialised: every component's mean near 0.
    #[default]
    Random,
    /// Each component's mean at a k-means centre of the first slot's targets (the head's
    /// `y` at `t₀`: for `predict = "endpoint"` the endpoints `x1`), fitted on
    /// [`MIXTURE_INIT_PAIRS`] coupled training pairs before the first step, so that every
    /// component starts on its own part of the data.
    Kmeans,
}

/// How the mixture's components start when `calmflow train` is not told otherwise:
/// [`MixtureInit::Kmeans`]. Measured with a one-step roll-out (`N = 2`) on N(0, I) → 8
/// Gaussians (three seeds, 2000 points): Fréchet at D = 10 / 50 / 100 0.11 / 0.84 / 2.80
/// against 0.14 / 0.91 / 2.94 for the annealed four-step default it replaced
/// (`docs/heads.md`).
pub const RECOMMENDED_MIXTURE_INIT: MixtureInit = MixtureInit::Kmeans;

/// Coupled training pairs drawn (in whole batches) for [`MixtureInit::Kmeans`].
pub const MIXTURE_INIT_PAIRS: usize = 4096;

/// k-means starts for [`MixtureInit::Kmeans`]; the fit with the smallest inertia is kept.
const MIXTURE_INIT_RESTARTS: usize = 8;

/// CaLMFlow's training problem: paths on `N` time points, `P` trajectories per sequence,
/// KL weight `β` (docs/method.md §2, §3, §6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalmFlowSettings {
    /// Time points `N` of the grid `t_i = i/(N−1)` (the paper: 16).
    pub n_times: usize,
    /// Trajectories per sequence `P` (the paper: 1).
    pub n_traj: usize,
    /// KL weight `β` (the paper: 0.3).
    pub beta: f64,
    /// The conditional path (the paper: straight, σ = 0).
    pub path: ConditionalPath,
    /// Starting temperature `T₀` of the `mixture` head's annealing
    /// ([`DistributionHead::annealed_loss`](calmflow_model::DistributionHead::annealed_loss)):
    /// the posterior over components is tempered by `T`, decayed linearly from `T₀` to 1
    /// over the first `anneal_fraction` of the steps. 0: the data dimension `D` (so that
    /// early on a component's log-density counts per coordinate); 1: no annealing (the
    /// default, and [`RECOMMENDED_ANNEAL_TEMPERATURE`]: the plain likelihood). Other heads
    /// ignore it.
    pub anneal_temperature: f64,
    /// Fraction of the training steps over which the annealing temperature reaches 1.
    pub anneal_fraction: f64,
    /// How the `mixture` head's components start: as initialised (`random`, the
    /// default) or at k-means centres of the head's first-slot targets (`kmeans`,
    /// [`RECOMMENDED_MIXTURE_INIT`]). Other heads ignore it.
    pub mixture_init: MixtureInit,
    /// Share `ρ ∈ [0, 1]` of each training batch's examples whose context states are the
    /// model's own roll-out from their source instead of the data path (no gradient
    /// through the roll-out), still scored against the data endpoint their source is
    /// coupled to. The later draws of a roll-out then learn from the states the model
    /// itself visits (exposure bias, `docs/method.md` §7): since the target is the data
    /// endpoint, a head that learns `p(x₁ | its own history)` exactly draws the data law at
    /// the last step. Needs `predict = "endpoint"`; 0 (the default) trains on data paths
    /// only. Validation batches stay on data paths.
    pub rollout_fraction: f64,
}

impl Default for CalmFlowSettings {
    fn default() -> Self {
        Self {
            n_times: 16,
            n_traj: 1,
            beta: 0.3,
            path: ConditionalPath::straight(),
            anneal_temperature: 1.0,
            anneal_fraction: 0.5,
            mixture_init: MixtureInit::Random,
            rollout_fraction: 0.0,
        }
    }
}

impl CalmFlowSettings {
    /// The annealing temperature `T ≥ 1` after the fraction `progress` of training, for
    /// data of dimension `dim`: `1 + (T₀ − 1)·max(0, 1 − progress/anneal_fraction)`.
    ///
    /// ```
    /// use calmflow_train::CalmFlowSettings;
    /// let s = CalmFlowSettings {
    ///     anneal_temperature: 0.0, // T₀ = D, over the first half of the steps
    ///     ..CalmFlowSettings::default()
    /// };
    /// assert_eq!(s.anneal_temperature_at(0.0, 100), 100.0);
    /// assert_eq!(s.anneal_temperature_at(0.25, 100), 50.5);
    /// assert_eq!(s.anneal_temperature_at(0.5, 100), 1.0);
    /// assert_eq!(s.anneal_temperature_at(0.9, 100), 1.0);
    /// assert_eq!(CalmFlowSettings::default().anneal_temperature_at(0.0, 100), 1.0);
    /// ```
    pub fn anneal_temperature_at(&self, progress: f64, dim: usize) -> f64 {
        let start = if self.anneal_temperature == 0.0 {
            dim as f64
        } else {
            self.anneal_temperature
        };
        let left = (1.0 - progress / self.anneal_fraction).max(0.0);
        1.0 + (start.max(1.0) - 1.0) * left
    }

    /// The space-time layout of one sequence for a model with `n_space` tokens per state.
    pub fn layout(&self, n_space: usize) -> Result<SpaceTimeLayout> {
        Ok(SpaceTimeLayout::new(self.n_times, self.n_traj, n_space)?)
    }
}

/// `(n, D)` of pairs `x0`, `x1`, which must have the same shape.
fn paired_shape(x0: &Array2<f32>, x1: &Array2<f32>) -> Result<(usize, usize)> {
    let (n, d) = x0.dim();
    if x1.dim() != (n, d) {
        return Err(shape_error(
            "CaLMFlow pairs",
            format!("two ({n}, {d}) arrays"),
            (x0.dim(), x1.dim()),
        ));
    }
    Ok((n, d))
}

/// The mixture's components `M` when `settings` place them by k-means, `None` when the
/// model starts as initialised.
fn kmeans_components<B: Backend>(
    model: &CalmFlowModel<B>,
    settings: &CalmFlowSettings,
) -> Option<usize> {
    model
        .mixture_components()
        .filter(|_| settings.mixture_init == MixtureInit::Kmeans)
}

/// The first `⌊ρ·B + ½⌋` examples of packed data paths `slots` `(B, N·P, D)` with their
/// context states (time points 1 … N − 2) replaced by the model's own roll-out from
/// their sources, detached; the sources and the data endpoints are kept.
fn rolled_out_context<B: Backend>(
    model: &CalmFlowModel<B>,
    slots: Tensor<B, 3>,
    prompt: Option<&calmflow_model::Prompt<B>>,
    layout: &SpaceTimeLayout,
    fraction: f64,
) -> Result<Tensor<B, 3>> {
    let [b, s, d] = slots.dims();
    let (n, p) = (layout.n_times, layout.n_traj);
    let rolled = ((fraction * b as f64).round() as usize).min(b);
    if rolled == 0 || n < 3 {
        return Ok(slots);
    }
    let first = slots.clone().narrow(0, 0, rolled);
    let sources = first.clone().narrow(1, 0, p);
    let prompt = prompt.map(|q| calmflow_model::Prompt {
        embeddings: q.embeddings.clone().narrow(0, 0, rolled),
        padding: q.padding.clone().map(|m| m.narrow(0, 0, rolled)),
    });
    let states = model
        .rollout(sources, n, 1.0, true, prompt.as_ref())?
        .reshape([rolled, s, d])
        .detach();
    let own = Tensor::cat(
        vec![states.narrow(1, 0, s - p), first.narrow(1, s - p, p)],
        1,
    );
    Ok(if rolled == b {
        own
    } else {
        Tensor::cat(vec![own, slots.narrow(0, rolled, b - rolled)], 0)
    })
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
    const START_SETTINGS: &'static [&'static str] = &["mixture_init"];

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
        let t0 = settings.anneal_temperature;
        if !(t0 == 0.0 || (t0 >= 1.0 && t0.is_finite())) {
            return Err(invalid(format!(
                "anneal_temperature = {t0} must be 0 (the data dimension), 1 (off) or a finite \
                 value above 1"
            )));
        }
        let f = settings.anneal_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return Err(invalid(format!("anneal_fraction = {f} must lie in (0, 1]")));
        }
        let rho = settings.rollout_fraction;
        if !(0.0..=1.0).contains(&rho) {
            return Err(invalid(format!(
                "rollout_fraction = {rho} must lie in [0, 1]"
            )));
        }
        if rho > 0.0 && self.predict() != calmflow_model::Predict::Endpoint {
            return Err(invalid(format!(
                "rollout_fraction = {rho} trains on the model's own states against the data \
                 endpoint, which needs predict = \"endpoint\" (the model has predict = \"{}\")",
                self.predict()
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

    fn draw(
        &self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        conditions: Option<&[usize]>,
        settings: &CalmFlowSettings,
        rng: &mut Rng,
    ) -> Result<DrawnBatch> {
        settings.layout(self.n_space())?;
        let (n, d) = paired_shape(x0, x1)?;
        let paths = trajectories(x0, x1, &settings.path, settings.n_times, rng)?;
        let paths = Array2::from_shape_vec((n, settings.n_times * d), paths)
            .map_err(|e| shape_error("trajectories", format!("({n}, N·D)"), e))?;
        DrawnBatch::new(
            vec![paths],
            settings.n_traj,
            conditions.map(<[usize]>::to_vec),
        )
    }

    fn initializes_from_data(&self, settings: &CalmFlowSettings) -> bool {
        kmeans_components(self, settings).is_some()
    }

    fn initialize(
        self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        settings: &CalmFlowSettings,
        rng: &mut Rng,
    ) -> Result<Self> {
        let Some(components) = kmeans_components(&self, settings) else {
            return Ok(self);
        };
        let (n, d) = paired_shape(x0, x1)?;
        if n < components {
            return Err(invalid(format!(
                "k-means of the mixture's {components} components needs at least \
                 {components} pairs, got {n}"
            )));
        }
        let paths = trajectories(x0, x1, &settings.path, settings.n_times, rng)?;
        let (predict, n_times) = (self.predict(), settings.n_times);
        let mut targets = Array2::<f32>::zeros((n, d));
        for (i, mut row) in targets.rows_mut().into_iter().enumerate() {
            let path = &paths[i * n_times * d..(i + 1) * n_times * d];
            for (k, y) in row.iter_mut().enumerate() {
                let (z, next, end) = (path[k], path[d + k], path[(n_times - 1) * d + k]);
                *y = predict.target(z as f64, next as f64, end as f64, n_times) as f32;
            }
        }
        let fit =
            calmflow_data::KMeans::fit(targets.view(), components, MIXTURE_INIT_RESTARTS, rng)?;
        let centres: Vec<f32> = fit.centres().iter().map(|&v| v as f32).collect();
        Ok(self.with_mixture_means(&centres)?)
    }

    fn batch_loss(
        &self,
        batch: &DrawnBatch,
        table: Option<&ConditionTable>,
        settings: &CalmFlowSettings,
        device: &B::Device,
    ) -> Result<LossTerms<B>> {
        let layout = settings.layout(self.n_space())?;
        let paths = batch
            .field(0)
            .ok_or_else(|| invalid("a CaLMFlow batch holds its trajectories"))?;
        let (n, width) = paths.dim();
        let d = width / settings.n_times;
        let paths = Tensor::<B, 3>::from_data(
            TensorData::new(
                paths.iter().copied().collect::<Vec<_>>(),
                [n, settings.n_times, d],
            ),
            device,
        );
        let slots = pack(paths, &layout)?;
        let prompt = match batch_conditions(batch, table)? {
            None => None,
            Some(c) => Some(c.table.embed(self, c.conditions, device)?),
        };
        let slots = match batch.progress() {
            Some(_) if settings.rollout_fraction > 0.0 => rolled_out_context(
                self,
                slots,
                prompt.as_ref(),
                &layout,
                settings.rollout_fraction,
            )?,
            _ => slots,
        };
        let temperature = batch
            .progress()
            .map_or(1.0, |p| settings.anneal_temperature_at(p, d));
        let terms = self.annealed_head_loss(slots, prompt.as_ref(), &layout, temperature)?;
        VolterraFlowLoss {
            beta: settings.beta,
        }
        .combine(terms)
    }
}
