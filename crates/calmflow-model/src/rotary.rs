//! Rotary position embedding (GPT-NeoX convention) on a fraction of each head's dims.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Rotates the first `rot_dims` dimensions of each head by position-dependent angles
/// `θ_{l,i} = l · base^(−2i / rot_dims)`, pairing dimension `i` with `i + rot_dims/2`
/// (GPT-NeoX's "rotate half"); the remaining dimensions pass through. Then
/// `⟨R_m q, R_n k⟩` depends on positions only through `m − n`.
#[derive(Module, Debug, Clone)]
pub struct RotaryEmbedding {
    rot_dims: usize,
    base: f64,
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

    /// Applies the rotation to `(B, heads, L, head_dim)` at absolute positions
    /// `start .. start + L`.
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        if self.rot_dims == 0 {
            return x;
        }
        let [_, _, l, hd] = x.dims();
        let (r, half) = (self.rot_dims, self.rot_dims / 2);
        let mut cos = Vec::with_capacity(l * r);
        let mut sin = Vec::with_capacity(l * r);
        for pos in start..start + l {
            for i in 0..r {
                let freq = self.base.powf(-2.0 * (i % half) as f64 / r as f64);
                let angle = pos as f64 * freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let device = x.device();
        let cos =
            Tensor::<B, 2>::from_data(TensorData::new(cos, [l, r]), &device).reshape([1, 1, l, r]);
        let sin =
            Tensor::<B, 2>::from_data(TensorData::new(sin, [l, r]), &device).reshape([1, 1, l, r]);
        let rot = x.clone().narrow(3, 0, r);
        let x1 = rot.clone().narrow(3, 0, half);
        let x2 = rot.clone().narrow(3, half, half);
        let rotated_half = Tensor::cat(vec![x2.neg(), x1], 3);
        let out = rot * cos + rotated_half * sin;
        if r == hd {
            out
        } else {
            Tensor::cat(vec![out, x.narrow(3, r, hd - r)], 3)
        }
    }
}
