//! Causal self-attention from the fused GPT-NeoX projection in one pass each way.
//!
//! Composed from burn's operations, attention is about twenty passes forward (three
//! projections, two rotary embeddings of six operations each, transposes, the scores,
//! the mask, the softmax, the values, a transpose copy back) and as many backward. Here
//! each sequence is one task: for every head its rotated queries and keys are built from
//! the projection's rows, the scores, mask and softmax stay in a small `L × L` block, and
//! the values' product is written straight into the output's columns; the backward pass
//! writes the three projections' gradients straight into the rows of `dqkv`.
//!
//! Forward, per head: `Q = rot(q)`, `K = rot(k)` (the query tables carry `1/√d`),
//! `P = softmax(mask(Q·Kᵀ))`, `O = P·V`. Backward from `G = ∂L/∂O`: `dV = Pᵀ·G`,
//! `dS = P ⊙ (G·Vᵀ − rowsum(P ⊙ G·Vᵀ))` (zero where masked), `dQ = rotᵀ(dS·K)`,
//! `dK = rotᵀ(dSᵀ·Q)`.

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use crate::gemm::{Threads, product};
use crate::rows::softmax_row;

/// The score a hidden key gets (the composed form's `mask_fill` value): its weight
/// underflows to zero unless every key of the row is hidden.
const HIDDEN_SCORE: f32 = -1.0e9;

/// The sizes of one attention pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub len: usize,
    /// Heads.
    pub heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Leading dimensions of a head that rotate (even, at most `head_dim`).
    pub rot_dims: usize,
}

impl Dims {
    /// The model width `H = heads · head_dim`.
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// The rotary tables `(L, head_dim)`: query cos and sin (scaled), key cos and sin.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Query `cos`, with the score scale.
    pub q_cos: Vec<f32>,
    /// Query `sin`, with the score scale.
    pub q_sin: Vec<f32>,
    /// Key `cos`.
    pub k_cos: Vec<f32>,
    /// Key `sin`.
    pub k_sin: Vec<f32>,
}

/// Hidden keys: `(M, L, L)` row-major with `M` 1 (shared by every sequence) or the batch.
#[derive(Debug, Clone)]
pub struct Mask {
    /// `true` where query `i` may not see key `j`.
    pub hidden: Vec<bool>,
    /// Whether each sequence has its own `L × L` block.
    pub per_sequence: bool,
}

impl Mask {
    /// The `L × L` block of sequence `b`.
    fn of(&self, b: usize, len: usize) -> &[bool] {
        let block = if self.per_sequence { b } else { 0 };
        &self.hidden[block * len * len..(block + 1) * len * len]
    }
}

/// What the backward pass needs from the forward: the rotated queries and keys
/// `(B, heads, L, head_dim)` and the attention weights `(B, heads, L, L)`.
#[derive(Debug, Clone)]
pub struct Saved {
    q: Vec<f32>,
    k: Vec<f32>,
    p: Vec<f32>,
}

/// Whether the buffers have the sizes `dims` implies (the caller checks shapes; this
/// keeps a mismatch from indexing out of bounds).
fn sizes_agree(dims: &Dims, qkv: usize, tables: &Tables, mask: Option<&Mask>) -> bool {
    let Dims {
        batch,
        len,
        head_dim,
        rot_dims,
        ..
    } = *dims;
    let table = len * head_dim;
    let mask_ok =
        mask.is_none_or(|m| m.hidden.len() == len * len * if m.per_sequence { batch } else { 1 });
    qkv == batch * len * 3 * dims.hidden()
        && rot_dims <= head_dim
        && rot_dims % 2 == 0
        && [&tables.q_cos, &tables.q_sin, &tables.k_cos, &tables.k_sin]
            .iter()
            .all(|t| t.len() == table)
        && mask_ok
}

/// Sets `value` where row `i` of a sequence's `L × L` block `hidden` hides a key (the
/// block's rows are `row.len()` long); nothing without a mask.
#[inline]
fn set_hidden(row: &mut [f32], hidden: Option<&[bool]>, i: usize, value: f32) {
    let Some(hidden) = hidden else {
        return;
    };
    let len = row.len();
    for (x, &hide) in row.iter_mut().zip(&hidden[i * len..(i + 1) * len]) {
        if hide {
            *x = value;
        }
    }
}

/// `y = x·cos + rotate_half(x)·sin` over one head's `x`, rotating the first `r` dims.
#[inline]
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], r: usize, y: &mut [f32]) {
    let half = r / 2;
    for d in 0..y.len() {
        let turned = if d < half {
            -x[d + half]
        } else if d < r {
            x[d - half]
        } else {
            0.0
        };
        y[d] = x[d] * cos[d] + turned * sin[d];
    }
}

/// The transpose of [`rotate`]: `dx` from `dy`.
#[inline]
fn rotate_back(dy: &[f32], cos: &[f32], sin: &[f32], r: usize, dx: &mut [f32]) {
    let half = r / 2;
    for e in 0..dx.len() {
        let turned = if e < half {
            dy[e + half] * sin[e + half]
        } else if e < r {
            -(dy[e - half] * sin[e - half])
        } else {
            0.0
        };
        dx[e] = dy[e] * cos[e] + turned;
    }
}

/// The attention output `(B·L, H)` of the projection rows `qkv` `(B·L, 3H)`, and what
/// the backward pass needs; `None` when a buffer's size disagrees with `dims`.
pub fn forward(
    qkv: &[f32],
    dims: &Dims,
    tables: &Tables,
    mask: Option<&Mask>,
) -> Option<(Vec<f32>, Saved)> {
    if !sizes_agree(dims, qkv.len(), tables, mask) {
        return None;
    }
    let Dims {
        batch,
        len,
        heads,
        head_dim: hd,
        rot_dims: r,
    } = *dims;
    let (h, h3) = (dims.hidden(), 3 * dims.hidden());
    let mut out = vec![0.0f32; batch * len * h];
    let mut saved = Saved {
        q: vec![0.0; batch * heads * len * hd],
        k: vec![0.0; batch * heads * len * hd],
        p: vec![0.0; batch * heads * len * len],
    };
    if out.is_empty() {
        return Some((out, saved));
    }
    out.par_chunks_mut(len * h)
        .zip(saved.q.par_chunks_mut(heads * len * hd))
        .zip(saved.k.par_chunks_mut(heads * len * hd))
        .zip(saved.p.par_chunks_mut(heads * len * len))
        .enumerate()
        .try_for_each(|(b, (((out, qs), ks), ps))| -> Option<()> {
            let rows = &qkv[b * len * h3..(b + 1) * len * h3];
            let hidden = mask.map(|m| m.of(b, len));
            for head in 0..heads {
                let q = &mut qs[head * len * hd..(head + 1) * len * hd];
                let k = &mut ks[head * len * hd..(head + 1) * len * hd];
                let p = &mut ps[head * len * len..(head + 1) * len * len];
                for i in 0..len {
                    let at = i * h3 + head * 3 * hd;
                    let t = i * hd..(i + 1) * hd;
                    let row = &rows[at..at + 3 * hd];
                    rotate(
                        &row[..hd],
                        &tables.q_cos[t.clone()],
                        &tables.q_sin[t.clone()],
                        r,
                        &mut q[t.clone()],
                    );
                    rotate(
                        &row[hd..2 * hd],
                        &tables.k_cos[t.clone()],
                        &tables.k_sin[t.clone()],
                        r,
                        &mut k[t],
                    );
                }
                let qv = view(q, [len, hd], hd)?;
                let kv = view(k, [len, hd], hd)?;
                let v = view(&rows[head * 3 * hd + 2 * hd..], [len, hd], h3)?;
                let mut pv = ArrayViewMut2::from_shape((len, len), &mut *p).ok()?;
                product(&qv, &kv.t(), &mut pv, false, Threads::Serial)?;
                for (i, row) in p.chunks_mut(len).enumerate() {
                    set_hidden(row, hidden, i, HIDDEN_SCORE);
                    softmax_row(row);
                }
                let pv = view(p, [len, len], len)?;
                let mut o = view_mut(&mut out[head * hd..], [len, hd], h)?;
                product(&pv, &v, &mut o, false, Threads::Serial)?;
            }
            Some(())
        })?;
    Some((out, saved))
}

/// The gradient `(B·L, 3H)` of the projection rows given the output's gradient `g`
/// `(B·L, H)`, the forward's inputs and what it saved; `None` when a size disagrees.
pub fn backward(
    g: &[f32],
    qkv: &[f32],
    dims: &Dims,
    tables: &Tables,
    mask: Option<&Mask>,
    saved: &Saved,
) -> Option<Vec<f32>> {
    let Dims {
        batch,
        len,
        heads,
        head_dim: hd,
        rot_dims: r,
    } = *dims;
    let (h, h3) = (dims.hidden(), 3 * dims.hidden());
    if !sizes_agree(dims, qkv.len(), tables, mask)
        || g.len() != batch * len * h
        || saved.p.len() != batch * heads * len * len
        || saved.q.len() != batch * heads * len * hd
        || saved.k.len() != saved.q.len()
    {
        return None;
    }
    let mut dqkv = vec![0.0f32; qkv.len()];
    if dqkv.is_empty() {
        return Some(dqkv);
    }
    dqkv.par_chunks_mut(len * h3)
        .enumerate()
        .try_for_each(|(b, drows)| -> Option<()> {
            let rows = &qkv[b * len * h3..(b + 1) * len * h3];
            let gb = &g[b * len * h..(b + 1) * len * h];
            let hidden = mask.map(|m| m.of(b, len));
            let mut ds = vec![0.0f32; len * len];
            let mut dq = vec![0.0f32; len * hd];
            let mut dk = vec![0.0f32; len * hd];
            for head in 0..heads {
                let block = (b * heads + head) * len;
                let p = &saved.p[block * len..(block + len) * len];
                let q = &saved.q[block * hd..(block + len) * hd];
                let k = &saved.k[block * hd..(block + len) * hd];
                let pv = view(p, [len, len], len)?;
                let qv = view(q, [len, hd], hd)?;
                let kv = view(k, [len, hd], hd)?;
                let gv = view(&gb[head * hd..], [len, hd], h)?;
                let v = view(&rows[head * 3 * hd + 2 * hd..], [len, hd], h3)?;
                // dV = Pᵀ·G, straight into the value columns.
                let mut dv = view_mut(&mut drows[head * 3 * hd + 2 * hd..], [len, hd], h3)?;
                product(&pv.t(), &gv, &mut dv, false, Threads::Serial)?;
                // dS = P ⊙ (G·Vᵀ − rowsum(P ⊙ G·Vᵀ)); hidden scores get no gradient.
                let mut dsv = ArrayViewMut2::from_shape((len, len), &mut ds[..]).ok()?;
                product(&gv, &v.t(), &mut dsv, false, Threads::Serial)?;
                for (i, (ds_row, p_row)) in ds.chunks_mut(len).zip(p.chunks(len)).enumerate() {
                    let dot: f32 = ds_row.iter().zip(p_row).map(|(d, p)| d * p).sum();
                    for (d, &p) in ds_row.iter_mut().zip(p_row) {
                        *d = p * (*d - dot);
                    }
                    set_hidden(ds_row, hidden, i, 0.0);
                }
                let dsv = view(&ds, [len, len], len)?;
                let mut dqv = ArrayViewMut2::from_shape((len, hd), &mut dq[..]).ok()?;
                let mut dkv = ArrayViewMut2::from_shape((len, hd), &mut dk[..]).ok()?;
                product(&dsv, &kv, &mut dqv, false, Threads::Serial)?;
                product(&dsv.t(), &qv, &mut dkv, false, Threads::Serial)?;
                for i in 0..len {
                    let at = i * h3 + head * 3 * hd;
                    let t = i * hd..(i + 1) * hd;
                    let (dq_row, rest) = drows[at..at + 2 * hd].split_at_mut(hd);
                    rotate_back(
                        &dq[t.clone()],
                        &tables.q_cos[t.clone()],
                        &tables.q_sin[t.clone()],
                        r,
                        dq_row,
                    );
                    rotate_back(
                        &dk[t.clone()],
                        &tables.k_cos[t.clone()],
                        &tables.k_sin[t],
                        r,
                        rest,
                    );
                }
            }
            Some(())
        })?;
    Some(dqkv)
}

/// `rows × cols` starting at `data[0]`, rows `stride` apart.
fn view(data: &[f32], [rows, cols]: [usize; 2], stride: usize) -> Option<ArrayView2<'_, f32>> {
    if rows == 0 || cols == 0 {
        return None;
    }
    let needed = (rows - 1) * stride + cols;
    ArrayView2::from_shape((rows, cols).strides((stride, 1)), data.get(..needed)?).ok()
}

/// The mutable form of [`view`].
fn view_mut(
    data: &mut [f32],
    [rows, cols]: [usize; 2],
    stride: usize,
) -> Option<ArrayViewMut2<'_, f32>> {
    if rows == 0 || cols == 0 {
        return None;
    }
    let needed = (rows - 1) * stride + cols;
    ArrayViewMut2::from_shape((rows, cols).strides((stride, 1)), data.get_mut(..needed)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention in `f64`, written out index by index (`hidden`: one `L × L` block per
    /// sequence); the tests differentiate it by central differences.
    fn reference(qkv: &[f64], dims: &Dims, tables: &Tables, hidden: &[bool]) -> Vec<f64> {
        let Dims {
            len,
            heads,
            head_dim: hd,
            rot_dims: r,
            ..
        } = *dims;
        let (h, h3, half) = (dims.hidden(), 3 * dims.hidden(), r / 2);
        let f = |v: f32| f64::from(v);
        let rot = |x: &[f64], cos: &[f32], sin: &[f32]| -> Vec<f64> {
            (0..hd)
                .map(|d| {
                    let turned = if d < half {
                        -x[d + half]
                    } else if d < r {
                        x[d - half]
                    } else {
                        0.0
                    };
                    x[d] * f(cos[d]) + turned * f(sin[d])
                })
                .collect()
        };
        let batch = qkv.len() / (len * h3);
        let mut out = vec![0.0; batch * len * h];
        for b in 0..batch {
            for head in 0..heads {
                let part = |i: usize, which: usize| {
                    let at = (b * len + i) * h3 + head * 3 * hd + which * hd;
                    &qkv[at..at + hd]
                };
                let t = |i: usize| i * hd..(i + 1) * hd;
                let q: Vec<Vec<f64>> = (0..len)
                    .map(|i| rot(part(i, 0), &tables.q_cos[t(i)], &tables.q_sin[t(i)]))
                    .collect();
                let k: Vec<Vec<f64>> = (0..len)
                    .map(|i| rot(part(i, 1), &tables.k_cos[t(i)], &tables.k_sin[t(i)]))
                    .collect();
                for i in 0..len {
                    let scores: Vec<f64> = (0..len)
                        .map(|j| {
                            if hidden[(b * len + i) * len + j] {
                                f64::from(HIDDEN_SCORE)
                            } else {
                                q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum()
                            }
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for d in 0..hd {
                        out[(b * len + i) * h + head * hd + d] =
                            (0..len).map(|j| e[j] / total * part(j, 2)[d]).sum();
                    }
                }
            }
        }
        out
    }

    fn setup(dims: &Dims) -> (Vec<f32>, Tables) {
        let Dims {
            batch,
            len,
            head_dim: hd,
            rot_dims: r,
            ..
        } = *dims;
        let val = |i: usize, s: usize| ((i * s % 101) as f32 - 50.0) / 37.0;
        let qkv: Vec<f32> = (0..batch * len * 3 * dims.hidden())
            .map(|i| val(i, 13))
            .collect();
        let scale = 1.0 / (hd as f64).sqrt();
        let table = |scale: f64, sine: bool| -> Vec<f32> {
            (0..len * hd)
                .map(|t| {
                    let (pos, d) = (t / hd, t % hd);
                    if d >= r {
                        return if sine { 0.0 } else { scale as f32 };
                    }
                    let angle = pos as f64 * 10_000f64.powf(-2.0 * (d % (r / 2)) as f64 / r as f64);
                    ((if sine { angle.sin() } else { angle.cos() }) * scale) as f32
                })
                .collect()
        };
        let tables = Tables {
            q_cos: table(scale, false),
            q_sin: table(scale, true),
            k_cos: table(1.0, false),
            k_sin: table(1.0, true),
        };
        (qkv, tables)
    }

    /// A causal mask with the first `pad` keys of sequence 1 hidden too (left padding:
    /// its first query sees nothing).
    fn padded_causal(batch: usize, len: usize, pad: usize) -> Mask {
        let hidden = (0..batch * len * len)
            .map(|t| {
                let (b, i, j) = (t / (len * len), (t / len) % len, t % len);
                j > i || (b == 1 && j < pad)
            })
            .collect();
        Mask {
            hidden,
            per_sequence: true,
        }
    }

    #[test]
    fn forward_and_gradient_match_the_f64_reference() {
        let dims = Dims {
            batch: 3,
            len: 7,
            heads: 2,
            head_dim: 6,
            rot_dims: 4,
        };
        let (qkv, tables) = setup(&dims);
        let mask = padded_causal(dims.batch, dims.len, 1);
        let (out, saved) = forward(&qkv, &dims, &tables, Some(&mask)).expect("sizes agree");
        let x: Vec<f64> = qkv.iter().map(|&v| f64::from(v)).collect();
        let want = reference(&x, &dims, &tables, &mask.hidden);
        let worst = out
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        assert!(worst < 1e-5, "forward: max deviation {worst:e}");

        let w: Vec<f32> = (0..out.len())
            .map(|i| ((i * 7 % 19) as f32 - 9.0) / 5.0)
            .collect();
        let dqkv = backward(&w, &qkv, &dims, &tables, Some(&mask), &saved).expect("sizes");
        let loss = |x: &[f64]| -> f64 {
            reference(x, &dims, &tables, &mask.hidden)
                .iter()
                .zip(&w)
                .map(|(o, w)| o * f64::from(*w))
                .sum()
        };
        let step = 1e-6;
        let mut worst = 0.0f64;
        for t in 0..x.len() {
            let mut up = x.clone();
            let mut down = x.clone();
            up[t] += step;
            down[t] -= step;
            let fd = (loss(&up) - loss(&down)) / (2.0 * step);
            worst = worst.max((f64::from(dqkv[t]) - fd).abs());
        }
        assert!(worst < 2e-5, "gradient: max deviation {worst:e}");
    }

    #[test]
    fn rotation_back_is_the_transpose_of_the_rotation() {
        let (cos, sin) = ([0.3f32, -0.8, 0.5, 0.9, 1.0], [0.7f32, 0.2, -0.4, 0.6, 0.0]);
        let basis =
            |i: usize| -> Vec<f32> { (0..5).map(|d| f32::from(u8::from(d == i))).collect() };
        let mut m = [[0.0f32; 5]; 5];
        let mut mt = [[0.0f32; 5]; 5];
        for i in 0..5 {
            let mut y = [0.0f32; 5];
            rotate(&basis(i), &cos, &sin, 4, &mut y);
            let mut x = [0.0f32; 5];
            rotate_back(&basis(i), &cos, &sin, 4, &mut x);
            for j in 0..5 {
                m[j][i] = y[j];
                mt[i][j] = x[j];
            }
        }
        assert_eq!(m, mt);
        // The fifth dimension passes through, scaled by its cos.
        assert_eq!(m[4], [0.0, 0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn sizes_that_disagree_are_refused() {
        let dims = Dims {
            batch: 2,
            len: 3,
            heads: 1,
            head_dim: 4,
            rot_dims: 4,
        };
        let (qkv, tables) = setup(&dims);
        assert!(forward(&qkv[1..], &dims, &tables, None).is_none());
        let odd = Dims {
            rot_dims: 3,
            ..dims
        };
        assert!(forward(&qkv, &odd, &tables, None).is_none());
        let short_mask = Mask {
            hidden: vec![false; 5],
            per_sequence: false,
        };
        assert!(forward(&qkv, &dims, &tables, Some(&short_mask)).is_none());
        let (out, saved) = forward(&qkv, &dims, &tables, None).expect("sizes agree");
        assert!(backward(&out[1..], &qkv, &dims, &tables, None, &saved).is_none());
    }
}
