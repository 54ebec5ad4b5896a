//! Inputs shared by the plot tests: two moons with three methods' samples, and
//! dispersion ratios for bar charts.

use std::path::Path;

use ndarray::Array2;

use super::{BASELINE, CALMFLOW, SOURCE, Series};

/// Two moons (2000 points) and three methods: a fresh draw, a copy shrunk towards the
/// mean, and a noisier draw with a few far outliers.
pub(super) fn moons_and_methods() -> (Array2<f32>, Vec<Array2<f32>>) {
    use calmflow_data::{Moons, Sampler, StandardNormal, seeded_rng};
    let moons = Moons::default();
    let target = moons.sample(2000, &mut seeded_rng(1));
    let good = moons.sample(2000, &mut seeded_rng(2));
    let mean = good.mean_axis(ndarray::Axis(0)).unwrap();
    let shrunk = (&good - &mean) * 0.6 + &mean;
    let noise = StandardNormal { dim: 2 }.sample(2000, &mut seeded_rng(3));
    let mut noisy = moons.sample(2000, &mut seeded_rng(4)) + noise * 0.4;
    for (i, mut row) in noisy.rows_mut().into_iter().take(5).enumerate() {
        row[0] = 40.0 + i as f32;
        row[1] = -30.0;
    }
    (target, vec![good, shrunk, noisy])
}

pub(super) fn methods(sets: &[Array2<f32>]) -> Vec<Series<'_>> {
    ["CaLMFlow", "CaLMFlow (mean head)", "CFM"]
        .into_iter()
        .zip(sets)
        .zip([CALMFLOW, SOURCE, BASELINE])
        .map(|((label, points), color)| Series {
            label,
            points,
            color,
        })
        .collect()
}

pub(super) fn dispersion_groups() -> Vec<(&'static str, Vec<(&'static str, f64)>)> {
    let labels = ["trace", "PC1", "PC2", "PC3", "rest"];
    [
        ("CaLMFlow", [0.98, 1.02, 0.95, 0.91, 1.04]),
        ("mean head", [0.71, 0.83, 0.74, 0.69, 0.7]),
        ("CFM", [1.12, 1.05, 1.18, 1.2, 1.1]),
    ]
    .into_iter()
    .map(|(name, values)| (name, labels.into_iter().zip(values).collect()))
    .collect()
}

pub(super) fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}
