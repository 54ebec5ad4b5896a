//! `calmflow train` / `calmflow cfm train`: a [`TrainJob`] prepares its data (a point
//! data set or the cells of an AnnData file), trains CaLMFlow or the CFM baseline through
//! [`fit`] and, for CaLMFlow, sweeps the sampling temperature on validation data.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use calmflow_model::CalmFlowModel;
use calmflow_model::neox::{NeoxConfig, NeoxDir};
use calmflow_model::{CalmFlowConfig, HeadKind};
use calmflow_train::{
    CalmFlowSettings, CfmSettings, Checkpoint, FlowData, FlowObjective, GenerationOptions,
    Standardization, TemperatureSweep, TrainConfig, TrainError, TrainObserver, TrainSummary,
    Trainer, VelocityMlp, VelocityMlpConfig, choose_temperature,
};
use ndarray::Array2;
use serde::Serialize;

use super::sample::CONDITIONAL_TEMPERATURE;
use super::{ModelKind, RunExtra};
use crate::cells::{CellSpec, CellStudy, default_template};
use crate::config::{RunConfig, TemperatureSection};
use crate::error::{AppError, AppResult};
use crate::progress::ProgressBar;
use calmflow_train::{BackendTask, ParallelBackendTask};

/// A training job's data, ready to train on.
pub(crate) struct Prepared {
    pub(super) data: FlowData,
    standardization: Option<Standardization>,
    /// The study of a conditional run.
    cells: Option<CellStudy>,
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
    let mut checkpoint = Checkpoint::open(checkpoints)?;
    let mut config_json = checkpoint.config.clone();
    config_json["extra"]["temperature"] = serde_json::json!(sweep.best);
    config_json["extra"]["temperature_sweep"] = serde_json::json!(sweep);
    checkpoint.rewrite_config(config_json)?;
    Ok(sweep)
}

pub(super) fn train_any<B, M>(
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
        out: Some(job.out.clone()),
        extra: serde_json::to_value(&extra).unwrap_or_default(),
        resume: job.resume,
        quiet: job.quiet,
        label: label.to_string(),
    };
    fit(model, model_config, settings, data, devices, &run, None)
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

/// How [`fit`] trains: the training settings, where checkpoints and the log go (nowhere
/// for an in-memory run), and what the checkpoints record besides the model.
#[derive(Debug, Clone)]
pub(crate) struct FitRun {
    pub train: TrainConfig,
    pub out: Option<PathBuf>,
    pub extra: serde_json::Value,
    pub resume: bool,
    pub quiet: bool,
    pub label: String,
}

/// Trains `model` (on `devices[0]`), data-parallel with a replica on each further device;
/// with `run.out`, with checkpoints under `out/checkpoints` and a JSON-lines log. Progress
/// goes to `observer`, or to a progress bar when there is none.
pub(crate) fn fit<B, M>(
    model: M,
    model_config: serde_json::Value,
    settings: M::Settings,
    data: FlowData,
    devices: &[B::Device],
    run: &FitRun,
    observer: Option<&mut dyn TrainObserver>,
) -> AppResult<(M, TrainOutcome)>
where
    B: AutodiffBackend,
    M: FlowObjective<B> + AutodiffModule<B>,
    M::InnerModule: FlowObjective<B::InnerBackend, Settings = M::Settings>,
{
    let parameters = model.num_params();
    if let Some(out) = &run.out {
        create_out_dir(out)?;
    }
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
    )?;
    if let Some(out) = &run.out {
        trainer = trainer
            .with_checkpoints(out.join("checkpoints"), run.extra.clone())
            .with_log_file(out.join("train_log.jsonl"));
    }
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
        let out = run.out.as_ref().ok_or_else(|| {
            AppError::Other("a run that writes no checkpoints cannot resume".into())
        })?;
        let checkpoint = Checkpoint::open(&out.join("checkpoints"))?;
        trainer = trainer.resume_from(&checkpoint)?;
        if !run.quiet {
            eprintln!(
                "{}: resuming from {}",
                run.label,
                checkpoint.dir().display()
            );
        }
    }
    let summary = match observer {
        Some(observer) => trainer.run(observer)?,
        None => trainer.run(&mut ProgressBar::new(&run.label, run.quiet))?,
    };
    Ok((
        trainer.into_model(),
        TrainOutcome {
            summary,
            parameters,
            temperature: None,
        },
    ))
}

/// The CaLMFlow model a run of `config` trains on data of dimension `dim`, initialised on
/// `device` from the backend seeded with `[train] seed`, with its configuration: the
/// `[model]` section ([`RunConfig::calmflow_model`]), a prompt vocabulary of
/// `prompt_vocab` tokens (conditional data; embeddings frozen unless `[data]
/// train_embeddings`), and the backbone of the pretrained directory `init_from`.
pub fn init_calmflow<B: AutodiffBackend>(
    config: &RunConfig,
    dim: usize,
    prompt_vocab: Option<usize>,
    init_from: Option<&Path>,
    device: &B::Device,
    quiet: bool,
) -> AppResult<(CalmFlowModel<B>, CalmFlowConfig)> {
    B::seed(device, config.train.seed);
    let mut model_config = config.calmflow_model(dim)?;
    if let Some(vocab) = prompt_vocab {
        model_config = model_config
            .with_vocab_size(vocab)
            .with_freeze_embeddings(!config.data.train_embeddings);
    }
    let pretrained = pretrained_shape(init_from, &mut model_config)?;
    let mut model = model_config.init::<B>(device).map_err(TrainError::from)?;
    if let Some(dir) = pretrained {
        model = load_pretrained(model, &dir, device, quiet)?;
    }
    Ok((model, model_config))
}

/// Trains CaLMFlow on `data` as `calmflow train` does ([`init_calmflow`], `[flow]`,
/// `[train]`, one trainer), but in memory: no output directory, no temperature sweep,
/// progress to `observer`. The quality suite's rows are these runs, so a row and
/// `calmflow train` with the same configuration and data take one code path.
pub fn fit_calmflow<B: AutodiffBackend>(
    config: &RunConfig,
    data: FlowData,
    prompt_vocab: Option<usize>,
    device: B::Device,
    observer: &mut dyn TrainObserver,
) -> AppResult<(CalmFlowModel<B>, TrainOutcome)> {
    let (model, model_config) =
        init_calmflow::<B>(config, data.dim(), prompt_vocab, None, &device, true)?;
    let json = serde_json::to_value(&model_config).unwrap_or_default();
    fit(
        model,
        json,
        config.flow,
        data,
        &[device],
        &FitRun::in_memory(config.train.clone()),
        Some(observer),
    )
}

/// The CFM baseline of `[cfm]` on data of dimension `dim`, initialised on `device` from
/// the backend seeded with `[train] seed` (`cond_dim`: the width of conditional data's
/// condition codes), with its configuration.
pub fn init_cfm<B: AutodiffBackend>(
    config: &RunConfig,
    dim: usize,
    cond_dim: Option<usize>,
    device: &B::Device,
) -> AppResult<(VelocityMlp<B>, VelocityMlpConfig)> {
    B::seed(device, config.train.seed);
    let mut net = config.cfm.network(dim);
    if let Some(cond_dim) = cond_dim {
        net = net.with_cond_dim(cond_dim);
    }
    let model = net.init::<B>(device)?;
    Ok((model, net))
}

/// The training settings of a CFM run: `[train]` with the coupling of `[cfm] variant`.
pub(crate) fn cfm_train_config(config: &RunConfig) -> (CfmSettings, TrainConfig) {
    let (settings, coupling) = config.cfm.variant.setup(config.cfm.sigma);
    let train = TrainConfig {
        coupling,
        ..config.train.clone()
    };
    (settings, train)
}

/// Trains the CFM baseline of `[cfm]` on `data` as `calmflow cfm train` does, in memory
/// (see [`fit_calmflow`]).
pub fn fit_cfm<B: AutodiffBackend>(
    config: &RunConfig,
    data: FlowData,
    device: B::Device,
    observer: &mut dyn TrainObserver,
) -> AppResult<(VelocityMlp<B>, TrainOutcome)> {
    let (model, net) = init_cfm::<B>(config, data.dim(), None, &device)?;
    let json = serde_json::to_value(&net).unwrap_or_default();
    let (settings, train) = cfm_train_config(config);
    fit(
        model,
        json,
        settings,
        data,
        &[device],
        &FitRun::in_memory(train),
        Some(observer),
    )
}

impl FitRun {
    /// A run that writes nothing and prints nothing.
    fn in_memory(train: TrainConfig) -> Self {
        FitRun {
            train,
            out: None,
            extra: serde_json::Value::Null,
            resume: false,
            quiet: true,
            label: String::new(),
        }
    }
}

impl TrainJob {
    pub(super) fn prepare(&self) -> AppResult<Prepared> {
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
        let dim = data.data.dim();
        match self.kind {
            ModelKind::CalmFlow => {
                let prompt_vocab = data.cells.as_ref().map(|c| c.tokenizer.vocab_size());
                let (model, config) = init_calmflow::<B>(
                    &self.config,
                    dim,
                    prompt_vocab,
                    self.init_from.as_deref(),
                    &device,
                    self.quiet,
                )?;
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
                let cond_dim = data.cells.as_ref().map(|c| c.table.feature_dim());
                let (model, net) = init_cfm::<B>(&self.config, dim, cond_dim, &device)?;
                let json = serde_json::to_value(&net).unwrap_or_default();
                let (settings, train) = cfm_train_config(&self.config);
                let mut job = self.clone();
                job.config.train = train;
                Ok(train_any(model, json, settings, &job, data, &devices, "cfm")?.1)
            }
        }
    }
}
