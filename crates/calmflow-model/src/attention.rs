//! Causal multi-head self-attention with a fused QKV projection, rotary embeddings and a
//! key/value cache.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

use crate::rotary::{RotaryEmbedding, RotaryTables};

/// Cached keys and values of one layer, `(B, heads, len, head_dim)` each.
///
/// They live in buffers of a larger capacity that grow by doubling and are written in
/// place, so appending a token costs the token's size: growing by `cat` copied everything
/// cached at every step (measured: 70 % of a 16-step roll-out on the CPU).
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    buffers: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    len: usize,
}

impl<B: Backend> Default for LayerCache<B> {
    fn default() -> Self {
        Self {
            buffers: None,
            len: 0,
        }
    }
}

impl<B: Backend> LayerCache<B> {
    /// Cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold before they next grow.
    pub fn capacity(&self) -> usize {
        self.buffers.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Appends keys and values `(B, heads, l, head_dim)` (the batch and head sizes of
    /// those cached before) and returns every cached key and value, oldest first.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, l, d] = k.dims();
        let (start, end) = (self.len, self.len + l);
        let (kb, vb) = match self.buffers.take() {
            Some((kb, vb)) if kb.dims()[2] >= end => (kb, vb),
            old => {
                let capacity = end.max(2 * old.as_ref().map_or(0, |(kb, _)| kb.dims()[2]));
                let device = k.device();
                let fresh = || Tensor::<B, 4>::zeros([b, h, capacity, d], &device);
                match old {
                    Some((ok, ov)) if start > 0 => (
                        fresh().slice_assign([0..b, 0..h, 0..start, 0..d], ok.narrow(2, 0, start)),
                        fresh().slice_assign([0..b, 0..h, 0..start, 0..d], ov.narrow(2, 0, start)),
                    ),
                    _ => (fresh(), fresh()),
                }
            }
        };
        // Written in place while the cache holds the only reference to the buffers (the
        // views handed out below are dropped by the end of the attention step).
        let kb = kb.slice_assign([0..b, 0..h, start..end, 0..d], k);
        let vb = vb.slice_assign([0..b, 0..h, start..end, 0..d], v);
        self.len = end;
        let cached = (kb.clone().narrow(2, 0, end), vb.clone().narrow(2, 0, end));
        self.buffers = Some((kb, vb));
        cached
    }
}

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

/// What every layer of one forward pass shares: the positions, the rotary tables and the
/// attention mask, built once per pass instead of once per layer.
#[derive(Debug, Clone)]
pub(crate) struct AttentionContext<B: Backend> {
    tables: RotaryTables<B>,
    /// `(1 or B, 1, L, L_total)`, `true` where a query may not see a key; `None` when every
    /// query sees every key.
    mask: Option<Tensor<B, 4, Bool>>,
}

impl<B: Backend> AttentionContext<B> {
    /// The context of `l` queries at positions `start .. start + l` of a batch of `b`,
    /// attending to `total` keys (the cached ones, then their own). `key_padding`
    /// `(B, total)` marks keys to ignore; `window`, when given, hides flow tokens of other
    /// time points.
    pub(crate) fn new(
        rotary: &RotaryEmbedding,
        head_dim: usize,
        [b, l, start, total]: [usize; 4],
        key_padding: Option<Tensor<B, 2, Bool>>,
        window: Option<TimeWindow>,
        device: &B::Device,
    ) -> Self {
        let tables = rotary.tables(start, l, head_dim, 1.0 / (head_dim as f64).sqrt(), device);
        // Query i (absolute start + i) sees keys j ≤ start + i: nothing to hide when the
        // first query already sees the last key (one new token after the cached ones).
        let mut mask = (start + 1 < total).then(|| {
            Tensor::<B, 2, Bool>::tril_mask([l, total], start as i64, device)
                .reshape([1, 1, l, total])
        });
        if let Some(w) = window {
            let other = Tensor::<B, 2, Bool>::from_data(
                TensorData::new(w.other_times(start, l, total), [l, total]),
                device,
            )
            .reshape([1, 1, l, total]);
            mask = Some(match mask {
                Some(m) => m.bool_or(other),
                None => other,
            });
        }
        if let Some(pad) = key_padding {
            let pad = pad.reshape([b, 1, 1, total]).expand([b, 1, l, total]);
            mask = Some(match mask {
                Some(m) => m.expand([b, 1, l, total]).bool_or(pad),
                None => pad,
            });
        }
        Self { tables, mask }
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

    /// The rotary embedding and the head width (for the shared [`AttentionContext`]).
    pub(crate) fn rotary(&self) -> (&RotaryEmbedding, usize) {
        (&self.rotary, self.head_dim)
    }

    /// The query (`part` 0), key (1) or value (2) projection `(H, H)` and bias `(H)` cut
    /// out of the fused `[heads, 3, head_dim]` weight: slicing the small weight instead of
    /// the `(B·L, 3H)` activation keeps the backward pass from zero-filling and summing
    /// activation-sized gradients.
    fn part(&self, part: usize) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        let (nh, hd) = (self.n_heads, self.head_dim);
        let h = nh * hd;
        let w = self
            .qkv
            .weight
            .val()
            .reshape([h, nh, 3, hd])
            .narrow(2, part, 1)
            .reshape([h, h]);
        let b = self
            .qkv
            .bias
            .as_ref()
            .map(|b| b.val().reshape([nh, 3, hd]).narrow(1, part, 1).reshape([h]));
        (w, b)
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
        let cached = cache.as_ref().map_or(0, |c| c.len());
        let context = AttentionContext::new(
            &self.rotary,
            self.head_dim,
            [b, l, start, cached + l],
            key_padding,
            window,
            &x.device(),
        );
        self.forward_rows(x.reshape([b * l, h]), b, &context, cache)
            .reshape([b, l, h])
    }

    /// [`forward`](Self::forward) on the rows `(B·L, H)` of a batch of `b` sequences, with
    /// the pass's shared context.
    pub(crate) fn forward_rows(
        &self,
        x: Tensor<B, 2>,
        b: usize,
        context: &AttentionContext<B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 2> {
        let [rows, h] = x.dims();
        let l = rows / b;
        let (nh, hd) = (self.n_heads, self.head_dim);
        // Whole sequences on a backend with a fused kernel: one projection and one pass
        // (rotary, scores, mask, softmax, values) instead of about twenty operations.
        // The kernel has no dropout on the attention weights: it serves where none is drawn.
        let dropout_drawn = self.dropout.prob > 0.0 && B::ad_enabled(&x.device());
        if cache.is_none() && !dropout_drawn && crate::fused::kernels::<B>().is_some() {
            let qkv = crate::fused::linear_module(&self.qkv, x.clone());
            let layout = context.tables.layout(b, nh);
            if let Some(out) = crate::fused::attention(qkv, &layout, context.mask.clone()) {
                return crate::fused::linear_module(&self.dense, out);
            }
        }
        let project = |part: usize| {
            let (w, bias) = self.part(part);
            crate::fused::linear(x.clone(), w, bias).reshape([b, l, nh, hd])
        };
        // (B, L, heads, hd) → (B, heads, L, hd); q carries the 1/√hd scale.
        let q = context.tables.queries(project(0)).swap_dims(1, 2);
        let mut k = context.tables.keys(project(1)).swap_dims(1, 2);
        let mut v = project(2).swap_dims(1, 2);
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v);
        }
        let total = k.dims()[2];
        let mut scores = crate::fused::matmul(q, k.swap_dims(2, 3));
        if let Some(mask) = &context.mask {
            scores = scores.mask_fill(mask.clone().expand([b, nh, l, total]), -1.0e9);
        }
        let probs = self.dropout.forward(crate::fused::softmax(scores));
        let out = crate::fused::matmul(probs, v)
            .swap_dims(1, 2)
            .reshape([rows, h]);
        crate::fused::linear_module(&self.dense, out)
    }
}

#[cfg(test)]
mod tests {
    use super::LayerCache;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tensor, backend::Backend};

    // f64, as every unit test of this crate: burn-ndarray backends of two float types
    // share one device, whose dtype the first of them fixes.
    type B = NdArray<f64>;

    #[test]
    fn appending_to_the_cache_equals_concatenating_and_grows_by_doubling() {
        let device = Default::default();
        B::seed(&device, 3);
        let chunks: Vec<(Tensor<B, 4>, Tensor<B, 4>)> = [2usize, 3, 4, 1]
            .iter()
            .map(|&l| {
                let r = || Tensor::random([2, 3, l, 5], Distribution::Normal(0.0, 1.0), &device);
                (r(), r())
            })
            .collect();
        let mut cache = LayerCache::<B>::default();
        assert!(cache.is_empty());
        let mut capacities = Vec::new();
        let mut last = None;
        for (k, v) in &chunks {
            last = Some(cache.append(k.clone(), v.clone()));
            capacities.push(cache.capacity());
        }
        // Exact fit first, then at least double: 2, max(5, 4), max(9, 10), 10.
        assert_eq!(capacities, vec![2, 5, 10, 10]);
        assert_eq!(cache.len(), 10);
        let (k, v) = last.expect("appended");
        let k_cat = Tensor::cat(chunks.iter().map(|(k, _)| k.clone()).collect(), 2);
        let v_cat = Tensor::cat(chunks.iter().map(|(_, v)| v.clone()).collect(), 2);
        assert_eq!(k.into_data(), k_cat.into_data());
        assert_eq!(v.into_data(), v_cat.into_data());
        // A clone shares nothing observable: appending to it leaves the original alone.
        let mut branch = cache.clone();
        let extra = Tensor::<B, 4>::ones([2, 3, 1, 5], &device);
        let (kb, _) = branch.append(extra.clone(), extra);
        assert_eq!(branch.len(), 11);
        assert_eq!(cache.len(), 10);
        let (k_again, _) = cache.append(
            Tensor::zeros([2, 3, 1, 5], &device),
            Tensor::zeros([2, 3, 1, 5], &device),
        );
        let diff = (kb.narrow(2, 10, 1) - k_again.narrow(2, 10, 1))
            .abs()
            .min()
            .into_scalar();
        assert_eq!(diff, 1.0);
    }
}
