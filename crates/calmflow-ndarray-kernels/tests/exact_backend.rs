//! burn-ndarray as calmflow builds it computes reciprocals exactly. With its `simd`
//! feature, `recip` (and with it the backward pass of `div`, `log` and `log1p` in burn's
//! autodiff) used an approximate vector instruction on the part of each buffer aligned to
//! the vector width and `1/x` on the rest: gradients off in the 14th bit, and different
//! bytes from one process to the next as the allocator placed buffers differently.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tensor;

type B = NdArray<f32>;

/// 4099 values spread over twelve binades, neither small integers nor powers of two.
fn values() -> Vec<f32> {
    (0..4099)
        .map(|i| {
            let x = 1e-3f32 * 1.0037f32.powi(i) + 0.1234;
            if i % 3 == 0 { -x } else { x }
        })
        .collect()
}

#[test]
fn recip_is_the_correctly_rounded_reciprocal() {
    let x = values();
    let device = Default::default();
    let y = Tensor::<B, 1>::from_floats(x.as_slice(), &device)
        .recip()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let wrong: Vec<usize> = (0..x.len()).filter(|&i| y[i] != 1.0 / x[i]).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} reciprocals are not 1/x, first at {:?}",
        wrong.len(),
        x.len(),
        wrong.first()
    );
}

#[test]
fn the_gradients_of_log_and_div_are_exact() {
    let x: Vec<f32> = values().into_iter().map(f32::abs).collect();
    let device = Default::default();
    let t = Tensor::<Autodiff<B>, 1>::from_floats(x.as_slice(), &device).require_grad();
    let grads = t.clone().log().sum().backward();
    let g = t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    assert!(
        (0..x.len()).all(|i| g[i] == 1.0 / x[i]),
        "d log x / dx is not 1/x"
    );
    // d(a/b)/da = 1/b.
    let a = Tensor::<Autodiff<B>, 1>::ones([x.len()], &device).require_grad();
    let b = Tensor::<Autodiff<B>, 1>::from_floats(x.as_slice(), &device);
    let grads = (a.clone() / b).sum().backward();
    let g = a.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    assert!(
        (0..x.len()).all(|i| g[i] == 1.0 / x[i]),
        "d(a/b)/da is not 1/b"
    );
}
