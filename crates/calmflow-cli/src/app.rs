//! What the `calmflow` program does, as library functions generic over the backend (run
//! through [`DeviceSpec::run`](calmflow::backend::DeviceSpec::run)): train CaLMFlow or a CFM
//! baseline from a [`RunConfig`], sample from a checkpoint, and the end-to-end demo.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use calmflow_data::{DataError, seeded_rng};
use calmflow_metrics::{EvalOptions, MetricsError, MetricsReport, evaluate};
use calmflow_model::neox::{NeoxConfig, NeoxDir};
use calmflow_model::{CalmFlowConfig, HeadKind, Predict};
use calmflow_train::{
    CalmFlowSettings, CfmSettings, Checkpoint, ConditionalPath, Coupling, FlowData, FlowObjective,
    GenerationOptions, NoiseSchedule, OdeSolver, Standardization, TEMPERATURE_GRID,
    TemperatureSweep, TrainConfig, TrainError, TrainSummary, Trainer, VelocityMlpConfig,
    cfm_sample, choose_temperature, generate,
};
use ndarray::{Array2, Array3};
use serde::{Deserialize, Serialize};

use crate::cells::{CellSpec, CellStudy, CellsRecord, ResolvedCondition, default_template};
use crate::config::{ConfigError, DataSection, RunConfig, TemperatureSection};
use crate::plot::{self, PlotError, Series};
use crate::progress::ProgressBar;
use calmflow::backend::{BackendTask, ParallelBackendTask};

/// Everything that can stop a command, each variant one clear line.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Training, sampling, checkpoints.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Data files.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Metrics.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Plots.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// Shorthand for results of the program.
pub type AppResult<T> = Result<T, AppError>;

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

/// A training job's data, ready to train on.
pub(crate) struct Prepared {
    data: FlowData,
    standardization: Option<Standardization>,
    /// The study of a conditional run.
    cells: Option<CellStudy>,
}

/// Which model a training job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// CaLMFlow.
    CalmFlow,
    /// The CFM baseline of the `[cfm]` section.
    Cfm,
}

/// `calmflow train` / `calmflow cfm train`.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The run.
    pub config: RunConfig,
    /// Directory that relative data paths are resolved against.
    pub base: PathBuf,
    /// Output directory (checkpoints, log, resolved config).
    pub out: PathBuf,
    /// Continue from the newest checkpoint in `out`.
    pub resume: bool,
    /// No progress output.
    pub quiet: bool,
    /// CaLMFlow or CFM.
    pub kind: ModelKind,
    /// Initialise the backbone from a local GPT-NeoX / Pythia checkpoint directory
    /// (`model.safetensors` + `config.json`); its shape replaces the `[model]` backbone
    /// fields.
    pub init_from: Option<PathBuf>,
}

/// What a training job reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// The trainer's summary.
    pub summary: TrainSummary,
    /// Parameters of the model.
    pub parameters: usize,
    /// The temperature sweep on validation data (CaLMFlow, `[temperature] sweep = true`).
    pub temperature: Option<TemperatureSweep>,
}

/// Sweeps the sampling temperature of a trained CaLMFlow model on (at most
/// `section.max_points`) validation pairs and records the choice in the newest checkpoint
/// under `checkpoints`, where `calmflow sample` finds it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sweep_temperature<B: burn::tensor::backend::Backend>(
    model: &calmflow_model::CalmFlowModel<B>,
    validation: &(Array2<f32>, Array2<f32>),
    settings: &CalmFlowSettings,
    section: &TemperatureSection,
    seed: u64,
    checkpoints: &Path,
    device: &B::Device,
    quiet: bool,
) -> AppResult<TemperatureSweep> {
    let (v0, v1) = validation;
    let n = v0.nrows().min(v1.nrows()).min(section.max_points);
    if n < 2 {
        return Err(AppError::Other(format!(
            "the temperature sweep needs at least 2 validation points, the data have {n} \
             (raise [data] validation_fraction or n_validation, or set [temperature] sweep = false)"
        )));
    }
    let rows = ndarray::s![..n, ..];
    let options = GenerationOptions {
        n_times: settings.n_times,
        n_traj: settings.n_traj,
        seed,
        ..GenerationOptions::default()
    };
    let sweep = choose_temperature(
        model,
        &v0.slice(rows).to_owned(),
        &v1.slice(rows).to_owned(),
        &section.candidates,
        &options,
        section.score,
        device,
    )?;
    if !quiet {
        eprintln!(
            "temperature sweep on {n} validation points ({}): {}; chosen τ = {}",
            sweep.score,
            sweep
                .scores
                .iter()
                .map(|(t, w)| format!("τ {t}: {w:.4}"))
                .collect::<Vec<_>>()
                .join(", "),
            sweep.best
        );
    }
    let checkpoint = Checkpoint::open(checkpoints)?;
    let mut config_json = checkpoint.config.clone();
    config_json["extra"]["temperature"] = serde_json::json!(sweep.best);
    config_json["extra"]["temperature_sweep"] = serde_json::json!(sweep);
    let text = serde_json::to_string_pretty(&config_json).unwrap_or_default();
    calmflow_data::write_atomically(&checkpoint.dir().join("config.json"), |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })?;
    Ok(sweep)
}

fn train_any<B, M>(
    model: M,
    model_config: serde_json::Value,
    settings: M::Settings,
    job: &TrainJob,
    prepared: Prepared,
    devices: &[B::Device],
    label: &str,
) -> AppResult<(M, TrainOutcome)>
where
    B: AutodiffBackend,
    M: FlowObjective<B> + AutodiffModule<B>,
    M::InnerModule: FlowObjective<B::InnerBackend, Settings = M::Settings>,
{
    let Prepared {
        data,
        standardization,
        cells,
    } = prepared;
    let extra = RunExtra {
        data: job.config.data.clone(),
        base: job.base.clone(),
        temperature: None,
        standardization,
        cells: cells.as_ref().map(CellStudy::record).transpose()?,
    };
    let run = FitRun {
        train: job.config.train.clone(),
        out: job.out.clone(),
        extra: serde_json::to_value(&extra).unwrap_or_default(),
        resume: job.resume,
        quiet: job.quiet,
        label: label.to_string(),
    };
    fit(model, model_config, settings, data, devices, &run)
}

/// With a pretrained directory, finds its files and gives `config` the backbone shape of
/// its `config.json`.
pub(crate) fn pretrained_shape(
    dir: Option<&Path>,
    config: &mut CalmFlowConfig,
) -> AppResult<Option<NeoxDir>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let dir = NeoxDir::open(dir).map_err(TrainError::from)?;
    NeoxConfig::read(&dir.config)
        .map_err(TrainError::from)?
        .apply(config);
    Ok(Some(dir))
}

/// Loads the pretrained backbone of `dir` into `model` (shaped by [`pretrained_shape`]).
pub(crate) fn load_pretrained<B: burn::tensor::backend::Backend>(
    model: calmflow_model::CalmFlowModel<B>,
    dir: &NeoxDir,
    device: &B::Device,
    quiet: bool,
) -> AppResult<calmflow_model::CalmFlowModel<B>> {
    let (model, report) = model
        .load_neox(&dir.weights, device)
        .map_err(TrainError::from)?;
    if !quiet {
        eprintln!(
            "calmflow: backbone initialised from {} ({} tensors not used: {})",
            dir.weights.display(),
            report.ignored.len(),
            report.ignored.join(", ")
        );
    }
    Ok(model)
}

/// `", components placed by k-means"` and `", annealed from T₀ = …"` for a progress line,
/// as far as a mixture head has them (`CalmFlowSettings::mixture_init`,
/// `CalmFlowSettings::anneal_temperature`); empty for other heads.
pub(crate) fn mixture_note(head: HeadKind, flow: &CalmFlowSettings, dim: usize) -> String {
    if head != HeadKind::Mixture {
        return String::new();
    }
    let mut note = String::new();
    if flow.mixture_init == calmflow_train::MixtureInit::Kmeans {
        note.push_str(", components placed by k-means");
    }
    let start = flow.anneal_temperature_at(0.0, dim);
    if start > 1.0 {
        note.push_str(&format!(
            ", annealed from T₀ = {start} over the first {:.0} % of the steps",
            100.0 * flow.anneal_fraction
        ));
    }
    note
}

/// `", bridge paths σ = …"` for a progress line, empty for straight paths.
pub(crate) fn bridge_note(path_sigma: f64) -> String {
    if path_sigma > 0.0 {
        format!(", bridge paths σ = {path_sigma}")
    } else {
        String::new()
    }
}

/// Creates an output directory (and its parents).
pub(crate) fn create_out_dir(dir: &Path) -> AppResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        AppError::Other(format!(
            "{}: cannot create the output directory: {e}",
            dir.display()
        ))
    })
}

/// How [`fit`] trains: the training settings, where checkpoints and the log go, and what
/// the checkpoints record besides the model.
#[derive(Debug, Clone)]
pub(crate) struct FitRun {
    pub train: TrainConfig,
    pub out: PathBuf,
    pub extra: serde_json::Value,
    pub resume: bool,
    pub quiet: bool,
    pub label: String,
}

/// Trains `model` (on `devices[0]`) with checkpoints under `out/checkpoints`, a
/// JSON-lines log and a progress bar; data-parallel with a replica on each further device.
pub(crate) fn fit<B, M>(
    model: M,
    model_config: serde_json::Value,
    settings: M::Settings,
    data: FlowData,
    devices: &[B::Device],
    run: &FitRun,
) -> AppResult<(M, TrainOutcome)>
where
    B: AutodiffBackend,
    M: FlowObjective<B> + AutodiffModule<B>,
    M::InnerModule: FlowObjective<B::InnerBackend, Settings = M::Settings>,
{
    let parameters = model.num_params();
    create_out_dir(&run.out)?;
    let checkpoints = run.out.join("checkpoints");
    let (device, replicas) = devices
        .split_first()
        .ok_or_else(|| AppError::Other("no device to train on".into()))?;
    let mut trainer = Trainer::new(
        model,
        model_config,
        settings,
        run.train.clone(),
        data,
        device.clone(),
    )?
    .with_checkpoints(&checkpoints, run.extra.clone())
    .with_log_file(run.out.join("train_log.jsonl"));
    if !replicas.is_empty() {
        trainer = trainer.with_replicas(replicas.to_vec())?;
        if !run.quiet {
            let names: Vec<String> = devices.iter().map(|d| format!("{d:?}")).collect();
            eprintln!(
                "{}: data-parallel on {} devices ({}): each step's {} examples split into \
                 {} shares of {}, gradients averaged by all-reduce",
                run.label,
                devices.len(),
                names.join(", "),
                run.train.batch_size,
                devices.len(),
                run.train.batch_size / devices.len()
            );
        }
    }
    if run.resume {
        let checkpoint = Checkpoint::open(&checkpoints)?;
        trainer = trainer.resume_from(&checkpoint)?;
        if !run.quiet {
            eprintln!(
                "{}: resuming from {}",
                run.label,
                checkpoint.dir().display()
            );
        }
    }
    let mut bar = ProgressBar::new(&run.label, run.quiet);
    let summary = trainer.run(&mut bar)?;
    Ok((
        trainer.into_model(),
        TrainOutcome {
            summary,
            parameters,
            temperature: None,
        },
    ))
}

impl TrainJob {
    fn prepare(&self) -> AppResult<Prepared> {
        create_out_dir(&self.out)?;
        let text = self.config.to_toml();
        calmflow_data::write_atomically(&self.out.join("config.toml"), |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })?;
        let section = &self.config.data;
        if let Some(h5ad) = &section.h5ad {
            let columns = section.condition_columns();
            let spec = CellSpec {
                h5ad: crate::config::resolve(&self.base, h5ad),
                template: section
                    .prompt
                    .clone()
                    .unwrap_or_else(|| default_template(&columns)),
                columns,
                held_out: section.hold_out.iter().map(|h| h.parts()).collect(),
                layer: section.layer.clone(),
                pca: section.pca.unwrap_or(crate::config::DEFAULT_PCA),
                tokenizer: section
                    .tokenizer
                    .as_deref()
                    .map(|t| crate::config::resolve(&self.base, t)),
                init_from: self.init_from.clone(),
            };
            let study = CellStudy::load(spec)?;
            if !self.quiet {
                eprintln!("calmflow: {}", study.summary());
            }
            return Ok(Prepared {
                data: study.flow_data(section.validation_fraction, self.config.train.seed)?,
                standardization: Some(study.standardization()),
                cells: Some(study),
            });
        }
        let (data, map) = self.config.data.load(&self.base, self.config.train.seed)?;
        if let (Some(map), false) = (&map, self.quiet) {
            eprintln!(
                "calmflow: training in standardised coordinates (per-coordinate mean and \
                 standard deviation of the training targets; the source {}); samples are \
                 written in the data's coordinates",
                if map.source {
                    "too, as it is a data file"
                } else {
                    "is a built-in distribution and stays as it is"
                }
            );
        }
        Ok(Prepared {
            data,
            standardization: map,
            cells: None,
        })
    }
}

impl BackendTask for TrainJob {
    type Output = AppResult<TrainOutcome>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        ParallelBackendTask::run::<B>(self, vec![device])
    }
}

impl ParallelBackendTask for TrainJob {
    type Output = AppResult<TrainOutcome>;

    /// Trains on `devices[0]`, data-parallel with a replica on each further device.
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let device = devices
            .first()
            .cloned()
            .ok_or_else(|| AppError::Other("no device to train on".into()))?;
        let data = self.prepare()?;
        B::seed(&device, self.config.train.seed);
        let dim = data.data.dim();
        let cond_dim = data.cells.as_ref().map(|c| c.table.feature_dim());
        match self.kind {
            ModelKind::CalmFlow => {
                let mut config = self.config.calmflow_model(dim)?;
                if let Some(cells) = &data.cells {
                    config = config
                        .with_vocab_size(cells.tokenizer.vocab_size())
                        .with_freeze_embeddings(!self.config.data.train_embeddings);
                }
                let pretrained = pretrained_shape(self.init_from.as_deref(), &mut config)?;
                let mut model = config.init::<B>(&device).map_err(TrainError::from)?;
                if let Some(dir) = pretrained {
                    model = load_pretrained(model, &dir, &device, self.quiet)?;
                }
                let json = serde_json::to_value(&config).unwrap_or_default();
                let settings = self.config.flow;
                let validation = data.data.validation.clone();
                let conditional = data.cells.is_some();
                let (model, mut outcome) =
                    train_any(model, json, settings, &self, data, &devices, "calmflow")?;
                let section = &self.config.temperature;
                if section.sweep && conditional && !self.quiet {
                    eprintln!(
                        "calmflow: no temperature sweep for a conditional run (it would score \
                         every condition against the others' cells); `calmflow sample` uses τ \
                         = {CONDITIONAL_TEMPERATURE} unless --temperature is given"
                    );
                }
                if section.sweep && !conditional {
                    outcome.temperature = Some(sweep_temperature(
                        &model.valid(),
                        &validation,
                        &settings,
                        section,
                        self.config.train.seed,
                        &self.out.join("checkpoints"),
                        &device,
                        self.quiet,
                    )?);
                }
                Ok(outcome)
            }
            ModelKind::Cfm => {
                if self.init_from.is_some() {
                    return Err(AppError::Other(
                        "--init-from loads a transformer backbone; the CFM baseline is an MLP"
                            .into(),
                    ));
                }
                let mut config = self.config.cfm.network(dim);
                if let Some(cond_dim) = cond_dim {
                    config = config.with_cond_dim(cond_dim);
                }
                let model = config.init::<B>(&device)?;
                let json = serde_json::to_value(&config).unwrap_or_default();
                let (settings, coupling) = self.config.cfm.variant.setup(self.config.cfm.sigma);
                let mut job = self.clone();
                job.config.train.coupling = coupling;
                Ok(train_any(model, json, settings, &job, data, &devices, "cfm")?.1)
            }
        }
    }
}

/// `calmflow sample` / `calmflow cfm sample`.
#[derive(Debug, Clone)]
pub struct SampleJob {
    /// Checkpoint directory (the run's `checkpoints/`, or one step directory).
    pub checkpoint: PathBuf,
    /// Points to generate (ignored with `source`).
    pub n: usize,
    /// Temperature (CaLMFlow); default: the one the run chose, else 0.2.
    pub temperature: Option<f64>,
    /// Push these `t = 0` points through the model instead of drawing them.
    pub source: Option<PathBuf>,
    /// Draws per source point (≥ 1): each source point goes through the model `repeat`
    /// times, and output row `i·repeat + r` is draw `r` from source point `i`.
    pub repeat: usize,
    /// Sequences (CaLMFlow) per forward pass.
    pub batch_size: usize,
    /// Seed of the source draws and the latent noise.
    pub seed: u64,
    /// ODE solver (CFM).
    pub solver: OdeSolver,
    /// Also return the trajectories.
    pub trajectories: bool,
    /// CaLMFlow or CFM.
    pub kind: ModelKind,
    /// `column=label` pairs: the condition of a conditional (`[data] h5ad`) model, one
    /// label per condition column.
    pub condition: Vec<(String, String)>,
    /// A free-text prompt instead of `condition` (CaLMFlow).
    pub prompt: Option<String>,
}

/// The temperature `calmflow sample` uses for a conditional model unless told otherwise
/// (the held-out study's, `docs/conditioning.md`).
pub const CONDITIONAL_TEMPERATURE: f64 = 1.0;

/// Generated points.
#[derive(Debug, Clone)]
pub struct SampleOutcome {
    /// The `t = 1` samples (`n · repeat` rows, the draws of one source point together).
    pub samples: Array2<f32>,
    /// `(n · repeat, steps, D)` trajectories, when asked for.
    pub trajectories: Option<Array3<f32>>,
    /// The temperature used (CaLMFlow).
    pub temperature: Option<f64>,
    /// Function evaluations (CFM).
    pub nfe: Option<usize>,
    /// A conditional model's cells: what it was conditioned on, the record of its
    /// training data, and the samples mapped to gene space (`samples` are PCA scores).
    pub cells: Option<SampledCells>,
}

/// Cells generated by a conditional model.
#[derive(Debug, Clone)]
pub struct SampledCells {
    /// The condition (labels and prompt).
    pub condition: ResolvedCondition,
    /// The checkpoint's record of its cells.
    pub record: CellsRecord,
    /// The samples in gene space `(n, genes)`.
    pub genes: Array2<f32>,
}

/// The source points, `repeat` copies of the whole set one after another (row `r·n + i` is
/// point `i`): a sequence of `P` trajectories then holds distinct points, as it does
/// without `--repeat` and in training, not `P` copies of one. [`draws_together`] puts the
/// outputs in the order of [`SampleJob::repeat`].
fn source_points(job: &SampleJob, extra: &Result<RunExtra, TrainError>) -> AppResult<Array2<f32>> {
    if job.repeat == 0 {
        return Err(AppError::Other(
            "--repeat must be ≥ 1 (draws per source point)".into(),
        ));
    }
    let x0 = if let Some(path) = &job.source {
        crate::io::read_points(path)?
    } else {
        if job.n == 0 {
            return Err(AppError::Other("--n must be ≥ 1".into()));
        }
        let extra = extra.as_ref().map_err(|e| AppError::Other(e.to_string()))?;
        let side = extra.data.side("source", &extra.base)?;
        side.draw(job.n, &mut seeded_rng(job.seed))
    };
    Ok(tile_rows(x0, job.repeat))
}

/// Generated samples `(n, D)` and trajectories `(n, steps, D)` in the model's coordinates
/// → the data's, through the inverse of the run's standardisation (if it had one).
fn to_data_coordinates(
    map: Option<&Standardization>,
    samples: Array2<f32>,
    trajectories: Option<Array3<f32>>,
) -> AppResult<(Array2<f32>, Option<Array3<f32>>)> {
    let Some(map) = map else {
        return Ok((samples, trajectories));
    };
    let samples = map.to_data(&samples)?;
    let trajectories = match trajectories {
        Some(t) => {
            let (n, steps, d) = t.dim();
            let flat = t
                .into_shape_with_order((n * steps, d))
                .map_err(|e| AppError::Other(format!("trajectories: {e}")))?;
            let back = map.to_data(&flat)?;
            Some(
                back.into_shape_with_order((n, steps, d))
                    .map_err(|e| AppError::Other(format!("trajectories: {e}")))?,
            )
        }
        None => None,
    };
    Ok((samples, trajectories))
}

/// `repeat` copies of the rows of `x`, one whole copy after another.
fn tile_rows(x: Array2<f32>, repeat: usize) -> Array2<f32> {
    if repeat == 1 {
        return x;
    }
    let n = x.nrows();
    let rows: Vec<usize> = (0..n * repeat).map(|k| k % n).collect();
    x.select(ndarray::Axis(0), &rows)
}

/// Reorders outputs (samples or trajectories, rows along axis 0) generated from
/// [`tile_rows`] (row `r·n + i`) so that the draws from one source point come together:
/// row `i·repeat + r` is draw `r` from point `i`.
fn draws_together<D: ndarray::RemoveAxis>(
    x: ndarray::Array<f32, D>,
    repeat: usize,
) -> ndarray::Array<f32, D> {
    if repeat <= 1 {
        return x;
    }
    let n = x.len_of(ndarray::Axis(0)) / repeat;
    let rows: Vec<usize> = (0..n * repeat)
        .map(|k| (k % repeat) * n + k / repeat)
        .collect();
    x.select(ndarray::Axis(0), &rows)
}

impl BackendTask for SampleJob {
    type Output = AppResult<SampleOutcome>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let checkpoint = Checkpoint::open(&self.checkpoint)?;
        // Checkpoints of other jobs (heldout) record another `extra`: only a run trained
        // in standardised coordinates needs it to parse, to map its samples back.
        let extra = checkpoint.config_field::<RunExtra>("extra");
        let map = match &extra {
            Ok(e) => e.standardization.clone(),
            Err(e) if checkpoint.config["extra"].get("standardization").is_some() => {
                return Err(AppError::Other(e.to_string()));
            }
            Err(_) => None,
        };
        let mut x0 = source_points(&self, &extra)?;
        if let Some(map) = &map {
            x0 = map.source_to_model(x0)?;
        }
        let record = extra.as_ref().ok().and_then(|e| e.cells.clone());
        let condition = self.resolve_condition(record.as_ref())?;
        match self.kind {
            ModelKind::CalmFlow => {
                checkpoint.expect_kind("calmflow")?;
                let config: CalmFlowConfig = checkpoint.config_field("model")?;
                let settings: CalmFlowSettings = checkpoint.config_field("settings")?;
                let model = config.init::<I<B>>(&device).map_err(TrainError::from)?;
                let model = calmflow_model::load_module(model, &checkpoint.model_path(), &device)
                    .map_err(TrainError::from)?;
                let temperature = self
                    .temperature
                    .or(extra.as_ref().ok().and_then(|e| e.temperature))
                    .unwrap_or(if record.is_some() {
                        CONDITIONAL_TEMPERATURE
                    } else {
                        0.2
                    });
                let options = GenerationOptions {
                    n_times: settings.n_times,
                    n_traj: settings.n_traj,
                    temperature,
                    batch_size: self.batch_size,
                    use_cache: true,
                    seed: self.seed,
                };
                let prompt = match (&record, &condition) {
                    (Some(record), Some(condition)) => {
                        let (ids, padding) = record.prompt_tensors::<I<B>>(condition, &device);
                        Some(model.embed_prompt(ids, padding).map_err(TrainError::from)?)
                    }
                    _ => None,
                };
                let g = generate(
                    &model,
                    &x0,
                    &options,
                    prompt.as_ref(),
                    self.trajectories,
                    &device,
                )?;
                let (samples, trajectories) =
                    to_data_coordinates(map.as_ref(), g.samples, g.trajectories)?;
                let samples = draws_together(samples, self.repeat);
                Ok(SampleOutcome {
                    cells: sampled_cells(record, condition, &samples)?,
                    samples,
                    trajectories: trajectories.map(|t| draws_together(t, self.repeat)),
                    temperature: Some(temperature),
                    nfe: None,
                })
            }
            ModelKind::Cfm => {
                checkpoint.expect_kind("cfm")?;
                let config: VelocityMlpConfig = checkpoint.config_field("model")?;
                let model = config.init::<I<B>>(&device)?;
                let model = model.load_weights(&checkpoint.model_path(), &device)?;
                let code = match (&record, &condition) {
                    (Some(record), Some(condition)) => {
                        if condition.labels.is_empty() {
                            return Err(AppError::Other(
                                "--prompt is for CaLMFlow; the CFM baseline reads one-hot \
                                 labels: give --condition column=label instead"
                                    .into(),
                            ));
                        }
                        Some(record.table.features_of(&condition.labels, 1)?)
                    }
                    _ => None,
                };
                let s = cfm_sample(
                    &model,
                    &x0,
                    code.as_ref(),
                    &self.solver,
                    self.trajectories,
                    &device,
                )?;
                let (samples, trajectories) =
                    to_data_coordinates(map.as_ref(), s.samples, s.trajectories.map(|(_, t)| t))?;
                let samples = draws_together(samples, self.repeat);
                Ok(SampleOutcome {
                    cells: sampled_cells(record, condition, &samples)?,
                    samples,
                    trajectories: trajectories.map(|t| draws_together(t, self.repeat)),
                    temperature: None,
                    nfe: Some(s.stats.nfe),
                })
            }
        }
    }
}

impl SampleJob {
    /// The condition asked for, resolved against the checkpoint's cells: `None` for an
    /// unconditional model (where asking for one is an error), and an error when a
    /// conditional model is given none.
    fn resolve_condition(
        &self,
        record: Option<&CellsRecord>,
    ) -> AppResult<Option<ResolvedCondition>> {
        let asked = !self.condition.is_empty() || self.prompt.is_some();
        let Some(record) = record else {
            return if asked {
                Err(AppError::Other(
                    "--condition and --prompt need a conditional model (trained with [data] \
                     h5ad); this checkpoint is unconditional"
                        .into(),
                ))
            } else {
                Ok(None)
            };
        };
        match (&self.prompt, self.condition.is_empty()) {
            (Some(_), false) => Err(AppError::Other(
                "give --condition or --prompt, not both".into(),
            )),
            (Some(text), true) => Ok(Some(record.free_prompt(text)?)),
            (None, _) => {
                let labels = record.labels(&self.condition)?;
                Ok(Some(record.prompt_for(&labels)?))
            }
        }
    }
}

/// The cells of a conditional model's samples (PCA scores) in gene space.
fn sampled_cells(
    record: Option<CellsRecord>,
    condition: Option<ResolvedCondition>,
    samples: &Array2<f32>,
) -> AppResult<Option<SampledCells>> {
    let (Some(record), Some(condition)) = (record, condition) else {
        return Ok(None);
    };
    let genes = record.pca.pca()?.inverse_transform(samples.view())?;
    Ok(Some(SampledCells {
        condition,
        record,
        genes,
    }))
}

/// `calmflow demo`: CaLMFlow and I-CFM on 8-Gaussians → moons, side by side.
#[derive(Debug, Clone)]
pub struct DemoJob {
    /// Output directory.
    pub out: PathBuf,
    /// CaLMFlow training steps.
    pub steps: usize,
    /// I-CFM training steps.
    pub cfm_steps: usize,
    /// CaLMFlow sequences per step.
    pub batch_size: usize,
    /// Generated and fresh target points compared.
    pub n_eval: usize,
    /// Validation points of the temperature sweep.
    pub n_validation: usize,
    /// CaLMFlow width `H`.
    pub hidden: usize,
    /// CaLMFlow blocks.
    pub layers: usize,
    /// CaLMFlow's KL weight `β`.
    pub beta: f64,
    /// CaLMFlow's dropout.
    pub dropout: f64,
    /// CaLMFlow's minibatch coupling.
    pub coupling: Coupling,
    /// CaLMFlow's distribution head.
    pub head: HeadKind,
    /// What the head predicts.
    pub predict: Predict,
    /// Brownian-bridge noise `σ` of CaLMFlow's training paths (0: straight paths).
    pub path_sigma: f64,
    /// Temperatures tried on the validation set.
    pub temperatures: Vec<f64>,
    /// Seed.
    pub seed: u64,
    /// No progress output.
    pub quiet: bool,
}

impl Default for DemoJob {
    fn default() -> Self {
        Self {
            out: PathBuf::from("runs/demo"),
            steps: 2000,
            cfm_steps: 5000,
            batch_size: 128,
            n_eval: 2000,
            n_validation: 1000,
            hidden: 64,
            layers: 2,
            // Measured on this task (docs/results.md): with exact-OT pairs the paths are
            // nearly deterministic and a small KL weight lets the latents carry them;
            // METHOD's β = 0.3, dropout 0.1 and independent pairs reach W2 ≈ 0.6–1.4.
            beta: 0.01,
            dropout: 0.0,
            coupling: Coupling::ExactOt,
            // The program's default head (docs/heads.md): the mixture over endpoints on
            // bridge paths, on its own grid of time points.
            head: calmflow_model::RECOMMENDED_HEAD,
            predict: calmflow_model::RECOMMENDED_PREDICT,
            path_sigma: calmflow_model::RECOMMENDED_BRIDGE_SIGMA,
            temperatures: TEMPERATURE_GRID.to_vec(),
            seed: 0,
            quiet: false,
        }
    }
}

/// The demo's results.
#[derive(Debug, Clone, Serialize)]
pub struct DemoOutcome {
    /// CaLMFlow's metrics on the evaluation set.
    pub calmflow: MetricsReport,
    /// I-CFM's metrics on the evaluation set.
    pub cfm: MetricsReport,
    /// Two independent target samples against each other: the noise floor.
    pub floor: MetricsReport,
    /// The temperature sweep on validation data: `(τ, W2)`.
    pub temperature_sweep: Vec<(f64, f64)>,
    /// The chosen temperature.
    pub temperature: f64,
    /// CaLMFlow training.
    pub calmflow_training: TrainOutcome,
    /// I-CFM training.
    pub cfm_training: TrainOutcome,
    /// I-CFM's function evaluations (dopri5).
    pub cfm_nfe: usize,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl DemoJob {
    fn run_config(&self, kind: ModelKind) -> RunConfig {
        let mut c = RunConfig::default();
        c.data.n_validation = self.n_validation;
        c.model.hidden = Some(self.hidden);
        c.model.layers = Some(self.layers);
        c.model.dropout = Some(self.dropout);
        c.flow.beta = self.beta;
        c.model.head = Some(self.head);
        c.model.predict = Some(self.predict);
        if self.path_sigma > 0.0 {
            c.flow.path = ConditionalPath {
                noise: NoiseSchedule::Bridge,
                sigma: self.path_sigma,
                ..ConditionalPath::straight()
            };
        }
        // The demo sets its paths and coupling; its grid, annealing and mixture start follow
        // the head.
        c.fill_dependent_defaults(crate::config::SetExplicitly {
            path: true,
            n_times: false,
            coupling: true,
            anneal: false,
            mixture_init: false,
        });
        c.train = TrainConfig {
            steps: if kind == ModelKind::CalmFlow {
                self.steps
            } else {
                self.cfm_steps
            },
            batch_size: if kind == ModelKind::CalmFlow {
                self.batch_size
            } else {
                256
            },
            seed: self.seed,
            log_every: 100,
            validate_every: 500,
            checkpoint_every: 0,
            coupling: if kind == ModelKind::CalmFlow {
                self.coupling
            } else {
                Coupling::Independent
            },
            ..TrainConfig::default()
        };
        c
    }
}

fn write_points(path: &Path, x: &Array2<f32>, files: &mut Vec<PathBuf>) -> AppResult<()> {
    crate::io::write_points(path, x.view())?;
    files.push(path.to_path_buf());
    Ok(())
}

impl BackendTask for DemoJob {
    type Output = AppResult<DemoOutcome>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let say = |m: String| {
            if !self.quiet {
                eprintln!("{m}");
            }
        };
        let calm_job = TrainJob {
            config: self.run_config(ModelKind::CalmFlow),
            base: PathBuf::from("."),
            out: self.out.join("calmflow"),
            resume: false,
            quiet: self.quiet,
            kind: ModelKind::CalmFlow,
            init_from: None,
        };
        // CaLMFlow.
        let data = calm_job.prepare()?;
        let (v0, v1) = data.data.validation.clone();
        B::seed(&device, self.seed);
        let config = calm_job.config.calmflow_model(2)?;
        let model = config.init::<B>(&device).map_err(TrainError::from)?;
        say(format!(
            "demo: CaLMFlow ({} parameters, H = {}, {} layers, {} head over the {}{}, N = {} \
             time points{}) on 8gaussians → moons, {} steps",
            model.num_params(),
            self.hidden,
            self.layers,
            self.head,
            self.predict,
            // A one-step grid has no interior points for the bridge's noise.
            bridge_note(if calm_job.config.flow.n_times > 2 {
                self.path_sigma
            } else {
                0.0
            }),
            calm_job.config.flow.n_times,
            mixture_note(self.head, &calm_job.config.flow, 2),
            self.steps
        ));
        let json = serde_json::to_value(&config).unwrap_or_default();
        let settings = calm_job.config.flow;
        let (model, calm_training) = train_any(
            model,
            json,
            settings,
            &calm_job,
            data,
            std::slice::from_ref(&device),
            "calmflow",
        )?;
        let model = model.valid();
        let options = GenerationOptions {
            n_times: settings.n_times,
            n_traj: settings.n_traj,
            seed: self.seed,
            ..GenerationOptions::default()
        };
        let section = TemperatureSection {
            candidates: self.temperatures.clone(),
            max_points: v0.nrows().max(2),
            ..TemperatureSection::default()
        };
        let sweep = sweep_temperature(
            &model,
            &(v0, v1),
            &settings,
            &section,
            self.seed,
            &calm_job.out.join("checkpoints"),
            &device,
            self.quiet,
        )?;

        // I-CFM.
        let cfm_job = TrainJob {
            config: self.run_config(ModelKind::Cfm),
            base: PathBuf::from("."),
            out: self.out.join("cfm"),
            resume: false,
            quiet: self.quiet,
            kind: ModelKind::Cfm,
            init_from: None,
        };
        let data = cfm_job.prepare()?;
        let net = cfm_job.config.cfm.network(2);
        B::seed(&device, self.seed);
        let cfm = net.init::<B>(&device)?;
        say(format!(
            "demo: I-CFM ({} parameters, width {}), {} steps",
            cfm.num_params(),
            net.width,
            self.cfm_steps
        ));
        let (cfm_settings, _) = cfm_job.config.cfm.variant.setup(cfm_job.config.cfm.sigma);
        let json = serde_json::to_value(&net).unwrap_or_default();
        let (cfm, cfm_training) = train_any::<B, _>(
            cfm,
            json,
            cfm_settings as CfmSettings,
            &cfm_job,
            data,
            std::slice::from_ref(&device),
            "i-cfm",
        )?;
        let cfm = cfm.valid();

        // Evaluation on fresh points (a seed no training or validation draw used).
        let mut rng = seeded_rng(self.seed ^ 0xE7A1_0000_0000_0001);
        use calmflow_data::Sampler as _;
        let x0 = calmflow_data::EightGaussians::default().sample(self.n_eval, &mut rng);
        let target = calmflow_data::Moons::default().sample(self.n_eval, &mut rng);
        let target2 = calmflow_data::Moons::default().sample(self.n_eval, &mut rng);
        let generated = generate(
            &model,
            &x0,
            &GenerationOptions {
                temperature: sweep.best,
                ..options
            },
            None,
            true,
            &device,
        )?;
        let cfm_out = cfm_sample(&cfm, &x0, None, &OdeSolver::default(), false, &device)?;
        let eval = EvalOptions::default();
        say("demo: evaluating (exact W2 on 2000 points takes a few seconds)".into());
        let calm_report = evaluate(generated.samples.view(), target.view(), &eval)?;
        let cfm_report = evaluate(cfm_out.samples.view(), target.view(), &eval)?;
        let floor = evaluate(target2.view(), target.view(), &eval)?;

        let mut files = Vec::new();
        write_points(
            &self.out.join("calmflow_samples.npy"),
            &generated.samples,
            &mut files,
        )?;
        write_points(
            &self.out.join("cfm_samples.npy"),
            &cfm_out.samples,
            &mut files,
        )?;
        write_points(&self.out.join("target.npy"), &target, &mut files)?;
        for ext in ["png", "svg"] {
            let path = self.out.join(format!("samples.{ext}"));
            plot::panels(
                &path,
                &format!(
                    "8-Gaussians → moons: CaLMFlow (τ = {}) and I-CFM",
                    sweep.best
                ),
                &target,
                &[
                    Series {
                        label: "CaLMFlow",
                        points: &generated.samples,
                        color: plot::CALMFLOW,
                    },
                    Series {
                        label: "I-CFM",
                        points: &cfm_out.samples,
                        color: plot::BASELINE,
                    },
                ],
            )?;
            files.push(path);
            if let Some(paths) = &generated.trajectories {
                let path = self.out.join(format!("trajectories.{ext}"));
                plot::trajectories(&path, "CaLMFlow trajectories", paths, Some(&target), 300)?;
                files.push(path);
            }
        }
        let outcome = DemoOutcome {
            calmflow: calm_report,
            cfm: cfm_report,
            floor,
            temperature_sweep: sweep.scores,
            temperature: sweep.best,
            calmflow_training: calm_training,
            cfm_training,
            cfm_nfe: cfm_out.stats.nfe,
            files: files.clone(),
        };
        let json = serde_json::to_string_pretty(&outcome).unwrap_or_default();
        let path = self.out.join("results.json");
        calmflow_data::write_atomically(&path, |w| std::io::Write::write_all(w, json.as_bytes()))?;
        let mut outcome = outcome;
        outcome.files.push(path);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_rows_keep_the_draws_of_one_source_point_together() {
        let x = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
        assert_eq!(tile_rows(x.clone(), 1), x);
        // Generation order: whole copies of the set; output order: the draws of a point
        // together.
        let tiled = tile_rows(x.clone(), 3);
        assert_eq!(tiled.column(0).to_vec(), [1.0, 3.0, 1.0, 3.0, 1.0, 3.0]);
        // Tag each generated row with its index to follow the permutation.
        let generated = ndarray::Array2::from_shape_fn((6, 2), |(i, j)| {
            tiled[[i, 0]] * 100.0 + i as f32 + j as f32 * 0.5
        });
        let out = draws_together(generated, 3);
        assert_eq!(
            out.column(0).to_vec(),
            [100.0, 102.0, 104.0, 301.0, 303.0, 305.0]
        );
        let traj = ndarray::Array3::from_shape_fn((6, 2, 1), |(i, t, _)| (10 * i + t) as f32);
        let traj = draws_together(traj, 3);
        assert_eq!(traj[[1, 1, 0]], 21.0);
        assert_eq!(traj[[3, 0, 0]], 10.0);
        assert_eq!(draws_together(x.clone(), 1), x);
    }
}
