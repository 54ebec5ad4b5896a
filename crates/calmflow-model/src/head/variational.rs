//! The paper's head (docs/method.md §5–6): per-token Gaussian latents computed from the history,
//! decoded slot by slot to `R^D`, trained by squared error + β·KL(N(μ, σ²) ‖ N(0, I)).
//!
//! The latent never sees the target, so the decoder learns to ignore its noise and the
//! head regresses the conditional mean; it is kept exactly as published because it is what
//! people reproduce.

use crate::fused::relu;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor, backend::Backend};

use super::{DistributionHead, HeadLoss};
use crate::norm::layer_norm_plain;

/// Variance floor added to `exp(s)`: `σ² = exp(s) + 1e-4` (docs/method.md §5).
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

    fn forward(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        crate::fused::linear_module(
            &self.second,
            self.dropout.forward(relu(layer_norm_plain(
                crate::fused::linear_module(&self.first, h),
                1e-5,
            ))),
        )
    }
}

/// The decoder's output for a sequence of slots.
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// Decoded states `(B, S, D)`: slot `j`'s prediction of slot `j + P` (for heads other
    /// than `variational`, a draw of the head's target, see [`crate::Predict`]).
    pub decoded: Tensor<B, 3>,
    /// Posterior means `μ` `(B, S·K, H)` (variational head only).
    pub mu: Option<Tensor<B, 3>>,
    /// Posterior log-variances `ln σ²` `(B, S·K, H)`, with the variance floor included.
    pub log_var: Option<Tensor<B, 3>>,
}

/// Per-token `μ = M(h)`, `s = S(h)`, `σ² = exp(s) + 1e-4`, latent `ζ = μ + τ σ ε`; the `K`
/// latents of a slot are concatenated and mapped to `R^D` by
/// `Linear(K·H→I) → LN → ReLU → Dropout → Linear(I→I) → LN → ReLU → Dropout → Linear(I→D)`,
/// `I` the decoder width (the paper: `max(K·H, D)`). Without the variational layer the
/// hidden states are decoded directly.
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
    /// A new decoder for `K = n_space` tokens of width `hidden` per slot, inner width
    /// `width`, output `dim`.
    pub fn new(
        dim: usize,
        n_space: usize,
        hidden: usize,
        width: usize,
        variational: bool,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let input = n_space * hidden;
        Self {
            mu: variational.then(|| LatentHead::new(hidden, dropout, device)),
            log_scale: variational.then(|| LatentHead::new(hidden, dropout, device)),
            first: LinearConfig::new(input, width).init(device),
            second: LinearConfig::new(width, width).init(device),
            out: LinearConfig::new(width, dim).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            n_space,
            hidden,
        }
    }

    /// Whether the decoder has the variational layer.
    pub fn is_variational(&self) -> bool {
        self.mu.is_some()
    }

    /// Maps slot latents `(n, K·H)` to states `(n, D)`.
    fn decode_flat(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.dropout.forward(relu(layer_norm_plain(
            crate::fused::linear_module(&self.first, x),
            1e-5,
        )));
        let x = self.dropout.forward(relu(layer_norm_plain(
            crate::fused::linear_module(&self.second, x),
            1e-5,
        )));
        crate::fused::linear_module(&self.out, x)
    }

    /// Maps latents `(B, S·K, H)` to states `(B, S, D)`.
    pub fn decode_latents(&self, latents: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, sk, _] = latents.dims();
        let s = sk / self.n_space;
        let out = self.decode_flat(latents.reshape([b * s, self.n_space * self.hidden]));
        let d = out.dims()[1];
        out.reshape([b, s, d])
    }

    /// Latents of tokens `(m, H)`: `(ζ, μ, ln σ²)`, or the tokens themselves without the
    /// variational layer.
    #[allow(clippy::type_complexity)]
    fn latents(
        &self,
        tokens: Tensor<B, 2>,
        temperature: f64,
    ) -> (Tensor<B, 2>, Option<(Tensor<B, 2>, Tensor<B, 2>)>) {
        match (&self.mu, &self.log_scale) {
            (Some(mu_head), Some(scale_head)) => {
                let mu = mu_head.forward(tokens.clone());
                let var = scale_head.forward(tokens).exp() + VARIANCE_FLOOR;
                let latents = if temperature > 0.0 {
                    let noise = Tensor::random_like(&mu, Distribution::Normal(0.0, 1.0));
                    mu.clone() + var.clone().sqrt() * noise * temperature
                } else {
                    mu.clone()
                };
                (latents, Some((mu, var.log())))
            }
            _ => (tokens, None),
        }
    }

    /// Decodes backbone outputs `(B, S·K, H)` at temperature `τ` (`τ = 0`: the mean).
    pub fn forward(&self, hidden: Tensor<B, 3>, temperature: f64) -> DecoderOutput<B> {
        let [b, sk, h] = hidden.dims();
        let (latents, posterior) = self.latents(hidden.reshape([b * sk, h]), temperature);
        let s = sk / self.n_space;
        let decoded = self.decode_flat(latents.reshape([b * s, self.n_space * h]));
        let d = decoded.dims()[1];
        let (mu, log_var) = match posterior {
            Some((mu, log_var)) => (
                Some(mu.reshape([b, sk, h])),
                Some(log_var.reshape([b, sk, h])),
            ),
            None => (None, None),
        };
        DecoderOutput {
            decoded: decoded.reshape([b, s, d]),
            mu,
            log_var,
        }
    }
}

impl<B: Backend> DistributionHead<B> for VariationalDecoder<B> {
    /// `‖Dec(ζ) − y‖²` summed over `D` and averaged over slots, and `KL(N(μ, σ²) ‖ N(0, I))`
    /// summed over `H` and averaged over latent tokens, at `τ = 1` (docs/method.md §6).
    fn loss(&self, context: Tensor<B, 2>, target: Tensor<B, 2>) -> HeadLoss<B> {
        let [n, _] = context.dims();
        let tokens = context.reshape([n * self.n_space, self.hidden]);
        let (latents, posterior) = self.latents(tokens, 1.0);
        let decoded = self.decode_flat(latents.reshape([n, self.n_space * self.hidden]));
        let rec = (decoded - target).powi_scalar(2).sum_dim(1).mean();
        let kl = posterior.map(|(mu, log_var)| {
            ((mu.powi_scalar(2) + log_var.clone().exp() - log_var - 1.0) * 0.5)
                .sum_dim(1)
                .mean()
        });
        HeadLoss { rec, kl }
    }

    fn sample(&self, context: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
        let [n, _] = context.dims();
        let tokens = context.reshape([n * self.n_space, self.hidden]);
        let (latents, _) = self.latents(tokens, temperature);
        self.decode_flat(latents.reshape([n, self.n_space * self.hidden]))
    }
}
