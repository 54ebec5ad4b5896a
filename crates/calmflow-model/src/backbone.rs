//! The GPT-NeoX-style causal transformer backbone and its key/value cache.

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::gelu;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::attention::{CausalSelfAttention, LayerCache};
use crate::rotary::RotaryEmbedding;

/// Keys and values of every layer for the tokens processed so far, plus their padding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    padding: Option<Tensor<B, 2, Bool>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            padding: None,
            len: 0,
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
        }
    }

    fn mlp(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.dropout
            .forward(self.mlp_out.forward(gelu(self.mlp_in.forward(x))))
    }

    fn forward(
        &self,
        x: Tensor<B, 3>,
        start: usize,
        cache: Option<&mut LayerCache<B>>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let attn = self.dropout.forward(self.attention.forward(
            self.ln_attn.forward(x.clone()),
            start,
            cache,
            padding,
        ));
        if self.parallel {
            let mlp = self.mlp(self.ln_mlp.forward(x.clone()));
            x + attn + mlp
        } else {
            let h = x + attn;
            h.clone() + self.mlp(self.ln_mlp.forward(h))
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
    /// values and `padding` `(B, L)` are appended to the cache.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut KvCache<B>>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let [b, l, _] = x.dims();
        match cache {
            None => {
                let mut h = x;
                for block in &self.blocks {
                    h = block.forward(h, 0, None, padding.clone());
                }
                self.final_norm.forward(h)
            }
            Some(cache) => {
                let start = cache.len;
                let device = x.device();
                let none_padded = |n: usize| Tensor::<B, 2, Int>::zeros([b, n], &device).bool();
                let pad = match (cache.padding.take(), padding) {
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
                cache.padding = pad.clone();
                let mut h = x;
                for (block, layer) in self.blocks.iter().zip(cache.layers.iter_mut()) {
                    h = block.forward(h, start, Some(layer), pad.clone());
                }
                cache.len += l;
                self.final_norm.forward(h)
            }
        }
    }
}
