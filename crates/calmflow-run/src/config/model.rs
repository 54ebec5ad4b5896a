//! `[model]`, `[cfm]` and `[temperature]`: the overrides of the model's defaults, the CFM
//! baseline's network, and the sampling-temperature sweep.

use calmflow_model::{CalmFlowConfig, HeadKind, Predict, RECOMMENDED_HEAD};
use calmflow_train::{CfmVariant, TEMPERATURE_GRID, TemperatureScore, VelocityMlpConfig};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[model]`: overrides of [`CalmFlowConfig`]'s defaults (`dim` comes from the data).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// Spatial tokens per state `K` (default 1).
    pub n_space: Option<usize>,
    /// Transformer width `H` (default 128).
    pub hidden: Option<usize>,
    /// Transformer blocks (default 4).
    pub layers: Option<usize>,
    /// Attention heads (default 4).
    pub heads: Option<usize>,
    /// MLP width as a multiple of `H` (default 4).
    pub mlp_ratio: Option<usize>,
    /// Rotary fraction of each head (default 0.25).
    pub rotary_fraction: Option<f64>,
    /// Rotary base (default 10000).
    pub rotary_base: Option<f64>,
    /// Dropout (default 0.1).
    pub dropout: Option<f64>,
    /// Parallel residual (default true).
    pub parallel_residual: Option<bool>,
    /// Two-layer MLP encoder (default true).
    pub mlp_encoder: Option<bool>,
    /// Distribution head: `variational` (the paper's), `cvae`, `mixture` or `flow`.
    pub head: Option<HeadKind>,
    /// What the head predicts: `state` (the paper's), `increment` or `endpoint`.
    pub predict: Option<Predict>,
    /// Inner width of the head's MLPs (0: `max(K·H, D)` for `variational`, `K·H` else).
    pub decoder_width: Option<usize>,
    /// Variational layer of the `variational` head (default true).
    pub variational: Option<bool>,
    /// Components of the `mixture` head (default 8).
    pub mixture_components: Option<usize>,
    /// Standard-deviation floor of the `mixture` head (default 1e-3).
    pub mixture_min_std: Option<f64>,
    /// Latent width of the `cvae` head (0: `H`).
    pub latent_dim: Option<usize>,
    /// Residual blocks of the `flow` head's velocity network (default 3).
    pub flow_blocks: Option<usize>,
    /// Noise draws per slot in the `flow` head's loss (default 4).
    pub flow_draws: Option<usize>,
    /// Midpoint steps of the `flow` head's sampler (default 8).
    pub flow_steps: Option<usize>,
    /// Brownian-bridge σ added by `predict = "endpoint"` when sampling (default: `[flow.path]
    /// sigma` with bridge noise, else 0).
    pub bridge_sigma: Option<f64>,
    /// Noise added to the context's states after the first, in training and sampling
    /// (default 0).
    pub context_noise: Option<f64>,
    /// 0: full (Volterra) context; `P`: the Markov control, each token sees its own time
    /// point only (default 0).
    pub markov_slots: Option<usize>,
}

impl ModelSection {
    /// Every field set to its default (what `calmflow config` prints): [`CalmFlowConfig`]'s,
    /// except the head, which is the recommended one ([`RECOMMENDED_HEAD`]).
    pub fn defaults() -> Self {
        let c = CalmFlowConfig::new(1)
            .with_head(RECOMMENDED_HEAD)
            .with_predict(RECOMMENDED_HEAD.default_predict());
        Self {
            n_space: Some(c.n_space),
            hidden: Some(c.hidden),
            layers: Some(c.layers),
            heads: Some(c.heads),
            mlp_ratio: Some(c.mlp_ratio),
            rotary_fraction: Some(c.rotary_fraction),
            rotary_base: Some(c.rotary_base),
            dropout: Some(c.dropout),
            parallel_residual: Some(c.parallel_residual),
            mlp_encoder: Some(c.mlp_encoder),
            head: Some(c.head),
            predict: Some(c.predict),
            decoder_width: Some(c.decoder_width),
            variational: Some(c.variational),
            mixture_components: Some(c.mixture_components),
            mixture_min_std: Some(c.mixture_min_std),
            latent_dim: Some(c.latent_dim),
            flow_blocks: Some(c.flow_blocks),
            flow_draws: Some(c.flow_draws),
            flow_steps: Some(c.flow_steps),
            // Taken from `[flow.path]` unless set (see `RunConfig::calmflow_model`).
            bridge_sigma: None,
            context_noise: Some(c.context_noise),
            markov_slots: Some(c.markov_slots),
        }
    }

    /// The model configuration for data of dimension `dim`, validated. Unset fields take
    /// [`CalmFlowConfig`]'s defaults, except `head` ([`RECOMMENDED_HEAD`]) and `predict`
    /// (the head's [`HeadKind::default_predict`]: `head = "variational"` alone reproduces
    /// the paper).
    pub fn build(&self, dim: usize) -> Result<CalmFlowConfig, ConfigError> {
        let head = self.head.unwrap_or(RECOMMENDED_HEAD);
        let mut c = CalmFlowConfig::new(dim)
            .with_head(head)
            .with_predict(head.default_predict());
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        set!(
            n_space,
            hidden,
            layers,
            heads,
            mlp_ratio,
            rotary_fraction,
            rotary_base,
            dropout,
            parallel_residual,
            mlp_encoder,
            head,
            predict,
            decoder_width,
            variational,
            mixture_components,
            mixture_min_std,
            latent_dim,
            flow_blocks,
            flow_draws,
            flow_steps,
            bridge_sigma,
            context_noise,
            markov_slots
        );
        c.validate()
            .map_err(|e| ConfigError::Invalid(format!("[model]: {e}")))?;
        Ok(c)
    }
}

/// `[cfm]`: the baseline's network and variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CfmSection {
    /// `i-cfm`, `ot-cfm` or `sb-cfm`.
    pub variant: CfmVariant,
    /// Path noise σ (torchcfm: 0.01; SB-CFM couples with reg 2σ²).
    pub sigma: f64,
    /// Hidden width of the velocity MLP.
    pub width: usize,
    /// Hidden layers of the velocity MLP.
    pub hidden_layers: usize,
}

impl Default for CfmSection {
    fn default() -> Self {
        Self {
            variant: CfmVariant::ICfm,
            sigma: 0.01,
            width: 64,
            hidden_layers: 3,
        }
    }
}

impl CfmSection {
    /// The network configuration for data of dimension `dim`.
    pub fn network(&self, dim: usize) -> VelocityMlpConfig {
        VelocityMlpConfig::new(dim)
            .with_width(self.width)
            .with_hidden_layers(self.hidden_layers)
    }
}

/// `[temperature]`: how `calmflow train` chooses the sampling temperature `τ` of a
/// CaLMFlow model after training (recorded in the checkpoint; `calmflow sample` uses it
/// unless given `--temperature`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemperatureSection {
    /// Sweep the candidates on validation data after training (default true).
    pub sweep: bool,
    /// The score minimised: `energy` (default), `mmd` (median bandwidth) or `w2`.
    pub score: TemperatureScore,
    /// Candidate temperatures.
    pub candidates: Vec<f64>,
    /// Validation points scored per candidate (at most; default 1000).
    pub max_points: usize,
}

impl Default for TemperatureSection {
    fn default() -> Self {
        Self {
            sweep: true,
            score: TemperatureScore::Energy,
            candidates: TEMPERATURE_GRID.to_vec(),
            max_points: 1000,
        }
    }
}

impl TemperatureSection {
    /// Checks the candidates and the point budget.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sweep && self.candidates.is_empty() {
            return Err(ConfigError::Invalid(
                "[temperature] candidates is empty (give at least one, or sweep = false)".into(),
            ));
        }
        if let Some(bad) = self
            .candidates
            .iter()
            .find(|t| !(t.is_finite() && **t >= 0.0))
        {
            return Err(ConfigError::Invalid(format!(
                "[temperature] candidate {bad} must be finite and ≥ 0"
            )));
        }
        if self.max_points < 2 {
            return Err(ConfigError::Invalid(format!(
                "[temperature] max_points = {} must be ≥ 2",
                self.max_points
            )));
        }
        Ok(())
    }
}
