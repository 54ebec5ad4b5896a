//! Matrix products on strided views: the affine map `x·W + b` on rows with its gradients,
//! and the batched products of attention (`q·kᵀ`, `p·v`) with theirs.
//!
//! The affine map:
//! burn's composed `linear` copies `xᵀ` into a fresh row-major tensor for the weight
//! gradient and sums the bias gradient in a separate single-threaded pass; here `xᵀ` and
//! `Wᵀ` are views passed to the GEMM as they are, and the bias is the output's initial
//! value.
//!
//! Every product runs through [`product`], the `gemm` crate's kernels (AVX-512 where the
//! processor has it, chosen at run time) on rayon's threads: measured on the 2-core
//! AVX-512 machine of the speed suite, 1.2–1.5× the rate of `matrixmultiply` (what
//! burn-ndarray and ndarray's `general_mat_mul` use) on the model's shapes, and one
//! thread pool instead of rayon's and `matrixmultiply`'s side by side.

use gemm::Parallelism;
use ndarray::{ArrayView2, ArrayView4, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Whether a product may split over rayon's threads (`Parallel`) or runs on the calling
/// thread (`Serial`: products inside tasks that are already parallel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// On rayon's threads.
    Parallel,
    /// On the calling thread.
    Serial,
}

/// `dst ← a·b`, or `dst ← dst + a·b` when `read_dst`, through `gemm`: `dst` is given by a
/// pointer and its column and row strides (in elements), `a (m, k)` and `b (k, n)` as views
/// with `k > 0`.
///
/// # Safety
///
/// `dst` with `dst_strides` must address `m·n` distinct elements writable for the call and
/// overlapping neither `a` nor `b`; when `read_dst`, they must also be initialised (without
/// it, `gemm` reads none of them: its documented contract is `dst := beta·lhs·rhs` with
/// `alpha` ignored, and every element is written).
#[allow(unsafe_code)]
unsafe fn gemm_into(
    dst: *mut f32,
    [dst_cs, dst_rs]: [isize; 2],
    read_dst: bool,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    threads: Threads,
) {
    let ((m, k), n) = (a.dim(), b.dim().1);
    let parallelism = match threads {
        Threads::Parallel => Parallelism::Rayon(0),
        Threads::Serial => Parallelism::None,
    };
    let (a_s, b_s) = (a.strides(), b.strides());
    // SAFETY: `a`'s and `b`'s pointers are the first elements of views whose strides
    // address only those views' elements for their shapes; `dst` is the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            a.as_ptr(),
            a_s[1],
            a_s[0],
            b.as_ptr(),
            b_s[1],
            b_s[0],
            if read_dst { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `c ← a·b`, or `c ← c + a·b` when `accumulate`, on strided views; `None` when the
/// shapes do not chain (`a (m, k)`, `b (k, n)`, `c (m, n)`).
///
/// `gemm` takes raw pointers and strides, which the views supply for the shapes checked
/// here (the workspace denies `unsafe` outside such audited kernels).
#[allow(unsafe_code)]
pub fn product(
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    c: &mut ArrayViewMut2<'_, f32>,
    accumulate: bool,
    threads: Threads,
) -> Option<()> {
    let ((m, k), (k_b, n)) = (a.dim(), b.dim());
    if k != k_b || c.dim() != (m, n) {
        return None;
    }
    if m == 0 || n == 0 {
        return Some(());
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return Some(());
    }
    let strides = [c.strides()[1], c.strides()[0]];
    // SAFETY: `c` is a mutable view of `(m, n)` (checked above), whose elements are
    // initialised and do not overlap each other, and the borrows keep it apart from `a`
    // and `b`.
    unsafe { gemm_into(c.as_mut_ptr(), strides, accumulate, a, b, threads) };
    Some(())
}

/// `a·b` for `a (m, k)` and `b (k, n)` into a new row-major `(m, n)` buffer that is never
/// zeroed first (`gemm` is told not to read it and writes every element); `None` when the
/// inner sizes differ.
#[allow(unsafe_code)]
pub fn product_fresh(
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    threads: Threads,
) -> Option<Vec<f32>> {
    let ((m, k), (k_b, n)) = (a.dim(), b.dim());
    if k != k_b {
        return None;
    }
    if m == 0 || n == 0 || k == 0 {
        return Some(vec![0.0; m * n]);
    }
    let len = m.checked_mul(n)?;
    let mut c: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: `c` has room for `m·n` values, addressed row-major by the strides `(n, 1)`,
    // apart from `a` and `b`; with `read_dst = false`, `gemm_into` reads none of them and
    // writes each of them (`k > 0` here), so all `m·n` are written before the length is
    // set.
    unsafe {
        gemm_into(c.as_mut_ptr(), [1, n as isize], false, a, b, threads);
        c.set_len(len);
    }
    Some(c)
}

/// Rows per partial sum of the bias gradient.
const ROWS_PER_TASK: usize = 256;

/// `y = x·w + b` for `x (m, k)`, `w (k, n)` and `b (n)`, row-major; `None` when a buffer
/// does not have the size its shape says.
pub fn linear(x: &[f32], w: &[f32], b: Option<&[f32]>, [m, k, n]: [usize; 3]) -> Option<Vec<f32>> {
    let xv = ArrayView2::from_shape((m, k), x).ok()?;
    let wv = ArrayView2::from_shape((k, n), w).ok()?;
    if b.is_some_and(|b| b.len() != n) {
        return None;
    }
    let mut y = product_fresh(&xv, &wv, Threads::Parallel)?;
    if let (Some(b), true) = (b, n > 0) {
        // `x·w + b`: the one rounding of `gemm`'s own accumulation into `b`, in parallel.
        y.par_chunks_mut(ROWS_PER_TASK * n).for_each(|rows| {
            for row in rows.chunks_mut(n) {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        });
    }
    Some(y)
}

/// The gradients of [`linear`] given the upstream gradient `g (m, n)`: `dx = g·wᵀ`,
/// `dw = xᵀ·g` and `db = Σ_rows g` (each only when asked for, in that order).
pub fn linear_backward(
    g: &[f32],
    x: &[f32],
    w: &[f32],
    [m, k, n]: [usize; 3],
    [want_x, want_w, want_b]: [bool; 3],
) -> Option<[Option<Vec<f32>>; 3]> {
    let gv = ArrayView2::from_shape((m, n), g).ok()?;
    let dx = if want_x {
        let wv = ArrayView2::from_shape((k, n), w).ok()?;
        Some(product_fresh(&gv, &wv.t(), Threads::Parallel)?)
    } else {
        None
    };
    let dw = if want_w {
        let xv = ArrayView2::from_shape((m, k), x).ok()?;
        Some(product_fresh(&xv.t(), &gv, Threads::Parallel)?)
    } else {
        None
    };
    let db = want_b.then(|| column_sums(g, n));
    Some([dx, dw, db])
}

/// `c[i, j] = a[i, j] · b[i, j]` for every batch index `(i, j)` of `a (I, J, m, k)` and
/// `b (I, J, k, n)` given as strided views (attention's `q·kᵀ` and `p·v` arrive as
/// transposed views of row-major tensors: read in place, not copied), into a row-major
/// `(I, J, m, n)` buffer. `None` when the batch sizes or the inner sizes differ.
pub fn batched_matmul(a: &ArrayView4<'_, f32>, b: &ArrayView4<'_, f32>) -> Option<Vec<f32>> {
    let [i, j, m, k] = a.shape().try_into().ok()?;
    let [i_b, j_b, k_b, n] = b.shape().try_into().ok()?;
    if (i, j, k) != (i_b, j_b, k_b) {
        return None;
    }
    let mut c = vec![0.0f32; i * j * m * n];
    if m * n == 0 {
        return Some(c);
    }
    c.par_chunks_mut(m * n).enumerate().for_each(|(t, out)| {
        let (p, q) = (t / j, t % j);
        let a2 = a.index_axis(Axis(0), p).index_axis_move(Axis(0), q);
        let b2 = b.index_axis(Axis(0), p).index_axis_move(Axis(0), q);
        if let Ok(mut out) = ArrayViewMut2::from_shape((m, n), out) {
            // The shapes were checked above.
            let _ = product(&a2, &b2, &mut out, false, Threads::Serial);
        }
    });
    Some(c)
}

/// The gradients of [`batched_matmul`] given the upstream gradient `g (I, J, m, n)`:
/// `da = g·bᵀ` and `db = aᵀ·g` per batch index (each only when asked for).
pub fn batched_matmul_backward(
    g: &ArrayView4<'_, f32>,
    a: &ArrayView4<'_, f32>,
    b: &ArrayView4<'_, f32>,
    [want_a, want_b]: [bool; 2],
) -> Option<[Option<Vec<f32>>; 2]> {
    let at = a.view().permuted_axes([0, 1, 3, 2]);
    let bt = b.view().permuted_axes([0, 1, 3, 2]);
    let da = if want_a {
        Some(batched_matmul(g, &bt)?)
    } else {
        None
    };
    let db = if want_b {
        Some(batched_matmul(&at, g)?)
    } else {
        None
    };
    Some([da, db])
}

/// Column sums of the rows of `n` in `g`, accumulated per fixed block of rows and then the
/// blocks in order (the same bits on any number of threads).
fn column_sums(g: &[f32], n: usize) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    let partials: Vec<Vec<f32>> = g
        .par_chunks(ROWS_PER_TASK * n)
        .map(|block| {
            let mut sums = vec![0.0f32; n];
            for row in block.chunks(n) {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sums
        })
        .collect();
    let mut sums = vec![0.0f32; n];
    for p in &partials {
        for (s, v) in sums.iter_mut().zip(p) {
            *s += v;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x·w + b` and its gradients under `L = Σ g ⊙ y`, written out in `f64`.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        g: &[f32],
        [m, k, n]: [usize; 3],
    ) -> [Vec<f64>; 4] {
        let f = |v: f32| f64::from(v);
        let mut y = vec![0.0; m * n];
        let mut dx = vec![0.0; m * k];
        let mut dw = vec![0.0; k * n];
        let mut db = vec![0.0; n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = f(b[j])
                    + (0..k)
                        .map(|t| f(x[i * k + t]) * f(w[t * n + j]))
                        .sum::<f64>();
                db[j] += f(g[i * n + j]);
            }
            for t in 0..k {
                dx[i * k + t] = (0..n).map(|j| f(g[i * n + j]) * f(w[t * n + j])).sum();
            }
        }
        for t in 0..k {
            for j in 0..n {
                dw[t * n + j] = (0..m).map(|i| f(x[i * k + t]) * f(g[i * n + j])).sum();
            }
        }
        [y, dx, dw, db]
    }

    #[test]
    fn linear_and_its_gradients_match_the_f64_sums() {
        // 600 rows: three bias-gradient blocks, the last one partial.
        let [m, k, n] = [600, 13, 7];
        let val = |i: usize, s: usize| ((i * s % 97) as f32 - 48.0) / 31.0;
        let x: Vec<f32> = (0..m * k).map(|i| val(i, 7)).collect();
        let w: Vec<f32> = (0..k * n).map(|i| val(i, 11)).collect();
        let b: Vec<f32> = (0..n).map(|i| val(i, 5)).collect();
        let g: Vec<f32> = (0..m * n).map(|i| val(i, 3)).collect();
        let y = linear(&x, &w, Some(&b), [m, k, n]).expect("shapes");
        let [Some(dx), Some(dw), Some(db)] =
            linear_backward(&g, &x, &w, [m, k, n], [true; 3]).expect("shapes")
        else {
            panic!("every gradient was asked for");
        };
        let [ry, rdx, rdw, rdb] = reference(&x, &w, &b, &g, [m, k, n]);
        let worst = |a: &[f32], r: &[f64]| {
            a.iter().zip(r).fold(0.0f64, |acc, (a, r)| {
                acc.max((f64::from(*a) - r).abs() / r.abs().max(1.0))
            })
        };
        for (what, a, r) in [
            ("y", &y, &ry),
            ("dx", &dx, &rdx),
            ("dw", &dw, &rdw),
            ("db", &db, &rdb),
        ] {
            let e = worst(a, r);
            assert!(e < 1e-5, "{what}: relative error {e:e}");
        }
        let no_bias = linear(&x, &w, None, [m, k, n]).expect("shapes");
        for i in 0..m {
            for j in 0..n {
                assert!((no_bias[i * n + j] + b[j] - y[i * n + j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused_and_unwanted_gradients_skipped() {
        assert!(linear(&[1.0; 5], &[1.0; 6], None, [2, 3, 2]).is_none());
        assert!(linear(&[1.0; 6], &[1.0; 6], Some(&[0.0; 3]), [2, 3, 2]).is_none());
        let grads = linear_backward(
            &[1.0; 4],
            &[1.0; 6],
            &[1.0; 6],
            [2, 3, 2],
            [false, true, false],
        )
        .expect("shapes");
        assert!(grads[0].is_none() && grads[2].is_none());
        assert_eq!(grads[1].as_deref(), Some(&[2.0f32; 6][..]));
    }

    #[test]
    fn batched_products_of_transposed_views_match_the_f64_sums() {
        use ndarray::Array4;
        let (i, j, m, k, n) = (3, 2, 5, 4, 6);
        let val = |t: usize, s: usize| ((t * s % 89) as f32 - 44.0) / 23.0;
        // `b` is stored (I, J, n, k) and used transposed, as attention uses `kᵀ`.
        let a = Array4::from_shape_fn((i, j, m, k), |(p, q, r, c)| {
            val(((p * j + q) * m + r) * k + c, 7)
        });
        let b_stored = Array4::from_shape_fn((i, j, n, k), |(p, q, r, c)| {
            val(((p * j + q) * n + r) * k + c, 5)
        });
        let b = b_stored.view().permuted_axes([0, 1, 3, 2]);
        let g = Array4::from_shape_fn((i, j, m, n), |(p, q, r, c)| {
            val(((p * j + q) * m + r) * n + c, 3)
        });
        let c = batched_matmul(&a.view(), &b).expect("shapes");
        let [Some(da), Some(db)] =
            batched_matmul_backward(&g.view(), &a.view(), &b, [true, true]).expect("shapes")
        else {
            panic!("both gradients were asked for");
        };
        let f = |v: f32| f64::from(v);
        let mut worst = 0.0f64;
        for p in 0..i {
            for q in 0..j {
                for r in 0..m {
                    for s in 0..n {
                        let want: f64 = (0..k)
                            .map(|t| f(a[[p, q, r, t]]) * f(b[[p, q, t, s]]))
                            .sum();
                        worst = worst.max((f(c[((p * j + q) * m + r) * n + s]) - want).abs());
                    }
                    for t in 0..k {
                        let want: f64 = (0..n)
                            .map(|s| f(g[[p, q, r, s]]) * f(b[[p, q, t, s]]))
                            .sum();
                        worst = worst.max((f(da[((p * j + q) * m + r) * k + t]) - want).abs());
                    }
                }
                for t in 0..k {
                    for s in 0..n {
                        let want: f64 = (0..m)
                            .map(|r| f(a[[p, q, r, t]]) * f(g[[p, q, r, s]]))
                            .sum();
                        worst = worst.max((f(db[((p * j + q) * k + t) * n + s]) - want).abs());
                    }
                }
            }
        }
        assert!(worst < 1e-5, "max deviation {worst:e}");
        let wrong = Array4::<f32>::zeros((i, j, k + 1, n));
        assert!(batched_matmul(&a.view(), &wrong.view()).is_none());
    }
}
