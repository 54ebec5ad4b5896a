//! Exact W2 (an O(n³) assignment) and multiscale MMD (O(n² D)) at n = 500, 1000, 2000
//! in D = 2 and D = 100; energy distance (three O(n² D) distance matrices) at n = 1000 in
//! D = 1000, the shape of a single-cell comparison in gene space; exact W2 between sets
//! of unequal sizes (the transportation problem), 2000 generated against 20 000 held-out
//! points in D = 50.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use calmflow::metrics::{TORCHCFM_SIGMAS, energy_distance, mmd2_biased, w2_exact};
use calmflow_benches::normal_points;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

fn metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for d in [2usize, 100] {
        for n in [500usize, 1000, 2000] {
            let x = normal_points(n, d, 0.0, 1);
            let y = normal_points(n, d, 0.5, 2);
            let id = format!("n{n}_d{d}");
            group.bench_function(BenchmarkId::new("w2_exact", &id), |b| {
                b.iter(|| w2_exact(black_box(x.view()), black_box(y.view())).expect("w2"))
            });
            group.bench_function(BenchmarkId::new("mmd2_multiscale", &id), |b| {
                b.iter(|| {
                    mmd2_biased(black_box(x.view()), black_box(y.view()), &TORCHCFM_SIGMAS)
                        .expect("mmd")
                })
            });
        }
    }
    let (x, y) = (
        normal_points(1000, 1000, 0.0, 1),
        normal_points(1000, 1000, 0.5, 2),
    );
    group.bench_function(BenchmarkId::new("energy", "n1000_d1000"), |b| {
        b.iter(|| energy_distance(black_box(x.view()), black_box(y.view())).expect("energy"))
    });
    group.finish();
    // Seconds per call: criterion's minimum of 10 samples, one call each.
    let mut slow = c.benchmark_group("metrics");
    slow.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let (x, y) = (
        normal_points(2000, 50, 0.0, 1),
        normal_points(20_000, 50, 0.5, 2),
    );
    slow.bench_function(BenchmarkId::new("w2_exact", "n2000_m20000_d50"), |b| {
        b.iter(|| w2_exact(black_box(x.view()), black_box(y.view())).expect("w2"))
    });
    slow.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
