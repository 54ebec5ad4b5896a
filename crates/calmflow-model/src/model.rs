//! `CalmFlowModel`: encoder → causal backbone → variational decoder, with teacher-forced
//! training forward, KV-cached incremental decoding and autoregressive roll-out.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::attention::TimeWindow;
use crate::backbone::{BackboneSettings, CausalBackbone, KvCache};
use crate::decoder::{DecoderOutput, VariationalDecoder};
use crate::encoder::SpatialEncoder;
use crate::error::{ModelError, shape_error};

// `Result` stays unimported here: the `Config` derive expands to code that names it.
type ModelResult<T> = crate::error::Result<T>;

/// Hyper-parameters of a [`CalmFlowModel`]; defaults follow METHOD.md.
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
    /// Variational decoder (true) or deterministic regression (false, the paper's ablation).
    #[config(default = true)]
    pub variational: bool,
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
        Ok(())
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
            decoder: VariationalDecoder::new(
                self.dim,
                self.n_space,
                self.hidden,
                self.variational,
                self.dropout,
                device,
            ),
            dim: self.dim,
            n_space: self.n_space,
            hidden: self.hidden,
            markov_slots: self.markov_slots,
        };
        crate::record_file::materialize(&model);
        Ok(model)
    }
}

/// CaLMFlow's network: states are encoded into `K` tokens each, the causal backbone reads
/// `[prompt ; tokens]`, and the decoder maps each slot's `K` outputs to the next state.
#[derive(Module, Debug)]
pub struct CalmFlowModel<B: Backend> {
    pub(crate) encoder: SpatialEncoder<B>,
    pub(crate) backbone: CausalBackbone<B>,
    decoder: VariationalDecoder<B>,
    dim: usize,
    n_space: usize,
    hidden: usize,
    markov_slots: usize,
}

/// A prompt prefix: embeddings `(B, L_p, H)` and optional left padding `(B, L_p)`
/// (`true` = padding token, ignored by attention).
#[derive(Debug, Clone)]
pub struct Prompt<B: Backend> {
    /// Prompt embeddings.
    pub embeddings: Tensor<B, 3>,
    /// Padding mask, `true` for padding positions.
    pub padding: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> CalmFlowModel<B> {
    /// Data dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Spatial tokens per state `K`.
    pub fn n_space(&self) -> usize {
        self.n_space
    }

    /// Transformer width `H`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The backbone.
    pub fn backbone(&self) -> &CausalBackbone<B> {
        &self.backbone
    }

    /// The decoder.
    pub fn decoder(&self) -> &VariationalDecoder<B> {
        &self.decoder
    }

    /// Slots per time point of the Markov control (0: full, Volterra context).
    pub fn markov_slots(&self) -> usize {
        self.markov_slots
    }

    fn window(&self, prompt_len: usize) -> Option<TimeWindow> {
        (self.markov_slots > 0).then(|| TimeWindow {
            prompt_len,
            tokens_per_time: self.markov_slots * self.n_space,
        })
    }

    /// An empty key/value cache for incremental decoding.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.backbone.n_layers())
    }

    fn check_slots(&self, slots: &Tensor<B, 3>, what: &'static str) -> ModelResult<()> {
        let [b, s, d] = slots.dims();
        if b == 0 || s == 0 || d != self.dim {
            return Err(shape_error(
                what,
                format!("(B ≥ 1, S ≥ 1, {})", self.dim),
                [b, s, d],
            ));
        }
        Ok(())
    }

    fn check_prompt(&self, prompt: &Prompt<B>, batch: usize) -> ModelResult<()> {
        let [b, l, h] = prompt.embeddings.dims();
        if b != batch || h != self.hidden || l == 0 {
            return Err(shape_error(
                "prompt embeddings",
                format!("({batch}, L ≥ 1, {})", self.hidden),
                [b, l, h],
            ));
        }
        if let Some(p) = &prompt.padding
            && p.dims() != [b, l]
        {
            return Err(shape_error(
                "prompt padding",
                format!("({b}, {l})"),
                p.dims(),
            ));
        }
        Ok(())
    }

    /// Embeds prompt token ids `(B, L_p)` with the backbone's token-embedding table.
    pub fn embed_prompt(
        &self,
        ids: Tensor<B, 2, Int>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> ModelResult<Prompt<B>> {
        let embeddings = self.backbone.embed(ids).ok_or(ModelError::NoVocabulary)?;
        Ok(Prompt {
            embeddings,
            padding,
        })
    }

    /// Teacher-forced forward on packed slots `(B, S, D)` (slot `i·P + p` = trajectory `p`
    /// at time `i`), after an optional prompt. Returns, for every slot, the decoded
    /// prediction of the slot one time point later, and the latent posteriors.
    pub fn forward(
        &self,
        slots: Tensor<B, 3>,
        prompt: Option<&Prompt<B>>,
        temperature: f64,
    ) -> ModelResult<DecoderOutput<B>> {
        self.check_slots(&slots, "slots")?;
        let [b, s, _] = slots.dims();
        let tokens = self.encoder.forward(slots);
        let flow_len = s * self.n_space;
        let hidden = match prompt {
            None => self.backbone.forward(tokens, None, None, self.window(0)),
            Some(p) => {
                self.check_prompt(p, b)?;
                let lp = p.embeddings.dims()[1];
                let x = Tensor::cat(vec![p.embeddings.clone(), tokens], 1);
                let padding = p.padding.clone().map(|pad| {
                    let flow = Tensor::<B, 2, Int>::zeros([b, flow_len], &pad.device()).bool();
                    Tensor::cat(vec![pad, flow], 1)
                });
                self.backbone
                    .forward(x, None, padding, self.window(lp))
                    .narrow(1, lp, flow_len)
            }
        };
        Ok(self.decoder.forward(hidden, temperature))
    }

    /// Runs a prompt through the backbone, filling `cache` (call before the first
    /// [`CalmFlowModel::step`]).
    pub fn prefill(&self, prompt: &Prompt<B>, cache: &mut KvCache<B>) -> ModelResult<()> {
        self.check_prompt(prompt, prompt.embeddings.dims()[0])?;
        self.backbone.forward(
            prompt.embeddings.clone(),
            Some(cache),
            prompt.padding.clone(),
            None,
        );
        cache.mark_prompt();
        Ok(())
    }

    /// Incremental decoding: appends the tokens of `slots` `(B, m, D)` to `cache` and
    /// returns their decoded predictions `(B, m, D)`. Equal (up to rounding) to the
    /// corresponding rows of [`CalmFlowModel::forward`] on the whole sequence.
    pub fn step(
        &self,
        slots: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        temperature: f64,
    ) -> ModelResult<Tensor<B, 3>> {
        self.check_slots(&slots, "new slots")?;
        let tokens = self.encoder.forward(slots);
        let window = self.window(cache.prompt_len());
        let hidden = self.backbone.forward(tokens, Some(cache), None, window);
        Ok(self.decoder.forward(hidden, temperature).decoded)
    }

    /// Autoregressive roll-out from `x0` `(B, P, D)` over `n_times` time points (METHOD
    /// §7): at each of the `n_times − 1` steps the last `P` slots are decoded into the next
    /// states. With `use_cache`, each step processes only the `P·K` new tokens; without it,
    /// the whole sequence is re-encoded (the research code's way). Returns the trajectories
    /// `(B, n_times, P, D)`; `[.., n_times − 1, .., ..]` are the generated samples.
    pub fn rollout(
        &self,
        x0: Tensor<B, 3>,
        n_times: usize,
        temperature: f64,
        use_cache: bool,
        prompt: Option<&Prompt<B>>,
    ) -> ModelResult<Tensor<B, 4>> {
        self.check_slots(&x0, "initial states")?;
        if n_times < 2 {
            return Err(ModelError::InvalidConfig(format!(
                "roll-out needs n_times ≥ 2, got {n_times}"
            )));
        }
        let [b, p, d] = x0.dims();
        if self.markov_slots > 0 && p != self.markov_slots {
            return Err(ModelError::InvalidConfig(format!(
                "this model's Markov context expects {} trajectories per sequence, the \
                 roll-out has {p}",
                self.markov_slots
            )));
        }
        let mut states = vec![x0.clone()];
        if use_cache {
            let mut cache = self.new_cache();
            if let Some(prompt) = prompt {
                self.check_prompt(prompt, b)?;
                self.prefill(prompt, &mut cache)?;
            }
            let mut current = x0;
            for _ in 1..n_times {
                current = self.step(current, &mut cache, temperature)?;
                states.push(current.clone());
            }
        } else {
            let mut sequence = x0;
            for _ in 1..n_times {
                let s = sequence.dims()[1];
                let decoded = self.forward(sequence.clone(), prompt, temperature)?.decoded;
                let next = decoded.narrow(1, s - p, p);
                states.push(next.clone());
                sequence = Tensor::cat(vec![sequence, next], 1);
            }
        }
        Ok(Tensor::stack::<4>(states, 1).reshape([b, n_times, p, d]))
    }

    /// Saves the weights to `path` (burn's named MessagePack format), atomically: the
    /// file is written beside `path` and renamed over it.
    pub fn save_weights(&self, path: &Path) -> ModelResult<()> {
        crate::record_file::save_module(self, path)
    }

    /// Loads weights saved by [`CalmFlowModel::save_weights`] into this model (which must
    /// have the same configuration).
    pub fn load_weights(self, path: &Path, device: &B::Device) -> ModelResult<Self> {
        crate::record_file::load_module(self, path, device)
    }
}
