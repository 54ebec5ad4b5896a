//! The variational decoder: per-token Gaussian latents, decoded slot by slot to `R^D`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Distribution, Tensor, backend::Backend};

use crate::norm::layer_norm_plain;

/// Variance floor added to `exp(s)`: `σ² = exp(s) + 1e-4` (METHOD §5).
pub const VARIANCE_FLOOR: f64 = 1e-4;

/// `Linear(H→H) → LayerNorm (no affine) → ReLU → Dropout → Linear(H→H)`.
#[derive(Module, Debug)]
pub struct LatentHead<B: Backend> {
    first: Linear<B>,
    second: Linear<B>,
    dropout: Dropout,
}

impl<B: Backend> LatentHead<B> {
    fn new(hidden: usize, dropout: f64, device: &B::Device) -> Self {
        Self {
            first: LinearConfig::new(hidden, hidden).init(device),
            second: LinearConfig::new(hidden, hidden).init(device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.second.forward(
            self.dropout
                .forward(relu(layer_norm_plain(self.first.forward(h), 1e-5))),
        )
    }
}

/// The decoder's output for a sequence of slots.
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// Decoded states `(B, S, D)`: slot `j`'s prediction of slot `j + P`.
    pub decoded: Tensor<B, 3>,
    /// Posterior means `μ` `(B, S·K, H)` (absent without the variational layer).
    pub mu: Option<Tensor<B, 3>>,
    /// Posterior log-variances `ln σ²` `(B, S·K, H)`, with the variance floor included.
    pub log_var: Option<Tensor<B, 3>>,
}

/// Per-token `μ = M(h)`, `s = S(h)`, `σ² = exp(s) + 1e-4`, latent `ζ = μ + τ σ ε`; the `K`
/// latents of a slot are concatenated and mapped to `R^D` by
/// `Linear(K·H→I) → LN → ReLU → Dropout → Linear(I→I) → LN → ReLU → Dropout → Linear(I→D)`,
/// `I = max(K·H, D)`. Without the variational layer the hidden states are decoded directly.
#[derive(Module, Debug)]
pub struct VariationalDecoder<B: Backend> {
    mu: Option<LatentHead<B>>,
    log_scale: Option<LatentHead<B>>,
    first: Linear<B>,
    second: Linear<B>,
    out: Linear<B>,
    dropout: Dropout,
    n_space: usize,
    hidden: usize,
}

impl<B: Backend> VariationalDecoder<B> {
    /// A new decoder for `K = n_space` tokens of width `hidden` per slot, output `dim`.
    pub fn new(
        dim: usize,
        n_space: usize,
        hidden: usize,
        variational: bool,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let width = n_space * hidden;
        let inner = width.max(dim);
        Self {
            mu: variational.then(|| LatentHead::new(hidden, dropout, device)),
            log_scale: variational.then(|| LatentHead::new(hidden, dropout, device)),
            first: LinearConfig::new(width, inner).init(device),
            second: LinearConfig::new(inner, inner).init(device),
            out: LinearConfig::new(inner, dim).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            n_space,
            hidden,
        }
    }

    /// Whether the decoder has the variational layer.
    pub fn is_variational(&self) -> bool {
        self.mu.is_some()
    }

    /// Maps latents `(B, S·K, H)` to states `(B, S, D)`.
    pub fn decode_latents(&self, latents: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, sk, _] = latents.dims();
        let x = latents.reshape([b, sk / self.n_space, self.n_space * self.hidden]);
        let x = self
            .dropout
            .forward(relu(layer_norm_plain(self.first.forward(x), 1e-5)));
        let x = self
            .dropout
            .forward(relu(layer_norm_plain(self.second.forward(x), 1e-5)));
        self.out.forward(x)
    }

    /// Decodes backbone outputs `(B, S·K, H)` at temperature `τ` (`τ = 0`: the mean).
    pub fn forward(&self, hidden: Tensor<B, 3>, temperature: f64) -> DecoderOutput<B> {
        match (&self.mu, &self.log_scale) {
            (Some(mu_head), Some(scale_head)) => {
                let mu = mu_head.forward(hidden.clone());
                let var = scale_head.forward(hidden).exp() + VARIANCE_FLOOR;
                let latents = if temperature > 0.0 {
                    let noise =
                        Tensor::random(mu.shape(), Distribution::Normal(0.0, 1.0), &mu.device());
                    mu.clone() + var.clone().sqrt() * noise * temperature
                } else {
                    mu.clone()
                };
                DecoderOutput {
                    decoded: self.decode_latents(latents),
                    mu: Some(mu),
                    log_var: Some(var.log()),
                }
            }
            _ => DecoderOutput {
                decoded: self.decode_latents(hidden),
                mu: None,
                log_var: None,
            },
        }
    }
}
