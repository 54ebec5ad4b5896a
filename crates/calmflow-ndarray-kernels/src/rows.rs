//! The row-wise kernels on contiguous `f32` buffers: layer norm and softmax,
//! forward and backward, each one pass over its data, split over rayon's threads in
//! fixed-size chunks (so results and their reduction order do not depend on the thread
//! count: the same input gives the same bits on 1 core or 64).

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Rows per parallel task of the row-wise kernels (and per partial sum of the parameter
/// gradients).
const ROWS_PER_TASK: usize = 64;

/// What the layer-norm backward needs from its forward pass.
#[derive(Debug, Clone)]
pub struct LayerNormSaved {
    /// The normalised input `x̂ = (x − mean)/√(var + eps)`, row-major `(rows, n)`.
    pub normalized: Vec<f32>,
    /// `1/√(var + eps)` per row.
    pub inv_std: Vec<f32>,
}

/// Layer norm of the `rows = x.len() / n` rows of `x`: `x̂·gamma + beta` with
/// `x̂ = (x − mean)/√(var + eps)` (population variance). `n` must be positive and divide
/// `x.len()`; `gamma` and `beta` have `n` elements.
pub fn layer_norm(
    x: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> Vec<f32> {
    layer_norm_fresh(x, n, gamma, beta, eps, false).0
}

/// [`layer_norm`] that also returns `x̂` and `1/√(var + eps)` for the backward pass.
pub fn layer_norm_saving(
    x: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> (Vec<f32>, LayerNormSaved) {
    let (y, normalized, inv_std) = layer_norm_fresh(x, n, gamma, beta, eps, true);
    (
        y,
        LayerNormSaved {
            normalized,
            inv_std,
        },
    )
}

/// The layer-norm forward into new buffers `y`, `x̂` (empty unless `save`) and `1/σ`, in
/// parallel row blocks. The buffers are not zeroed first: every row writes all of its
/// `n` outputs and its `1/σ`.
#[allow(unsafe_code)]
fn layer_norm_fresh(
    x: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    save: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if n == 0 {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let rows = x.len() / n;
    let len = rows * n;
    let chunk = ROWS_PER_TASK * n;
    let x = &x[..len];
    let mut y = Vec::with_capacity(len);
    let mut normalized = Vec::with_capacity(if save { len } else { 0 });
    let mut inv_std = Vec::with_capacity(rows);
    let row = |x: &[f32], y: &mut [MaybeUninit<f32>], xhat: Option<&mut [MaybeUninit<f32>]>| {
        let mean = x.iter().sum::<f32>() / n as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let denom = (var + eps).sqrt();
        match (gamma, beta) {
            (Some(g), Some(b)) => {
                for (((y, &v), &g), &b) in y.iter_mut().zip(x).zip(g).zip(b) {
                    y.write((v - mean) / denom * g + b);
                }
            }
            _ => {
                for (j, (y, &v)) in y.iter_mut().zip(x).enumerate() {
                    let g = gamma.map_or(1.0, |g| g[j]);
                    let b = beta.map_or(0.0, |b| b[j]);
                    y.write((v - mean) / denom * g + b);
                }
            }
        }
        if let Some(xhat) = xhat {
            for (o, &v) in xhat.iter_mut().zip(x) {
                o.write((v - mean) / denom);
            }
        }
        1.0 / denom
    };
    let (ys, invs) = (
        &mut y.spare_capacity_mut()[..len],
        &mut inv_std.spare_capacity_mut()[..rows],
    );
    if save {
        ys.par_chunks_mut(chunk)
            .zip(normalized.spare_capacity_mut()[..len].par_chunks_mut(chunk))
            .zip(invs.par_chunks_mut(ROWS_PER_TASK))
            .zip(x.par_chunks(chunk))
            .for_each(|(((y, xhat), inv), x)| {
                for (((y, xhat), inv), x) in y
                    .chunks_mut(n)
                    .zip(xhat.chunks_mut(n))
                    .zip(inv.iter_mut())
                    .zip(x.chunks(n))
                {
                    inv.write(row(x, y, Some(xhat)));
                }
            });
    } else {
        ys.par_chunks_mut(chunk)
            .zip(invs.par_chunks_mut(ROWS_PER_TASK))
            .zip(x.par_chunks(chunk))
            .for_each(|((y, inv), x)| {
                for ((y, inv), x) in y.chunks_mut(n).zip(inv.iter_mut()).zip(x.chunks(n)) {
                    inv.write(row(x, y, None));
                }
            });
    }
    // SAFETY: `x` holds `rows` whole rows of `n`; the outputs' first `len` (`rows` for
    // `1/σ`) slots split into the same blocks of `ROWS_PER_TASK` rows as `x`, paired in
    // order, and each row wrote all `n` of its `y` (and `x̂`) slots and its `1/σ`.
    unsafe {
        y.set_len(len);
        if save {
            normalized.set_len(len);
        }
        inv_std.set_len(rows);
    }
    (y, normalized, inv_std)
}

/// The gradients of [`layer_norm`] given the upstream gradient `g` `(rows, n)`:
/// `dx = (g·γ − mean(g·γ) − x̂·mean(g·γ·x̂)) / √(var + eps)` per row, `dγ = Σ_rows g·x̂`,
/// `dβ = Σ_rows g`. The column sums are accumulated per fixed block of rows, then the
/// blocks in order. `dx` is not zeroed first: every row writes all of its `n` values.
#[allow(unsafe_code)]
pub fn layer_norm_backward(
    g: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    saved: &LayerNormSaved,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if n == 0 {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let len = g.len() / n * n;
    let g = &g[..len];
    let mut dx = Vec::with_capacity(len);
    let chunk = ROWS_PER_TASK * n;
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .zip(g.par_chunks(chunk))
        .zip(saved.normalized.par_chunks(chunk))
        .zip(saved.inv_std.par_chunks(ROWS_PER_TASK))
        .map(|(((dx, g), xhat), inv)| {
            let mut dgamma = vec![0.0f32; n];
            let mut dbeta = vec![0.0f32; n];
            for (((dx, g), xhat), &inv) in dx
                .chunks_mut(n)
                .zip(g.chunks(n))
                .zip(xhat.chunks(n))
                .zip(inv)
            {
                let mut mean_gg = 0.0f32;
                let mut mean_ggx = 0.0f32;
                for j in 0..n {
                    let gg = g[j] * gamma.map_or(1.0, |w| w[j]);
                    mean_gg += gg;
                    mean_ggx += gg * xhat[j];
                    dgamma[j] += g[j] * xhat[j];
                    dbeta[j] += g[j];
                }
                mean_gg /= n as f32;
                mean_ggx /= n as f32;
                for (j, dx) in dx.iter_mut().enumerate() {
                    let gg = g[j] * gamma.map_or(1.0, |w| w[j]);
                    dx.write(inv * (gg - mean_gg - xhat[j] * mean_ggx));
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    // SAFETY: `g` holds whole rows of `n`; `dx`'s first `len` slots split into the same
    // row blocks as `g`, paired in order, and every row wrote all `n` of its slots.
    unsafe { dx.set_len(len) };
    let mut dgamma = vec![0.0f32; n];
    let mut dbeta = vec![0.0f32; n];
    for (pg, pb) in &partials {
        for j in 0..n {
            dgamma[j] += pg[j];
            dbeta[j] += pb[j];
        }
    }
    (dx, dgamma, dbeta)
}

/// Softmax over each row of `n` elements: `exp(x − max) / Σ exp(x − max)`.
pub fn softmax(x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    let chunk = ROWS_PER_TASK * n;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(n).zip(x.chunks(n)) {
                y.copy_from_slice(x);
                softmax_row(y);
            }
        });
    y
}

/// [`softmax`] of one row, in place.
#[inline]
pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// The gradient of [`softmax`] given its output `y` and the upstream gradient `g`:
/// `y ⊙ (g − Σ g·y)` per row.
pub fn softmax_backward(y: &[f32], g: &[f32], n: usize) -> Vec<f32> {
    let mut dx = vec![0.0; y.len()];
    let chunk = ROWS_PER_TASK * n;
    dx.par_chunks_mut(chunk)
        .zip(y.par_chunks(chunk))
        .zip(g.par_chunks(chunk))
        .for_each(|((dx, y), g)| {
            for ((dx, y), g) in dx.chunks_mut(n).zip(y.chunks(n)).zip(g.chunks(n)) {
                let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = y * (g - dot);
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layer norm of one row in `f64`, the reference.
    fn reference(x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        x.iter()
            .zip(gamma.iter().zip(beta))
            .map(|(v, (g, b))| (v - mean) / (var + eps).sqrt() * g + b)
            .collect()
    }

    fn inputs(rows: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = (0..rows * n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0 + (i / n) as f32 * 0.25)
            .collect();
        let gamma = (0..n).map(|j| 0.5 + (j % 7) as f32 * 0.25).collect();
        let beta = (0..n).map(|j| (j % 5) as f32 * 0.1 - 0.2).collect();
        (x, gamma, beta)
    }

    #[test]
    fn layer_norm_matches_the_f64_reference_on_many_row_blocks() {
        // 200 rows span four parallel row blocks, the last one partial.
        let (rows, n) = (200, 24);
        let (x, gamma, beta) = inputs(rows, n);
        let (y, saved) = layer_norm_saving(&x, n, Some(&gamma), Some(&beta), 1e-5);
        assert_eq!(y, layer_norm(&x, n, Some(&gamma), Some(&beta), 1e-5));
        let g64: Vec<f64> = gamma.iter().map(|&v| v.into()).collect();
        let b64: Vec<f64> = beta.iter().map(|&v| v.into()).collect();
        let mut worst = 0.0f64;
        for r in 0..rows {
            let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v.into()).collect();
            let want = reference(&row, &g64, &b64, 1e-5);
            let plain = reference(&row, &vec![1.0; n], &vec![0.0; n], 1e-5);
            let ours = y[r * n..(r + 1) * n].iter().zip(&want);
            let ours_plain = saved.normalized[r * n..(r + 1) * n].iter().zip(&plain);
            for (&got, &want) in ours.chain(ours_plain) {
                worst = worst.max((f64::from(got) - want).abs());
            }
        }
        // Rows sit at offsets up to 50 with spread ≈ 1.7: the f32 mean carries about
        // ulp(50)/2 ≈ 1.9e-6, which x̂·γ (γ ≤ 2) scales to ≈ 4e-6; measured 7.4e-6.
        assert!(worst < 1e-5, "max deviation {worst:e}");
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let (rows, n) = (130, 8);
        let (x, gamma, beta) = inputs(rows, n);
        // Loss L = Σ w ⊙ y with fixed weights w: dL/dy = w.
        let w: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let (_, saved) = layer_norm_saving(&x, n, Some(&gamma), Some(&beta), 1e-5);
        let (dx, dgamma, dbeta) = layer_norm_backward(&w, n, Some(&gamma), &saved);
        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 {
            (0..rows)
                .map(|r| {
                    reference(&x[r * n..(r + 1) * n], gamma, beta, 1e-5)
                        .iter()
                        .zip(&w[r * n..(r + 1) * n])
                        .map(|(y, &w)| y * f64::from(w))
                        .sum::<f64>()
                })
                .sum()
        };
        let x64: Vec<f64> = x.iter().map(|&v| v.into()).collect();
        let g64: Vec<f64> = gamma.iter().map(|&v| v.into()).collect();
        let b64: Vec<f64> = beta.iter().map(|&v| v.into()).collect();
        let h = 1e-6;
        let mut worst = 0.0f64;
        for i in (0..rows * n).step_by(7) {
            let (mut up, mut down) = (x64.clone(), x64.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(&up, &g64, &b64) - loss(&down, &g64, &b64)) / (2.0 * h);
            worst = worst.max((fd - f64::from(dx[i])).abs());
        }
        for j in 0..n {
            let (mut up, mut down) = (g64.clone(), g64.clone());
            up[j] += h;
            down[j] -= h;
            let fd = (loss(&x64, &up, &b64) - loss(&x64, &down, &b64)) / (2.0 * h);
            worst = worst.max((fd - f64::from(dgamma[j])).abs() / fd.abs().max(1.0));
            let (mut up, mut down) = (b64.clone(), b64.clone());
            up[j] += h;
            down[j] -= h;
            let fd = (loss(&x64, &g64, &up) - loss(&x64, &g64, &down)) / (2.0 * h);
            worst = worst.max((fd - f64::from(dbeta[j])).abs() / fd.abs().max(1.0));
        }
        assert!(worst < 1e-4, "max deviation {worst:e}");
    }

    #[test]
    fn softmax_and_its_gradient_match_the_closed_form_and_finite_differences() {
        let (rows, n) = (70, 9);
        let x: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 31 % 23) as f32 - 11.0) / 3.0)
            .collect();
        let y = softmax(&x, n);
        let g: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let dx = softmax_backward(&y, &g, n);
        let reference = |row: &[f64]| -> Vec<f64> {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        let mut worst = 0.0f64;
        for r in 0..rows {
            let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v.into()).collect();
            let want = reference(&row);
            let loss = |row: &[f64]| -> f64 {
                reference(row)
                    .iter()
                    .zip(&g[r * n..(r + 1) * n])
                    .map(|(y, &g)| y * f64::from(g))
                    .sum()
            };
            for j in 0..n {
                worst = worst.max((want[j] - f64::from(y[r * n + j])).abs());
                let (mut up, mut down) = (row.clone(), row.clone());
                up[j] += 1e-6;
                down[j] -= 1e-6;
                let fd = (loss(&up) - loss(&down)) / 2e-6;
                worst = worst.max((fd - f64::from(dx[r * n + j])).abs());
            }
        }
        assert!(worst < 1e-6, "max deviation {worst:e}");
    }
}
