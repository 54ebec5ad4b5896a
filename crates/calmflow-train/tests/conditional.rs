//! Conditional training on the test backend: CaLMFlow reading prompts and CFM reading
//! one-hot labels both learn two condition-dependent Gaussian maps.

mod backend;
mod prompts;

use std::sync::Mutex;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use calmflow_data::{Rng, Sampler, seeded_rng};
use calmflow_model::CalmFlowConfig;
use calmflow_tokenize::PromptTokenizer;
use calmflow_train::{
    CalmFlowSettings, CfmVariant, FlowData, GenerationOptions, OdeSolver, PointSource, Silent,
    TrainConfig, Trainer, VelocityMlpConfig, cfm_sample, generate,
};
use ndarray::Array2;
use rand_distr::{Distribution, Normal};

type B = Autodiff<backend::TestBackend>;

static RNG_LOCK: Mutex<()> = Mutex::new(());

struct StdNormal;
impl Sampler for StdNormal {
    fn name(&self) -> String {
        "N(0, 1)".into()
    }
    fn dim(&self) -> usize {
        1
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        let d = Normal::new(0.0, 1.0).expect("valid normal");
        Array2::from_shape_fn((n, 1), |_| d.sample(rng) as f32)
    }
}

const MEANS: [f64; 2] = [-2.0, 2.0];

/// 400 points: condition 0 ("lo") ~ N(−2, 0.3²), condition 1 ("hi") ~ N(2, 0.3²); the
/// table's prompts come from a template and a word tokenizer.
fn data(seed: u64) -> (FlowData, PromptTokenizer) {
    let mut rng = seeded_rng(seed);
    let noise = Normal::new(0.0, 0.3).unwrap();
    let conditions: Vec<usize> = (0..400).map(|i| i % 2).collect();
    let target = Array2::from_shape_fn((400, 1), |(i, _)| {
        (MEANS[conditions[i]] + noise.sample(&mut rng)) as f32
    });
    let (table, tokenizer) = prompts::level_table();
    let data = FlowData::conditional(
        PointSource::Sampler(Box::new(StdNormal)),
        target,
        conditions,
        table,
        0.1,
        seed,
    )
    .unwrap();
    (data, tokenizer)
}

fn mean(x: &Array2<f32>) -> f64 {
    x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64
}

#[test]
fn examples_draw_all_their_points_from_one_condition() {
    let (data, _) = data(1);
    let cd = data.conditions.as_ref().unwrap();
    assert_eq!(cd.train.len() + cd.validation.len(), 400);
    let calmflow_train::PointSource::Points(target) = &data.target else {
        panic!("conditional targets are point sets")
    };
    let (x1, conditions) = cd.draw(target, 50, 4, &mut seeded_rng(2));
    assert_eq!((x1.nrows(), conditions.len()), (200, 50));
    for (e, &c) in conditions.iter().enumerate() {
        for r in 0..4 {
            let v = x1[[e * 4 + r, 0]] as f64;
            assert!(
                (v - MEANS[c]).abs() < 1.5,
                "example {e} row {r}: {v} in condition {c}"
            );
        }
    }
    let (rows, per_example) = cd.validation_examples(4);
    assert_eq!(rows.len(), per_example.len() * 4);
    for (e, &c) in per_example.iter().enumerate() {
        assert!(
            rows[e * 4..e * 4 + 4]
                .iter()
                .all(|&r| cd.validation[r] == c)
        );
    }
}

/// One-hot conditional I-CFM: each condition's samples centre on its own mean (±0.15).
#[test]
fn conditional_cfm_separates_the_conditions() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    B::seed(&device, 3);
    let (data, _) = data(3);
    let table = data.conditions.as_ref().unwrap().table.clone();
    let config = VelocityMlpConfig::new(1)
        .with_width(32)
        .with_cond_dim(table.feature_dim());
    let model = config.init::<B>(&device).unwrap();
    let (settings, coupling) = CfmVariant::OtCfm.setup(0.01);
    let train = TrainConfig {
        steps: 600,
        batch_size: 128,
        learning_rate: 3e-3,
        coupling,
        validate_every: 200,
        ..TrainConfig::default()
    };
    let json = serde_json::to_value(&config).unwrap();
    let mut trainer = Trainer::new(model, json, settings, train, data, backend::device()).unwrap();
    let summary = trainer.run(&mut Silent).unwrap();
    assert!(summary.final_val_loss.is_finite());
    let model = trainer.model().clone().valid();
    let x0 = StdNormal.sample(1000, &mut seeded_rng(6));
    for (c, want) in MEANS.iter().enumerate() {
        let code = table.features(&[c], 1);
        let s = cfm_sample(
            &model,
            &x0,
            Some(&code),
            &OdeSolver::Rk4 { steps: 20 },
            false,
            &device,
        )
        .unwrap();
        let m = mean(&s.samples);
        assert!((m - want).abs() < 0.15, "condition {c}: mean {m}");
    }
    assert!(cfm_sample(&model, &x0, None, &OdeSolver::default(), false, &device).is_err());
}

/// Prompted CaLMFlow with a frozen token-embedding table: each prompt's samples centre on
/// its condition's mean (±0.3), and the table is unchanged by training.
#[test]
fn prompted_calmflow_separates_the_conditions() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let (data, tokenizer) = data(4);
    let table = data.conditions.as_ref().unwrap().table.clone();
    B::seed(&device, 11);
    let config = CalmFlowConfig::new(1)
        .with_hidden(16)
        .with_layers(1)
        .with_heads(2)
        .with_dropout(0.0)
        .with_vocab_size(tokenizer.vocab_size());
    let model = config.init::<B>(&device).unwrap();
    let before = table
        .embed(&model.valid(), &[0, 1], &device)
        .unwrap()
        .embeddings;
    let train = TrainConfig {
        steps: 400,
        batch_size: 64,
        learning_rate: 3e-3,
        warmup_steps: 20,
        validate_every: 400,
        ..TrainConfig::default()
    };
    let settings = CalmFlowSettings {
        n_times: 4,
        beta: 0.05,
        ..CalmFlowSettings::default()
    };
    let json = serde_json::to_value(&config).unwrap();
    let mut trainer = Trainer::new(model, json, settings, train, data, backend::device()).unwrap();
    let summary = trainer.run(&mut Silent).unwrap();
    assert!(summary.final_val_loss.is_finite());
    let model = trainer.model().clone().valid();
    let after = table.embed(&model, &[0, 1], &device).unwrap().embeddings;
    assert_eq!(
        before.into_data(),
        after.into_data(),
        "frozen embeddings moved"
    );
    let x0 = StdNormal.sample(1000, &mut seeded_rng(5));
    let opts = GenerationOptions {
        n_times: 4,
        temperature: 1.0,
        ..Default::default()
    };
    for (c, want) in MEANS.iter().enumerate() {
        let prompt = table.embed(&model, &[c], &device).unwrap();
        let g = generate(&model, &x0, &opts, Some(&prompt), false, &device).unwrap();
        let m = mean(&g.samples);
        assert!((m - want).abs() < 0.3, "condition {c}: mean {m}");
    }
}

/// A model that cannot read the conditions is refused before training.
#[test]
fn models_that_cannot_read_the_conditions_are_refused() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let no_vocab = CalmFlowConfig::new(1)
        .with_hidden(8)
        .with_layers(1)
        .with_heads(2);
    let model = no_vocab.init::<B>(&device).unwrap();
    let json = serde_json::to_value(&no_vocab).unwrap();
    let e = Trainer::new(
        model,
        json,
        CalmFlowSettings::default(),
        TrainConfig::default(),
        data(0).0,
        backend::device(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("vocab_size"), "{e}");
    let unconditional = VelocityMlpConfig::new(1);
    let model = unconditional.init::<B>(&device).unwrap();
    let json = serde_json::to_value(&unconditional).unwrap();
    let e = Trainer::new(
        model,
        json,
        CfmVariant::ICfm.setup(0.01).0,
        TrainConfig::default(),
        data(0).0,
        backend::device(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("cond_dim"), "{e}");
}
