//! Layer normalisation without affine parameters, and the `Linear` on flattened rows of the
//! model's hot path.

use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

/// `(x − mean) / sqrt(var + eps)` over the last dimension (population variance), with no
/// learned scale or shift: the "LN (no affine)" of CaLMFlow's encoder and decoder heads
/// (a fused kernel where the backend registered one, see [`crate::fused`]).
pub fn layer_norm_plain<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    crate::fused::layer_norm(x, None, None, eps)
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
    let y = crate::fused::linear_module(linear, x.reshape([b * l, d]));
    let [_, out] = y.dims();
    y.reshape([b, l, out])
}
