//! The backend these tests run on: the CPU backend by default, burn-wgpu with the crate's
//! `wgpu` feature (`cargo xtask test --backend wgpu`), burn-cuda with `cuda` (`cargo xtask
//! gpu-check`). Tests name only `TestBackend`.
// Shared by every test binary that includes this module; each uses a part of it.
#![allow(dead_code)]

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
pub type TestBackend = burn::backend::NdArray<f32>;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type TestBackend = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
pub type TestBackend = burn::backend::Cuda;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use calmflow_model::{CalmFlowConfig, CalmFlowModel};

/// The backends' RNG is one global state: tests running in parallel threads would
/// interleave their draws between `seed` and use. Every seeded section holds this lock.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A model of `config` whose weights are drawn after seeding the backend with `seed`.
pub fn model(config: &CalmFlowConfig, seed: u64) -> CalmFlowModel<TestBackend> {
    let device = Default::default();
    let _guard = rng_lock();
    TestBackend::seed(&device, seed);
    config.init::<TestBackend>(&device).unwrap()
}

/// Standard normal values of `shape`, drawn after seeding the backend with `seed`.
pub fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<TestBackend, D> {
    let device = Default::default();
    let _guard = rng_lock();
    TestBackend::seed(&device, seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device)
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff<const D: usize, Bk: Backend>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    let a: Vec<f32> = a.into_data().convert::<f32>().to_vec().unwrap();
    let b: Vec<f32> = b.into_data().convert::<f32>().to_vec().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
