//! The quality suite (`cargo xtask bench --suite quality [--quick]`): CaLMFlow, I-CFM and
//! OT-CFM trained with the same step budget on the same data, scored on fresh target
//! samples over several seeds, plus CaLMFlow ablations. Writes `docs/quality.{md,json}`
//! and plots under `docs/img/`.
//!
//! Usage: `quality [--quick] [--fresh] [--only TABLE]... [--out DIR]` (default `docs`). The
//! quick suite writes `quality-quick.*`, the full one `quality.*`; an interrupted run
//! resumes from `{prefix}.progress.json` unless `--fresh` is given. `--only` runs the named
//! tables (a task's title, `heads: TASK`, `targets: TASK`, `heads` or `targets` for all of
//! them, or `ablation: NAME`) and only saves them there, so that parts
//! of a run can go in parallel; a run without it then writes the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use calmflow::data::{
    AnisotropicMixture, Checkerboard, Circles, CurvedSurface, EightGaussians, MixturePair, Moons,
    MultiScaleStudent, Sampler, StandardNormal, seeded_rng,
};
use calmflow::metrics::{EvalOptions, MetricsReport, evaluate};
use calmflow::model::{CalmFlowConfig, HeadKind, Predict};
use calmflow::train::{
    CalmFlowSettings, CfmVariant, ConditionTable, ConditionalPath, Coupling, FlowData,
    GenerationOptions, MixtureInit, NoiseSchedule, OdeSolver, PointSource, Silent, TrainConfig,
    Trainer, VelocityMlpConfig, cfm_sample, generate,
};
use calmflow_benches::StageProgress;
use calmflow_cli::plot::{self, Series, SweepMetric, SweepPoint};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

// The program's allocator (`calmflow`'s binary), so that training times match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type B = Autodiff<NdArray<f32>>;

/// The head the program defaults to, and its settings (chosen by the heads table).
const DEFAULT_HEAD: HeadKind = calmflow::model::RECOMMENDED_HEAD;
const DEFAULT_PREDICT: Predict = Predict::Endpoint;
const DEFAULT_SIGMA: f64 = 0.3;

/// `head, predict, σ, N` (and the mixture's annealing and start) in a table row.
fn describe(k: &CalmKnobs) -> String {
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
struct Budget {
    steps: usize,
    batch: usize,
    hidden: usize,
    layers: usize,
    n_times: usize,
    cfm_width: usize,
    n_eval: usize,
    /// Evaluation points of the ablations (each is a comparison within CaLMFlow).
    n_eval_ablation: usize,
    seeds: Vec<u64>,
}

/// Where a task's target points come from.
enum Target {
    /// A distribution to draw from (fresh points for every use).
    Sampler(Box<dyn Fn() -> Box<dyn Sampler>>),
    /// A finite data set, split once: training points, and held-out points that the
    /// metrics score against.
    Data {
        train: Array2<f32>,
        held_out: Array2<f32>,
    },
}

/// A source → target problem.
struct Task {
    name: String,
    dim: usize,
    source: Box<dyn Fn() -> Box<dyn Sampler>>,
    target: Target,
    plot: bool,
    /// How to draw the points as images (the digits), beside the tables.
    image: Option<plot::ImageShape>,
}

fn task(
    name: &str,
    dim: usize,
    source: impl Fn() -> Box<dyn Sampler> + 'static,
    target: impl Fn() -> Box<dyn Sampler> + 'static,
) -> Task {
    Task {
        name: name.into(),
        dim,
        source: Box::new(source),
        target: Target::Sampler(Box::new(target)),
        plot: dim == 2,
        image: None,
    }
}

/// A task on a finite data set: `held_out` rows of `points` (chosen by `seed`) are the
/// target the metrics score against, the rest train.
fn data_task(name: &str, points: Array2<f32>, held_out: usize, seed: u64) -> Task {
    let n = points.nrows();
    // (m + ½)/n: the split takes ⌊n·fraction⌋ points, exactly m.
    let split = calmflow::data::split_by_fraction(n, 0.0, (held_out as f64 + 0.5) / n as f64, seed)
        .expect("valid split");
    let dim = points.ncols();
    Task {
        name: name.into(),
        dim,
        source: Box::new(move || normal(dim)),
        target: Target::Data {
            train: points.select(ndarray::Axis(0), &split.train),
            held_out: points.select(ndarray::Axis(0), &split.test),
        },
        plot: false,
        image: None,
    }
}

/// N(0, I) → the 8×8 digits, pixels 0–16 scaled by 1/4; 1197 digits train, 600 held-out
/// digits are the target.
fn digits_task() -> Task {
    let digits = calmflow::data::digits().expect("bundled digits").x;
    Task {
        image: Some(plot::ImageShape {
            width: 8,
            height: 8,
            per_row: 12,
            low: 0.0,
            high: 4.0,
        }),
        ..data_task(
            "N(0, I) → digits (pixels / 4, D = 64)",
            digits.mapv(|v| v / 4.0),
            600,
            17,
        )
    }
}

/// N(0, I) → single cells: the 50 principal-component scores of pbmc68k_reduced
/// (`obsm/X_pca`), centred and scaled by one factor so that the training cells' total
/// variance is D (the spectrum kept: the leading components dominate, as in the data);
/// 500 cells train, 200 held-out cells are the target.
fn cells_task() -> Task {
    let path = calmflow::data::h5ad::bundled_pbmc68k_reduced();
    let file = calmflow::data::h5ad::read_h5ad(&path).expect("bundled pbmc68k_reduced");
    let pcs = file.obsm.get("X_pca").expect("obsm/X_pca").clone();
    let mut task = data_task("N(0, I) → cells (50 PCs of pbmc68k, D = 50)", pcs, 200, 29);
    if let Target::Data { train, held_out } = &mut task.target {
        let mean = train.mean_axis(ndarray::Axis(0)).expect("training cells");
        let variance = train
            .var_axis(ndarray::Axis(0), 1.0)
            .mean()
            .expect("50 components");
        let scale = 1.0 / variance.sqrt();
        for x in [train, held_out] {
            *x = (&*x - &mean) * scale;
        }
    }
    task
}

impl Task {
    /// `n` target points for training-side use (a fresh draw, or the training set).
    fn target_points(&self, n: usize, seed: u64) -> Array2<f32> {
        match &self.target {
            Target::Sampler(f) => f().sample(n, &mut seeded_rng(seed)),
            Target::Data { train, .. } => train.clone(),
        }
    }

    fn target_source(&self) -> PointSource {
        match &self.target {
            Target::Sampler(f) => PointSource::Sampler(f()),
            Target::Data { train, .. } => {
                PointSource::points(train.clone(), &self.name).expect("finite points")
            }
        }
    }
}

fn normal(dim: usize) -> Box<dyn Sampler> {
    Box::new(StandardNormal { dim })
}

fn mixture_target(pair: MixturePair, dim: usize) -> Box<dyn Sampler> {
    Box::new(pair.build(dim).expect("valid mixture").0)
}

fn mixture_source(pair: MixturePair, dim: usize) -> Box<dyn Sampler> {
    pair.build(dim).expect("valid mixture").1
}

/// CaLMFlow's knobs that the ablations turn.
#[derive(Debug, Clone, Copy, Serialize)]
struct CalmKnobs {
    n_traj: usize,
    n_space: usize,
    n_times: usize,
    variational: bool,
    /// The distribution head and what it predicts.
    head: HeadKind,
    predict: Predict,
    /// Brownian-bridge path noise `σ` (0: straight paths).
    sigma: f64,
    /// KL weight `β` (variational and cvae heads).
    beta: f64,
    temperature: f64,
    /// Inner width of the head's MLPs (0: the model's automatic width).
    decoder_width: usize,
    /// Components of the mixture head.
    components: usize,
    /// Starting temperature of the mixture's annealing (0: `D`, 1: off;
    /// `CalmFlowSettings::anneal_temperature`).
    anneal: f64,
    /// Fraction of the steps over which the annealing reaches 1.
    anneal_fraction: f64,
    /// How the mixture's components start (`CalmFlowSettings::mixture_init`).
    mixture_init: MixtureInit,
    /// Peak learning rate of CaLMFlow's optimiser.
    learning_rate: f64,
    /// How CaLMFlow's training pairs are coupled.
    coupling: Coupling,
    /// Noise on the context's states (`CalmFlowConfig::context_noise`).
    context_noise: f64,
    /// Noise draws per slot in the flow head's loss (`CalmFlowConfig::flow_draws`).
    flow_draws: usize,
    /// Context of the backbone: `None` (no prompt, full history), or a one-token anchor
    /// prompt with the full history (`Some(false)`) or the Markov window (`Some(true)`).
    /// Rotary positions are relative, so a token that sees only its own time point learns
    /// the time from its offset to the anchor: the control is an ODE step, not a
    /// time-blind map.
    anchored: Option<bool>,
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
struct RunResult {
    method: String,
    seed: u64,
    report: MetricsReport,
    train_seconds: f64,
    /// Training steps (equal for every method, except the equal-wall-clock CFM rows).
    steps: usize,
    parameters: usize,
    /// dopri5 function evaluations (CFM) or decoding steps times head evaluations per
    /// step (CaLMFlow).
    nfe: usize,
}

fn train_config(budget: &Budget, coupling: Coupling, seed: u64) -> TrainConfig {
    TrainConfig {
        steps: budget.steps,
        batch_size: budget.batch,
        warmup_steps: budget.steps / 20,
        coupling,
        seed,
        validate_every: 0,
        checkpoint_every: 0,
        log_every: budget.steps,
        ..TrainConfig::default()
    }
}

fn flow_data(task: &Task, seed: u64) -> FlowData {
    FlowData::new(
        PointSource::Sampler((task.source)()),
        task.target_source(),
        0.1,
        256,
        seed,
    )
    .expect("valid data")
}

/// Points in the suite's evaluation sets (target, sources and the floor's second sample).
const EVAL_POINTS: usize = 2000;

/// Evaluation points of the targets tables: at D = 100 the Fréchet distance of two 2000-point
/// target samples is 2.84, about what every method scores, so the heads tables cannot rank
/// methods there; at 8000 points the floor is 0.7 (W2, exact up to [`EVAL_POINTS`], is
/// left out).
const TARGET_EVAL_POINTS: usize = 8000;

/// The metrics of `n` points in `dim` dimensions. The tables report W2, MMD, energy and
/// Fréchet distances: W1 (a second exact assignment, seconds at n = 2000 in 2-D) and the
/// Sinkhorn terms are left out. Exact W2 is computed up to [`EVAL_POINTS`]: a probe's
/// larger `--n-eval` sets, which measure MMD² and Fréchet below the 2000-point floor,
/// skip its cubic-time assignment.
fn eval_options(dim: usize, n: usize) -> EvalOptions {
    EvalOptions {
        exact_ot: n <= EVAL_POINTS,
        exact_w1: false,
        sinkhorn: false,
        gamma: 1.0 / dim as f64,
        ..EvalOptions::default()
    }
}

/// Trains CaLMFlow on `task`; returns the model, training seconds and parameter count.
fn train_calmflow(
    task: &Task,
    budget: &Budget,
    knobs: CalmKnobs,
    seed: u64,
) -> (calmflow::model::CalmFlowModel<NdArray<f32>>, f64, usize) {
    let device = Default::default();
    B::seed(&device, seed);
    let config = CalmFlowConfig::new(task.dim)
        .with_n_space(knobs.n_space)
        .with_hidden(budget.hidden)
        .with_layers(budget.layers)
        .with_heads(4)
        .with_dropout(0.0)
        .with_variational(knobs.variational)
        .with_head(knobs.head)
        .with_predict(knobs.predict)
        .with_decoder_width(knobs.decoder_width)
        .with_mixture_components(knobs.components)
        .with_bridge_sigma(if knobs.predict.steps_to_endpoint() {
            knobs.sigma
        } else {
            0.0
        })
        .with_context_noise(knobs.context_noise)
        .with_flow_draws(knobs.flow_draws)
        .with_vocab_size(usize::from(knobs.anchored.is_some()))
        .with_markov_slots(if knobs.anchored == Some(true) {
            knobs.n_traj
        } else {
            0
        });
    let model = config.init::<B>(&device).expect("valid config");
    let data = match knobs.anchored {
        None => flow_data(task, seed),
        Some(_) => {
            // Conditional data needs a target point set: a large fixed sample.
            let target = task.target_points(20_000, seed ^ 0xA5C4);
            let n = target.nrows();
            FlowData::conditional(
                PointSource::Sampler((task.source)()),
                target,
                vec![0; n],
                anchor_table(),
                0.1,
                seed,
            )
            .expect("valid data")
        }
    };
    let parameters = model.num_params();
    let settings = CalmFlowSettings {
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
    };
    let started = Instant::now();
    let json = serde_json::to_value(&config).unwrap_or_default();
    let mut trainer = Trainer::new(
        model,
        json,
        settings,
        TrainConfig {
            learning_rate: knobs.learning_rate,
            ..train_config(budget, knobs.coupling, seed)
        },
        data,
        device,
    )
    .expect("valid trainer");
    trainer.run(&mut Silent).expect("training");
    let seconds = started.elapsed().as_secs_f64();
    (trainer.into_model().valid(), seconds, parameters)
}

/// CaLMFlow's roll-out settings for `knobs`: its grid, trajectories and temperature.
fn generation_options(knobs: CalmKnobs, seed: u64) -> GenerationOptions {
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
fn score_calmflow(
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
fn run_calmflow(
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
fn calmflow_row(
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
fn run_cfm(
    task: &Task,
    budget: &Budget,
    variant: CfmVariant,
    seed: u64,
    x0: &Array2<f32>,
    target: &Array2<f32>,
    steps: Option<usize>,
) -> (RunResult, Array2<f32>) {
    let device = Default::default();
    B::seed(&device, seed);
    let net = VelocityMlpConfig::new(task.dim).with_width(budget.cfm_width);
    let model = net.init::<B>(&device).expect("valid config");
    let parameters = model.num_params();
    let (settings, coupling) = variant.setup(0.01);
    let started = Instant::now();
    let json = serde_json::to_value(&net).unwrap_or_default();
    let mut trainer = Trainer::new(
        model,
        json,
        settings,
        TrainConfig {
            steps: steps.unwrap_or(budget.steps),
            warmup_steps: steps.unwrap_or(budget.steps) / 20,
            log_every: steps.unwrap_or(budget.steps),
            ..train_config(budget, coupling, seed)
        },
        flow_data(task, seed),
        device,
    )
    .expect("valid trainer");
    let diverged = trainer.run(&mut Silent).err();
    let train_seconds = started.elapsed().as_secs_f64();
    let method = match variant {
        CfmVariant::ICfm => "I-CFM",
        CfmVariant::OtCfm => "OT-CFM",
        CfmVariant::SbCfm => "SB-CFM",
    };
    let method = match steps {
        None => method.to_string(),
        Some(_) => format!("{method} (equal time)"),
    };
    if let Some(e) = diverged {
        // A run whose loss stopped being finite has no samples to score: its row says so
        // (`task_table` counts it) instead of ending the suite.
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
                steps: steps.unwrap_or(budget.steps),
                parameters,
                nfe: 0,
            },
            Array2::zeros((0, task.dim)),
        );
    }
    let model = trainer.into_model().valid();
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
            steps: steps.unwrap_or(budget.steps),
            parameters,
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

/// Evaluation points of a seed: sources, a target set and an independent second target
/// set (the two-sample noise floor). A finite data set scores against its held-out part
/// (all of it, with as many sources); its noise floor is as many training points, drawn
/// without replacement.
fn eval_sets(task: &Task, n: usize, seed: u64) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
    let mut rng = seeded_rng(seed ^ 0x0E7A_1000_0000_0003);
    match &task.target {
        Target::Sampler(f) => {
            let x0 = (task.source)().sample(n, &mut rng);
            let target = f().sample(n, &mut rng);
            let second = f().sample(n, &mut rng);
            (x0, target, second)
        }
        Target::Data { train, held_out } => {
            let m = held_out.nrows();
            let x0 = (task.source)().sample(m, &mut rng);
            // (m + ½)/n: the split takes ⌊n·fraction⌋ points, exactly m.
            let fraction = (m as f64 + 0.5) / train.nrows() as f64;
            let split = calmflow::data::split_by_fraction(train.nrows(), 0.0, fraction, seed)
                .expect("valid split");
            let second = train.select(ndarray::Axis(0), &split.test);
            (x0, held_out.clone(), second)
        }
    }
}

/// A seed's sources and target set, and the noise floor: a second target sample scored
/// against the target.
fn seed_sets(task: &Task, budget: &Budget, seed: u64) -> (Array2<f32>, Array2<f32>, MetricsReport) {
    let (x0, target, second) = eval_sets(task, budget.n_eval, seed);
    let floor = evaluate(
        second.view(),
        target.view(),
        &eval_options(task.dim, target.nrows()),
    )
    .expect("metrics");
    (x0, target, floor)
}

/// `mean ± std` over seeds (sample std; 0 for one seed), of the finite values.
fn mean_std(v: &[f64]) -> (f64, f64) {
    plot::mean_std(v).unwrap_or((f64::NAN, f64::NAN))
}

fn cell(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    if m.abs() >= 100.0 {
        format!("{m:.1} ± {s:.1}")
    } else if m != 0.0 && m.abs() < 0.01 {
        // MMD² lives at 1e-5 … 1e-3: three decimals would print it as 0.
        format!("{m:.2e} ± {s:.1e}")
    } else {
        format!("{m:.3} ± {s:.3}")
    }
}

#[derive(Debug, Clone, Serialize)]
struct TaskResult {
    task: String,
    dim: usize,
    runs: Vec<RunResult>,
    floor: Vec<MetricsReport>,
    plot: Option<String>,
    /// The image grid (real and generated images), for image data.
    images: Option<String>,
}

fn metric_columns(runs: &[&RunResult]) -> [String; 7] {
    let get = |f: &dyn Fn(&MetricsReport) -> Option<f64>| -> String {
        let v: Vec<f64> = runs.iter().filter_map(|r| f(&r.report)).collect();
        if v.is_empty() { "—".into() } else { cell(&v) }
    };
    [
        get(&|r| r.w2),
        get(&|r| Some(r.mmd2_median)),
        get(&|r| Some(r.energy)),
        get(&|r| r.frechet),
        get(&|r| r.dispersion.as_ref().map(|d| d.trace_ratio)),
        get(&|r| r.knn.map(|k| k.precision)),
        get(&|r| r.knn.map(|k| k.recall)),
    ]
}

fn task_table(t: &TaskResult) -> String {
    let mut md = format!(
        "\n### {}\n\n| method | W2 | MMD² (median) | energy | Fréchet | trace ratio | k-NN precision | k-NN recall | train s | steps | parameters | NFE |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        if t.task.contains("D =") {
            t.task.clone()
        } else {
            format!("{} (D = {})", t.task, t.dim)
        }
    );
    let mut methods: Vec<&str> = Vec::new();
    for r in &t.runs {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    for m in methods {
        let runs: Vec<&RunResult> = t.runs.iter().filter(|r| r.method == m).collect();
        let failed = runs.iter().filter(|r| r.report.n_samples == 0).count();
        let m = if failed > 0 {
            format!("{m} ({failed} of {} seeds diverged, left out)", runs.len())
        } else {
            m.to_string()
        };
        let [w2, mmd, energy, frechet, trace, precision, recall] = metric_columns(&runs);
        let secs: Vec<f64> = runs.iter().map(|r| r.train_seconds).collect();
        let steps: Vec<f64> = runs.iter().map(|r| r.steps as f64).collect();
        md.push_str(&format!(
            "| {m} | {w2} | {mmd} | {energy} | {frechet} | {trace} | {precision} | {recall} | {:.1} | {:.0} | {} | {} |\n",
            mean_std(&secs).0,
            mean_std(&steps).0,
            runs[0].parameters,
            runs[0].nfe
        ));
    }
    let floor: Vec<RunResult> = t
        .floor
        .iter()
        .map(|r| RunResult {
            method: String::new(),
            seed: 0,
            report: r.clone(),
            train_seconds: 0.0,
            steps: 0,
            parameters: 0,
            nfe: 0,
        })
        .collect();
    let [w2, mmd, energy, frechet, trace, precision, recall] =
        metric_columns(&floor.iter().collect::<Vec<_>>());
    md.push_str(&format!(
        "| noise floor (second target sample) | {w2} | {mmd} | {energy} | {frechet} | {trace} | {precision} | {recall} | | | | |\n"
    ));
    if let Some(p) = &t.plot {
        md.push_str(&format!("\n![{}]({p})\n", t.task));
    }
    if let Some(p) = &t.images {
        md.push_str(&format!("\n![{} as images]({p})\n", t.task));
    }
    md
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn compare(task: &Task, budget: &Budget, knobs: CalmKnobs, out: &Output) -> TaskResult {
    let mut runs = Vec::new();
    let mut floor = Vec::new();
    let mut plot_path = None;
    let mut images = None;
    for &seed in &budget.seeds {
        let (x0, target, noise_floor) = seed_sets(task, budget, seed);
        floor.push(noise_floor);
        let (calm, calm_samples) = run_calmflow(task, budget, knobs, seed, &x0, &target);
        let (icfm, icfm_samples) =
            run_cfm(task, budget, CfmVariant::ICfm, seed, &x0, &target, None);
        let (otcfm, ot_samples) =
            run_cfm(task, budget, CfmVariant::OtCfm, seed, &x0, &target, None);
        eprintln!(
            "quality: {} seed {seed}: W2 CaLMFlow {:.3}, I-CFM {:.3}, OT-CFM {:.3} ({:.0} s CaLMFlow)",
            task.name,
            calm.report.w2.unwrap_or(f64::NAN),
            icfm.report.w2.unwrap_or(f64::NAN),
            otcfm.report.w2.unwrap_or(f64::NAN),
            calm.train_seconds
        );
        if task.plot && plot_path.is_none() {
            let name = out.image(&task.name);
            let series = [
                Series {
                    label: "target",
                    points: &target,
                    color: plot::TARGET,
                },
                Series {
                    label: "CaLMFlow",
                    points: &calm_samples,
                    color: plot::CALMFLOW,
                },
                Series {
                    label: "I-CFM",
                    points: &icfm_samples,
                    color: plot::BASELINE,
                },
                Series {
                    label: "OT-CFM",
                    points: &ot_samples,
                    color: plot::SOURCE,
                },
            ];
            match plot::scatter(
                &out.dir.join(&name),
                &format!("{} (seed {seed})", task.name),
                &series,
            ) {
                Ok(()) => plot_path = Some(name),
                Err(e) => eprintln!("quality: plot skipped: {e}"),
            }
        }
        if images.is_none() {
            images = image_grid(
                task,
                seed,
                out,
                &format!("images {}", task.name),
                &target,
                &[
                    ("CaLMFlow (paper)".into(), calm_samples),
                    ("I-CFM".into(), icfm_samples),
                    ("OT-CFM".into(), ot_samples),
                ],
            );
        }
        runs.extend([calm, icfm, otcfm]);
    }
    TaskResult {
        task: task.name.clone(),
        dim: task.dim,
        runs,
        floor,
        plot: plot_path,
        images,
    }
}

/// The heads table of one task: every CaLMFlow head in `heads` (the first is the default
/// whose training time sets the equal-wall-clock budget), I-CFM and OT-CFM at equal steps,
/// and both again trained for as long as the default head took.
fn heads_table(
    task: &Task,
    budget: &Budget,
    heads: &[(String, CalmKnobs)],
    out: &Output,
) -> TaskResult {
    let mut runs: Vec<RunResult> = Vec::new();
    let mut floor = Vec::new();
    let mut plot_path = None;
    let mut images = None;
    for &seed in &budget.seeds {
        let (x0, target, noise_floor) = seed_sets(task, budget, seed);
        floor.push(noise_floor);
        let mut samples: Vec<(String, Array2<f32>)> = Vec::new();
        let mut default_seconds = None;
        for (label, knobs) in heads {
            let (mut r, x) = run_calmflow(task, budget, *knobs, seed, &x0, &target);
            r.method = label.clone();
            default_seconds.get_or_insert(r.train_seconds);
            eprintln!(
                "quality: heads, {} seed {seed}, {label}: Fréchet {:.3}, MMD² {:.4}, trace ratio {:.3} ({:.0} s)",
                task.name,
                r.report.frechet.unwrap_or(f64::NAN),
                r.report.mmd2_median,
                r.report
                    .dispersion
                    .as_ref()
                    .map_or(f64::NAN, |d| d.trace_ratio),
                r.train_seconds
            );
            runs.push(r);
            samples.push((label.clone(), x));
        }
        for variant in [CfmVariant::ICfm, CfmVariant::OtCfm] {
            let (r, x) = run_cfm(task, budget, variant, seed, &x0, &target, None);
            let per_step = r.train_seconds / budget.steps as f64;
            samples.push((r.method.clone(), x));
            runs.push(r);
            // As many steps as fit in the default head's training time.
            let equal = default_seconds.map_or(budget.steps, |t| {
                ((t / per_step.max(1e-9)).round() as usize).clamp(budget.steps, 100 * budget.steps)
            });
            let (r, _) = run_cfm(task, budget, variant, seed, &x0, &target, Some(equal));
            runs.push(r);
        }
        if plot_path.is_none() {
            plot_path = plot_heads(task, seed, &target, &samples, &runs, out);
        }
        if images.is_none() {
            images = image_grid(
                task,
                seed,
                out,
                &format!("heads images {}", task.name),
                &target,
                &samples,
            );
        }
    }
    TaskResult {
        task: format!("heads: {}", task.name),
        dim: task.dim,
        runs,
        floor,
        plot: plot_path,
        images,
    }
}

/// The targets table of one task: the default head against OT-CFM at equal steps, scored
/// on `budget.n_eval` points ([`TARGET_EVAL_POINTS`] in the full suite), the comparison
/// that the distribution-heads work set its targets in.
fn targets_table(task: &Task, budget: &Budget, best: CalmKnobs) -> TaskResult {
    let mut runs = Vec::new();
    let mut floor = Vec::new();
    for &seed in &budget.seeds {
        let (x0, target, noise_floor) = seed_sets(task, budget, seed);
        let (mut r, _) = run_calmflow(task, budget, best, seed, &x0, &target);
        r.method = format!("CaLMFlow {}", describe(&best));
        let (cfm, _) = run_cfm(task, budget, CfmVariant::OtCfm, seed, &x0, &target, None);
        eprintln!(
            "quality: targets, {} seed {seed}: Fréchet {:.3} vs OT-CFM {:.3} (floor {:.3}), MMD² {:.2e} vs {:.2e}",
            task.name,
            r.report.frechet.unwrap_or(f64::NAN),
            cfm.report.frechet.unwrap_or(f64::NAN),
            noise_floor.frechet.unwrap_or(f64::NAN),
            r.report.mmd2_median,
            cfm.report.mmd2_median,
        );
        floor.push(noise_floor);
        runs.push(r);
        runs.push(cfm);
    }
    TaskResult {
        task: format!("targets ({} points): {}", budget.n_eval, task.name),
        dim: task.dim,
        runs,
        floor,
        plot: None,
        images: None,
    }
}

/// The first images of the target and of each method's samples, one row each, for a task
/// drawn as images (the digits); `None` for other tasks or when the plot fails (said on
/// stderr).
fn image_grid(
    task: &Task,
    seed: u64,
    out: &Output,
    name: &str,
    target: &Array2<f32>,
    samples: &[(String, Array2<f32>)],
) -> Option<String> {
    let shape = task.image?;
    let name = out.image(name);
    let mut rows: Vec<(&str, &Array2<f32>)> = vec![("real (held out)", target)];
    rows.extend(
        samples
            .iter()
            .map(|(label, x)| (label.strip_prefix("CaLMFlow ").unwrap_or(label.as_str()), x)),
    );
    match plot::image_grid(
        &out.dir.join(&name),
        &format!("{} (seed {seed})", task.name),
        &rows,
        shape,
    ) {
        Ok(()) => Some(name),
        Err(e) => {
            eprintln!("quality: image grid skipped: {e}");
            None
        }
    }
}

/// One panel per method (2-D tasks) or the variance ratios along the target's principal
/// directions (higher dimensions), for the first seed.
fn plot_heads(
    task: &Task,
    seed: u64,
    target: &Array2<f32>,
    samples: &[(String, Array2<f32>)],
    runs: &[RunResult],
    out: &Output,
) -> Option<String> {
    let name = out.image(&format!("heads {}", task.name));
    let title = format!("{} (seed {seed})", task.name);
    let result = if task.dim == 2 {
        let series: Vec<Series<'_>> = samples
            .iter()
            .map(|(label, points)| Series {
                label,
                points,
                color: if label.starts_with("CaLMFlow") {
                    plot::CALMFLOW
                } else {
                    plot::BASELINE
                },
            })
            .collect();
        plot::panels(&out.dir.join(&name), &title, target, &series)
    } else {
        let groups: Vec<(&str, Vec<(&str, f64)>)> = runs
            .iter()
            .filter(|r| r.seed == seed)
            .filter_map(|r| {
                let d = r.report.dispersion.as_ref()?;
                let mut bars = vec![("trace", d.trace_ratio)];
                for (k, v) in d.leading.iter().enumerate() {
                    bars.push((["PC1", "PC2", "PC3"][k.min(2)], *v));
                }
                if let Some(rest) = d.rest {
                    bars.push(("rest", rest));
                }
                Some((r.method.as_str(), bars))
            })
            .collect();
        plot::dispersion_bars(
            &out.dir.join(&name),
            &format!("variance ratios to the target, {title}"),
            &groups,
        )
    };
    match result {
        Ok(()) => Some(name),
        Err(e) => {
            eprintln!("quality: plot skipped: {e}");
            None
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AblationPoint {
    setting: String,
    w2: Vec<f64>,
    mmd2_median: Vec<f64>,
    energy: Vec<f64>,
    frechet: Vec<f64>,
    trace_ratio: Vec<f64>,
    knn_precision: Vec<f64>,
    knn_recall: Vec<f64>,
    train_seconds: Vec<f64>,
}

impl AblationPoint {
    fn new(setting: String) -> Self {
        Self {
            setting,
            w2: Vec::new(),
            mmd2_median: Vec::new(),
            energy: Vec::new(),
            frechet: Vec::new(),
            trace_ratio: Vec::new(),
            knn_precision: Vec::new(),
            knn_recall: Vec::new(),
            train_seconds: Vec::new(),
        }
    }

    fn push(&mut self, r: &MetricsReport, seconds: f64) {
        self.w2.push(r.w2.unwrap_or(f64::NAN));
        self.mmd2_median.push(r.mmd2_median);
        self.energy.push(r.energy);
        self.frechet.push(r.frechet.unwrap_or(f64::NAN));
        self.trace_ratio
            .push(r.dispersion.as_ref().map_or(f64::NAN, |d| d.trace_ratio));
        self.knn_precision
            .push(r.knn.map_or(f64::NAN, |k| k.precision));
        self.knn_recall.push(r.knn.map_or(f64::NAN, |k| k.recall));
        self.train_seconds.push(seconds);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ablation {
    name: String,
    task: String,
    points: Vec<AblationPoint>,
    /// The curves' image (path relative to the output folder), once drawn.
    plot: Option<String>,
}

/// Draws the Fréchet, energy and W2 curves of `a` under `out/img/`.
fn plot_ablation(a: &mut Ablation, out: &Output) {
    let name = out.image(&format!("ablation {}", a.name));
    let series = |values: fn(&AblationPoint) -> &[f64]| -> Vec<SweepPoint<'_>> {
        a.points
            .iter()
            .map(|p| SweepPoint {
                setting: &p.setting,
                values: values(p),
            })
            .collect()
    };
    let (frechet, energy, w2) = (
        series(|p| &p.frechet),
        series(|p| &p.energy),
        series(|p| &p.w2),
    );
    let metrics = [
        SweepMetric {
            name: "Fréchet",
            points: &frechet,
        },
        SweepMetric {
            name: "energy distance",
            points: &energy,
        },
        SweepMetric {
            name: "W2",
            points: &w2,
        },
    ];
    let result = plot::sweep(
        &out.dir.join(&name),
        &format!("{} ({})", a.name, a.task),
        &metrics,
    );
    match result {
        Ok(()) => a.plot = Some(name),
        Err(e) => eprintln!("quality: plot skipped: {e}"),
    }
}

fn ablation(
    name: &str,
    task: &Task,
    budget: &Budget,
    settings: Vec<(String, CalmKnobs)>,
) -> Ablation {
    let mut points = Vec::new();
    for (label, knobs) in settings {
        let mut p = AblationPoint::new(label.clone());
        for &seed in &budget.seeds {
            let (x0, target, _) = eval_sets(task, budget.n_eval_ablation, seed);
            let (r, _) = run_calmflow(task, budget, knobs, seed, &x0, &target);
            p.push(&r.report, r.train_seconds);
        }
        eprintln!("quality: ablation {name}, {label}: W2 {}", cell(&p.w2));
        points.push(p);
    }
    Ablation {
        name: name.into(),
        task: task.name.clone(),
        points,
        plot: None,
    }
}

/// The context control: the same knobs with a one-token anchor prompt and the whole
/// history (Volterra), or the current time point only (Markov).
fn context_pair(knobs: CalmKnobs) -> Vec<(String, CalmKnobs)> {
    vec![
        (
            "Volterra, anchor prompt".into(),
            CalmKnobs {
                anchored: Some(false),
                ..knobs
            },
        ),
        (
            "Markov, anchor prompt".into(),
            CalmKnobs {
                anchored: Some(true),
                ..knobs
            },
        ),
    ]
}

/// The temperature sweep reuses one trained model per seed.
fn temperature_sweep(task: &Task, budget: &Budget, knobs: CalmKnobs, temps: &[f64]) -> Ablation {
    let mut points: Vec<AblationPoint> = temps
        .iter()
        .map(|t| AblationPoint::new(format!("τ = {t}")))
        .collect();
    for &seed in &budget.seeds {
        let (model, secs, _) = train_calmflow(task, budget, knobs, seed);
        let (x0, target, _) = eval_sets(task, budget.n_eval_ablation, seed);
        for (p, &t) in points.iter_mut().zip(temps) {
            let knobs = CalmKnobs {
                temperature: t,
                ..knobs
            };
            let (r, _) = score_calmflow(&model, knobs, seed, &x0, &target);
            p.push(&r, secs);
        }
    }
    Ablation {
        name: "temperature".into(),
        task: task.name.clone(),
        points,
        plot: None,
    }
}

fn ablation_table(a: &Ablation) -> String {
    let mut md = format!(
        "\n### Ablation: {} ({})\n\n| setting | W2 | MMD² (median) | energy | Fréchet | trace ratio | k-NN precision | k-NN recall | train s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        a.name, a.task
    );
    for p in &a.points {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            p.setting,
            cell(&p.w2),
            cell(&p.mmd2_median),
            cell(&p.energy),
            cell(&p.frechet),
            cell(&p.trace_ratio),
            cell(&p.knn_precision),
            cell(&p.knn_recall),
            mean_std(&p.train_seconds).0
        ));
    }
    if let Some(p) = &a.plot {
        md.push_str(&format!("\n![{}]({p})\n", a.name));
    }
    md
}

/// `quality --probe TASK [--head H] [--predict P] [--sigma S] [--beta B] [--tau T] [--steps N]
/// [--n-times N] [--hidden H] [--n-space K] [--width W] [--components M] [--lr LR] [--anneal T0]
/// [--anneal-fraction F] [--mixture-init kmeans|random]
/// [--coupling independent|exact-ot|entropic:REG] [--seeds 0,1]
/// [--n-eval N] [--batch B] [--cfm] [--dump DIR]`: one CaLMFlow configuration (default: the
/// repaired head) on the task whose name contains `TASK`, printed after each seed's
/// two-sample floor, nothing else saved; `--dump DIR` writes the generated points, the
/// roll-outs `(n, N, D)`, the sources and the target as `.npy` files there (per seed), for
/// looking at where samples go wrong.
fn probe(args: &[String], tasks: &[Task], pair: &Task, budget: &Budget, best: CalmKnobs) {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(needle) = args.first() else {
        eprintln!("quality --probe: name a task (a part of its title)");
        std::process::exit(2);
    };
    let Some(task) = tasks
        .iter()
        .chain(std::iter::once(pair))
        .find(|t| t.name.contains(needle.as_str()))
    else {
        eprintln!("quality --probe: no task matches {needle:?}");
        std::process::exit(2);
    };
    let fail = |m: String| -> ! {
        eprintln!("quality --probe: {m}");
        std::process::exit(2)
    };
    let mut knobs = best;
    if let Some(h) = value("--head") {
        knobs.head = h.parse().unwrap_or_else(|e: String| fail(e));
    }
    if let Some(p) = value("--predict") {
        knobs.predict = serde_json::from_value(serde_json::Value::String(p.clone()))
            .unwrap_or_else(|_| fail(format!("unknown predict {p:?}")));
    }
    let number = |flag: &str, default: f64| {
        value(flag).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| fail(format!("{flag} {v:?}")))
        })
    };
    knobs.sigma = number("--sigma", knobs.sigma);
    knobs.beta = number("--beta", knobs.beta);
    knobs.temperature = number("--tau", knobs.temperature);
    knobs.decoder_width = number("--width", knobs.decoder_width as f64) as usize;
    knobs.components = number("--components", knobs.components as f64) as usize;
    knobs.n_space = number("--n-space", knobs.n_space as f64) as usize;
    knobs.learning_rate = number("--lr", knobs.learning_rate);
    knobs.n_times = number("--n-times", knobs.n_times as f64) as usize;
    knobs.anneal = number("--anneal", knobs.anneal);
    knobs.anneal_fraction = number("--anneal-fraction", knobs.anneal_fraction);
    knobs.context_noise = number("--context-noise", knobs.context_noise);
    knobs.flow_draws = number("--flow-draws", knobs.flow_draws as f64) as usize;
    if let Some(init) = value("--mixture-init") {
        knobs.mixture_init = match init.as_str() {
            "kmeans" => MixtureInit::Kmeans,
            "random" => MixtureInit::Random,
            other => {
                eprintln!("quality --probe: --mixture-init takes kmeans or random, got {other}");
                std::process::exit(2);
            }
        };
    }
    if let Some(c) = value("--coupling") {
        knobs.coupling = match c.as_str() {
            "independent" => Coupling::Independent,
            "exact-ot" => Coupling::ExactOt,
            other => match other.strip_prefix("entropic:").map(str::parse) {
                Some(Ok(reg)) => Coupling::Entropic { reg },
                _ => fail(format!("unknown coupling {other:?}")),
            },
        };
    }
    if knobs.head == HeadKind::Variational && value("--predict").is_none() {
        knobs.predict = Predict::State;
    }
    let budget = Budget {
        steps: number("--steps", budget.steps as f64) as usize,
        hidden: number("--hidden", budget.hidden as f64) as usize,
        n_eval: number("--n-eval", budget.n_eval as f64) as usize,
        batch: number("--batch", budget.batch as f64) as usize,
        seeds: value("--seeds").map_or(vec![0], |v| {
            v.split(',')
                .map(|s| s.parse().unwrap_or_else(|_| fail(format!("seed {s:?}"))))
                .collect()
        }),
        ..budget.clone()
    };
    for &seed in &budget.seeds {
        let (x0, target, floor) = seed_sets(task, &budget, seed);
        println!(
            "{} | two-sample floor | seed {seed} | {} points | MMD² {:.5} energy {:.4} Fréchet {:.3} precision {:.3} recall {:.3}",
            task.name,
            target.nrows(),
            floor.mmd2_median,
            floor.energy,
            floor.frechet.unwrap_or(f64::NAN),
            floor.knn.map_or(f64::NAN, |k| k.precision),
            floor.knn.map_or(f64::NAN, |k| k.recall)
        );
        let (model, train_seconds, parameters) = train_calmflow(task, &budget, knobs, seed);
        let (report, calm_samples) = score_calmflow(&model, knobs, seed, &x0, &target);
        let calm = calmflow_row(&budget, knobs, seed, report, train_seconds, parameters);
        let mut rows = vec![calm];
        let mut dumps = vec![("calmflow", calm_samples)];
        if args.iter().any(|a| a == "--cfm") {
            let (r, s) = run_cfm(task, &budget, CfmVariant::OtCfm, seed, &x0, &target, None);
            rows.push(r);
            dumps.push(("ot-cfm", s));
        }
        if let Some(dir) = value("--dump") {
            let options = generation_options(knobs, seed);
            let paths = generate(&model, &x0, &options, None, true, &Default::default())
                .ok()
                .and_then(|g| g.trajectories)
                .unwrap_or_else(|| fail("no trajectories".into()));
            let path = Path::new(&dir).join(format!("paths-seed{seed}.npy"));
            calmflow::data::npy::write_npy_nd(&path, paths.into_dyn().view())
                .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
            dumps.push(("target", target.clone()));
            dumps.push(("source", x0.clone()));
            for (name, x) in &dumps {
                let path = Path::new(&dir).join(format!("{name}-seed{seed}.npy"));
                calmflow::data::npy::write_npy(&path, x.view())
                    .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
            }
        }
        for r in rows {
            let d = r.report.dispersion.clone();
            println!(
                "{} | {} | seed {seed} | {} | W2 {:.3} MMD² {:.5} energy {:.4} Fréchet {:.3} trace {:.3} precision {:.3} recall {:.3} leading {:?} rest {:?} | {:.0} s",
                task.name,
                if r.method == "CaLMFlow" {
                    format!("CaLMFlow {} τ {}", describe(&knobs), knobs.temperature)
                } else {
                    r.method.clone()
                },
                budget.steps,
                r.report.w2.unwrap_or(f64::NAN),
                r.report.mmd2_median,
                r.report.energy,
                r.report.frechet.unwrap_or(f64::NAN),
                d.as_ref().map_or(f64::NAN, |d| d.trace_ratio),
                r.report.knn.map_or(f64::NAN, |k| k.precision),
                r.report.knn.map_or(f64::NAN, |k| k.recall),
                d.as_ref().map(|d| d
                    .leading
                    .iter()
                    .map(|v| (v * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()),
                d.as_ref()
                    .and_then(|d| d.rest)
                    .map(|v| (v * 1000.0).round() / 1000.0),
                r.train_seconds
            );
        }
    }
}

/// Where a run writes: `DIR/{prefix}.md`, `DIR/{prefix}.json`, plots `DIR/img/{prefix}-*.png`
/// and, while it runs, `DIR/{prefix}.progress.json`. The quick and the full suite have
/// their own prefixes, so that one never overwrites the other's tables.
struct Output {
    dir: PathBuf,
    prefix: &'static str,
}

impl Output {
    /// The path, relative to `dir`, of the plot named `title`.
    fn image(&self, title: &str) -> String {
        format!("img/{}-{}.png", self.prefix, slug(title))
    }

    fn path(&self, extension: &str) -> PathBuf {
        self.dir.join(format!("{}.{extension}", self.prefix))
    }
}

fn main() {
    calmflow::backend::register_cpu_kernels();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let fresh = args.iter().any(|a| a == "--fresh");
    // `--only TABLE` (repeatable): run just those tables and save them for a later full run
    // (runs of disjoint tables can share the output folder in parallel).
    let only: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--only")
        .map(|w| w[1].as_str())
        .collect();
    let wanted = |key: &str| only.is_empty() || only.contains(&key);
    let dir = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"));
    if let Err(e) = std::fs::create_dir_all(dir.join("img")) {
        eprintln!("quality: cannot create {}: {e}", dir.join("img").display());
        std::process::exit(1);
    }
    let out = Output {
        dir,
        prefix: if quick { "quality-quick" } else { "quality" },
    };
    // The full suite differs from the quick one in steps, tasks (D = 50, 100, 1000), the
    // ablation grids (P = 8, N = 32, 2-Gaussian pairs at D = 10) and 2000 ablation
    // points; the models are the same size.
    let budget = Budget {
        steps: if quick { 300 } else { 800 },
        batch: 64,
        hidden: 32,
        layers: 2,
        n_times: 8,
        cfm_width: 64,
        n_eval: EVAL_POINTS,
        n_eval_ablation: if quick { 1000 } else { EVAL_POINTS },
        seeds: vec![0, 1, 2],
    };
    let knobs = CalmKnobs {
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
        anchored: None,
    };
    // The repaired model (the program's defaults): see `docs/quality.md`, "heads".
    let best = CalmKnobs {
        head: DEFAULT_HEAD,
        predict: DEFAULT_PREDICT,
        sigma: DEFAULT_SIGMA,
        n_times: calmflow::model::RECOMMENDED_N_TIMES,
        anneal: calmflow::train::RECOMMENDED_ANNEAL_TEMPERATURE,
        mixture_init: calmflow::train::RECOMMENDED_MIXTURE_INIT,
        ..knobs
    };
    let mut progress = StageProgress::load(
        out.path("progress.json"),
        serde_json::to_value(&budget).unwrap_or_default(),
        fresh,
    );
    if progress.resumed > 0 {
        eprintln!(
            "quality: resuming with {} finished table(s) from {} (--fresh starts over)",
            progress.resumed,
            out.path("progress.json").display()
        );
    }
    let mut tasks = vec![
        task(
            "8-Gaussians → moons",
            2,
            || Box::new(EightGaussians::default()),
            || Box::new(Moons::default()),
        ),
        task(
            "N(0, I) → moons",
            2,
            || normal(2),
            || Box::new(Moons::default()),
        ),
        task(
            "N(0, I) → checkerboard",
            2,
            || normal(2),
            || Box::new(Checkerboard),
        ),
        task("N(0, I) → circles", 2, || normal(2), || Box::new(Circles)),
    ];
    let high_dims: Vec<usize> = if quick { vec![10] } else { vec![10, 50, 100] };
    for d in high_dims {
        tasks.push(task(
            &format!("N(0, I) → 8 Gaussians, D = {d}"),
            d,
            move || normal(d),
            move || mixture_target(MixturePair::NormalToEight, d),
        ));
    }
    // Laws that a few diagonal Gaussians do not model exactly: a curved surface with small
    // noise, a heavy-tailed multi-scale law, mixtures whose mode count differs from the
    // mixture head's components (unequal weights, rotated anisotropic covariances), and
    // real data (digits, cells). Each law's construction seed is fixed.
    let curved_dims: Vec<usize> = if quick { vec![10] } else { vec![10, 50] };
    for d in curved_dims {
        tasks.push(task(
            &format!("N(0, I) → curved surface, D = {d}"),
            d,
            move || normal(d),
            move || Box::new(CurvedSurface::new(d, 0.05, 41).expect("valid surface")),
        ));
    }
    tasks.push(task(
        "N(0, I) → multi-scale Student t (ν = 5), D = 10",
        10,
        || normal(10),
        || Box::new(MultiScaleStudent::new(10, 5.0, 0.1, 3.0, 43).expect("valid law")),
    ));
    for k in [3, 25] {
        tasks.push(task(
            &format!("N(0, I) → {k} anisotropic Gaussians, D = 10"),
            10,
            || normal(10),
            move || Box::new(AnisotropicMixture::seeded(k, 10, 2.0, 47).expect("valid mixture")),
        ));
    }
    tasks.push(digits_task());
    tasks.push(cells_task());
    let pair_dims: Vec<usize> = if quick { vec![100] } else { vec![100, 1000] };
    for d in pair_dims {
        tasks.push(task(
            &format!("2 Gaussians → 4 Gaussians, D = {d}"),
            d,
            move || mixture_source(MixturePair::TwoToFour, d),
            move || mixture_target(MixturePair::TwoToFour, d),
        ));
    }
    // Ablations on 2 → 4 Gaussians (D = 4 in quick mode, 10 in the full suite; the
    // cross-polytope target of 4 means needs D ≥ 3).
    let ad = if quick { 4 } else { 10 };
    let pair_task = task(
        &format!("2 Gaussians → 4 Gaussians, D = {ad}"),
        ad,
        move || mixture_source(MixturePair::TwoToFour, ad),
        move || mixture_target(MixturePair::TwoToFour, ad),
    );
    // Build every distribution once before hours of training depend on them.
    for t in tasks.iter().chain(std::iter::once(&pair_task)) {
        let mut rng = seeded_rng(0);
        let _ = ((t.source)().sample(1, &mut rng), t.target_points(1, 0));
    }
    let digits = digits_task();
    if let Some(i) = args.iter().position(|a| a == "--probe") {
        probe(&args[i + 1..], &tasks, &pair_task, &budget, best);
        return;
    }

    let mut md_parts = Vec::new();
    let mut task_results = Vec::new();
    let mut ablation_results = Vec::new();
    let mut seconds = 0.0;
    for t in tasks.iter().filter(|t| wanted(&t.name)) {
        let saved = if progress.is_done(&t.name) {
            " (saved by an earlier run)"
        } else {
            ""
        };
        eprintln!("quality: {}{saved}", t.name);
        let stage = progress.stage(&t.name, || {
            let r = compare(t, &budget, knobs, &out);
            (task_table(&r), serde_json::to_value(&r).unwrap_or_default())
        });
        md_parts.push(stage.markdown);
        task_results.push(stage.result);
        seconds += stage.seconds;
    }

    // The heads on every task but the two 2-D ones the heads do not separate, against CFM
    // at equal steps and equal training time: the default first (its training time sets
    // the equal-time CFM budget), the mixture over endpoints (the default before it), the
    // mixture over increments (the held-out study's form) and the paper's head; the
    // probes in docs/heads.md cover cvae.
    let mut heads: Vec<(String, CalmKnobs)> = vec![(format!("CaLMFlow {}", describe(&best)), best)];
    // The default until 2026-12-07: the mixture over endpoints in one step, k-means start.
    let mixture = CalmKnobs {
        head: HeadKind::Mixture,
        ..best
    };
    heads.push((format!("CaLMFlow {}", describe(&mixture)), mixture));
    let increments = CalmKnobs {
        head: HeadKind::Mixture,
        predict: Predict::Increment,
        sigma: 0.0,
        n_times: knobs.n_times,
        anneal: knobs.anneal,
        ..best
    };
    heads.push((format!("CaLMFlow {}", describe(&increments)), increments));
    heads.push((format!("CaLMFlow {} (paper)", describe(&knobs)), knobs));
    let heads_tasks: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.name != "N(0, I) → moons" && t.name != "N(0, I) → circles")
        .collect();
    for t in heads_tasks {
        let key = format!("heads: {}", t.name);
        if !wanted(&key) && !wanted("heads") {
            continue;
        }
        eprintln!("quality: {key}");
        let stage = progress.stage(&key, || {
            let r = heads_table(t, &budget, &heads, &out);
            (task_table(&r), serde_json::to_value(&r).unwrap_or_default())
        });
        md_parts.push(stage.markdown);
        task_results.push(stage.result);
        seconds += stage.seconds;
    }

    // The heads tables' comparison with OT-CFM again, on four times the points, where the
    // 2000-point Fréchet distance is within the two-sample noise (D ≥ 50).
    let targets_budget = Budget {
        n_eval: if quick {
            EVAL_POINTS
        } else {
            TARGET_EVAL_POINTS
        },
        ..budget.clone()
    };
    for t in tasks
        .iter()
        .filter(|t| t.name.starts_with("N(0, I) → 8 Gaussians"))
    {
        let key = format!("targets: {}", t.name);
        if !wanted(&key) && !wanted("targets") {
            continue;
        }
        eprintln!("quality: {key}");
        let stage = progress.stage(&key, || {
            let r = targets_table(t, &targets_budget, best);
            (task_table(&r), serde_json::to_value(&r).unwrap_or_default())
        });
        md_parts.push(stage.markdown);
        task_results.push(stage.result);
        seconds += stage.seconds;
    }

    let p_values: Vec<usize> = if quick {
        vec![1, 2, 4]
    } else {
        vec![1, 2, 4, 8]
    };
    let n_values: Vec<usize> = if quick {
        vec![4, 8, 16]
    } else {
        vec![4, 8, 16, 32]
    };
    type AblationRun<'a> = Box<dyn FnOnce() -> Ablation + 'a>;
    let ablations: Vec<(&str, AblationRun<'_>)> = vec![
        (
            "trajectories per sequence P",
            Box::new(|| {
                ablation(
                    "trajectories per sequence P",
                    &pair_task,
                    &budget,
                    p_values
                        .iter()
                        .map(|&p| (format!("P = {p}"), CalmKnobs { n_traj: p, ..knobs }))
                        .collect(),
                )
            }),
        ),
        (
            "time points N",
            Box::new(|| {
                ablation(
                    "time points N",
                    &pair_task,
                    &budget,
                    n_values
                        .iter()
                        .map(|&n| {
                            (
                                format!("N = {n}"),
                                CalmKnobs {
                                    n_times: n,
                                    ..knobs
                                },
                            )
                        })
                        .collect(),
                )
            }),
        ),
        (
            "variational decoder",
            Box::new(|| {
                ablation(
                    "variational decoder",
                    &pair_task,
                    &budget,
                    vec![
                        ("on (τ = 1)".into(), knobs),
                        (
                            "off (deterministic)".into(),
                            CalmKnobs {
                                variational: false,
                                temperature: 0.0,
                                ..knobs
                            },
                        ),
                    ],
                )
            }),
        ),
        (
            "context",
            Box::new(|| {
                ablation(
                    "context: Volterra (whole history) vs Markov (current time point)",
                    &pair_task,
                    &budget,
                    context_pair(knobs),
                )
            }),
        ),
        (
            "context, repaired head",
            Box::new(|| {
                let noisy = CalmKnobs {
                    sigma: if best.sigma > 0.0 { best.sigma } else { 0.1 },
                    ..best
                };
                ablation(
                    &format!(
                        "context with the repaired head ({}): Volterra vs Markov",
                        describe(&noisy)
                    ),
                    &pair_task,
                    &budget,
                    context_pair(noisy),
                )
            }),
        ),
        (
            "time points N, default head, digits",
            Box::new(|| {
                ablation(
                    "time points N with the default head",
                    &digits,
                    &budget,
                    [2, 4, 8]
                        .iter()
                        .map(|&n| (format!("N = {n}"), CalmKnobs { n_times: n, ..best }))
                        .collect(),
                )
            }),
        ),
        (
            "context noise, default head, digits",
            Box::new(|| {
                let eight = CalmKnobs { n_times: 8, ..best };
                ablation(
                    "remedies for the roll-out with the default head",
                    &digits,
                    &budget,
                    vec![
                        ("N = 2".into(), best),
                        ("N = 8".into(), eight),
                        (
                            "N = 8, context noise 1".into(),
                            CalmKnobs {
                                context_noise: 1.0,
                                ..eight
                            },
                        ),
                        (
                            "N = 8, context noise 2".into(),
                            CalmKnobs {
                                context_noise: 2.0,
                                ..eight
                            },
                        ),
                        (
                            "N = 8, bridge σ 1, context noise 1".into(),
                            CalmKnobs {
                                sigma: 1.0,
                                context_noise: 1.0,
                                ..eight
                            },
                        ),
                    ],
                )
            }),
        ),
        (
            "context, default head, digits",
            Box::new(|| {
                let four = CalmKnobs { n_times: 4, ..best };
                ablation(
                    &format!(
                        "context with the default head ({}): Volterra vs Markov",
                        describe(&four)
                    ),
                    &digits,
                    &budget,
                    context_pair(four),
                )
            }),
        ),
        (
            "temperature",
            Box::new(|| temperature_sweep(&pair_task, &budget, knobs, &[0.0, 0.25, 0.5, 1.0, 1.5])),
        ),
        (
            "spatial tokens K",
            Box::new(|| {
                ablation(
                    "spatial tokens K",
                    &digits,
                    &budget,
                    [1, 2, 4, 8]
                        .iter()
                        .map(|&k| {
                            (
                                format!("K = {k}"),
                                CalmKnobs {
                                    n_space: k,
                                    ..knobs
                                },
                            )
                        })
                        .collect(),
                )
            }),
        ),
    ];
    for (name, run) in ablations {
        let key = format!("ablation: {name}");
        if !wanted(&key) {
            continue;
        }
        let saved = if progress.is_done(&key) {
            " (saved by an earlier run)"
        } else {
            ""
        };
        eprintln!("quality: {key}{saved}");
        let stage = progress.stage(&key, || {
            let mut a = run();
            plot_ablation(&mut a, &out);
            (
                ablation_table(&a),
                serde_json::to_value(&a).unwrap_or_default(),
            )
        });
        // A saved ablation is drawn again, so that its image follows the plotting code
        // (and exists in a fresh output folder) without training anything.
        if !saved.is_empty() {
            match serde_json::from_value::<Ablation>(stage.result.clone()) {
                Ok(mut a) => plot_ablation(&mut a, &out),
                Err(e) => eprintln!("quality: {key}: saved result not redrawn: {e}"),
            }
        }
        md_parts.push(stage.markdown);
        ablation_results.push(stage.result);
        seconds += stage.seconds;
    }

    if !only.is_empty() {
        eprintln!(
            "quality: saved {} table(s) to {}; a run without --only writes the report",
            md_parts.len(),
            out.path("progress.json").display()
        );
        return;
    }
    let mut md = format!(
        "## Quality suite{}\n\nWritten by `cargo xtask bench --suite quality{}` in {:.0} min on this machine (summed over its tables). \
         Every method trains for the same {} steps of batch {} on the same data; CaLMFlow: H = {}, {} layers, \
         N = {}, β = 0.01, exact-OT coupling, τ = 1, no dropout; CFM: velocity MLP width {}, σ = 0.01, \
         dopri5. Metrics on {} generated points against a fresh target sample, mean ± std over seeds {:?}; \
         the noise floor scores a second independent target sample. NFE: dopri5 function evaluations \
         (CFM) or CaLMFlow's decoding steps with the KV cache times its head's evaluations per step \
         (16 for the flow head's 8 midpoint steps, 1 for the others). Ablations score {} points (the digits: \
         600 held-out digits, against as many generated; 1197 digits train; the cells: 200 held-out cells, 500 train). At D ≥ 50 a W2 below the \
         noise floor marks under-dispersed samples (2000 points in high dimension reward shrinkage), \
         not a better fit: read W2 there with MMD, energy and Fréchet. The targets tables score the \
         default head and OT-CFM again on {} points (no W2), where the heads tables' 2000-point \
         Fréchet distance at D = 100 is within the two-sample noise.\n",
        if quick { " (quick)" } else { "" },
        if quick { " --quick" } else { "" },
        seconds / 60.0,
        budget.steps,
        budget.batch,
        budget.hidden,
        budget.layers,
        budget.n_times,
        budget.cfm_width,
        budget.n_eval,
        budget.seeds,
        budget.n_eval_ablation,
        targets_budget.n_eval
    );
    for part in &md_parts {
        md.push_str(part);
    }
    let json = serde_json::json!({
        "quick": quick,
        "budget": budget,
        "seconds": seconds,
        "tasks": task_results,
        "ablations": ablation_results,
    });
    let write = |path: PathBuf, text: &str| match calmflow::data::write_atomically(&path, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    }) {
        Ok(()) => eprintln!("quality: wrote {}", path.display()),
        Err(e) => {
            eprintln!("quality: {}: {e}", path.display());
            std::process::exit(1);
        }
    };
    write(out.path("md"), &md);
    write(
        out.path("json"),
        &serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
    progress.finish();
}
