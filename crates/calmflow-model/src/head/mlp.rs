//! The small MLP the heads share: `Linear(in→W) → LN → ReLU → Linear(W→W) → LN → ReLU →
//! Linear(W→out)` on flattened `(n, in)` inputs (LN without affine, as in the paper's
//! decoder).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, backend::Backend};

use crate::norm::layer_norm_plain;

#[derive(Module, Debug)]
pub struct HeadMlp<B: Backend> {
    first: Linear<B>,
    second: Linear<B>,
    out: Linear<B>,
}

impl<B: Backend> HeadMlp<B> {
    pub fn new(input: usize, width: usize, output: usize, device: &B::Device) -> Self {
        Self {
            first: LinearConfig::new(input, width).init(device),
            second: LinearConfig::new(width, width).init(device),
            out: LinearConfig::new(width, output).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = relu(layer_norm_plain(
            crate::fused::linear_module(&self.first, x),
            1e-5,
        ));
        let x = relu(layer_norm_plain(
            crate::fused::linear_module(&self.second, x),
            1e-5,
        ));
        crate::fused::linear_module(&self.out, x)
    }
}
