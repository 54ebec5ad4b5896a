//! [`CalmFlowConfig`]: the hyper-parameters of a [`CalmFlowModel`] (data and token
//! shapes, the backbone, the distribution head and what it predicts, the noise on paths
//! and context, the Markov control), their validation, and `init`, which builds the model.

use burn::config::Config;
use burn::tensor::backend::Backend;

use crate::backbone::{BackboneSettings, CausalBackbone};
use crate::encoder::SpatialEncoder;
use crate::error::ModelError;
use crate::head::{
    CvaeHead, FLOW_MIN_WIDTH, FlowHead, HeadKind, HeadShape, MixtureHead, OutputHead, Predict,
    VariationalDecoder,
};
use crate::model::CalmFlowModel;

// `Result` stays unimported here: the `Config` derive expands to code that names it.
type ModelResult<T> = crate::error::Result<T>;

/// Hyper-parameters of a [`CalmFlowModel`]; defaults follow the paper (docs/method.md).
#[derive(Config, Debug, PartialEq)]
pub struct CalmFlowConfig {
    /// Data dimension `D`.
    pub dim: usize,
    /// Spatial tokens per state `K`.
    #[config(default = 1)]
    pub n_space: usize,
    /// Transformer width `H`.
    #[config(default = 128)]
    pub hidden: usize,
    /// Number of transformer blocks.
    #[config(default = 4)]
    pub layers: usize,
    /// Attention heads (must divide `hidden`).
    #[config(default = 4)]
    pub heads: usize,
    /// MLP width as a multiple of `hidden` (GPT-NeoX: 4).
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// Fraction of each head's dimensions rotated by the rotary embedding (Pythia: 0.25).
    #[config(default = 0.25)]
    pub rotary_fraction: f64,
    /// Rotary base.
    #[config(default = 10000.0)]
    pub rotary_base: f64,
    /// Dropout probability (encoder, attention, residuals, decoder).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// LayerNorm epsilon of the backbone.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Parallel residual `x + Attn(LN₁x) + MLP(LN₂x)` (true) or sequential (false).
    #[config(default = true)]
    pub parallel_residual: bool,
    /// Two-layer MLP encoder (true) or a single Linear (false).
    #[config(default = true)]
    pub mlp_encoder: bool,
    /// The distribution head that outputs the next state (`variational`: the paper's;
    /// `cvae`, `mixture`, `flow`: heads that learn the conditional law, see
    /// `docs/method.md` §5a).
    #[config(default = "HeadKind::Variational")]
    pub head: HeadKind,
    /// What the head predicts: the next `state` (the paper), the `increment` per unit time
    /// or the path's `endpoint`.
    #[config(default = "Predict::State")]
    pub predict: Predict,
    /// Inner width of the head's MLPs. 0: automatic — `max(K·H, D)` for the `variational`
    /// head (the paper's decoder), `2·K·H` for the `mixture` (its output layer has
    /// `M·(2D + 1)` units; at `K·H = 32` a width of `K·H` was measured to be its
    /// bottleneck and wider than `2·K·H` no better up to D = 100, `docs/heads.md`; not `D`,
    /// which would give the head `M·2D²` weights at large `D`), `max(2·K·H, 256)` for the
    /// `flow` head (its velocity network models every coordinate jointly: on the digits,
    /// D = 64, a width of 128 drew a k-NN precision of 0.62, 256 one of 0.87) and `K·H`
    /// for the `cvae` head.
    #[config(default = 0)]
    pub decoder_width: usize,
    /// Variational decoder (true) or deterministic regression (false, the paper's
    /// ablation). Applies to the `variational` head only.
    #[config(default = true)]
    pub variational: bool,
    /// Components `M` of the `mixture` head.
    #[config(default = 8)]
    pub mixture_components: usize,
    /// Floor of the `mixture` head's standard deviations, in units of its target.
    #[config(default = 1e-3)]
    pub mixture_min_std: f64,
    /// Latent width of the `cvae` head. 0: `H`.
    #[config(default = 0)]
    pub latent_dim: usize,
    /// Residual blocks of the `flow` head's velocity network.
    #[config(default = 3)]
    pub flow_blocks: usize,
    /// Noise draws per slot in the `flow` head's training loss.
    #[config(default = 4)]
    pub flow_draws: usize,
    /// Midpoint steps with which the `flow` head is integrated when sampling.
    #[config(default = 8)]
    pub flow_steps: usize,
    /// Brownian-bridge noise scale `σ` of the training paths, added by `endpoint`
    /// predictions when stepping toward the sampled endpoint (0: straight paths).
    #[config(default = 0.0)]
    pub bridge_sigma: f64,
    /// Standard deviation `γ` of Gaussian noise added to every state after the first
    /// before it enters the context, in training and in the roll-out alike (conditioning
    /// augmentation, as in cascaded diffusion and Diffusion Forcing): the head's targets
    /// stay clean, so it learns to predict from a context as imperfect as its own
    /// roll-outs. 0: a clean context.
    #[config(default = 0.0)]
    pub context_noise: f64,
    /// Size of the prompt token-embedding table (0: no prompts).
    #[config(default = 0)]
    pub vocab_size: usize,
    /// Freeze the token embeddings (no gradient).
    #[config(default = true)]
    pub freeze_embeddings: bool,
    /// 0: every flow token attends to the whole history (the Volterra context of CaLMFlow).
    /// `P ≥ 1`: the Markov control — a token attends to the prompt and to the `P·K` tokens
    /// of its own time point only, so each prediction depends on the current state alone
    /// (as an ODE step does). `P` must equal the trajectories per sequence.
    #[config(default = 0)]
    pub markov_slots: usize,
}

impl CalmFlowConfig {
    /// Checks every field; returns a typed error naming the first bad one.
    pub fn validate(&self) -> ModelResult<()> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if self.dim == 0
            || self.n_space == 0
            || self.hidden == 0
            || self.layers == 0
            || self.heads == 0
        {
            return bad(format!(
                "dim, n_space, hidden, layers and heads must be ≥ 1 (got {}, {}, {}, {}, {})",
                self.dim, self.n_space, self.hidden, self.layers, self.heads
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return bad(format!(
                "hidden = {} is not divisible by heads = {}",
                self.hidden, self.heads
            ));
        }
        if self.mlp_ratio == 0 {
            return bad("mlp_ratio must be ≥ 1".into());
        }
        if !(0.0..=1.0).contains(&self.rotary_fraction) {
            return bad(format!(
                "rotary_fraction = {} must lie in [0, 1]",
                self.rotary_fraction
            ));
        }
        if !(self.rotary_base > 1.0 && self.rotary_base.is_finite()) {
            return bad(format!(
                "rotary_base = {} must be finite and > 1",
                self.rotary_base
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout = {} must lie in [0, 1)", self.dropout));
        }
        if !(self.layer_norm_eps > 0.0) {
            return bad(format!(
                "layer_norm_eps = {} must be positive",
                self.layer_norm_eps
            ));
        }
        if self.mixture_components == 0
            || self.flow_blocks == 0
            || self.flow_draws == 0
            || self.flow_steps == 0
        {
            return bad(format!(
                "mixture_components, flow_blocks, flow_draws and flow_steps must be ≥ 1 (got \
                 {}, {}, {}, {})",
                self.mixture_components, self.flow_blocks, self.flow_draws, self.flow_steps
            ));
        }
        if !(self.mixture_min_std > 0.0 && self.mixture_min_std.is_finite()) {
            return bad(format!(
                "mixture_min_std = {} must be finite and > 0",
                self.mixture_min_std
            ));
        }
        if !(self.bridge_sigma >= 0.0 && self.bridge_sigma.is_finite()) {
            return bad(format!(
                "bridge_sigma = {} must be finite and ≥ 0",
                self.bridge_sigma
            ));
        }
        if !(self.context_noise >= 0.0 && self.context_noise.is_finite()) {
            return bad(format!(
                "context_noise = {} must be finite and ≥ 0",
                self.context_noise
            ));
        }
        Ok(())
    }

    /// Evaluations of the head's network per draw: two per midpoint step for the `flow`
    /// head, one for the others (a roll-out of `N` time points draws `N − 1` times).
    pub fn head_evaluations(&self) -> usize {
        match self.head {
            HeadKind::Flow => 2 * self.flow_steps,
            _ => 1,
        }
    }

    /// The inner width of the head's MLPs (resolving `decoder_width = 0`).
    pub fn head_width(&self) -> usize {
        match (self.decoder_width, self.head) {
            (0, HeadKind::Variational) => (self.n_space * self.hidden).max(self.dim),
            (0, HeadKind::Mixture) => 2 * self.n_space * self.hidden,
            (0, HeadKind::Flow) => (2 * self.n_space * self.hidden).max(FLOW_MIN_WIDTH),
            (0, _) => self.n_space * self.hidden,
            (w, _) => w,
        }
    }

    fn output_head<B: Backend>(&self, device: &B::Device) -> OutputHead<B> {
        let shape = HeadShape {
            dim: self.dim,
            n_space: self.n_space,
            hidden: self.hidden,
            width: self.head_width(),
        };
        let latent = if self.latent_dim == 0 {
            self.hidden
        } else {
            self.latent_dim
        };
        match self.head {
            HeadKind::Variational => OutputHead::Variational(VariationalDecoder::new(
                self.dim,
                self.n_space,
                self.hidden,
                shape.width,
                self.variational,
                self.dropout,
                device,
            )),
            HeadKind::Cvae => OutputHead::Cvae(CvaeHead::new(shape, latent, device)),
            HeadKind::Mixture => OutputHead::Mixture(MixtureHead::new(
                shape,
                self.mixture_components,
                self.mixture_min_std,
                device,
            )),
            HeadKind::Flow => OutputHead::Flow(FlowHead::new(
                shape,
                self.flow_blocks,
                self.flow_draws,
                self.flow_steps,
                self.mixture_min_std,
                device,
            )),
        }
    }

    /// Builds the model on `device` after validating the configuration.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ModelResult<CalmFlowModel<B>> {
        self.validate()?;
        let settings = BackboneSettings {
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            mlp_width: self.mlp_ratio * self.hidden,
            rotary_fraction: self.rotary_fraction,
            rotary_base: self.rotary_base,
            dropout: self.dropout,
            layer_norm_eps: self.layer_norm_eps,
            parallel_residual: self.parallel_residual,
            vocab_size: self.vocab_size,
            freeze_embeddings: self.freeze_embeddings,
        };
        let model = CalmFlowModel {
            encoder: SpatialEncoder::new(
                self.dim,
                self.n_space,
                self.hidden,
                self.mlp_encoder,
                self.dropout,
                device,
            ),
            backbone: CausalBackbone::new(&settings, device),
            head: self.output_head(device),
            dim: self.dim,
            predict: self.predict,
            bridge_sigma: self.bridge_sigma,
            context_noise: self.context_noise,
            n_space: self.n_space,
            hidden: self.hidden,
            markov_slots: self.markov_slots,
        };
        Ok(crate::record_file::materialize(model))
    }
}
