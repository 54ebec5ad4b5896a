//! End-to-end checks of the trainer on the test backend: exact resumption, learning a 1-D
//! Gaussian map, typed failures.

mod backend;

use std::sync::Mutex;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use calmflow_data::{Rng, Sampler, seeded_rng};
use calmflow_model::CalmFlowConfig;
use calmflow_train::{
    CalmFlowSettings, CfmVariant, Checkpoint, FlowData, GenerationOptions, OdeSolver, PointSource,
    Silent, TrainConfig, TrainError, Trainer, VelocityMlpConfig, cfm_sample, generate,
};
use ndarray::Array2;
use rand_distr::{Distribution, Normal};

type B = Autodiff<backend::TestBackend>;

/// burn-ndarray's RNG is process-global: tests that seed it must not interleave.
static RNG_LOCK: Mutex<()> = Mutex::new(());

/// N(mean, std²) in one dimension.
struct Gaussian1d {
    mean: f64,
    std: f64,
}

impl Sampler for Gaussian1d {
    fn name(&self) -> String {
        format!("N({}, {}²)", self.mean, self.std)
    }
    fn dim(&self) -> usize {
        1
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        let d = Normal::new(self.mean, self.std).expect("valid normal");
        Array2::from_shape_fn((n, 1), |_| d.sample(rng) as f32)
    }
}

fn gaussian_data(seed: u64) -> FlowData {
    FlowData::new(
        PointSource::Sampler(Box::new(Gaussian1d {
            mean: 0.0,
            std: 1.0,
        })),
        PointSource::Sampler(Box::new(Gaussian1d {
            mean: 3.0,
            std: 0.5,
        })),
        0.1,
        256,
        seed,
    )
    .unwrap()
}

fn tiny_model(
    device: &burn::tensor::Device<B>,
) -> (CalmFlowConfig, calmflow_model::CalmFlowModel<B>) {
    B::seed(device, 11);
    let config = CalmFlowConfig::new(1)
        .with_hidden(16)
        .with_layers(1)
        .with_heads(2);
    let model = config.init::<B>(device).unwrap();
    (config, model)
}

fn settings() -> CalmFlowSettings {
    CalmFlowSettings {
        n_times: 4,
        ..CalmFlowSettings::default()
    }
}

/// Six steps in one go, or three, a checkpoint, a fresh process state and three more:
/// the same losses, bit for bit, and the same weights.
#[test]
fn resumed_training_repeats_the_uninterrupted_run() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let train = TrainConfig {
        steps: 6,
        batch_size: 8,
        log_every: 1,
        validate_every: 0,
        checkpoint_every: 3,
        warmup_steps: 2,
        ..TrainConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, model) = tiny_model(&device);
    let json = serde_json::to_value(&config).unwrap();
    let mut straight = Trainer::new(
        model,
        json.clone(),
        settings(),
        train.clone(),
        gaussian_data(1),
        backend::device(),
    )
    .unwrap();
    straight.run(&mut Silent).unwrap();
    let want: Vec<f64> = straight.history().iter().map(|r| r.loss).collect();

    let (_, model) = tiny_model(&device);
    let mut part = Trainer::new(
        model,
        json.clone(),
        settings(),
        train.clone(),
        gaussian_data(1),
        backend::device(),
    )
    .unwrap()
    .with_checkpoints(dir.path(), serde_json::Value::Null);
    part.run_until(3, &mut Silent).unwrap();
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(checkpoint.state.step, 3);
    let stored: CalmFlowConfig = checkpoint.config_field("model").unwrap();
    assert_eq!(stored, config);
    // A differently initialised model: everything must come from the checkpoint.
    B::seed(&device, 999);
    let model = config.init::<B>(&device).unwrap();
    let mut resumed = Trainer::new(
        model,
        json,
        settings(),
        train,
        gaussian_data(1),
        backend::device(),
    )
    .unwrap()
    .resume_from(&checkpoint)
    .unwrap();
    resumed.run(&mut Silent).unwrap();
    let mut got: Vec<f64> = part.history().iter().map(|r| r.loss).collect();
    got.extend(resumed.history().iter().map(|r| r.loss));
    assert_eq!(got, want);
    let a = straight.model().clone().valid();
    let b = resumed.model().clone().valid();
    let x0 = Array2::from_shape_fn((5, 1), |(i, _)| i as f32 - 2.0);
    let opts = GenerationOptions {
        n_times: 4,
        temperature: 0.0,
        ..Default::default()
    };
    let ga = generate(&a, &x0, &opts, None, false, &device).unwrap();
    let gb = generate(&b, &x0, &opts, None, false, &device).unwrap();
    assert_eq!(ga.samples, gb.samples);
}

fn mean_std(x: &Array2<f32>) -> (f64, f64) {
    let n = x.nrows() as f64;
    let mean = x.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// N(0, 1) → N(3, 0.5²) on a 4-point grid in 400 steps. Over initialisation seeds 11–18
/// on the CPU the generated mean was 2.75–2.99 (400 steps leave it slightly short) and the
/// spread 0.35–0.47; other backends draw other initial weights and noise. Asserted: the
/// mean within 0.3 of 3 (the source's is 0) and the spread within 0.2 of 0.5.
#[test]
fn calmflow_learns_a_gaussian_map() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    B::seed(&device, 11);
    let config = CalmFlowConfig::new(1)
        .with_hidden(16)
        .with_layers(1)
        .with_heads(2)
        .with_dropout(0.0);
    let model = config.init::<B>(&device).unwrap();
    let train = TrainConfig {
        steps: 400,
        batch_size: 64,
        learning_rate: 3e-3,
        warmup_steps: 20,
        log_every: 50,
        validate_every: 0,
        ..TrainConfig::default()
    };
    let json = serde_json::to_value(&config).unwrap();
    let settings = CalmFlowSettings {
        beta: 0.05,
        ..settings()
    };
    let mut trainer = Trainer::new(
        model,
        json,
        settings,
        train,
        gaussian_data(2),
        backend::device(),
    )
    .unwrap();
    let summary = trainer.run(&mut Silent).unwrap();
    // Drawing 400 batches on the host takes some, not all, of the training time.
    assert!(
        summary.data_seconds > 0.0 && summary.data_seconds < summary.seconds,
        "{} of {} s drawing batches",
        summary.data_seconds,
        summary.seconds
    );
    let first = trainer.history()[0].loss;
    assert!(
        summary.final_loss < 0.5 * first,
        "{first} → {}",
        summary.final_loss
    );
    let model = trainer.model().clone().valid();
    let x0 = Gaussian1d {
        mean: 0.0,
        std: 1.0,
    }
    .sample(2000, &mut seeded_rng(5));
    let opts = GenerationOptions {
        n_times: 4,
        temperature: 1.0,
        ..Default::default()
    };
    let g = generate(&model, &x0, &opts, None, true, &device).unwrap();
    let (mean, std) = mean_std(&g.samples);
    assert!((mean - 3.0).abs() < 0.3, "mean {mean}");
    assert!((std - 0.5).abs() < 0.2, "std {std}");
    let t = g.trajectories.unwrap();
    assert_eq!(t.dim(), (2000, 4, 1));
    assert_eq!(t[[7, 0, 0]], x0[[7, 0]]);
}

/// I-CFM on the same map with RK4: mean within 0.1, spread within 0.1.
#[test]
fn cfm_learns_a_gaussian_map() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    B::seed(&device, 3);
    let config = VelocityMlpConfig::new(1).with_width(32);
    let model = config.init::<B>(&device).unwrap();
    let (settings, coupling) = CfmVariant::ICfm.setup(0.01);
    let train = TrainConfig {
        steps: 600,
        batch_size: 128,
        learning_rate: 3e-3,
        coupling,
        validate_every: 0,
        ..TrainConfig::default()
    };
    let json = serde_json::to_value(&config).unwrap();
    let mut trainer = Trainer::new(
        model,
        json,
        settings,
        train,
        gaussian_data(3),
        backend::device(),
    )
    .unwrap();
    trainer.run(&mut Silent).unwrap();
    let model = trainer.model().clone().valid();
    let x0 = Gaussian1d {
        mean: 0.0,
        std: 1.0,
    }
    .sample(2000, &mut seeded_rng(6));
    let s = cfm_sample(
        &model,
        &x0,
        None,
        &OdeSolver::Rk4 { steps: 20 },
        false,
        &device,
    )
    .unwrap();
    assert_eq!(s.stats.nfe, 80);
    let (mean, std) = mean_std(&s.samples);
    assert!((mean - 3.0).abs() < 0.1, "mean {mean}");
    assert!((std - 0.5).abs() < 0.1, "std {std}");
}

/// Values whose squares overflow f32 make the first loss infinite: a typed error naming
/// the step, not a panic or a NaN model.
#[test]
fn non_finite_loss_stops_training_with_the_step() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let (config, model) = tiny_model(&device);
    let huge = Array2::from_elem((20, 1), 1e30f32);
    let data = FlowData::new(
        PointSource::Sampler(Box::new(Gaussian1d {
            mean: 0.0,
            std: 1.0,
        })),
        PointSource::points(huge, "huge").unwrap(),
        0.2,
        10,
        0,
    )
    .unwrap();
    let train = TrainConfig {
        steps: 5,
        batch_size: 4,
        ..TrainConfig::default()
    };
    let json = serde_json::to_value(&config).unwrap();
    let mut trainer =
        Trainer::new(model, json, settings(), train, data, backend::device()).unwrap();
    let err = trainer.run(&mut Silent).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFiniteLoss { step: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("step 1"));
}

/// Bad settings and a checkpoint of another model are errors, not panics.
#[test]
fn bad_settings_and_foreign_checkpoints_are_errors() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let (config, model) = tiny_model(&device);
    let json = serde_json::to_value(&config).unwrap();
    let bad = TrainConfig {
        learning_rate: 0.0,
        ..TrainConfig::default()
    };
    assert!(
        Trainer::new(
            model,
            json.clone(),
            settings(),
            bad,
            gaussian_data(0),
            backend::device()
        )
        .is_err()
    );
    let (_, model) = tiny_model(&device);
    let one_time = CalmFlowSettings {
        n_times: 1,
        ..settings()
    };
    assert!(
        Trainer::new(
            model,
            json.clone(),
            one_time,
            TrainConfig::default(),
            gaussian_data(0),
            backend::device()
        )
        .is_err()
    );
    // The annealing's starting temperature is 0 (the data dimension), 1 (off) or above 1,
    // and it reaches 1 within the run.
    for (t0, fraction, field) in [
        (0.5, 0.5, "anneal_temperature = 0.5"),
        (f64::NAN, 0.5, "anneal_temperature = NaN"),
        (10.0, 0.0, "anneal_fraction = 0"),
        (10.0, 1.5, "anneal_fraction = 1.5"),
    ] {
        let (_, model) = tiny_model(&device);
        let e = Trainer::new(
            model,
            json.clone(),
            CalmFlowSettings {
                anneal_temperature: t0,
                anneal_fraction: fraction,
                ..settings()
            },
            TrainConfig::default(),
            gaussian_data(0),
            backend::device(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains(field), "{e}");
    }
    // A Markov context of 2 slots per time point cannot read sequences of 1 trajectory.
    let markov = config.clone().with_markov_slots(2);
    let e = Trainer::new(
        markov.init::<B>(&device).unwrap(),
        json.clone(),
        settings(),
        TrainConfig::default(),
        gaussian_data(0),
        backend::device(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("markov_slots = 2"), "{e}");

    // Train a 1-layer model briefly, then try to resume it into a 2-layer one.
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = tiny_model(&device);
    let train = TrainConfig {
        steps: 2,
        batch_size: 4,
        validate_every: 0,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(
        model,
        json.clone(),
        settings(),
        train.clone(),
        gaussian_data(0),
        backend::device(),
    )
    .unwrap()
    .with_checkpoints(dir.path(), serde_json::Value::Null);
    t.run(&mut Silent).unwrap();
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    let resume_with = |settings: CalmFlowSettings| {
        let (_, same) = tiny_model(&device);
        Trainer::new(
            same,
            json.clone(),
            settings,
            TrainConfig {
                steps: 4,
                ..train.clone()
            },
            gaussian_data(0),
            backend::device(),
        )
        .unwrap()
        .resume_from(&checkpoint)
    };
    // Resuming under settings that now resolve differently (here: annealing switched on)
    // would change the loss part-way through the run.
    let e = resume_with(CalmFlowSettings {
        anneal_temperature: 0.0,
        ..settings()
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("anneal_temperature = 1.0 in the checkpoint, 0.0 in this run"),
        "{e}"
    );
    // A setting that only shapes a fresh model's start may differ: the checkpoint's
    // weights are loaded over the start.
    resume_with(CalmFlowSettings {
        mixture_init: calmflow_train::MixtureInit::Kmeans,
        ..settings()
    })
    .unwrap();
    let bigger = config.clone().with_layers(2).init::<B>(&device).unwrap();
    let result = Trainer::new(
        bigger,
        json,
        settings(),
        TrainConfig { steps: 4, ..train },
        gaussian_data(0),
        backend::device(),
    )
    .unwrap()
    .resume_from(&checkpoint);
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("another configuration") || message.contains("parameters"),
        "{message}"
    );
    assert!(Checkpoint::open(&dir.path().join("nothing")).is_err());

    // A checkpoint of an older format is refused with a message that names both formats.
    let state = checkpoint.dir().join("state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    let old = text.replace(
        &format!("\"format\": {}", calmflow_train::CHECKPOINT_FORMAT),
        "\"format\": 1",
    );
    assert_ne!(old, text, "state.json names no format: {text}");
    std::fs::write(&state, old).unwrap();
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("checkpoint format 1 is not supported")
            && e.contains(&format!(
                "reads format {}",
                calmflow_train::CHECKPOINT_FORMAT
            ))
            && e.contains("four optional heads"),
        "{e}"
    );
}

/// Same seed, same samples; another seed, other samples; `n` not a multiple of `P` is
/// padded and trimmed; cache and re-encoding agree.
#[test]
fn generation_is_seeded_and_handles_partial_sequences() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let (_, model) = tiny_model(&device);
    let model = model.valid();
    let x0 = Array2::from_shape_fn((5, 1), |(i, _)| i as f32 * 0.3 - 0.6);
    let opts = GenerationOptions {
        n_times: 4,
        n_traj: 3,
        temperature: 0.5,
        batch_size: 1,
        seed: 4,
        ..Default::default()
    };
    let a = generate(&model, &x0, &opts, None, true, &device).unwrap();
    let b = generate(&model, &x0, &opts, None, true, &device).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.samples.dim(), (5, 1));
    assert_eq!(a.trajectories.as_ref().unwrap().dim(), (5, 4, 1));
    let c = generate(
        &model,
        &x0,
        &GenerationOptions { seed: 5, ..opts },
        None,
        false,
        &device,
    )
    .unwrap();
    assert_ne!(a.samples, c.samples);
    let cached = generate(
        &model,
        &x0,
        &GenerationOptions {
            temperature: 0.0,
            ..opts
        },
        None,
        false,
        &device,
    )
    .unwrap();
    let encoded = generate(
        &model,
        &x0,
        &GenerationOptions {
            temperature: 0.0,
            use_cache: false,
            ..opts
        },
        None,
        false,
        &device,
    )
    .unwrap();
    for (p, q) in cached.samples.iter().zip(encoded.samples.iter()) {
        assert!((p - q).abs() < 1e-4, "{p} vs {q}");
    }
    let bad = Array2::from_elem((2, 1), f32::NAN);
    assert!(generate(&model, &bad, &opts, None, false, &device).is_err());
    let wrong_dim = Array2::<f32>::zeros((2, 3));
    assert!(generate(&model, &wrong_dim, &opts, None, false, &device).is_err());
}
