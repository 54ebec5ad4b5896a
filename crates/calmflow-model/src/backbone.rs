//! The GPT-NeoX-style causal transformer backbone and its key/value cache.

use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::attention::{AttentionContext, CausalSelfAttention, LayerCache, TimeWindow};
use crate::fused;
use crate::neox_visit::{NeoxVisitor, Slot};
use crate::rotary::RotaryEmbedding;

/// Keys and values of every layer for the tokens processed so far, plus their padding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    padding: Option<Tensor<B, 2, Bool>>,
    len: usize,
    /// Tokens of the prompt prefilled before the first flow token.
    prompt_len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| LayerCache::default()).collect(),
            padding: None,
            len: 0,
            prompt_len: 0,
        }
    }

    /// Number of cached token positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks everything cached so far as prompt.
    pub(crate) fn mark_prompt(&mut self) {
        self.prompt_len = self.len;
    }

    /// Tokens of the prompt prefilled before the first flow token.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }
}

/// One pre-LayerNorm block: `x + Attn(LN₁ x) + MLP(LN₂ x)` (parallel residual) or
/// `h = x + Attn(LN₁ x); h + MLP(LN₂ h)` (sequential).
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    ln_attn: LayerNorm<B>,
    ln_mlp: LayerNorm<B>,
    attention: CausalSelfAttention<B>,
    mlp_in: Linear<B>,
    mlp_out: Linear<B>,
    dropout: Dropout,
    parallel: bool,
    /// The layer norms' epsilon (burn's `LayerNorm` keeps its own private).
    eps: f64,
}

impl<B: Backend> TransformerBlock<B> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        hidden: usize,
        heads: usize,
        mlp_width: usize,
        rotary: RotaryEmbedding,
        dropout: f64,
        eps: f64,
        parallel: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            ln_attn: LayerNormConfig::new(hidden).with_epsilon(eps).init(device),
            ln_mlp: LayerNormConfig::new(hidden).with_epsilon(eps).init(device),
            attention: CausalSelfAttention::new(hidden, heads, rotary, dropout, device),
            mlp_in: LinearConfig::new(hidden, mlp_width).init(device),
            mlp_out: LinearConfig::new(mlp_width, hidden).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            parallel,
            eps,
        }
    }

    /// The MLP on rows `(N, H)`.
    fn mlp(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.dropout.forward(fused::linear_module(
            &self.mlp_out,
            fused::gelu(fused::linear_module(&self.mlp_in, x)),
        ))
    }

    /// The block on the rows `(B·L, H)` of a batch of `b` sequences.
    fn forward(
        &self,
        x: Tensor<B, 2>,
        b: usize,
        context: &AttentionContext<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 2> {
        let attn = self.dropout.forward(self.attention.forward_rows(
            norm(&self.ln_attn, x.clone(), self.eps),
            b,
            context,
            cache,
        ));
        if self.parallel {
            let mlp = self.mlp(norm(&self.ln_mlp, x.clone(), self.eps));
            x + attn + mlp
        } else {
            let h = x + attn;
            h.clone() + self.mlp(norm(&self.ln_mlp, h, self.eps))
        }
    }
}

/// A stack of [`TransformerBlock`]s with a final LayerNorm, and an optional token-embedding
/// table for prompt tokens.
#[derive(Module, Debug)]
pub struct CausalBackbone<B: Backend> {
    blocks: Vec<TransformerBlock<B>>,
    final_norm: LayerNorm<B>,
    embedding: Option<Embedding<B>>,
    /// The final norm's epsilon.
    eps: f64,
}

/// `ln` applied to the rows `x` through [`fused::layer_norm`] (a one-pass kernel where the
/// backend registered one); `eps` is the one `ln` was built with.
fn norm<B: Backend, const D: usize>(ln: &LayerNorm<B>, x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    fused::layer_norm(
        x,
        Some(ln.gamma.val()),
        ln.beta.as_ref().map(Param::val),
        eps,
    )
}

/// Settings of a [`CausalBackbone`].
#[derive(Debug, Clone, Copy)]
pub struct BackboneSettings {
    /// Width `H`.
    pub hidden: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub mlp_width: usize,
    /// Fraction of each head's dims that rotary rotates.
    pub rotary_fraction: f64,
    /// Rotary base.
    pub rotary_base: f64,
    /// Dropout probability.
    pub dropout: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Parallel (GPT-NeoX) or sequential residual.
    pub parallel_residual: bool,
    /// Token-embedding vocabulary (0: none).
    pub vocab_size: usize,
    /// Freeze the token embeddings.
    pub freeze_embeddings: bool,
}

impl<B: Backend> CausalBackbone<B> {
    /// A new backbone.
    pub fn new(s: &BackboneSettings, device: &B::Device) -> Self {
        let head_dim = s.hidden / s.heads;
        let blocks = (0..s.layers)
            .map(|_| {
                let rotary = RotaryEmbedding::new(head_dim, s.rotary_fraction, s.rotary_base);
                TransformerBlock::new(
                    s.hidden,
                    s.heads,
                    s.mlp_width,
                    rotary,
                    s.dropout,
                    s.layer_norm_eps,
                    s.parallel_residual,
                    device,
                )
            })
            .collect();
        let embedding = (s.vocab_size > 0).then(|| {
            let mut e = EmbeddingConfig::new(s.vocab_size, s.hidden).init(device);
            if s.freeze_embeddings {
                e.weight = e.weight.set_require_grad(false);
            }
            e
        });
        Self {
            blocks,
            final_norm: LayerNormConfig::new(s.hidden)
                .with_epsilon(s.layer_norm_eps)
                .init(device),
            embedding,
            eps: s.layer_norm_eps,
        }
    }

    /// Number of blocks.
    pub fn n_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Token embeddings `(B, L)` ids → `(B, L, H)`, if the backbone has a table.
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Option<Tensor<B, 3>> {
        self.embedding.as_ref().map(|e| e.forward(ids))
    }

    /// Vocabulary size of the embedding table (0 when there is none).
    pub fn vocab_size(&self) -> usize {
        self.embedding.as_ref().map_or(0, |e| e.weight.dims()[0])
    }

    /// Runs `x` `(B, L, H)` at positions `cache.len() ..` (0 without a cache); new keys,
    /// values and `padding` `(B, L)` are appended to the cache. `window` restricts flow
    /// tokens to the prompt and their own time point (the Markov control).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut KvCache<B>>,
        padding: Option<Tensor<B, 2, Bool>>,
        window: Option<TimeWindow>,
    ) -> Tensor<B, 3> {
        let [b, l, h] = x.dims();
        let device = x.device();
        let (start, pad) = match &cache {
            None => (0, padding),
            Some(cache) => {
                let start = cache.len;
                let none_padded = |n: usize| Tensor::<B, 2, Int>::zeros([b, n], &device).bool();
                let pad = match (cache.padding.clone(), padding) {
                    (None, None) => None,
                    (old, new) => {
                        let new = new.unwrap_or_else(|| none_padded(l));
                        Some(match (old, start) {
                            (_, 0) => new,
                            (Some(old), _) => Tensor::cat(vec![old, new], 1),
                            (None, _) => Tensor::cat(vec![none_padded(start), new], 1),
                        })
                    }
                };
                (start, pad)
            }
        };
        // One set of rotary tables and one mask for every layer of this pass.
        let context = self.blocks.first().map(|block| {
            let (rotary, head_dim) = block.attention.rotary();
            AttentionContext::new(
                rotary,
                head_dim,
                [b, l, start, start + l],
                pad.clone(),
                window,
                &device,
            )
        });
        // The blocks run on rows (B·L, H): every Linear is one 2-D matrix product.
        let mut rows = x.reshape([b * l, h]);
        match cache {
            None => {
                for (block, context) in self.blocks.iter().zip(context.iter().cycle()) {
                    rows = block.forward(rows, b, context, None);
                }
            }
            Some(cache) => {
                cache.padding = pad;
                for ((block, layer), context) in self
                    .blocks
                    .iter()
                    .zip(cache.layers.iter_mut())
                    .zip(context.iter().cycle())
                {
                    rows = block.forward(rows, b, context, Some(layer));
                }
                cache.len += l;
            }
        }
        norm(&self.final_norm, rows, self.eps).reshape([b, l, h])
    }
}

/// `param` holding `value` instead, with the same gradient requirement.
fn replace<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    value: Tensor<B, D>,
) -> Param<Tensor<B, D>> {
    let require_grad = param.is_require_grad();
    param.map(|_| value.set_require_grad(require_grad))
}

fn visit_vector<B: Backend>(
    name: String,
    p: Param<Tensor<B, 1>>,
    device: &B::Device,
    f: &mut NeoxVisitor<'_>,
) -> crate::Result<Param<Tensor<B, 1>>> {
    let shape = p.val().dims().to_vec();
    match f(&name, Slot::Vector, &shape, p.val().into_data())? {
        Some(d) => Ok(replace(p, Tensor::from_data(d, device))),
        None => Ok(p),
    }
}

fn visit_matrix<B: Backend>(
    name: String,
    slot: Slot,
    p: Param<Tensor<B, 2>>,
    device: &B::Device,
    f: &mut NeoxVisitor<'_>,
) -> crate::Result<Param<Tensor<B, 2>>> {
    let shape = p.val().dims().to_vec();
    match f(&name, slot, &shape, p.val().into_data())? {
        Some(d) => Ok(replace(p, Tensor::from_data(d, device))),
        None => Ok(p),
    }
}

fn visit_norm<B: Backend>(
    prefix: &str,
    mut n: LayerNorm<B>,
    device: &B::Device,
    f: &mut NeoxVisitor<'_>,
) -> crate::Result<LayerNorm<B>> {
    n.gamma = visit_vector(format!("{prefix}.weight"), n.gamma, device, f)?;
    let beta = match n.beta {
        Some(b) => b,
        None => Param::from_tensor(Tensor::zeros([n.gamma.val().dims()[0]], device)),
    };
    n.beta = Some(visit_vector(format!("{prefix}.bias"), beta, device, f)?);
    Ok(n)
}

fn visit_linear<B: Backend>(
    prefix: &str,
    mut l: Linear<B>,
    device: &B::Device,
    f: &mut NeoxVisitor<'_>,
) -> crate::Result<Linear<B>> {
    l.weight = visit_matrix(
        format!("{prefix}.weight"),
        Slot::LinearWeight,
        l.weight,
        device,
        f,
    )?;
    let bias = match l.bias {
        Some(b) => b,
        None => Param::from_tensor(Tensor::zeros([l.weight.val().dims()[1]], device)),
    };
    l.bias = Some(visit_vector(format!("{prefix}.bias"), bias, device, f)?);
    Ok(l)
}

impl<B: Backend> CausalBackbone<B> {
    /// Walks every tensor in GPT-NeoX order and naming (see [`crate::neox`]).
    pub(crate) fn visit_neox(
        mut self,
        device: &B::Device,
        f: &mut NeoxVisitor<'_>,
    ) -> crate::Result<Self> {
        if let Some(mut e) = self.embedding.take() {
            e.weight = visit_matrix(
                "gpt_neox.embed_in.weight".into(),
                Slot::Embedding,
                e.weight,
                device,
                f,
            )?;
            self.embedding = Some(e);
        }
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (i, mut b) in std::mem::take(&mut self.blocks).into_iter().enumerate() {
            let p = format!("gpt_neox.layers.{i}");
            b.ln_attn = visit_norm(&format!("{p}.input_layernorm"), b.ln_attn, device, f)?;
            b.ln_mlp = visit_norm(
                &format!("{p}.post_attention_layernorm"),
                b.ln_mlp,
                device,
                f,
            )?;
            let (qkv, dense) = b.attention.projections();
            let qkv = visit_linear(&format!("{p}.attention.query_key_value"), qkv, device, f)?;
            let dense = visit_linear(&format!("{p}.attention.dense"), dense, device, f)?;
            b.attention = b.attention.with_projections(qkv, dense);
            b.mlp_in = visit_linear(&format!("{p}.mlp.dense_h_to_4h"), b.mlp_in, device, f)?;
            b.mlp_out = visit_linear(&format!("{p}.mlp.dense_4h_to_h"), b.mlp_out, device, f)?;
            blocks.push(b);
        }
        self.blocks = blocks;
        self.final_norm = visit_norm("gpt_neox.final_layer_norm", self.final_norm, device, f)?;
        Ok(self)
    }
}
