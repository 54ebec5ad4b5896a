//! Volterra solvers against the number of grid points N: the O(N²) cost of the history
//! sum (every step re-evaluates the kernel against all earlier points) is visible.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use calmflow::vie::{
    ConvolutionKernel, ExplicitRectangle, FnKernel, ImplicitTrapezoid, Picard, TimeGrid, VieSolver,
    VolterraEquation,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ndarray::{ArrayView1, array};
use std::hint::black_box;

fn solvers(c: &mut Criterion) {
    let linear =
        VolterraEquation::new(|_: f64| array![1.0], ConvolutionKernel::new(1, |u: f64| -u));
    let square = |_: f64, _: f64, z: ArrayView1<'_, f64>| z.mapv(|v| v * v);
    let nonlinear = VolterraEquation::new(|_: f64| array![1.0], FnKernel::new(1, square));
    let mut group = c.benchmark_group("vie_solvers");
    for n in [16usize, 64, 256] {
        let grid = TimeGrid::uniform(n, 0.5).expect("valid grid");
        group.bench_with_input(BenchmarkId::new("rectangle_linear", n), &grid, |b, g| {
            b.iter(|| {
                ExplicitRectangle::default()
                    .solve(black_box(&linear), g)
                    .expect("solves")
            })
        });
        group.bench_with_input(BenchmarkId::new("trapezoid_linear", n), &grid, |b, g| {
            b.iter(|| {
                ImplicitTrapezoid::default()
                    .solve(black_box(&linear), g)
                    .expect("solves")
            })
        });
        group.bench_with_input(BenchmarkId::new("trapezoid_nonlinear", n), &grid, |b, g| {
            b.iter(|| {
                ImplicitTrapezoid::default()
                    .solve(black_box(&nonlinear), g)
                    .expect("solves")
            })
        });
        group.bench_with_input(BenchmarkId::new("picard_linear", n), &grid, |b, g| {
            b.iter(|| {
                Picard::default()
                    .solve(black_box(&linear), g)
                    .expect("solves")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, solvers);
criterion_main!(benches);
