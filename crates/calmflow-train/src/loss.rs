//! `VolterraFlowLoss`: `L = L_rec + β·L_KL` (docs/method.md §6).
//!
//! `L_rec` is the squared error between each slot's decoded prediction and the slot one
//! time point later, summed over `D` and averaged over slots and batch; `L_KL` is
//! `KL(N(μ, σ²) ‖ N(0, I))` summed over the `H` latent dimensions and averaged over latent
//! tokens and batch. The last time point predicts nothing: its slots (reconstruction) and
//! its `K·P` latent tokens (KL) are excluded. Prompt positions never reach the loss (the
//! model returns flow positions only).

use burn::tensor::{Tensor, backend::Backend};
use calmflow_model::{DecoderOutput, HeadLoss};
use calmflow_tokenize::SpaceTimeLayout;

use crate::error::{Result, invalid, shape_error};

/// The terms of a training loss, as scalar tensors (shape `[1]`).
#[derive(Debug, Clone)]
pub struct LossTerms<B: Backend> {
    /// What is minimised.
    pub total: Tensor<B, 1>,
    /// Reconstruction (CaLMFlow) or velocity regression (CFM) term.
    pub rec: Tensor<B, 1>,
    /// KL term before weighting by `β` (absent without a variational layer, and for CFM).
    pub kl: Option<Tensor<B, 1>>,
}

/// `L = L_rec + β·L_KL`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VolterraFlowLoss {
    /// KL weight `β` (the paper: 0.3).
    pub beta: f64,
}

impl Default for VolterraFlowLoss {
    fn default() -> Self {
        Self { beta: 0.3 }
    }
}

impl VolterraFlowLoss {
    /// `rec + β·kl` from a distribution head's loss terms
    /// ([`CalmFlowModel::head_loss`](calmflow_model::CalmFlowModel::head_loss)): what
    /// training minimises for every head.
    pub fn combine<B: Backend>(&self, terms: HeadLoss<B>) -> Result<LossTerms<B>> {
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(invalid(format!(
                "beta = {} must be finite and ≥ 0",
                self.beta
            )));
        }
        let HeadLoss { rec, kl } = terms;
        let total = match &kl {
            Some(kl) => rec.clone() + kl.clone() * self.beta,
            None => rec.clone(),
        };
        Ok(LossTerms { total, rec, kl })
    }

    /// The paper's loss written out on a teacher-forced forward pass of the `variational`
    /// head (the reference that the head's own loss is tested against): `output` of the
    /// model on `slots`
    /// `(B, N·P, D)` laid out as `layout`.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Tensor, TensorData};
    /// use calmflow_model::{DecoderOutput, HeadLoss};
    /// use calmflow_tokenize::SpaceTimeLayout;
    /// use calmflow_train::VolterraFlowLoss;
    /// type B = NdArray<f32>;
    /// let dev = Default::default();
    /// // N = 2 times, P = 1, D = 1: slot 0 (x = 0) predicts slot 1 (x = 1); it decodes 3.
    /// let slots = Tensor::<B, 3>::from_data(TensorData::new(vec![0.0f32, 1.0], [1, 2, 1]), &dev);
    /// let decoded = Tensor::<B, 3>::from_data(TensorData::new(vec![3.0f32, 9.0], [1, 2, 1]), &dev);
    /// let out = DecoderOutput { decoded, mu: None, log_var: None };
    /// let terms = VolterraFlowLoss::default()
    ///     .forward(&out, slots, &SpaceTimeLayout::new(2, 1, 1).unwrap())
    ///     .unwrap();
    /// assert_eq!(terms.total.into_scalar(), 4.0); // (3 − 1)²; the last slot is excluded
    /// ```
    pub fn forward<B: Backend>(
        &self,
        output: &DecoderOutput<B>,
        slots: Tensor<B, 3>,
        layout: &SpaceTimeLayout,
    ) -> Result<LossTerms<B>> {
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(invalid(format!(
                "beta = {} must be finite and ≥ 0",
                self.beta
            )));
        }
        let [b, s, d] = slots.dims();
        if s != layout.n_slots() || output.decoded.dims() != [b, s, d] {
            return Err(shape_error(
                "decoded slots",
                format!("({b}, {}, {d}) matching the slots", layout.n_slots()),
                output.decoded.dims(),
            ));
        }
        let p = layout.n_traj;
        let predicted = output.decoded.clone().narrow(1, 0, s - p);
        let next = slots.narrow(1, p, s - p);
        let rec = (predicted - next).powi_scalar(2).sum_dim(2).mean();
        let kl = match (&output.mu, &output.log_var) {
            (Some(mu), Some(log_var)) => {
                let kept = (s - p) * layout.n_space;
                if mu.dims()[1] != s * layout.n_space || log_var.dims() != mu.dims() {
                    return Err(shape_error(
                        "latent posteriors",
                        format!("(B, {}, H)", s * layout.n_space),
                        mu.dims(),
                    ));
                }
                let mu = mu.clone().narrow(1, 0, kept);
                let log_var = log_var.clone().narrow(1, 0, kept);
                let kl = (mu.clone() * mu + log_var.clone().exp() - log_var - 1.0) * 0.5;
                Some(kl.sum_dim(2).mean())
            }
            _ => None,
        };
        let total = match &kl {
            Some(kl) => rec.clone() + kl.clone() * self.beta,
            None => rec.clone(),
        };
        Ok(LossTerms { total, rec, kl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn tensor(values: Vec<f32>, shape: [usize; 3]) -> Tensor<B, 3> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    /// B = 1, N = 3, P = 2, K = 1, D = 2, H = 1: every term by hand.
    #[test]
    fn matches_a_hand_computed_case() {
        let layout = SpaceTimeLayout::new(3, 2, 1).unwrap();
        // Slots (i, p) in order (0,0) (0,1) (1,0) (1,1) (2,0) (2,1).
        let slots = tensor(
            vec![0., 0., 1., 1., 1., 2., 3., 3., 2., 4., 5., 5.],
            [1, 6, 2],
        );
        // Predictions of slots (1,0) (1,1) (2,0) (2,1), then two ignored rows.
        let decoded = tensor(
            vec![1., 1., 3., 5., 2., 2., 5., 5., 100., 100., -100., 7.],
            [1, 6, 2],
        );
        // Squared errors: (0+1) + (0+4) + (0+4) + (0+0) = 9 over 4 slots.
        let mu = tensor(vec![1., 0., 2., -1., 50., 50.], [1, 6, 1]);
        let log_var = tensor(vec![0., 1., 0., -1., 9., 9.], [1, 6, 1]);
        // KL per token: ½(μ² + e^{l} − 1 − l): 0.5, ½(e − 2), 2, ½(1 + e^{-1}), mean of 4.
        let e = std::f64::consts::E;
        let kl_want = (0.5 + 0.5 * (e - 2.0) + 2.0 + 0.5 * (1.0 + 1.0 / e)) / 4.0;
        let out = DecoderOutput {
            decoded,
            mu: Some(mu),
            log_var: Some(log_var),
        };
        let terms = VolterraFlowLoss { beta: 0.3 }
            .forward(&out, slots, &layout)
            .unwrap();
        let rec: f32 = terms.rec.into_scalar();
        let kl: f32 = terms.kl.unwrap().into_scalar();
        let total: f32 = terms.total.into_scalar();
        assert!((rec as f64 - 2.25).abs() < 1e-6);
        assert!((kl as f64 - kl_want).abs() < 1e-6, "{kl} vs {kl_want}");
        assert!((total as f64 - (2.25 + 0.3 * kl_want)).abs() < 1e-5);
    }

    #[test]
    fn mismatched_shapes_and_bad_beta_are_errors() {
        let layout = SpaceTimeLayout::new(3, 2, 1).unwrap();
        let slots = tensor(vec![0.0; 12], [1, 6, 2]);
        let out = DecoderOutput {
            decoded: tensor(vec![0.0; 10], [1, 5, 2]),
            mu: None,
            log_var: None,
        };
        assert!(
            VolterraFlowLoss::default()
                .forward(&out, slots.clone(), &layout)
                .is_err()
        );
        let out = DecoderOutput {
            decoded: tensor(vec![0.0; 12], [1, 6, 2]),
            mu: None,
            log_var: None,
        };
        let bad = VolterraFlowLoss { beta: f64::NAN };
        assert!(bad.forward(&out, slots, &layout).is_err());
    }
}
