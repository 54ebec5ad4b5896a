//! Flow-matching head (as MAR's "diffusion loss", arXiv 2406.11838, with a flow instead
//! of a diffusion, from a learned Gaussian instead of `N(0, I)`): a diagonal Gaussian
//! `N(μ(c), diag σ(c)²)` fitted by negative log-likelihood, and a velocity network
//! `v(y_s, s, c)` trained by conditional flow matching on the straight path
//! `y_s = (1 − s)·b + s·y` from a draw `b = μ + σ ⊙ ε` of that Gaussian (held fixed: the
//! flow does not move the Gaussian) to the target `y`, with loss
//! `−log N(y; μ, σ²) + ‖v(y_s, s, c) − (y − b)‖²`; sampled by drawing `b = μ + τ σ ⊙ ε`
//! and integrating `dy/ds = v` from it with a fixed number of midpoint steps.
//!
//! The Gaussian carries the slot's location and scale, which it learns in a few hundred
//! steps even where the law is narrow (a roll-out's later steps, an OT-coupled pair in
//! 2-D); the flow only has to reshape it, and starts as the identity.
//!
//! The network is MAR's: residual blocks `x ← x + g ⊙ MLP(LN(x)·(1 + a) + b)` whose shift
//! `b`, scale `a` and gate `g` are linear in `SiLU(W_c c + W_s φ(s))` (adaptive layer
//! norm), so that the slot's context modulates every block rather than entering once; the
//! modulations and the output layer start at zero, every block as the identity and the
//! velocity as 0. Unlike a diagonal mixture, it draws all `D` coordinates jointly, so the
//! correlations between them (neighbouring pixels, co-expressed genes) are modelled.

use std::f64::consts::TAU;

use crate::fused::silu;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor, backend::Backend};

use super::mixture::MixtureHead;
use super::{DistributionHead, HeadLoss, HeadShape};
use crate::norm::layer_norm_plain;

/// Fourier features of the flow time `s`: `s, sin(2πks), cos(2πks)`, `k = 1 … 4`.
const TIME_FREQUENCIES: usize = 4;
const TIME_FEATURES: usize = 1 + 2 * TIME_FREQUENCIES;

/// A linear map whose weights and bias start at 0.
fn zero_linear<B: Backend>(input: usize, output: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(input, output)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

/// One residual block: adaptive layer norm, `Linear → SiLU → Linear`, gated residual.
#[derive(Module, Debug)]
pub struct FlowBlock<B: Backend> {
    modulation: Linear<B>,
    first: Linear<B>,
    second: Linear<B>,
}

impl<B: Backend> FlowBlock<B> {
    fn new(width: usize, device: &B::Device) -> Self {
        Self {
            modulation: zero_linear(width, 3 * width, device),
            first: LinearConfig::new(width, width).init(device),
            second: LinearConfig::new(width, width).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 2>, condition: Tensor<B, 2>) -> Tensor<B, 2> {
        let [shift, scale, gate] = modulations(&self.modulation, condition);
        let h = layer_norm_plain(x.clone(), 1e-6) * (scale + 1.0) + shift;
        let h = crate::fused::linear_module(
            &self.second,
            silu(crate::fused::linear_module(&self.first, h)),
        );
        x + gate * h
    }
}

/// The `N` modulation vectors `(n, W)` that `linear` makes from the condition.
fn modulations<B: Backend, const N: usize>(
    linear: &Linear<B>,
    condition: Tensor<B, 2>,
) -> [Tensor<B, 2>; N] {
    let m = crate::fused::linear_module(linear, condition);
    let width = m.dims()[1] / N;
    std::array::from_fn(|k| m.clone().narrow(1, k * width, width))
}

/// A velocity network over `R^D` per slot context.
#[derive(Module, Debug)]
pub struct FlowHead<B: Backend> {
    base: MixtureHead<B>,
    context: Linear<B>,
    time: Linear<B>,
    input: Linear<B>,
    blocks: Vec<FlowBlock<B>>,
    final_modulation: Linear<B>,
    out: Linear<B>,
    draws: usize,
    steps: usize,
}

impl<B: Backend> FlowHead<B> {
    pub(crate) fn new(
        shape: HeadShape,
        blocks: usize,
        draws: usize,
        steps: usize,
        min_std: f64,
        device: &B::Device,
    ) -> Self {
        let w = shape.width;
        Self {
            base: MixtureHead::new(shape, 1, min_std, device),
            context: LinearConfig::new(shape.n_space * shape.hidden, w).init(device),
            time: LinearConfig::new(TIME_FEATURES, w).init(device),
            input: LinearConfig::new(shape.dim, w).init(device),
            blocks: (0..blocks).map(|_| FlowBlock::new(w, device)).collect(),
            final_modulation: zero_linear(w, 2 * w, device),
            out: zero_linear(w, shape.dim, device),
            draws,
            steps,
        }
    }

    fn time_features(s: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut parts = vec![s.clone()];
        for k in 1..=TIME_FREQUENCIES {
            let angle = s.clone() * (TAU * k as f64);
            parts.push(angle.clone().sin());
            parts.push(angle.cos());
        }
        Tensor::cat(parts, 1)
    }

    /// `v(y, s, c)` with the context already projected (`projected = W_c c + b_c`).
    fn velocity(&self, y: Tensor<B, 2>, s: Tensor<B, 2>, projected: Tensor<B, 2>) -> Tensor<B, 2> {
        let condition =
            silu(projected + crate::fused::linear_module(&self.time, Self::time_features(s)));
        let mut x = crate::fused::linear_module(&self.input, y);
        for block in &self.blocks {
            x = block.forward(x, condition.clone());
        }
        let [shift, scale] = modulations(&self.final_modulation, condition);
        let x = layer_norm_plain(x, 1e-6) * (scale + 1.0) + shift;
        crate::fused::linear_module(&self.out, x)
    }
}

impl<B: Backend> DistributionHead<B> for FlowHead<B> {
    /// `−log N(y; μ, σ²) + ‖v(y_s, s, c) − (y − b)‖²` (the squared error summed over `D`),
    /// averaged over slots and, for the flow term, the `draws` base draws per slot.
    fn loss(&self, context: Tensor<B, 2>, target: Tensor<B, 2>) -> HeadLoss<B> {
        let [n, dim] = target.dims();
        let parameters = self.base.parameters(context.clone());
        let (_, mu, std) = parameters.clone();
        let nll = self.base.tempered_nll(parameters, target.clone(), 1.0).rec;
        let mu = mu.reshape([n, dim]).detach().repeat_dim(0, self.draws);
        let std = std.reshape([n, dim]).detach().repeat_dim(0, self.draws);
        let projected =
            crate::fused::linear_module(&self.context, context).repeat_dim(0, self.draws);
        let y = target.repeat_dim(0, self.draws);
        let rows = n * self.draws;
        let b = mu + std * Tensor::random_like(&y, Distribution::Normal(0.0, 1.0));
        let s = Tensor::random([rows, 1], Distribution::Uniform(0.0, 1.0), &y.device());
        let ys = b.clone() * (s.clone().neg() + 1.0) + y.clone() * s.clone();
        let flow = (self.velocity(ys, s, projected) - (y - b))
            .powi_scalar(2)
            .sum_dim(1)
            .mean();
        HeadLoss {
            rec: nll + flow,
            kl: None,
        }
    }

    fn sample(&self, context: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
        let [n, _] = context.dims();
        let mut y = self.base.sample(context.clone(), temperature);
        let projected = crate::fused::linear_module(&self.context, context);
        let device = projected.device();
        let h = 1.0 / self.steps as f64;
        for k in 0..self.steps {
            let s0 = Tensor::full([n, 1], k as f64 * h, &device);
            let s1 = Tensor::full([n, 1], (k as f64 + 0.5) * h, &device);
            let v = self.velocity(y.clone(), s0, projected.clone());
            let mid = y.clone() + v * (0.5 * h);
            y = y + self.velocity(mid, s1, projected.clone()) * h;
        }
        y
    }
}
