//! Diagonal Gaussian mixture head (as GIVT, arXiv 2312.02116):
//! `p(y | c) = Σ_m π_m(c) Π_d N(y_d; μ_md(c), σ_md(c)²)`, trained by negative
//! log-likelihood (log-sum-exp over components), `σ = σ_min + softplus(s)`; sampled by
//! drawing a component, then `μ_m + τ σ_m ε` (`τ = 0`: the most probable component's
//! mean).

use burn::module::Module;
use burn::tensor::activation::{log_softmax, softplus};
use burn::tensor::{Distribution, Tensor, backend::Backend};

use super::mlp::HeadMlp;
use super::{DistributionHead, HeadLoss, HeadShape};

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// A mixture of `M` diagonal Gaussians over `R^D` per slot context.
#[derive(Module, Debug)]
pub struct MixtureHead<B: Backend> {
    net: HeadMlp<B>,
    components: usize,
    dim: usize,
    min_std: f64,
}

impl<B: Backend> MixtureHead<B> {
    pub(crate) fn new(
        shape: HeadShape,
        components: usize,
        min_std: f64,
        device: &B::Device,
    ) -> Self {
        let out = components * (1 + 2 * shape.dim);
        Self {
            net: HeadMlp::new(shape.n_space * shape.hidden, shape.width, out, device),
            components,
            dim: shape.dim,
            min_std,
        }
    }

    /// Components `M`.
    pub fn components(&self) -> usize {
        self.components
    }

    /// The same head with the output biases of its components' means set to `centres`
    /// (`M × D`, row-major): before training, component `m`'s mean is `centres[m]` plus
    /// the small context-dependent term of a freshly initialised output layer.
    pub(crate) fn with_means(self, centres: &[f32]) -> Self {
        debug_assert_eq!(centres.len(), self.components * self.dim);
        Self {
            net: self.net.with_output_bias(self.components, centres),
            ..self
        }
    }

    /// The output biases of the components' means (`M × D`, row-major): where each mean
    /// sits before the context's contribution.
    pub(crate) fn mean_biases(&self) -> Vec<f32> {
        self.net
            .output_bias(self.components, self.components * self.dim)
    }

    /// `(log π (n, M), μ (n, M, D), σ (n, M, D))`.
    pub(super) fn parameters(
        &self,
        context: Tensor<B, 2>,
    ) -> (Tensor<B, 2>, Tensor<B, 3>, Tensor<B, 3>) {
        let [n, _] = context.dims();
        let (m, d) = (self.components, self.dim);
        let raw = self.net.forward(context);
        let log_weights = log_softmax(raw.clone().narrow(1, 0, m), 1);
        let mu = raw.clone().narrow(1, m, m * d).reshape([n, m, d]);
        let std = softplus(raw.narrow(1, m + m * d, m * d), 1.0).reshape([n, m, d]) + self.min_std;
        (log_weights, mu, std)
    }
}

impl<B: Backend> DistributionHead<B> for MixtureHead<B> {
    /// `−log Σ_m π_m N(y; μ_m, diag σ_m²)` averaged over slots (nats per slot).
    fn loss(&self, context: Tensor<B, 2>, target: Tensor<B, 2>) -> HeadLoss<B> {
        self.annealed_loss(context, target, 1.0)
    }

    /// `−T·log Σ_m exp(ℓ_m/T)` with `ℓ_m = log π_m + log N(y; μ_m, diag σ_m²)`, averaged
    /// over slots. In D dimensions the `ℓ_m` of two components differ by a sum of D terms,
    /// so at `T = 1` the posterior is nearly one-hot from the first step: a component
    /// that starts between two modes keeps both and another gets no gradient (measured at
    /// D = 100, `docs/heads.md`).
    fn annealed_loss(
        &self,
        context: Tensor<B, 2>,
        target: Tensor<B, 2>,
        temperature: f64,
    ) -> HeadLoss<B> {
        self.tempered_nll(self.parameters(context), target, temperature)
    }

    fn sample(&self, context: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
        let [n, _] = context.dims();
        let (log_weights, mu, std) = self.parameters(context);
        // Gumbel-max: argmax_m (log π_m + g_m) is a draw from π; at τ = 0 the most
        // probable component's mean (the deterministic mode).
        let scores = if temperature > 0.0 {
            let u = Tensor::random_like(&log_weights, Distribution::Uniform(1e-7, 1.0));
            log_weights + u.log().neg().log().neg()
        } else {
            log_weights
        };
        let chosen = scores
            .clone()
            .equal(scores.max_dim(1).expand([n, self.components]))
            .float()
            .reshape([n, self.components, 1]);
        let pick = |x: Tensor<B, 3>| (x * chosen.clone()).sum_dim(1).reshape([n, self.dim]);
        let mean = pick(mu);
        if temperature > 0.0 {
            let noise = Tensor::random_like(&mean, Distribution::Normal(0.0, 1.0));
            mean + pick(std) * noise * temperature
        } else {
            mean
        }
    }
}

impl<B: Backend> MixtureHead<B> {
    /// The loss of [`DistributionHead::annealed_loss`] from parameters already computed
    /// (`parameters`), so that a head built on this one evaluates its network once.
    pub(super) fn tempered_nll(
        &self,
        (log_weights, mu, std): (Tensor<B, 2>, Tensor<B, 3>, Tensor<B, 3>),
        target: Tensor<B, 2>,
        temperature: f64,
    ) -> HeadLoss<B> {
        let [n, d] = target.dims();
        let y = target.reshape([n, 1, d]);
        let z = (y - mu) / std.clone();
        let log_density = (z.powi_scalar(2) * -0.5 - std.log() - HALF_LN_2PI)
            .sum_dim(2)
            .reshape([n, self.components]);
        let mut joint = log_weights + log_density;
        if temperature != 1.0 {
            joint = joint / temperature;
        }
        let top = joint.clone().max_dim(1).detach();
        let mut log_likelihood = (joint - top.clone()).exp().sum_dim(1).log() + top;
        if temperature != 1.0 {
            log_likelihood = log_likelihood * temperature;
        }
        HeadLoss {
            rec: log_likelihood.mean().neg(),
            kl: None,
        }
    }
}
