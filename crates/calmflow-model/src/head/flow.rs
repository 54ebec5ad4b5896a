//! Flow-matching head (as MAR's "diffusion loss", arXiv 2406.11838, with a flow instead
//! of a diffusion): a small velocity MLP `v(y_s, s, c)` trained per slot by conditional
//! flow matching on the straight path `y_s = (1 − s)·ε + s·y`, `ε ~ N(0, I)`, with loss
//! `‖v(y_s, s, c) − (y − ε)‖²`; sampled by integrating `dy/ds = v` from `y_0 = τ·ε` with
//! a fixed number of midpoint steps.

use std::f64::consts::TAU;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Distribution, Tensor, backend::Backend};

use super::{DistributionHead, HeadLoss, HeadShape};

/// Fourier features of the flow time `s`: `s, sin(2πks), cos(2πks)`, `k = 1 … 4`.
const TIME_FREQUENCIES: usize = 4;
const TIME_FEATURES: usize = 1 + 2 * TIME_FREQUENCIES;

/// A velocity MLP over `R^D` per slot context.
#[derive(Module, Debug)]
pub struct FlowHead<B: Backend> {
    context: Linear<B>,
    input: Linear<B>,
    second: Linear<B>,
    third: Linear<B>,
    out: Linear<B>,
    draws: usize,
    steps: usize,
}

impl<B: Backend> FlowHead<B> {
    pub(crate) fn new(shape: HeadShape, draws: usize, steps: usize, device: &B::Device) -> Self {
        let w = shape.width;
        Self {
            context: LinearConfig::new(shape.n_space * shape.hidden, w).init(device),
            input: LinearConfig::new(shape.dim + TIME_FEATURES, w).init(device),
            second: LinearConfig::new(w, w).init(device),
            third: LinearConfig::new(w, w).init(device),
            out: LinearConfig::new(w, shape.dim).init(device),
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
        let x = crate::fused::linear_module(
            &self.input,
            Tensor::cat(vec![y, Self::time_features(s)], 1),
        ) + projected;
        let x = silu(crate::fused::linear_module(&self.second, silu(x)));
        let x = silu(crate::fused::linear_module(&self.third, x));
        crate::fused::linear_module(&self.out, x)
    }
}

impl<B: Backend> DistributionHead<B> for FlowHead<B> {
    /// `‖v(y_s, s, c) − (y − ε)‖²` summed over `D`, averaged over slots and the
    /// `draws` noise draws per slot.
    fn loss(&self, context: Tensor<B, 2>, target: Tensor<B, 2>) -> HeadLoss<B> {
        let projected =
            crate::fused::linear_module(&self.context, context).repeat_dim(0, self.draws);
        let y = target.repeat_dim(0, self.draws);
        let [n, _] = y.dims();
        let eps = Tensor::random_like(&y, Distribution::Normal(0.0, 1.0));
        let s = Tensor::random([n, 1], Distribution::Uniform(0.0, 1.0), &y.device());
        let ys = eps.clone() * (s.clone().neg() + 1.0) + y.clone() * s.clone();
        let rec = (self.velocity(ys, s, projected) - (y - eps))
            .powi_scalar(2)
            .sum_dim(1)
            .mean();
        HeadLoss { rec, kl: None }
    }

    fn sample(&self, context: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
        let [n, _] = context.dims();
        let projected = crate::fused::linear_module(&self.context, context);
        let device = projected.device();
        let dim = self.out.weight.dims()[1];
        let mut y = Tensor::<B, 2>::zeros([n, dim], &device);
        if temperature > 0.0 {
            y = Tensor::random([n, dim], Distribution::Normal(0.0, 1.0), &device) * temperature;
        }
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
