//! Layer normalisation without affine parameters, and the small shared helpers of the
//! model's hot path (a `Linear` on flattened rows, GELU with a one-pass backward).

use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

/// `(x − mean) / sqrt(var + eps)` over the last dimension (population variance), with no
/// learned scale or shift: the "LN (no affine)" of CaLMFlow's encoder and decoder heads.
pub fn layer_norm_plain<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean) / (var + eps).sqrt()
}

/// `linear` on the last dimension of `x` `(B, L, in)` → `(B, L, out)` as one 2-D matrix
/// product over the `B·L` rows.
///
/// burn's `Linear` on a rank-3 input broadcasts the weight to a batched matmul: on the CPU
/// backend that is one small GEMM per leading index, and the weight gradient is one
/// `(in, out)` product per sequence summed afterwards. Flattening first gives one GEMM
/// forward and one per gradient. The reshapes are free on contiguous tensors.
pub fn linear_flat<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, l, d] = x.dims();
    let y = linear.forward(x.reshape([b * l, d]));
    let [_, out] = y.dims();
    y.reshape([b, l, out])
}

/// The exact (erf) GELU `x·Φ(x)`, with the exact derivative `Φ(x) + x·φ(x)`.
///
/// burn's `gelu` differentiates through the tanh approximation (≈1e-3 off the erf forward)
/// in fifteen element-wise passes, two of them `powf` and one `tanh`. Here the value and the
/// slope are computed on detached tensors, and the tracked result is
/// `value + (x − x̄)·slope` with `x̄ = x.detach()`: its value is exactly `value` (the
/// difference is an exact zero) and its gradient is `slope · grad`, one pass in the backward.
/// Without autodiff it is burn's `gelu`.
pub fn gelu_exact<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !B::ad_enabled(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    let xd = x.clone().detach();
    // Φ(x) = (1 + erf(x/√2)) / 2, in the order of burn's own gelu forward.
    let cdf = (xd.clone().div_scalar(std::f64::consts::SQRT_2).erf() + 1.0) * 0.5;
    let value = xd.clone() * cdf.clone();
    // φ(x) = exp(−x²/2) / √(2π).
    let inv_sqrt_2pi = 0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
    let pdf = (xd.clone() * xd.clone()).mul_scalar(-0.5).exp() * inv_sqrt_2pi;
    let slope = cdf + xd.clone() * pdf;
    value + (x - xd) * slope
}

#[cfg(test)]
mod tests {
    use super::gelu_exact;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::activation::gelu;
    use burn::tensor::{Tensor, TensorData};

    type F64 = NdArray<f64>;

    #[test]
    fn gelu_exact_has_burns_value_and_the_exact_slope() {
        let device = Default::default();
        let xs: Vec<f64> = (0..801).map(|i| -8.0 + i as f64 * 0.02).collect();
        let x =
            || Tensor::<Autodiff<F64>, 1>::from_data(TensorData::new(xs.clone(), [801]), &device);
        let x1 = x().require_grad();
        let y = gelu_exact(x1.clone());
        let value_gap = (y.clone() - gelu(x())).abs().max().into_scalar();
        assert_eq!(value_gap, 0.0);
        let grads = y.sum().backward();
        let slope = x1
            .grad(&grads)
            .expect("a gradient")
            .to_data()
            .to_vec::<f64>()
            .unwrap();
        // Central differences of burn's own (erf) GELU forward.
        let h = 1e-5;
        let at = |d: f64| {
            gelu(Tensor::<F64, 1>::from_data(TensorData::new(xs.clone(), [801]), &device) + d)
        };
        let fd = ((at(h) - at(-h)) / (2.0 * h))
            .to_data()
            .to_vec::<f64>()
            .unwrap();
        let worst = slope
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-8, "max |slope − finite difference| = {worst:e}");
    }
}
