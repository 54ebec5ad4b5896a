//! Budgets, CaLMFlow's knobs, and how a run assembles, trains and scores CaLMFlow and the
//! CFM baselines.

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use calmflow::metrics::{MetricsReport, evaluate};
use calmflow::model::{CalmFlowConfig, HeadKind, Predict};
use calmflow::run::config::{CfmSection, ModelSection, RunConfig};
use calmflow::run::jobs::{fit_calmflow, fit_cfm};
use calmflow::train::{
    CalmFlowSettings, CfmVariant, ConditionTable, ConditionalPath, Coupling, FlowData,
    GenerationOptions, MixtureInit, NoiseSchedule, OdeSolver, PointSource, Silent, TrainConfig,
    cfm_sample, generate,
};
use ndarray::Array2;
use serde::Serialize;

use crate::tasks::{EVAL_POINTS, Task, eval_options};

type B = Autodiff<NdArray<f32>>;

/// The head the program defaults to, and its settings (chosen by the heads table).
const DEFAULT_HEAD: HeadKind = calmflow::model::RECOMMENDED_HEAD;
const DEFAULT_PREDICT: Predict = Predict::Endpoint;
const DEFAULT_SIGMA: f64 = 0.3;

/// `head, predict, σ, N` (and the mixture's annealing and start) in a table row.
pub fn describe(k: &CalmKnobs) -> String {
    let mut mixture = String::new();
    if k.head == HeadKind::Mixture && k.anneal != 1.0 {
        mixture.push_str(" / annealed");
    }
    if k.head == HeadKind::Mixture && k.mixture_init == MixtureInit::Kmeans {
        mixture.push_str(" / k-means");
    }
    if k.context_noise > 0.0 {
        mixture.push_str(&format!(" / context noise {}", k.context_noise));
    }
    if k.rollout_fraction > 0.0 {
        mixture.push_str(&format!(" / roll-out {}", k.rollout_fraction));
    }
    if k.sigma > 0.0 {
        format!(
            "{} / {} / σ {} / N {}{mixture}",
            k.head, k.predict, k.sigma, k.n_times
        )
    } else {
        format!("{} / {} / N {}{mixture}", k.head, k.predict, k.n_times)
    }
}

/// How much of everything a run does.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    pub steps: usize,
    pub batch: usize,
    pub hidden: usize,
    pub layers: usize,
    pub n_times: usize,
    pub cfm_width: usize,
    pub n_eval: usize,
    /// Evaluation points of the ablations (each is a comparison within CaLMFlow).
    pub n_eval_ablation: usize,
    pub seeds: Vec<u64>,
}

impl Budget {
    /// The suite's budget. The full suite differs from the quick one in steps, tasks
    /// (D = 50, 100, 1000), the ablation grids (P = 8, N = 32, 2-Gaussian pairs at D = 10)
    /// and 2000 ablation points; the models are the same size.
    pub fn suite(quick: bool) -> Self {
        Budget {
            steps: if quick { 300 } else { 800 },
            batch: 64,
            hidden: 32,
            layers: 2,
            n_times: 8,
            cfm_width: 64,
            n_eval: EVAL_POINTS,
            n_eval_ablation: if quick { 1000 } else { EVAL_POINTS },
            seeds: vec![0, 1, 2],
        }
    }
}

/// CaLMFlow's knobs that the ablations turn.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CalmKnobs {
    pub n_traj: usize,
    pub n_space: usize,
    pub n_times: usize,
    pub variational: bool,
    /// The distribution head and what it predicts.
    pub head: HeadKind,
    pub predict: Predict,
    /// Brownian-bridge path noise `σ` (0: straight paths).
    pub sigma: f64,
    /// KL weight `β` (variational and cvae heads).
    pub beta: f64,
    pub temperature: f64,
    /// Inner width of the head's MLPs (0: the model's automatic width).
    pub decoder_width: usize,
    /// Components of the mixture head.
    pub components: usize,
    /// Starting temperature of the mixture's annealing (0: `D`, 1: off;
    /// `CalmFlowSettings::anneal_temperature`).
    pub anneal: f64,
    /// Fraction of the steps over which the annealing reaches 1.
    pub anneal_fraction: f64,
    /// How the mixture's components start (`CalmFlowSettings::mixture_init`).
    pub mixture_init: MixtureInit,
    /// Peak learning rate of CaLMFlow's optimiser.
    pub learning_rate: f64,
    /// How CaLMFlow's training pairs are coupled.
    pub coupling: Coupling,
    /// Noise on the context's states (`CalmFlowConfig::context_noise`).
    pub context_noise: f64,
    /// Noise draws per slot in the flow head's loss (`CalmFlowConfig::flow_draws`).
    pub flow_draws: usize,
    /// Share of each batch on the model's own roll-out
    /// (`CalmFlowSettings::rollout_fraction`).
    pub rollout_fraction: f64,
    /// Context of the backbone: `None` (no prompt, full history), or a one-token anchor
    /// prompt with the full history (`Some(false)`) or the Markov window (`Some(true)`).
    /// Rotary positions are relative, so a token that sees only its own time point learns
    /// the time from its offset to the anchor: the control is an ODE step, not a
    /// time-blind map.
    pub anchored: Option<bool>,
}
impl CalmKnobs {
    /// The paper's CaLMFlow (the variational head over states) on `budget`'s grid: the
    /// knobs of the comparison tables and of most ablations.
    pub fn paper(budget: &Budget) -> Self {
        CalmKnobs {
            n_traj: 1,
            n_space: 1,
            n_times: budget.n_times,
            variational: true,
            head: HeadKind::Variational,
            predict: Predict::State,
            sigma: 0.0,
            beta: 0.01,
            temperature: 1.0,
            decoder_width: 0,
            components: 8,
            anneal: CalmFlowSettings::default().anneal_temperature,
            anneal_fraction: CalmFlowSettings::default().anneal_fraction,
            mixture_init: CalmFlowSettings::default().mixture_init,
            learning_rate: TrainConfig::default().learning_rate,
            coupling: Coupling::ExactOt,
            context_noise: 0.0,
            flow_draws: CalmFlowConfig::new(1).flow_draws,
            rollout_fraction: 0.0,
            anchored: None,
        }
    }

    /// The repaired model (the program's defaults; see `docs/quality.md`, "heads"), the
    /// rest as `self`.
    pub fn repaired(self) -> Self {
        CalmKnobs {
            head: DEFAULT_HEAD,
            predict: DEFAULT_PREDICT,
            sigma: DEFAULT_SIGMA,
            n_times: calmflow::model::RECOMMENDED_N_TIMES,
            anneal: calmflow::train::RECOMMENDED_ANNEAL_TEMPERATURE,
            mixture_init: calmflow::train::RECOMMENDED_MIXTURE_INIT,
            ..self
        }
    }
}

/// The one-condition table whose prompt is the anchor token 0.
fn anchor_table() -> ConditionTable {
    ConditionTable::new(
        vec!["anchor".into()],
        vec![vec!["all".into()]],
        vec![vec![0]],
        0,
    )
    .expect("valid table")
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub method: String,
    pub seed: u64,
    pub report: MetricsReport,
    pub train_seconds: f64,
    /// Training steps (equal for every method, except the equal-wall-clock CFM rows).
    pub steps: usize,
    pub parameters: usize,
    /// dopri5 function evaluations (CFM) or decoding steps times head evaluations per
    /// step (CaLMFlow).
    pub nfe: usize,
}

/// `steps` steps of the budget's batch, logged once, with no validation or checkpoints.
fn train_config(budget: &Budget, steps: usize, coupling: Coupling, seed: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: budget.batch,
        warmup_steps: steps / 20,
        coupling,
        seed,
        validate_every: 0,
        checkpoint_every: 0,
        log_every: steps,
        ..TrainConfig::default()
    }
}

/// Validation share of a data set's rows, and validation points drawn from a sampler.
const VALIDATION_FRACTION: f64 = 0.1;
const N_VALIDATION: usize = 256;

/// The program's defaults with the suite's validation split: what every row starts from.
fn suite_run_config() -> RunConfig {
    let mut config = RunConfig::default();
    config.data.validation_fraction = VALIDATION_FRACTION;
    config.data.n_validation = N_VALIDATION;
    config
}

fn flow_data(task: &Task, seed: u64) -> FlowData {
    FlowData::new(
        PointSource::Sampler((task.source)()),
        task.target_source(),
        VALIDATION_FRACTION,
        N_VALIDATION,
        seed,
    )
    .expect("valid data")
}

/// The run configuration of a CaLMFlow row: the TOML that `calmflow train --config`
/// reads to train the same model in the same way (`docs/config.md`). Its `[data]` section
/// is the program's default; the suite hands the task's data to the run layer itself.
pub fn calmflow_run_config(budget: &Budget, knobs: CalmKnobs, seed: u64) -> RunConfig {
    let mut config = suite_run_config();
    config.model = ModelSection {
        n_space: Some(knobs.n_space),
        hidden: Some(budget.hidden),
        layers: Some(budget.layers),
        heads: Some(4),
        dropout: Some(0.0),
        variational: Some(knobs.variational),
        head: Some(knobs.head),
        predict: Some(knobs.predict),
        decoder_width: Some(knobs.decoder_width),
        mixture_components: Some(knobs.components),
        bridge_sigma: Some(if knobs.predict.steps_to_endpoint() {
            knobs.sigma
        } else {
            0.0
        }),
        context_noise: Some(knobs.context_noise),
        flow_draws: Some(knobs.flow_draws),
        markov_slots: Some(if knobs.anchored == Some(true) {
            knobs.n_traj
        } else {
            0
        }),
        ..ModelSection::default()
    };
    config.flow = CalmFlowSettings {
        n_times: knobs.n_times,
        n_traj: knobs.n_traj,
        beta: knobs.beta,
        path: if knobs.sigma > 0.0 {
            ConditionalPath {
                noise: NoiseSchedule::Bridge,
                sigma: knobs.sigma,
                ..ConditionalPath::straight()
            }
        } else {
            ConditionalPath::straight()
        },
        anneal_temperature: knobs.anneal,
        anneal_fraction: knobs.anneal_fraction,
        mixture_init: knobs.mixture_init,
        rollout_fraction: knobs.rollout_fraction,
    };
    config.train = TrainConfig {
        learning_rate: knobs.learning_rate,
        ..train_config(budget, budget.steps, knobs.coupling, seed)
    };
    // The suite scores every temperature it reports itself.
    config.temperature.sweep = false;
    config
}

/// The run configuration of a CFM row (`calmflow cfm train --config`): `variant` with
/// torchcfm's σ = 0.01, the budget's width, `steps` training steps.
pub fn cfm_run_config(budget: &Budget, variant: CfmVariant, seed: u64, steps: usize) -> RunConfig {
    let mut config = suite_run_config();
    config.cfm = CfmSection {
        variant,
        sigma: 0.01,
        width: budget.cfm_width,
        ..CfmSection::default()
    };
    // The coupling the variant trains with (`fit_cfm` sets it from the variant too), so
    // that the configuration says what runs.
    let (_, coupling) = variant.setup(config.cfm.sigma);
    config.train = train_config(budget, steps, coupling, seed);
    config
}

/// The data of a CaLMFlow row: the task's source and target, or, for an anchored run,
/// conditional data with the one-token anchor prompt (whose vocabulary it returns).
fn calmflow_data(task: &Task, knobs: CalmKnobs, seed: u64) -> (FlowData, Option<usize>) {
    match knobs.anchored {
        None => (flow_data(task, seed), None),
        Some(_) => {
            // Conditional data needs a target point set: a large fixed sample.
            let target = task.target_points(20_000, seed ^ 0xA5C4);
            let n = target.nrows();
            let data = FlowData::conditional(
                PointSource::Sampler((task.source)()),
                target,
                vec![0; n],
                anchor_table(),
                VALIDATION_FRACTION,
                seed,
            )
            .expect("valid data");
            (data, Some(1))
        }
    }
}

/// Trains CaLMFlow on `task`; returns the model, training seconds and parameter count.
pub fn train_calmflow(
    task: &Task,
    budget: &Budget,
    knobs: CalmKnobs,
    seed: u64,
) -> (calmflow::model::CalmFlowModel<NdArray<f32>>, f64, usize) {
    let config = calmflow_run_config(budget, knobs, seed);
    let (data, prompt_vocab) = calmflow_data(task, knobs, seed);
    let started = Instant::now();
    let (model, outcome) =
        fit_calmflow::<B>(&config, data, prompt_vocab, Default::default(), &mut Silent)
            .unwrap_or_else(|e| panic!("quality: CaLMFlow on {}: {e}", task.name));
    let seconds = started.elapsed().as_secs_f64();
    (model.valid(), seconds, outcome.parameters)
}

/// CaLMFlow's roll-out settings for `knobs`: its grid, trajectories and temperature.
pub fn generation_options(knobs: CalmKnobs, seed: u64) -> GenerationOptions {
    GenerationOptions {
        n_times: knobs.n_times,
        n_traj: knobs.n_traj,
        temperature: knobs.temperature,
        seed,
        ..GenerationOptions::default()
    }
}

/// Samples `x0` through a trained CaLMFlow at `knobs`' temperature and scores them
/// against `target`.
pub fn score_calmflow(
    model: &calmflow::model::CalmFlowModel<NdArray<f32>>,
    knobs: CalmKnobs,
    seed: u64,
    x0: &Array2<f32>,
    target: &Array2<f32>,
) -> (MetricsReport, Array2<f32>) {
    let options = generation_options(knobs, seed);
    let device = Default::default();
    let prompt = knobs.anchored.map(|_| {
        anchor_table()
            .embed(model, &[0], &device)
            .expect("anchor prompt")
    });
    let samples = generate(model, x0, &options, prompt.as_ref(), false, &device)
        .expect("generation")
        .samples;
    let report = evaluate(
        samples.view(),
        target.view(),
        &eval_options(x0.ncols(), x0.nrows()),
    )
    .expect("metrics");
    (report, samples)
}

/// Trains CaLMFlow and scores `x0` pushed through it against `target`.
pub fn run_calmflow(
    task: &Task,
    budget: &Budget,
    knobs: CalmKnobs,
    seed: u64,
    x0: &Array2<f32>,
    target: &Array2<f32>,
) -> (RunResult, Array2<f32>) {
    let (model, train_seconds, parameters) = train_calmflow(task, budget, knobs, seed);
    let (report, samples) = score_calmflow(&model, knobs, seed, x0, target);
    let row = calmflow_row(budget, knobs, seed, report, train_seconds, parameters);
    (row, samples)
}

/// A CaLMFlow table row.
pub fn calmflow_row(
    budget: &Budget,
    knobs: CalmKnobs,
    seed: u64,
    report: MetricsReport,
    train_seconds: f64,
    parameters: usize,
) -> RunResult {
    RunResult {
        method: "CaLMFlow".into(),
        seed,
        report,
        train_seconds,
        steps: budget.steps,
        parameters,
        nfe: (knobs.n_times - 1)
            * CalmFlowConfig::new(1)
                .with_head(knobs.head)
                .head_evaluations(),
    }
}

/// Trains and scores a CFM baseline for `steps` steps (`None`: the budget's, the
/// equal-steps comparison; `Some`: an equal-wall-clock row, labelled so).
pub fn run_cfm(
    task: &Task,
    budget: &Budget,
    variant: CfmVariant,
    seed: u64,
    x0: &Array2<f32>,
    target: &Array2<f32>,
    steps_override: Option<usize>,
) -> (RunResult, Array2<f32>) {
    let device = Default::default();
    let steps = steps_override.unwrap_or(budget.steps);
    let config = cfm_run_config(budget, variant, seed, steps);
    let started = Instant::now();
    let trained = fit_cfm::<B>(&config, flow_data(task, seed), device, &mut Silent);
    let train_seconds = started.elapsed().as_secs_f64();
    let method = match variant {
        CfmVariant::ICfm => "I-CFM",
        CfmVariant::OtCfm => "OT-CFM",
        CfmVariant::SbCfm => "SB-CFM",
    };
    let method = match steps_override {
        None => method.to_string(),
        Some(_) => format!("{method} (equal time)"),
    };
    let (model, outcome) = match trained {
        Ok(trained) => trained,
        Err(e) => {
            // A run whose loss stopped being finite has no samples to score: its row says
            // so (`task_table` counts it) instead of ending the suite.
            eprintln!(
                "quality: {method} on {} seed {seed} failed: {e}; left out of its row",
                task.name
            );
            return (
                RunResult {
                    method,
                    seed,
                    report: failed_report(task.dim, target.nrows()),
                    train_seconds,
                    steps,
                    // The row still names the network's size.
                    parameters: config
                        .cfm
                        .network(task.dim)
                        .init::<NdArray<f32>>(&device)
                        .map_or(0, |m| m.num_params()),
                    nfe: 0,
                },
                Array2::zeros((0, task.dim)),
            );
        }
    };
    let model = model.valid();
    let out =
        cfm_sample(&model, x0, None, &OdeSolver::default(), false, &device).expect("sampling");
    let report = evaluate(
        out.samples.view(),
        target.view(),
        &eval_options(task.dim, target.nrows()),
    )
    .expect("metrics");
    (
        RunResult {
            method,
            seed,
            report,
            train_seconds,
            steps,
            parameters: outcome.parameters,
            nfe: out.stats.nfe,
        },
        out.samples,
    )
}

/// The report of a run that produced no samples (its training diverged): every metric
/// NaN or absent, so that the tables leave it out of their means.
fn failed_report(dim: usize, n_target: usize) -> MetricsReport {
    MetricsReport {
        n_samples: 0,
        n_target,
        dim,
        w2: None,
        w1: None,
        sinkhorn_divergence: None,
        sinkhorn_reg: f64::NAN,
        normalized_sinkhorn: None,
        mmd2_multiscale: f64::NAN,
        mmd2_median: f64::NAN,
        mmd_median_bandwidth: f64::NAN,
        mmd2_gamma: f64::NAN,
        gamma: f64::NAN,
        energy: f64::NAN,
        frechet: None,
        r2_means: None,
        dispersion: None,
        knn: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calmflow::backend::DeviceSpec;
    use calmflow::run::jobs::{ModelKind, TrainJob};
    use calmflow::train::{LogRecord, TrainObserver};

    use crate::tasks::eight_gaussians_to_moons;

    /// The loss of every logged step.
    #[derive(Default)]
    struct Losses(Vec<f64>);
    impl TrainObserver for Losses {
        fn on_log(&mut self, record: &LogRecord) {
            self.0.push(record.loss);
        }
    }

    /// `config` written as TOML, read back and trained by `calmflow train` (`kind`
    /// CaLMFlow) or `calmflow cfm train` (`Cfm`) on the CPU, as the program does; the
    /// losses of its log.
    fn program_losses(config: &RunConfig, kind: ModelKind) -> Vec<f64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, config.to_toml()).unwrap();
        let job = TrainJob {
            config: RunConfig::read(&path).unwrap(),
            base: dir.path().to_path_buf(),
            out: dir.path().join("out"),
            resume: false,
            quiet: true,
            kind,
            init_from: None,
        };
        DeviceSpec::Cpu.run(job).unwrap().unwrap();
        let log = std::fs::read_to_string(dir.path().join("out/train_log.jsonl")).unwrap();
        log.lines()
            .map(|line| serde_json::from_str::<LogRecord>(line).unwrap().loss)
            .collect()
    }

    /// The configuration of a tiny suite row on the moons task, logging every step, with
    /// `[data]` naming the task's source and target so that the program draws the same
    /// points.
    fn with_task_data(mut config: RunConfig, task: &Task) -> RunConfig {
        config.train.log_every = 1;
        config.data.source = (task.source)().name();
        config.data.target = match task.target_source() {
            PointSource::Sampler(s) => s.name(),
            PointSource::Points(_) => unreachable!("the moons task draws its target"),
        };
        config.data.dim = task.dim;
        config
    }

    fn tiny_budget() -> Budget {
        Budget {
            steps: 5,
            batch: 16,
            hidden: 16,
            layers: 1,
            n_times: 3,
            cfm_width: 16,
            n_eval: 0,
            n_eval_ablation: 0,
            seeds: vec![11],
        }
    }

    #[test]
    fn a_suite_row_and_calmflow_train_with_its_configuration_log_the_same_losses() {
        calmflow::backend::register_cpu_kernels();
        let task = eight_gaussians_to_moons();
        let budget = tiny_budget();
        let seed = 11;
        // The paper's head over a 3-point trajectory, and the program's default head.
        for knobs in [
            CalmKnobs::paper(&budget),
            CalmKnobs::paper(&budget).repaired(),
        ] {
            let config = with_task_data(calmflow_run_config(&budget, knobs, seed), &task);
            let mut suite = Losses::default();
            let (data, prompt_vocab) = calmflow_data(&task, knobs, seed);
            fit_calmflow::<B>(&config, data, prompt_vocab, Default::default(), &mut suite).unwrap();
            let program = program_losses(&config, ModelKind::CalmFlow);
            assert_eq!(suite.0.len(), budget.steps, "{}", describe(&knobs));
            assert!(suite.0.iter().all(|l| l.is_finite()));
            assert_eq!(suite.0, program, "{}", describe(&knobs));
        }
        let config = with_task_data(
            cfm_run_config(&budget, CfmVariant::OtCfm, seed, budget.steps),
            &task,
        );
        let mut suite = Losses::default();
        fit_cfm::<B>(
            &config,
            flow_data(&task, seed),
            Default::default(),
            &mut suite,
        )
        .unwrap();
        let program = program_losses(&config, ModelKind::Cfm);
        assert_eq!(suite.0.len(), budget.steps);
        assert_eq!(suite.0, program, "OT-CFM");
    }
}
