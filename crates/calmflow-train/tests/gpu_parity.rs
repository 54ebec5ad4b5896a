//! Training and generation on a GPU backend (wgpu: `cargo xtask test --backend wgpu`; CUDA:
//! `cargo xtask gpu-check`) against the CPU backend: the same starting weights (written on
//! the CPU, loaded on the GPU), the same data and seeds give the same losses and samples
//! within float32 tolerances.
//!
//! Randomness drawn on the device differs between backends, so the CaLMFlow model here is
//! the deterministic-decoder variant without dropout, and generation runs at temperature 0;
//! every other draw (data, couplings, times) comes from the host RNG both runs share.
//!
//! Tolerances: per-step losses agree to 1e-4, and sampling from the same weights to 1e-4.
//! Models trained separately agree only to ~1e-2: AdamW moves a parameter whose gradient is
//! near zero by up to the learning rate per step whatever that gradient's rounding, so two
//! backends (and two wgpu runs, whose autotuned kernels may differ) can differ by up to
//! lr · steps = 1.5e-2 in such parameters. Measured on lavapipe: 2e-3 in the samples.
//!
//! A backend whose matrix products round more coarsely (burn-cuda's TF32 on tensor-core
//! GPUs) gets ten times the rounding measured on that device where that is wider
//! ([`precision::float32_tolerance`]); the 1e-2 between separate trainings stays.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod backend;
#[path = "../../calmflow-model/tests/backend/precision.rs"]
mod precision;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use calmflow_data::{Sampler, seeded_rng};
use calmflow_model::CalmFlowConfig;
use calmflow_train::{
    CalmFlowSettings, CfmVariant, FlowData, FlowObjective, GenerationOptions, LogRecord, OdeSolver,
    PointSource, Silent, TrainConfig, Trainer, VelocityMlpConfig, cfm_sample, generate,
};
use ndarray::Array2;

type Cpu = Autodiff<NdArray<f32>>;
type Gpu = Autodiff<backend::TestBackend>;

/// Two Gaussian blobs in 2-D, the standard normal as the source.
fn data() -> FlowData {
    let target = Array2::from_shape_fn((512, 2), |(i, j)| {
        let centre = if i % 2 == 0 { 2.0 } else { -2.0 };
        centre + 0.3 * (((i * 7 + j * 13) % 17) as f32 / 17.0 - 0.5)
    });
    FlowData::new(
        PointSource::Sampler(Box::new(calmflow_data::StandardNormal { dim: 2 })),
        PointSource::points(target, "target").unwrap(),
        0.1,
        64,
        3,
    )
    .unwrap()
}

fn train_config(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 16,
        learning_rate: 3e-3,
        warmup_steps: 1,
        log_every: 1,
        validate_every: 0,
        ..TrainConfig::default()
    }
}

fn close(what: &str, a: &[f64], b: &[f64], relative: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().map(|x| x.abs()).fold(1.0, f64::max);
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        diff <= relative * scale,
        "{what}: CPU and GPU differ by {diff} (scale {scale}, tolerance {relative})"
    );
}

/// `into` (built from the same configuration as `from`) with `from`'s weights, moved
/// between backends through a weights file as a user would move them.
fn with_weights_of<B1: Backend, B2: Backend, M1: Module<B1>, M2: Module<B2>>(
    from: &M1,
    into: M2,
    device: &burn::tensor::Device<B2>,
) -> M2 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.mpk");
    calmflow_model::save_module(from, &path).unwrap();
    calmflow_model::load_module(into, &path, device).unwrap()
}

/// Trains `model` for the steps of `train` on `device`.
fn trained<B, M>(
    model: M,
    json: serde_json::Value,
    settings: M::Settings,
    train: TrainConfig,
    device: burn::tensor::Device<B>,
) -> Trainer<B, M>
where
    B: AutodiffBackend,
    M: FlowObjective<B> + AutodiffModule<B>,
    M::InnerModule: FlowObjective<B::InnerBackend, Settings = M::Settings>,
{
    let mut trainer = Trainer::new(model, json, settings, train, data(), device).unwrap();
    trainer.run(&mut Silent).unwrap();
    trainer
}

/// The per-step losses of the two runs agree to 1e-4 (relative).
fn assert_same_losses(cpu: &[LogRecord], gpu: &[LogRecord]) {
    let losses = |h: &[LogRecord]| h.iter().map(|r| r.loss).collect::<Vec<_>>();
    close(
        "losses",
        &losses(cpu),
        &losses(gpu),
        precision::float32_tolerance::<backend::TestBackend>(1e-4),
    );
    assert!(cpu.len() == 5 && cpu[0].loss > 0.0);
}

/// [`close`] for two sample sets.
fn close_samples(what: &str, a: &Array2<f32>, b: &Array2<f32>, relative: f64) {
    let as_f64 = |x: &Array2<f32>| x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    close(what, &as_f64(a), &as_f64(b), relative);
}

#[test]
fn calmflow_training_and_generation_match_the_cpu() {
    let config = CalmFlowConfig::new(2)
        .with_n_space(2)
        .with_hidden(16)
        .with_layers(1)
        .with_heads(2)
        .with_dropout(0.0)
        .with_variational(false);
    let cpu_device = Default::default();
    <Cpu as Backend>::seed(&cpu_device, 1);
    let cpu_model = config.init::<Cpu>(&cpu_device).unwrap();
    let gpu_device = backend::device();
    let gpu_model = with_weights_of(
        &cpu_model,
        config.init::<Gpu>(&gpu_device).unwrap(),
        &gpu_device,
    );
    let settings = CalmFlowSettings {
        n_times: 4,
        n_traj: 2,
        ..CalmFlowSettings::default()
    };
    let json = serde_json::to_value(&config).unwrap();
    let cpu = trained(
        cpu_model,
        json.clone(),
        settings,
        train_config(5),
        cpu_device,
    );
    let gpu = trained(
        gpu_model,
        json,
        settings,
        train_config(5),
        gpu_device.clone(),
    );
    assert_same_losses(cpu.history(), gpu.history());

    let x0 = calmflow_data::StandardNormal { dim: 2 }.sample(20, &mut seeded_rng(9));
    let options = GenerationOptions {
        n_times: 4,
        n_traj: 2,
        temperature: 0.0,
        ..GenerationOptions::default()
    };
    let a = generate(
        &cpu.model().valid(),
        &x0,
        &options,
        None,
        false,
        &cpu_device,
    )
    .unwrap();
    let b = generate(
        &gpu.model().valid(),
        &x0,
        &options,
        None,
        false,
        &gpu_device,
    )
    .unwrap();
    close_samples("separately trained samples", &a.samples, &b.samples, 1e-2);
    // The GPU-trained weights, sampled on both backends.
    let gpu_trained = gpu.model().valid();
    let on_cpu = with_weights_of(
        &gpu_trained,
        config.init::<NdArray<f32>>(&cpu_device).unwrap(),
        &cpu_device,
    );
    let a = generate(&on_cpu, &x0, &options, None, false, &cpu_device).unwrap();
    let b = generate(&gpu_trained, &x0, &options, None, false, &gpu_device).unwrap();
    close_samples(
        "samples of the same weights",
        &a.samples,
        &b.samples,
        precision::float32_tolerance::<backend::TestBackend>(1e-4),
    );
}

#[test]
fn cfm_training_and_dopri5_sampling_match_the_cpu() {
    let config = VelocityMlpConfig::new(2).with_width(32);
    let cpu_device = Default::default();
    <Cpu as Backend>::seed(&cpu_device, 2);
    let cpu_model = config.init::<Cpu>(&cpu_device).unwrap();
    let gpu_device = backend::device();
    let gpu_model = with_weights_of(
        &cpu_model,
        config.init::<Gpu>(&gpu_device).unwrap(),
        &gpu_device,
    );
    let (settings, coupling) = CfmVariant::OtCfm.setup(0.1);
    let train = TrainConfig {
        coupling,
        ..train_config(5)
    };
    let json = serde_json::to_value(&config).unwrap();
    let cpu = trained(cpu_model, json.clone(), settings, train.clone(), cpu_device);
    let gpu = trained(gpu_model, json, settings, train, gpu_device.clone());
    assert_same_losses(cpu.history(), gpu.history());

    let x0 = calmflow_data::StandardNormal { dim: 2 }.sample(20, &mut seeded_rng(10));
    let solver = OdeSolver::default();
    let a = cfm_sample(&cpu.model().valid(), &x0, None, &solver, false, &cpu_device).unwrap();
    let b = cfm_sample(&gpu.model().valid(), &x0, None, &solver, false, &gpu_device).unwrap();
    close_samples("separately trained samples", &a.samples, &b.samples, 1e-2);
    // The GPU-trained weights, integrated on both backends: the same adaptive steps.
    let gpu_trained = gpu.model().valid();
    let on_cpu = with_weights_of(
        &gpu_trained,
        config.init::<NdArray<f32>>(&cpu_device).unwrap(),
        &cpu_device,
    );
    let a = cfm_sample(&on_cpu, &x0, None, &solver, false, &cpu_device).unwrap();
    let b = cfm_sample(&gpu_trained, &x0, None, &solver, false, &gpu_device).unwrap();
    close_samples(
        "samples of the same weights",
        &a.samples,
        &b.samples,
        precision::float32_tolerance::<backend::TestBackend>(1e-4),
    );
    // dopri5's step control divides the embedded error estimate, a difference of nearly
    // equal stages, by a 1e-4 tolerance: float32 products on both sides take the same
    // steps, while TF32 rounding (3e-4) moves the estimate enough to take others (measured
    // on an H200: 26 evaluations where the CPU takes 20, the samples within tolerance).
    if precision::matmul_rounding::<backend::TestBackend>() < 1e-6 {
        assert_eq!(a.stats.nfe, b.stats.nfe);
    }
}
