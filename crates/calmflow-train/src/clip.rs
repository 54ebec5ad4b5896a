//! Gradient clipping by the global norm of all gradients (PyTorch's `clip_grad_norm_`):
//! `g ← g · min(1, c / (‖g‖ + 1e-6))` with `‖g‖² = Σ over every parameter tensor`.
//! burn's own `GradientClipping::Norm` clips each tensor separately, which is not what
//! the paper's "clipping 1.0" means.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g * self.factor);
        }
    }
}

/// The global gradient norm of `module`'s parameters.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> { grads, total: None };
    module.visit(&mut v);
    v.total
        .map_or(0.0, |t| t.into_scalar().elem::<f64>())
        .sqrt()
}

/// Scales all gradients so that their global norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_grad_norm::<B, M>(module, grads);
    if norm.is_finite() && norm > max_norm {
        module.visit(&mut Scale {
            grads,
            factor: max_norm / (norm + 1e-6),
        });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};

    type B = Autodiff<NdArray<f64>>;

    /// Gradients of `sum(W x + b)` are known: ∂/∂W = x (per output row), ∂/∂b = 1.
    #[test]
    fn global_norm_is_over_all_tensors_and_clipping_rescales_it() {
        let dev = Default::default();
        let layer: Linear<B> = LinearConfig::new(2, 3).init(&dev);
        let x = Tensor::<B, 2>::from_floats([[3.0, 4.0]], &dev);
        let loss = layer.forward(x).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        // ‖∂W‖² = 3·(9 + 16) = 75, ‖∂b‖² = 3.
        let norm = global_grad_norm::<B, _>(&layer, &grads);
        assert!((norm - 78f64.sqrt()).abs() < 1e-9);
        let before = clip_global_norm::<B, _>(&layer, &mut grads, 1.0);
        assert!((before - 78f64.sqrt()).abs() < 1e-9);
        let after = global_grad_norm::<B, _>(&layer, &grads);
        assert!((after - 1.0).abs() < 1e-6, "{after}");
    }
}
