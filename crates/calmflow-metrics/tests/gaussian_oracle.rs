//! Empirical metrics of Gaussian samples against their closed forms.

use calmflow_data::{Sampler, StandardNormal, seeded_rng};
use calmflow_metrics::{bures_w2, frechet_distance, w2_exact};
use ndarray::{Array2, array};

/// `n` points of `N(mu, diag(std²))`.
fn gaussian(n: usize, mu: [f32; 2], std: [f32; 2], seed: u64) -> Array2<f32> {
    let mut z = StandardNormal { dim: 2 }.sample(n, &mut seeded_rng(seed));
    for mut row in z.rows_mut() {
        row[0] = mu[0] + std[0] * row[0];
        row[1] = mu[1] + std[1] * row[1];
    }
    z
}

#[test]
fn empirical_w2_approaches_the_bures_value() {
    // N(0, I) vs N((3, 0), diag(4, 1)): W2² = 9 + (2 − 1)² = 10.
    let bures = bures_w2(
        &array![0.0, 0.0],
        &Array2::eye(2),
        &array![3.0, 0.0],
        &Array2::from_diag(&array![4.0, 1.0]),
    )
    .unwrap();
    assert!((bures - 10f64.sqrt()).abs() < 1e-12);
    let mut errors = Vec::new();
    for n in [100, 400, 1000] {
        let x = gaussian(n, [0.0, 0.0], [1.0, 1.0], 1);
        let y = gaussian(n, [3.0, 0.0], [2.0, 1.0], 2);
        errors.push((w2_exact(x.view(), y.view()).unwrap() - bures).abs());
    }
    // The empirical estimate is biased upwards by sampling noise, shrinking with n.
    assert!(errors[2] < errors[0], "{errors:?}");
    assert!(errors[2] / bures < 0.03, "{errors:?}");
}

#[test]
fn frechet_of_two_samples_of_one_gaussian_is_small() {
    let x = gaussian(5000, [1.0, -1.0], [1.5, 0.5], 3);
    let y = gaussian(5000, [1.0, -1.0], [1.5, 0.5], 4);
    let fd = frechet_distance(x.view(), y.view()).unwrap();
    assert!(fd < 5e-3, "{fd}");
    let z = gaussian(5000, [2.0, -1.0], [1.5, 0.5], 5);
    let shifted = frechet_distance(x.view(), z.view()).unwrap();
    assert!((shifted - 1.0).abs() < 0.1, "{shifted}");
}
