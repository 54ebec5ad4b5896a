//! The spatial encoder: one state in `R^D` → `K` tokens of width `H`.

use crate::fused::relu;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::norm::{layer_norm_plain, linear_flat};

/// `D → K·H` by a two-layer MLP (Linear → LayerNorm without affine → ReLU → Dropout →
/// Linear) or a single Linear, reshaped row-major into `K` tokens of width `H` (token `k` is
/// the slice `[kH, (k+1)H)`): one shared projection makes all `K` tokens.
#[derive(Module, Debug)]
pub struct SpatialEncoder<B: Backend> {
    first: Linear<B>,
    second: Option<Linear<B>>,
    dropout: Dropout,
    n_space: usize,
    hidden: usize,
    eps: f64,
}

impl<B: Backend> SpatialEncoder<B> {
    /// A new encoder; `mlp = false` gives the single-Linear variant.
    pub fn new(
        dim: usize,
        n_space: usize,
        hidden: usize,
        mlp: bool,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let width = n_space * hidden;
        Self {
            first: LinearConfig::new(dim, width).init(device),
            second: mlp.then(|| LinearConfig::new(width, width).init(device)),
            dropout: DropoutConfig::new(dropout).init(),
            n_space,
            hidden,
            eps: 1e-5,
        }
    }

    /// `(B, S, D)` slots → `(B, S·K, H)` tokens.
    pub fn forward(&self, slots: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, _] = slots.dims();
        let mut x = linear_flat(&self.first, slots);
        if let Some(second) = &self.second {
            x = linear_flat(
                second,
                self.dropout.forward(relu(layer_norm_plain(x, self.eps))),
            );
        }
        x.reshape([b, s * self.n_space, self.hidden])
    }
}
