//! Shared inputs of the calmflow criterion benchmarks (run them with `cargo xtask bench`,
//! which also writes `docs/benchmarks.md`).

use calmflow_data::{Sampler, StandardNormal, seeded_rng};
use ndarray::Array2;

/// `n` seeded standard-normal points in dimension `d`, shifted by `shift` in every
/// coordinate.
pub fn normal_points(n: usize, d: usize, shift: f32, seed: u64) -> Array2<f32> {
    StandardNormal { dim: d }.sample(n, &mut seeded_rng(seed)) + shift
}
