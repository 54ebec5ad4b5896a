//! A GPU backend (wgpu: `cargo xtask test --backend wgpu`; CUDA: `cargo xtask gpu-check`)
//! against the CPU backend.
//!
//! The same seed draws different weights on the two backends, so each check initialises the
//! model once on the CPU, writes its weights to a file and loads them on the GPU — the path
//! a user takes to sample on one machine from a model trained on another. Inputs are drawn on
//! the CPU and copied over. Tolerances are float32 ones: reductions run in a different
//! order on a GPU, so single passes agree to ~1e-5 and 8-step roll-outs to ~1e-4; on a
//! backend whose matrix products round more coarsely (burn-cuda's TF32 on tensor-core GPUs)
//! each is widened to ten times the rounding measured on that device
//! ([`precision::float32_tolerance`]).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod backend;
#[path = "backend/precision.rs"]
mod precision;

use backend::rng_lock;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use calmflow_model::{CalmFlowConfig, CalmFlowModel, Prompt};

type Cpu = NdArray<f32>;
type Gpu = backend::TestBackend;

/// Largest absolute difference between two tensors of any backends, and the largest
/// magnitude in `a` (to read the difference relative to).
fn compare<const D: usize, B1: Backend, B2: Backend>(
    a: Tensor<B1, D>,
    b: Tensor<B2, D>,
) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a.into_data().convert::<f32>().to_vec().unwrap();
    let b: Vec<f32> = b.into_data().convert::<f32>().to_vec().unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0.0, f32::max);
    (diff, scale)
}

fn assert_close<const D: usize, B1: Backend, B2: Backend>(
    what: &str,
    a: Tensor<B1, D>,
    b: Tensor<B2, D>,
    tolerance: f32,
) {
    let tolerance = precision::float32_tolerance::<Gpu>(f64::from(tolerance)) as f32;
    let (diff, scale) = compare(a, b);
    assert!(
        diff <= tolerance * scale.max(1.0),
        "{what}: CPU and GPU differ by {diff} (largest CPU value {scale}, tolerance {tolerance})"
    );
}

fn to_gpu<const D: usize>(t: &Tensor<Cpu, D>) -> Tensor<Gpu, D> {
    Tensor::from_data(t.to_data(), &Default::default())
}

fn cpu_random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Cpu, D> {
    let device = Default::default();
    let _guard = rng_lock();
    Cpu::seed(&device, seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device)
}

fn config() -> CalmFlowConfig {
    CalmFlowConfig::new(3)
        .with_n_space(2)
        .with_hidden(32)
        .with_layers(2)
        .with_heads(4)
        .with_rotary_fraction(0.5)
        .with_vocab_size(8)
}

/// The model on `B1` (the CPU), and the same weights on `B2` (the GPU).
fn pair<B1: Backend, B2: Backend>(
    config: &CalmFlowConfig,
    seed: u64,
) -> (CalmFlowModel<B1>, CalmFlowModel<B2>) {
    let cpu_device = Default::default();
    let cpu = {
        let _guard = rng_lock();
        B1::seed(&cpu_device, seed);
        config.init::<B1>(&cpu_device).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.mpk");
    cpu.save_weights(&path).unwrap();
    let gpu_device = Default::default();
    let gpu = config
        .init::<B2>(&gpu_device)
        .unwrap()
        .load_weights(&path, &gpu_device)
        .unwrap();
    (cpu, gpu)
}

#[test]
fn teacher_forced_forward_matches_the_cpu() {
    let (cpu, gpu) = pair::<Cpu, Gpu>(&config(), 1);
    let slots = cpu_random([2, 6, 3], 2);
    let a = cpu.forward(slots.clone(), None, 0.0).unwrap();
    let b = gpu.forward(to_gpu(&slots), None, 0.0).unwrap();
    assert_close("decoded", a.decoded, b.decoded, 1e-5);
    assert_close("mu", a.mu.unwrap(), b.mu.unwrap(), 1e-5);
    assert_close("log_var", a.log_var.unwrap(), b.log_var.unwrap(), 1e-5);
}

/// Two prompts of lengths 2 and 1, left-padded to 3 tokens.
fn left_padded_prompt<B: Backend>(m: &CalmFlowModel<B>) -> Prompt<B> {
    let device = Default::default();
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, 3, 5, 0, 0, 6], [2, 3]), &device);
    let pad =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 0, 0, 1, 1, 0], [2, 3]), &device);
    m.embed_prompt(ids, Some(pad.bool())).unwrap()
}

#[test]
fn prompted_kv_cached_rollout_matches_the_cpu() {
    let (cpu, gpu) = pair::<Cpu, Gpu>(&config(), 3);
    let prompt_cpu = left_padded_prompt(&cpu);
    let prompt_gpu = left_padded_prompt(&gpu);
    let x0 = cpu_random([2, 2, 3], 4);
    for use_cache in [true, false] {
        let a = cpu
            .rollout(x0.clone(), 8, 0.0, use_cache, Some(&prompt_cpu))
            .unwrap();
        let b = gpu
            .rollout(to_gpu(&x0), 8, 0.0, use_cache, Some(&prompt_gpu))
            .unwrap();
        assert_close(&format!("roll-out (cache: {use_cache})"), a, b, 1e-4);
    }
}

/// Every parameter's gradient, flattened in visiting order.
struct Gradients<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    values: Vec<Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.values
                .push(g.into_data().convert::<f32>().to_vec().unwrap());
        }
    }
}

fn gradients<B: AutodiffBackend>(
    model: &CalmFlowModel<B>,
    slots: Tensor<B, 3>,
    target: Tensor<B, 3>,
) -> (f32, Vec<Vec<f32>>) {
    let out = model.forward(slots, None, 0.0).unwrap();
    let loss = (out.decoded - target).powi_scalar(2).mean();
    let value: f32 = loss.clone().into_data().convert::<f32>().to_vec().unwrap()[0];
    let grads = loss.backward();
    let mut visitor = Gradients::<B> {
        grads: &grads,
        values: Vec::new(),
    };
    model.visit(&mut visitor);
    (value, visitor.values)
}

#[test]
fn gradients_match_the_cpu() {
    let config = config().with_dropout(0.0);
    let (cpu, gpu) = pair::<Autodiff<Cpu>, Autodiff<Gpu>>(&config, 5);
    let slots = cpu_random([2, 6, 3], 6);
    let target = cpu_random([2, 6, 3], 7);
    let lift = |t: &Tensor<Cpu, 3>| {
        Tensor::<Autodiff<Cpu>, 3>::from_data(t.to_data(), &Default::default())
    };
    let lift_gpu = |t: &Tensor<Cpu, 3>| {
        Tensor::<Autodiff<Gpu>, 3>::from_data(t.to_data(), &Default::default())
    };
    let (loss_cpu, g_cpu) = gradients(&cpu, lift(&slots), lift(&target));
    let (loss_gpu, g_gpu) = gradients(&gpu, lift_gpu(&slots), lift_gpu(&target));
    let loss_tolerance = precision::float32_tolerance::<Gpu>(1e-5) as f32;
    assert!(
        (loss_cpu - loss_gpu).abs() <= loss_tolerance * loss_cpu.abs().max(1.0),
        "{loss_cpu} vs {loss_gpu} (tolerance {loss_tolerance})"
    );
    let grad_tolerance = precision::float32_tolerance::<Gpu>(1e-3) as f32;
    assert_eq!(g_cpu.len(), g_gpu.len());
    assert!(
        g_cpu.len() > 10,
        "only {} parameters have gradients",
        g_cpu.len()
    );
    for (i, (a, b)) in g_cpu.iter().zip(&g_gpu).enumerate() {
        let scale = a.iter().map(|x| x.abs()).fold(0.0, f32::max);
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= grad_tolerance * scale + 1e-6,
            "parameter {i}: gradients differ by {diff} (largest {scale}, tolerance {grad_tolerance})"
        );
    }
    // The inference copies agree as well.
    let slots_v = cpu_random([1, 4, 3], 8);
    let a = cpu
        .valid()
        .forward(slots_v.clone(), None, 0.0)
        .unwrap()
        .decoded;
    let b = gpu
        .valid()
        .forward(to_gpu(&slots_v), None, 0.0)
        .unwrap()
        .decoded;
    assert_close("valid() forward", a, b, 1e-5);
}
