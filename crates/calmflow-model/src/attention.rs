//! Causal multi-head self-attention with a fused QKV projection, rotary embeddings and a
//! key/value cache.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

use crate::rotary::RotaryEmbedding;

/// Cached keys and values of one layer: `(B, heads, L_cached, head_dim)` each.
pub type LayerCache<B> = Option<(Tensor<B, 4>, Tensor<B, 4>)>;

/// A Markov (ODE-style) context: a flow token sees the prompt and the tokens of its own
/// time point only, instead of the whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Prompt tokens before the first flow token (always visible).
    pub prompt_len: usize,
    /// Flow tokens per time point (`P·K`).
    pub tokens_per_time: usize,
}

impl TimeWindow {
    /// `(l, total)` mask, `true` where query `start + a` may not see key `k` because the
    /// key is a flow token of another time point.
    fn other_times(&self, start: usize, l: usize, total: usize) -> Vec<bool> {
        let time = |x: usize| (x - self.prompt_len) / self.tokens_per_time.max(1);
        let mut mask = vec![false; l * total];
        for a in 0..l {
            let q = start + a;
            if q < self.prompt_len {
                continue;
            }
            for k in self.prompt_len..total {
                mask[a * total + k] = time(k) != time(q);
            }
        }
        mask
    }
}

/// Multi-head causal self-attention, GPT-NeoX layout: the fused projection's output is
/// ordered `[heads, 3, head_dim]` (per head: query, key, value).
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    qkv: Linear<B>,
    dense: Linear<B>,
    dropout: Dropout,
    rotary: RotaryEmbedding,
    n_heads: usize,
    head_dim: usize,
}

impl<B: Backend> CausalSelfAttention<B> {
    /// A new layer of width `hidden` with `n_heads` heads (`hidden % n_heads == 0`).
    pub fn new(
        hidden: usize,
        n_heads: usize,
        rotary: RotaryEmbedding,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            qkv: LinearConfig::new(hidden, 3 * hidden).init(device),
            dense: LinearConfig::new(hidden, hidden).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            rotary,
            n_heads,
            head_dim: hidden / n_heads,
        }
    }

    /// The fused QKV and output projections (for weight import and export).
    pub(crate) fn projections(&self) -> (Linear<B>, Linear<B>) {
        (self.qkv.clone(), self.dense.clone())
    }

    /// This attention with other projections of the same shapes.
    pub(crate) fn with_projections(mut self, qkv: Linear<B>, dense: Linear<B>) -> Self {
        self.qkv = qkv;
        self.dense = dense;
        self
    }

    /// Attends `x` `(B, L, H)` at absolute positions `start .. start + L` to itself and to
    /// the cached keys/values (appending its own to `cache` when one is given).
    /// `key_padding` `(B, L_total)` marks keys to ignore (left padding of prompts);
    /// `window`, when given, hides flow tokens of other time points.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        start: usize,
        cache: Option<&mut LayerCache<B>>,
        key_padding: Option<Tensor<B, 2, Bool>>,
        window: Option<TimeWindow>,
    ) -> Tensor<B, 3> {
        let [b, l, h] = x.dims();
        let (nh, hd) = (self.n_heads, self.head_dim);
        let qkv = self.qkv.forward(x).reshape([b, l, nh, 3 * hd]);
        let heads = |offset: usize| qkv.clone().narrow(3, offset, hd).swap_dims(1, 2);
        let q = self.rotary.apply(heads(0), start);
        let mut k = self.rotary.apply(heads(hd), start);
        let mut v = heads(2 * hd);
        if let Some(cache) = cache {
            if let Some((k_old, v_old)) = cache.take() {
                k = Tensor::cat(vec![k_old, k], 2);
                v = Tensor::cat(vec![v_old, v], 2);
            }
            *cache = Some((k.clone(), v.clone()));
        }
        let total = k.dims()[2];
        let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt();
        // Query i (absolute start + i) sees keys j ≤ start + i.
        let mut mask = Tensor::<B, 2, Bool>::tril_mask([l, total], start as i64, &scores.device())
            .reshape([1, 1, l, total])
            .expand([b, nh, l, total]);
        if let Some(w) = window {
            let other = Tensor::<B, 2, Bool>::from_data(
                TensorData::new(w.other_times(start, l, total), [l, total]),
                &scores.device(),
            );
            mask = mask.bool_or(other.reshape([1, 1, l, total]).expand([b, nh, l, total]));
        }
        if let Some(pad) = key_padding {
            mask = mask.bool_or(pad.reshape([b, 1, 1, total]).expand([b, nh, l, total]));
        }
        let probs = self
            .dropout
            .forward(softmax(scores.mask_fill(mask, -1.0e9), 3));
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, l, h]);
        self.dense.forward(out)
    }
}
