//! The backend these tests run on: the CPU backend by default, burn-wgpu with the crate's
//! `wgpu` feature (`cargo xtask test --backend wgpu`), burn-cuda with `cuda` (`cargo xtask
//! gpu-check`). Tests name only `TestBackend`.

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
pub type TestBackend = burn::backend::NdArray<f32>;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type TestBackend = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
pub type TestBackend = burn::backend::Cuda;

/// The test backend's default device, fresh for each call (wgpu devices are not `Copy`).
pub fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}
