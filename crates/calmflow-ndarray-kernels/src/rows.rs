//! The kernels on contiguous `f32` buffers: element-wise GELU, row-wise layer norm and softmax,
//! forward and backward, each one pass over its data, split over rayon's threads in
//! fixed-size chunks (so results and their reduction order do not depend on the thread
//! count: the same input gives the same bits on 1 core or 64).

use rayon::prelude::*;

/// Elements per parallel task of the element-wise kernels: large enough that a task
/// costs far more than its scheduling, small enough to share a 2 MB tensor between cores.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// Rows per parallel task of the row-wise kernels (and per partial sum of the parameter
/// gradients).
const ROWS_PER_TASK: usize = 64;

/// `1/√2` and `1/√(2π)` as burn's composed GELU rounds them.
const SQRT_2: f32 = std::f32::consts::SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `Φ(x)` exactly as burn's composed GELU computes it: `x/√2` in `f32`, `erf` in `f64`,
/// then `(1 + erf)` in `f32` (so [`gelu`] equals burn's `gelu` bit for bit).
#[inline]
fn cdf_times_two(x: f32) -> f32 {
    libm::erf(f64::from(x / SQRT_2)) as f32 + 1.0
}

/// `y = x·Φ(x)`.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * cdf_times_two(x) / 2.0;
            }
        });
    y
}

/// `y = x·Φ(x)` and its derivative `Φ(x) + x·φ(x)`, for the backward pass.
pub fn gelu_with_slope(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; x.len()];
    let mut slope = vec![0.0; x.len()];
    y.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(slope.par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|((y, s), x)| {
            for ((y, s), &x) in y.iter_mut().zip(s.iter_mut()).zip(x) {
                let twice_cdf = cdf_times_two(x);
                *y = x * twice_cdf / 2.0;
                *s = twice_cdf * 0.5 + x * (-0.5 * x * x).exp() * INV_SQRT_2PI;
            }
        });
    (y, slope)
}

/// `a ⊙ b`, element-wise (the GELU backward: the upstream gradient times the slope).
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(a.par_chunks(ELEMENTS_PER_TASK))
        .zip(b.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|((o, a), b)| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = a * b;
            }
        });
    out
}

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
    let mut y = vec![0.0; x.len()];
    let mut inv_std = vec![0.0; x.len() / n];
    layer_norm_into(x, n, gamma, beta, eps, &mut y, None, &mut inv_std);
    y
}

/// [`layer_norm`] that also returns `x̂` and `1/√(var + eps)` for the backward pass.
pub fn layer_norm_saving(
    x: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> (Vec<f32>, LayerNormSaved) {
    let mut y = vec![0.0; x.len()];
    let mut normalized = vec![0.0; x.len()];
    let mut inv_std = vec![0.0; x.len() / n];
    layer_norm_into(
        x,
        n,
        gamma,
        beta,
        eps,
        &mut y,
        Some(&mut normalized),
        &mut inv_std,
    );
    (
        y,
        LayerNormSaved {
            normalized,
            inv_std,
        },
    )
}

/// The layer-norm forward into `y`, `x̂` (when given) and `1/σ`, in parallel row blocks.
#[allow(clippy::too_many_arguments)]
fn layer_norm_into(
    x: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    normalized: Option<&mut [f32]>,
    inv_std: &mut [f32],
) {
    let chunk = ROWS_PER_TASK * n;
    let row = |x: &[f32], y: &mut [f32], xhat: Option<&mut [f32]>, inv: &mut f32| {
        let mean = x.iter().sum::<f32>() / n as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let denom = (var + eps).sqrt();
        *inv = 1.0 / denom;
        match (gamma, beta) {
            (Some(g), Some(b)) => {
                for (((y, &v), &g), &b) in y.iter_mut().zip(x).zip(g).zip(b) {
                    *y = (v - mean) / denom * g + b;
                }
            }
            _ => {
                for (j, (y, &v)) in y.iter_mut().zip(x).enumerate() {
                    let g = gamma.map_or(1.0, |g| g[j]);
                    let b = beta.map_or(0.0, |b| b[j]);
                    *y = (v - mean) / denom * g + b;
                }
            }
        }
        if let Some(xhat) = xhat {
            for (o, &v) in xhat.iter_mut().zip(x) {
                *o = (v - mean) / denom;
            }
        }
    };
    match normalized {
        Some(normalized) => y
            .par_chunks_mut(chunk)
            .zip(normalized.par_chunks_mut(chunk))
            .zip(inv_std.par_chunks_mut(ROWS_PER_TASK))
            .zip(x.par_chunks(chunk))
            .for_each(|(((y, xhat), inv), x)| {
                for (((y, xhat), inv), x) in y
                    .chunks_mut(n)
                    .zip(xhat.chunks_mut(n))
                    .zip(inv.iter_mut())
                    .zip(x.chunks(n))
                {
                    row(x, y, Some(xhat), inv);
                }
            }),
        None => y
            .par_chunks_mut(chunk)
            .zip(inv_std.par_chunks_mut(ROWS_PER_TASK))
            .zip(x.par_chunks(chunk))
            .for_each(|((y, inv), x)| {
                for ((y, inv), x) in y.chunks_mut(n).zip(inv.iter_mut()).zip(x.chunks(n)) {
                    row(x, y, None, inv);
                }
            }),
    }
}

/// The gradients of [`layer_norm`] given the upstream gradient `g` `(rows, n)`:
/// `dx = (g·γ − mean(g·γ) − x̂·mean(g·γ·x̂)) / √(var + eps)` per row, `dγ = Σ_rows g·x̂`,
/// `dβ = Σ_rows g`. The column sums are accumulated per fixed block of rows, then the
/// blocks in order.
pub fn layer_norm_backward(
    g: &[f32],
    n: usize,
    gamma: Option<&[f32]>,
    saved: &LayerNormSaved,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; g.len()];
    let chunk = ROWS_PER_TASK * n;
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
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
                for j in 0..n {
                    let gg = g[j] * gamma.map_or(1.0, |w| w[j]);
                    dx[j] = inv * (gg - mean_gg - xhat[j] * mean_ggx);
                }
            }
            (dgamma, dbeta)
        })
        .collect();
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
    fn gelu_slope_matches_finite_differences_of_the_value() {
        let x: Vec<f32> = (0..40_001).map(|i| -8.0 + i as f32 * 4e-4).collect();
        let (y, slope) = gelu_with_slope(&x);
        assert_eq!(y, gelu(&x));
        let f = |v: f64| v * 0.5 * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
        let mut worst = 0.0f64;
        for (i, &v) in x.iter().enumerate() {
            let v = f64::from(v);
            worst = worst.max((f(v) - f64::from(y[i])).abs());
            let fd = (f(v + 1e-6) - f(v - 1e-6)) / 2e-6;
            worst = worst.max((fd - f64::from(slope[i])).abs());
        }
        assert!(worst < 2e-6, "max deviation {worst:e}");
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
