//! How finely a backend's float32 matrix product rounds, measured against `f64` on the host,
//! so that parity tests against the CPU allow what the device's arithmetic allows.
//!
//! The CPU backend and wgpu compute float32 products in float32 (~1e-7 relative). burn-cuda
//! on a GPU with tensor cores rounds float32 operands to TF32 (10-bit mantissa: cubek-matmul
//! stages them so), measured on an H200 at 2.7e-4 to 3.9e-4 relative for sizes 256 to 8192
//! (`calmflow devices --check cuda:0`), and a model that chains a few products then differs
//! from the CPU by 1e-3 rather than 1e-5.
// Shared by test binaries of two crates; each uses a part of it.
#![allow(dead_code)]

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The relative error `max |C − C₆₄| / max |C₆₄|` of a 128 × 128 × 128 product of fixed
/// values in [−1, 1] computed on `B`'s default device.
pub fn matmul_rounding<B: Backend>() -> f64 {
    const N: usize = 128;
    let value = |i: usize, s: usize| ((i * s) % 251) as f64 / 125.0 - 1.0;
    let a: Vec<f64> = (0..N * N).map(|i| value(i, 7)).collect();
    let b: Vec<f64> = (0..N * N).map(|i| value(i, 13)).collect();
    let device = Default::default();
    let tensor = |v: &[f64]| {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::<B, 2>::from_data(TensorData::new(v, [N, N]), &device)
    };
    let c: Vec<f32> = tensor(&a)
        .matmul(tensor(&b))
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("float values");
    let (mut worst, mut largest) = (0.0f64, 0.0f64);
    for i in 0..N {
        for j in 0..N {
            // The operands as float32 holds them, multiplied in f64.
            let exact: f64 = (0..N)
                .map(|t| f64::from(a[i * N + t] as f32) * f64::from(b[t * N + j] as f32))
                .sum();
            worst = worst.max((f64::from(c[i * N + j]) - exact).abs());
            largest = largest.max(exact.abs());
        }
    }
    worst / largest
}

/// A float32 tolerance for comparing `B` with the CPU: `tolerance`, or ten times `B`'s
/// measured matrix-product rounding where that is larger. Ten: on the H200, forward passes,
/// gradients, roll-outs and per-step training losses differed from the CPU by 1 to 5 times
/// the single product's rounding.
pub fn float32_tolerance<B: Backend>(tolerance: f64) -> f64 {
    tolerance.max(10.0 * matmul_rounding::<B>())
}
