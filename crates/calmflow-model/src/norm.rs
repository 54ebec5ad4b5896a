//! Layer normalisation without affine parameters.

use burn::tensor::{Tensor, backend::Backend};

/// `(x − mean) / sqrt(var + eps)` over the last dimension (population variance), with no
/// learned scale or shift: the "LN (no affine)" of CaLMFlow's encoder and decoder heads.
pub fn layer_norm_plain<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean) / (var + eps).sqrt()
}
