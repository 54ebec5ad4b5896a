//! Rotary position embedding (GPT-NeoX convention) on a fraction of each head's dims.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::fused::AttentionLayout;

/// Rotates the first `rot_dims` dimensions of each head by position-dependent angles
/// `θ_{l,i} = l · base^(−2i / rot_dims)`, pairing dimension `i` with `i + rot_dims/2`
/// (GPT-NeoX's "rotate half"); the remaining dimensions pass through. Then
/// `⟨R_m q, R_n k⟩` depends on positions only through `m − n`.
#[derive(Module, Debug, Clone)]
pub struct RotaryEmbedding {
    rot_dims: usize,
    base: f64,
}

/// The rotation of one span of positions as tensors, built once per forward pass and
/// shared by every layer: `x ↦ x·cos + (x·R)·sin` over whole heads, where `R` is the
/// "rotate half" permutation with signs as a `head_dim × head_dim` matrix, `cos` is 1 and
/// `sin` 0 on the dimensions that pass through. The query tables carry the attention scale
/// `1/√head_dim` too, so the score tensor needs no scaling pass.
#[derive(Debug, Clone)]
pub(crate) struct RotaryTables<B: Backend> {
    /// `R` (`None` when nothing rotates).
    rotate: Option<Tensor<B, 2>>,
    /// Query and key `cos`/`sin` tables `(1, L, 1, head_dim)`.
    q_cos: Tensor<B, 4>,
    q_sin: Tensor<B, 4>,
    k_cos: Tensor<B, 4>,
    k_sin: Tensor<B, 4>,
    /// The query scale, applied alone when nothing rotates.
    q_scale: f64,
    /// The same tables on the host, `(L, head_dim)` row-major: query cos and sin, key cos
    /// and sin (what a fused attention kernel reads).
    host: [Vec<f32>; 4],
    /// Dimensions rotated per head.
    rot_dims: usize,
    /// Positions and head width `[L, head_dim]`.
    dims: [usize; 2],
}

impl RotaryEmbedding {
    /// Rotary on `⌊head_dim · fraction⌋` dims (rounded down to even), base `base`.
    pub fn new(head_dim: usize, fraction: f64, base: f64) -> Self {
        let rot_dims = ((head_dim as f64 * fraction).floor() as usize).min(head_dim) & !1;
        Self { rot_dims, base }
    }

    /// Number of rotated dimensions per head.
    pub fn rot_dims(&self) -> usize {
        self.rot_dims
    }

    /// `cos` and `sin` `(L, head_dim)` of positions `start .. start + L`, times `scale`
    /// (1 and 0, times `scale`, on the dimensions that pass through).
    fn angles(&self, start: usize, l: usize, head_dim: usize, scale: f64) -> (Vec<f32>, Vec<f32>) {
        let (r, half) = (self.rot_dims, self.rot_dims / 2);
        let freqs: Vec<f64> = (0..r)
            .map(|i| self.base.powf(-2.0 * (i % half) as f64 / r as f64))
            .collect();
        let mut cos = Vec::with_capacity(l * head_dim);
        let mut sin = Vec::with_capacity(l * head_dim);
        for pos in start..start + l {
            for &freq in &freqs {
                let angle = pos as f64 * freq;
                cos.push((angle.cos() * scale) as f32);
                sin.push((angle.sin() * scale) as f32);
            }
            for _ in r..head_dim {
                cos.push(scale as f32);
                sin.push(0.0);
            }
        }
        (cos, sin)
    }

    /// The rotation of positions `start .. start + l` for heads of `head_dim` dims, the
    /// queries also scaled by `q_scale`.
    pub(crate) fn tables<B: Backend>(
        &self,
        start: usize,
        l: usize,
        head_dim: usize,
        q_scale: f64,
        device: &B::Device,
    ) -> RotaryTables<B> {
        let (r, half) = (self.rot_dims, self.rot_dims / 2);
        let table = |v: &[f32]| {
            Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [l, head_dim]), device)
                .reshape([1, l, 1, head_dim])
        };
        let rotate = (r > 0).then(|| {
            // (x·R)_j = −x_{j+half} for j < half, x_{j−half} for half ≤ j < r, 0 beyond.
            let mut m = vec![0.0f32; head_dim * head_dim];
            for j in 0..half {
                m[(j + half) * head_dim + j] = -1.0;
                m[j * head_dim + j + half] = 1.0;
            }
            Tensor::<B, 2>::from_data(TensorData::new(m, [head_dim, head_dim]), device)
        });
        let (k_cos, k_sin) = self.angles(start, l, head_dim, 1.0);
        let (q_cos, q_sin) = if q_scale == 1.0 {
            (k_cos.clone(), k_sin.clone())
        } else {
            self.angles(start, l, head_dim, q_scale)
        };
        RotaryTables {
            rotate,
            q_cos: table(&q_cos),
            q_sin: table(&q_sin),
            k_cos: table(&k_cos),
            k_sin: table(&k_sin),
            q_scale,
            host: [q_cos, q_sin, k_cos, k_sin],
            rot_dims: r,
            dims: [l, head_dim],
        }
    }

    /// Applies the rotation to `(B, heads, L, head_dim)` at absolute positions
    /// `start .. start + L`.
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        if self.rot_dims == 0 {
            return x;
        }
        let [_, _, l, hd] = x.dims();
        let tables = self.tables::<B>(start, l, hd, 1.0, &x.device());
        // The tables are laid out for (B, L, heads, head_dim).
        tables.keys(x.swap_dims(1, 2)).swap_dims(1, 2)
    }
}

impl<B: Backend> RotaryTables<B> {
    fn rotate(
        &self,
        x: Tensor<B, 4>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        scale: f64,
    ) -> Tensor<B, 4> {
        let Some(rotate) = &self.rotate else {
            return if scale == 1.0 { x } else { x * scale };
        };
        let [b, l, h, d] = x.dims();
        let turned = x
            .clone()
            .reshape([b * l * h, d])
            .matmul(rotate.clone())
            .reshape([b, l, h, d]);
        x * cos.clone() + turned * sin.clone()
    }

    /// Rotates (and scales) queries `(B, L, heads, head_dim)`.
    pub(crate) fn queries(&self, q: Tensor<B, 4>) -> Tensor<B, 4> {
        self.rotate(q, &self.q_cos, &self.q_sin, self.q_scale)
    }

    /// The layout of a fused attention pass over `batch` sequences with these tables.
    pub(crate) fn layout(&self, batch: usize, heads: usize) -> AttentionLayout<'_> {
        let [q_cos, q_sin, k_cos, k_sin] = &self.host;
        AttentionLayout {
            batch,
            len: self.dims[0],
            heads,
            head_dim: self.dims[1],
            rot_dims: self.rot_dims,
            q_cos,
            q_sin,
            k_cos,
            k_sin,
        }
    }

    /// Rotates keys `(B, L, heads, head_dim)`.
    pub(crate) fn keys(&self, k: Tensor<B, 4>) -> Tensor<B, 4> {
        self.rotate(k, &self.k_cos, &self.k_sin, 1.0)
    }
}
