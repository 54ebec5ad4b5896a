//! The small MLP the heads share: `Linear(in→W) → LN → ReLU → Linear(W→W) → LN → ReLU →
//! Linear(W→out)` on flattened `(n, in)` inputs (LN without affine, as in the paper's
//! decoder).

use crate::fused::relu;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::norm::layer_norm_plain;

/// A vector's values on the host, as `f32` whatever the backend's float type.
fn host_values<B: Backend>(v: Tensor<B, 1>) -> Vec<f32> {
    v.into_data()
        .convert::<f32>()
        .to_vec()
        .expect("float data converted to f32")
}

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

    /// The same MLP with its output biases `start..start + values.len()` replaced by
    /// `values` (the parameter keeps its id, so an optimizer sees the same weight).
    pub fn with_output_bias(mut self, start: usize, values: &[f32]) -> Self {
        debug_assert!(
            self.out.bias.is_some(),
            "the heads' output layers have biases"
        );
        if let Some(bias) = self.out.bias.take() {
            self.out.bias = Some(bias.map(|b| {
                let tracked = b.is_require_grad();
                let device = b.device();
                let mut v = host_values(b);
                v[start..start + values.len()].copy_from_slice(values);
                let len = v.len();
                let b = Tensor::from_data(TensorData::new(v, [len]), &device);
                if tracked { b.require_grad() } else { b }
            }));
        }
        self
    }

    /// The output biases `start..start + len`.
    pub fn output_bias(&self, start: usize, len: usize) -> Vec<f32> {
        self.out.bias.as_ref().map_or_else(
            || vec![0.0; len],
            |b| host_values(b.val())[start..start + len].to_vec(),
        )
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
