//! `CalmFlowModel`: encoder → causal backbone → variational decoder, with teacher-forced
//! training forward, KV-cached incremental decoding and autoregressive roll-out.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::attention::TimeWindow;
use crate::backbone::{CausalBackbone, KvCache};
use crate::encoder::SpatialEncoder;
use crate::error::{ModelError, shape_error};
use crate::head::{
    DecoderOutput, DistributionHead, HeadKind, HeadLoss, MixtureHead, OutputHead, Predict,
    VariationalDecoder,
};

type ModelResult<T> = crate::error::Result<T>;

/// CaLMFlow's network: states are encoded into `K` tokens each, the causal backbone reads
/// `[prompt ; tokens]`, and the decoder maps each slot's `K` outputs to the next state.
#[derive(Module, Debug)]
pub struct CalmFlowModel<B: Backend> {
    pub(crate) encoder: SpatialEncoder<B>,
    pub(crate) backbone: CausalBackbone<B>,
    pub(crate) head: OutputHead<B>,
    pub(crate) dim: usize,
    pub(crate) predict: Predict,
    pub(crate) bridge_sigma: f64,
    pub(crate) context_noise: f64,
    pub(crate) n_space: usize,
    pub(crate) hidden: usize,
    pub(crate) markov_slots: usize,
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

    /// The paper's variational decoder, when that is the model's head.
    pub fn decoder(&self) -> Option<&VariationalDecoder<B>> {
        match &self.head {
            OutputHead::Variational(decoder) => Some(decoder),
            _ => None,
        }
    }

    /// The model's distribution head.
    pub fn head(&self) -> &OutputHead<B> {
        &self.head
    }

    /// Which distribution head the model has.
    pub fn head_kind(&self) -> HeadKind {
        self.head.kind()
    }

    /// What the head predicts.
    pub fn predict(&self) -> Predict {
        self.predict
    }

    /// The Brownian-bridge noise scale that `endpoint` predictions add when stepping.
    pub fn bridge_sigma(&self) -> f64 {
        self.bridge_sigma
    }

    /// The standard deviation of the noise added to the context's states after the first
    /// ([`CalmFlowConfig::context_noise`](crate::CalmFlowConfig::context_noise)).
    pub fn context_noise(&self) -> f64 {
        self.context_noise
    }

    /// `states` as they enter the context: with noise of scale
    /// [`CalmFlowConfig::context_noise`] added to every slot from index `first` on.
    fn noised_context(&self, states: Tensor<B, 3>, first: usize) -> Tensor<B, 3> {
        let [b, s, d] = states.dims();
        if self.context_noise == 0.0 || first >= s {
            return states;
        }
        let device = states.device();
        let noise = Tensor::<B, 3>::random(
            [b, s - first, d],
            burn::tensor::Distribution::Normal(0.0, self.context_noise),
            &device,
        );
        if first == 0 {
            return states + noise;
        }
        let kept = states.clone().narrow(1, 0, first);
        Tensor::cat(vec![kept, states.narrow(1, first, s - first) + noise], 1)
    }

    fn mixture_head(&self) -> Option<&MixtureHead<B>> {
        match &self.head {
            OutputHead::Mixture(h) => Some(h),
            _ => None,
        }
    }

    /// Components `M` of the model's `mixture` head (`None` for another head).
    pub fn mixture_components(&self) -> Option<usize> {
        self.mixture_head().map(MixtureHead::components)
    }

    /// The output biases of the `mixture` head's component means (`M × D`, row-major):
    /// where each component's mean sits before the context's contribution, as
    /// [`CalmFlowModel::with_mixture_means`] placed them (`None` for another head).
    pub fn mixture_mean_biases(&self) -> Option<Vec<f32>> {
        self.mixture_head().map(MixtureHead::mean_biases)
    }

    /// The same model with its `mixture` head's component means placed at `centres`
    /// (`M × D`, row-major), for a data-dependent start such as k-means of the head's
    /// targets (`docs/heads.md`, "Components placed by k-means"). Fails for another head
    /// or a `centres` of another length, or with a non-finite centre.
    pub fn with_mixture_means(mut self, centres: &[f32]) -> ModelResult<Self> {
        let Some(components) = self.mixture_components() else {
            return Err(ModelError::InvalidConfig(format!(
                "component means can only be placed for the mixture head, this model has \
                 head = \"{}\"",
                self.head.kind().name()
            )));
        };
        let expected = components * self.dim;
        if centres.len() != expected {
            return Err(ModelError::InvalidConfig(format!(
                "{components} component means of dimension {} need {expected} values, got {}",
                self.dim,
                centres.len()
            )));
        }
        if let Some(i) = centres.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::InvalidConfig(format!(
                "component mean value {i} is {}: the means must be finite",
                centres[i]
            )));
        }
        if let OutputHead::Mixture(h) = self.head {
            self.head = OutputHead::Mixture(h.with_means(centres));
        }
        Ok(self)
    }

    /// Slot contexts `(B·S, K·H)` from flow-token outputs `(B, S·K, H)`.
    fn contexts(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, sk, h] = hidden.dims();
        hidden.reshape([b * sk / self.n_space, self.n_space * h])
    }

    /// Draws of the head's target for flow-token outputs `(B, S·K, H)`: `(B, S, D)`.
    fn sample_head(&self, hidden: Tensor<B, 3>, temperature: f64) -> Tensor<B, 3> {
        let [b, sk, _] = hidden.dims();
        self.head
            .sample(self.contexts(hidden), temperature)
            .reshape([b, sk / self.n_space, self.dim])
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
        let hidden = self.hidden_states(slots, prompt)?;
        Ok(match self.decoder() {
            Some(decoder) => decoder.forward(hidden, temperature),
            None => DecoderOutput {
                decoded: self.sample_head(hidden, temperature),
                mu: None,
                log_var: None,
            },
        })
    }

    /// The training loss terms of the model's head on packed slots `(B, N·P, D)` laid out
    /// as `layout` (after an optional prompt): every slot but those of the last time point
    /// is scored against its target ([`Predict`]); the last time point is not decoded.
    pub fn head_loss(
        &self,
        slots: Tensor<B, 3>,
        prompt: Option<&Prompt<B>>,
        layout: &calmflow_tokenize::SpaceTimeLayout,
    ) -> ModelResult<HeadLoss<B>> {
        self.annealed_head_loss(slots, prompt, layout, 1.0)
    }

    /// [`CalmFlowModel::head_loss`] with the posterior over the head's components
    /// tempered by `temperature ≥ 1` ([`DistributionHead::annealed_loss`]; 1: the loss
    /// itself).
    pub fn annealed_head_loss(
        &self,
        slots: Tensor<B, 3>,
        prompt: Option<&Prompt<B>>,
        layout: &calmflow_tokenize::SpaceTimeLayout,
        temperature: f64,
    ) -> ModelResult<HeadLoss<B>> {
        if !(temperature >= 1.0 && temperature.is_finite()) {
            return Err(ModelError::InvalidConfig(format!(
                "the annealing temperature must be finite and ≥ 1, got {temperature}"
            )));
        }
        let [b, s, d] = slots.dims();
        if s != layout.n_slots() || layout.n_space != self.n_space {
            return Err(shape_error(
                "slots",
                format!(
                    "(B, {}, {}) with K = {}",
                    layout.n_slots(),
                    self.dim,
                    self.n_space
                ),
                [b, s, d],
            ));
        }
        let (p, n) = (layout.n_traj, layout.n_times);
        let kept = s - p;
        let hidden = self
            .hidden_states(self.noised_context(slots.clone(), p), prompt)?
            .narrow(1, 0, kept * self.n_space);
        let current = slots.clone().narrow(1, 0, kept);
        let next = slots.clone().narrow(1, p, kept);
        let end = slots
            .clone()
            .narrow(1, kept, p)
            .reshape([b, 1, p, d])
            .expand([b, n - 1, p, d])
            .reshape([b, kept, d]);
        let target = self
            .predict
            .target_tensor(current, next, end, n)
            .reshape([b * kept, d]);
        Ok(self
            .head
            .annealed_loss(self.contexts(hidden), target, temperature))
    }

    /// The backbone's outputs `(B, S·K, H)` at the flow positions of packed slots
    /// `(B, S, D)` after an optional prompt.
    pub fn hidden_states(
        &self,
        slots: Tensor<B, 3>,
        prompt: Option<&Prompt<B>>,
    ) -> ModelResult<Tensor<B, 3>> {
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
        Ok(hidden)
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
    /// returns the head's draws for them `(B, m, D)` (for `predict = "state"`, the next
    /// states; otherwise see [`Predict::advance_tensor`]). Equal (up to rounding, with the
    /// same noise) to the corresponding rows of [`CalmFlowModel::forward`] on the whole
    /// sequence.
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
        Ok(self.sample_head(hidden, temperature))
    }

    /// Autoregressive roll-out from `x0` `(B, P, D)` over `n_times` time points (`docs/method.md`
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
            for i in 0..n_times - 1 {
                let input = if i == 0 {
                    current.clone()
                } else {
                    self.noised_context(current.clone(), 0)
                };
                let y = self.step(input, &mut cache, temperature)?;
                current = self.advance(current, y, i, n_times);
                states.push(current.clone());
            }
        } else {
            let mut sequence = x0.clone();
            let mut current = x0;
            for i in 0..n_times - 1 {
                let s = sequence.dims()[1];
                // Only the last P slots are decoded: the head draws the same noise as the
                // cached step does.
                let hidden = self.hidden_states(sequence.clone(), prompt)?.narrow(
                    1,
                    (s - p) * self.n_space,
                    p * self.n_space,
                );
                let y = self.sample_head(hidden, temperature);
                current = self.advance(current, y, i, n_times);
                states.push(current.clone());
                sequence = Tensor::cat(vec![sequence, self.noised_context(current.clone(), 0)], 1);
            }
        }
        Ok(Tensor::stack::<4>(states, 1).reshape([b, n_times, p, d]))
    }

    /// The next states `(B, P, D)` from the current ones and the head's draws `y` at time
    /// index `i` of an `n_times`-point grid.
    pub fn advance(
        &self,
        current: Tensor<B, 3>,
        y: Tensor<B, 3>,
        i: usize,
        n_times: usize,
    ) -> Tensor<B, 3> {
        self.predict
            .advance_tensor(current, y, i, n_times, self.bridge_sigma)
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
