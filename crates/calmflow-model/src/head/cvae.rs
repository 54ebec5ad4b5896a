//! Conditional VAE head (Sohn et al. 2015): posterior `q(ζ | c, y)`, learned prior
//! `p(ζ | c)`, decoder `Dec(ζ, c)`, trained by `‖Dec(ζ_q, c) − y‖² + β·KL(q ‖ p)`; sampled
//! with `ζ = μ_p + τ σ_p ε` from the prior.
//!
//! Unlike the paper's head, the latent sees the target during training (teacher forcing
//! gives it), so it carries the randomness of `y` that the context cannot predict.

use burn::module::Module;
use burn::tensor::{Distribution, Tensor, backend::Backend};

use super::mlp::HeadMlp;
use super::variational::VARIANCE_FLOOR;
use super::{DistributionHead, HeadLoss, HeadShape};

/// A conditional VAE over `R^D` per slot context, latent width `Z`.
#[derive(Module, Debug)]
pub struct CvaeHead<B: Backend> {
    prior: HeadMlp<B>,
    posterior: HeadMlp<B>,
    decoder: HeadMlp<B>,
    latent: usize,
}

impl<B: Backend> CvaeHead<B> {
    pub(crate) fn new(shape: HeadShape, latent: usize, device: &B::Device) -> Self {
        let c = shape.n_space * shape.hidden;
        Self {
            prior: HeadMlp::new(c, shape.width, 2 * latent, device),
            posterior: HeadMlp::new(c + shape.dim, shape.width, 2 * latent, device),
            decoder: HeadMlp::new(c + latent, shape.width, shape.dim, device),
            latent,
        }
    }

    /// `(μ, ln σ²)` of a Gaussian from a network's `2Z` outputs.
    fn gaussian(&self, raw: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let z = self.latent;
        let mu = raw.clone().narrow(1, 0, z);
        let log_var = (raw.narrow(1, z, z).exp() + VARIANCE_FLOOR).log();
        (mu, log_var)
    }

    fn decode(&self, zeta: Tensor<B, 2>, context: Tensor<B, 2>) -> Tensor<B, 2> {
        self.decoder.forward(Tensor::cat(vec![context, zeta], 1))
    }
}

impl<B: Backend> DistributionHead<B> for CvaeHead<B> {
    /// Squared error of the decoded posterior draw (summed over `D`) and
    /// `KL(q ‖ p) = ½ Σ (ln σ_p² − ln σ_q² + (σ_q² + (μ_q − μ_p)²)/σ_p² − 1)`, each averaged
    /// over slots.
    fn loss(&self, context: Tensor<B, 2>, target: Tensor<B, 2>) -> HeadLoss<B> {
        let (mu_p, lv_p) = self.gaussian(self.prior.forward(context.clone()));
        let (mu_q, lv_q) = self.gaussian(
            self.posterior
                .forward(Tensor::cat(vec![context.clone(), target.clone()], 1)),
        );
        let noise = Tensor::random_like(&mu_q, Distribution::Normal(0.0, 1.0));
        let zeta = mu_q.clone() + (lv_q.clone() * 0.5).exp() * noise;
        let rec = (self.decode(zeta, context) - target)
            .powi_scalar(2)
            .sum_dim(1)
            .mean();
        let kl = ((lv_p.clone() - lv_q.clone()
            + (lv_q.exp() + (mu_q - mu_p).powi_scalar(2)) / lv_p.exp()
            - 1.0)
            * 0.5)
            .sum_dim(1)
            .mean();
        HeadLoss { rec, kl: Some(kl) }
    }

    fn sample(&self, context: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
        let (mu, log_var) = self.gaussian(self.prior.forward(context.clone()));
        let zeta = if temperature > 0.0 {
            let noise = Tensor::random_like(&mu, Distribution::Normal(0.0, 1.0));
            mu + (log_var * 0.5).exp() * noise * temperature
        } else {
            mu
        };
        self.decode(zeta, context)
    }
}
