//! The element-wise kernels: GELU, SiLU and ReLU with their slopes, and the product of two
//! buffers (their backward passes), each one multi-threaded pass in fixed-size chunks, so
//! the same input gives the same bits on any number of cores.
//!
//! The loop bodies are branch-free `f32` arithmetic, so the compiler vectorises them: the
//! exponential and the normal tail are polynomials here rather than calls into `libm`
//! (which run one element at a time; a `libm::erf` in `f64` per element was a sixth of the
//! training step's CPU time).

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

use rayon::prelude::*;

/// Elements per parallel task: large enough that a task costs far more than its
/// scheduling, small enough to share a 2 MB tensor between cores.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// `1/√(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `ln 2` in two parts (Cody–Waite): `LN2_HI` has 9 significant bits, so `n·LN2_HI` is
/// exact for the exponents `|n| ≤ 127` used here, and `LN2_LO = ln 2 − LN2_HI` to `f32`
/// precision (not `f32(ln 2) − LN2_HI`, which would carry `f32(ln 2)`'s rounding, `2·10⁻⁹`,
/// times `n` into the reduced argument).
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for `x ≤ 0` (or NaN), relative error below `1.2·10⁻⁷` (tested): `x = n·ln 2 + r` with
/// `|r| ≤ ln 2 / 2`, `e^r` by its Taylor polynomial of degree 7 (truncation below
/// `6·10⁻⁹` there), `2^n` from the exponent bits. Arguments below `−87` give `e^−87`
/// (`1.6·10⁻³⁸`, the smallest normal scale) instead of a subnormal or zero.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in two additions
    // (no rounding instruction before SSE4.1).
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// `t` in [`erfc_scaled`]: `t = 1/(1 + ERFC_P·a)`.
const ERFC_P: f32 = 0.375;

/// `erfc(a)·e^{a²}/t` as a polynomial in `t = 1/(1 + 0.375·a)`, `a ≥ 0`, coefficients of
/// `t⁰ … t⁸`: fitted for this crate by weighted least squares on `a ∈ [0, 9.5]` (where
/// `e^{−a²}` is still a normal `f32`), relative error `1.2·10⁻⁸` there in exact arithmetic.
const ERFC_POLY: [f32; 9] = [
    0.211_614_42,
    0.210_633_34,
    0.205_431_72,
    0.121_033_46,
    0.274_857_95,
    -0.231_097_66,
    0.433_913_35,
    -0.288_085_3,
    0.061_698_75,
];

/// `2Φ(x) = 1 + erf(x/√2)` given `e = e^{−x²/2}`: the normal tail
/// `erfc(|x|/√2) = t·P(t)·e` ([`ERFC_POLY`]) for `x < 0`, and `2 −` it otherwise (so the
/// lower tail keeps its relative accuracy instead of cancelling in `1 + erf`).
#[inline(always)]
fn twice_cdf(x: f32, e: f32) -> f32 {
    let t = 1.0 / (1.0 + ERFC_P * (x.abs() * FRAC_1_SQRT_2));
    let mut p = ERFC_POLY[8];
    for &c in ERFC_POLY[..8].iter().rev() {
        p = p * t + c;
    }
    let tail = t * p * e;
    if x < 0.0 { tail } else { 2.0 - tail }
}

/// GELU `x·Φ(x)` and its slope `Φ(x) + x·φ(x)`, sharing `e^{−x²/2}`.
#[inline(always)]
fn gelu_point(x: f32) -> (f32, f32) {
    let e = exp_nonpositive(-0.5 * x * x);
    let twice = twice_cdf(x, e);
    (x * twice * 0.5, twice * 0.5 + x * e * INV_SQRT_2PI)
}

/// SiLU `x·σ(x)` and its slope `σ(x)·(1 + x·(1 − σ(x)))`, from `u = e^{−|x|}`, which
/// never overflows: `σ(|x|) = 1/(1 + u)` and `σ(−|x|) = u/(1 + u)`, so that `1 − σ(x)`
/// is `σ(−x)`, computed directly rather than by a cancelling subtraction.
#[inline(always)]
fn silu_point(x: f32) -> (f32, f32) {
    let u = exp_nonpositive(-x.abs());
    let upper = 1.0 / (1.0 + u);
    let lower = u * upper;
    let (sigma, rest) = if x < 0.0 {
        (lower, upper)
    } else {
        (upper, lower)
    };
    (x * sigma, sigma * (1.0 + x * rest))
}

/// ReLU as burn computes it: `0` where `x ≤ 0`, else `x` (NaN stays NaN).
#[inline(always)]
fn relu_point(x: f32) -> f32 {
    if x <= 0.0 { 0.0 } else { x }
}

// The three maps below allocate their outputs without zeroing them (zeroing them first
// was a tenth of the training step's serial time at the demo's shape): each writes every
// element of its outputs in its own loop before setting their lengths.

/// `f` on every element of `x`, into a new buffer.
#[allow(unsafe_code)]
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let n = x.len();
    let mut y = Vec::with_capacity(n);
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(f(x));
            }
        });
    // SAFETY: the first `n` slots of `y` and the `n` elements of `x` split into chunks of
    // equal lengths, paired in order, and the loop wrote every slot of every chunk.
    unsafe { y.set_len(n) };
    y
}

/// `f` on every element of `x`, whose two results go into two new buffers.
#[allow(unsafe_code)]
fn map_pair(x: &[f32], f: impl Fn(f32) -> (f32, f32) + Sync) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    a.spare_capacity_mut()[..n]
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(b.spare_capacity_mut()[..n].par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(x.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|((a, b), x)| {
            for ((a, b), &x) in a.iter_mut().zip(b.iter_mut()).zip(x) {
                let (u, v) = f(x);
                a.write(u);
                b.write(v);
            }
        });
    // SAFETY: as in `map`, for both outputs: their first `n` slots split like `x`, and
    // the loop wrote every slot of every chunk of each.
    unsafe {
        a.set_len(n);
        b.set_len(n);
    }
    (a, b)
}

/// `f` on the pairs of elements of `a` and `b` (the shorter length), into a new buffer.
#[allow(unsafe_code)]
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let n = a.len().min(b.len());
    let mut out = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(a[..n].par_chunks(ELEMENTS_PER_TASK))
        .zip(b[..n].par_chunks(ELEMENTS_PER_TASK))
        .for_each(|((o, a), b)| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                o.write(f(a, b));
            }
        });
    // SAFETY: as in `map`: `out`'s first `n` slots split like `a` and `b` cut to `n`, and
    // the loop wrote every slot of every chunk.
    unsafe { out.set_len(n) };
    out
}

/// `y = x·Φ(x)`.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    map(x, |x| gelu_point(x).0)
}

/// `y = x·Φ(x)` and its derivative `Φ(x) + x·φ(x)`, for the backward pass.
pub fn gelu_with_slope(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    map_pair(x, gelu_point)
}

/// `y = x·σ(x)`.
pub fn silu(x: &[f32]) -> Vec<f32> {
    map(x, |x| silu_point(x).0)
}

/// `y = x·σ(x)` and its derivative `σ(x)·(1 + x·(1 − σ(x)))`, for the backward pass.
pub fn silu_with_slope(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    map_pair(x, silu_point)
}

/// `y = max(x, 0)`, burn's ReLU bit for bit.
pub fn relu(x: &[f32]) -> Vec<f32> {
    map(x, relu_point)
}

/// ReLU's backward from its output `y`: `g` where `y > 0`, else `0` (burn's rule).
pub fn relu_backward(g: &[f32], y: &[f32]) -> Vec<f32> {
    zip_map(g, y, |g, y| if y <= 0.0 { 0.0 } else { g })
}

/// `a ⊙ b`, element-wise (the backward of GELU and SiLU: the upstream gradient times the
/// slope).
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    zip_map(a, b, |a, b| a * b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` from `lo` to `hi` in `steps` equal steps, plus the values that need care.
    fn grid(lo: f32, hi: f32, steps: usize) -> Vec<f32> {
        let mut x: Vec<f32> = (0..=steps)
            .map(|i| lo + (hi - lo) * i as f32 / steps as f32)
            .collect();
        x.extend([
            0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 13.0, -13.0, 40.0, -40.0,
        ]);
        x
    }

    #[test]
    fn the_exponential_is_within_an_ulp_of_the_f64_one_down_to_e_minus_87() {
        let mut worst = 0.0f64;
        for x in grid(-87.0, 0.0, 400_000) {
            let exact = f64::from(x).exp();
            worst = worst.max((f64::from(exp_nonpositive(x)) - exact).abs() / exact);
        }
        assert!(worst < 1.2e-7, "max relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!((f64::from(exp_nonpositive(-1e4)) - (-87.0f64).exp()).abs() < 1e-44);
        assert!(exp_nonpositive(f32::NEG_INFINITY) > 0.0);
    }

    #[test]
    fn gelu_and_its_slope_match_the_f64_erf_to_f32_rounding() {
        let x = grid(-14.0, 14.0, 280_000);
        let (y, slope) = gelu_with_slope(&x);
        assert_eq!(y, gelu(&x));
        let (mut worst_y, mut worst_s) = (0.0f64, 0.0f64);
        for (i, &v) in x.iter().enumerate() {
            let v = f64::from(v);
            let cdf = 0.5 * (1.0 + libm::erf(v * std::f64::consts::FRAC_1_SQRT_2));
            let exact = v * cdf;
            // Relative to the value where it is of order one or more, absolute below:
            // `f32` cannot do better than half an ulp of either.
            worst_y = worst_y.max((f64::from(y[i]) - exact).abs() / exact.abs().max(1.0));
            let exact_slope = cdf + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            worst_s = worst_s.max((f64::from(slope[i]) - exact_slope).abs());
        }
        assert!(worst_y < 1.5e-7, "max GELU error {worst_y:e}");
        assert!(worst_s < 2.5e-7, "max slope error {worst_s:e}");
    }

    #[test]
    fn the_lower_tail_of_gelu_keeps_its_relative_accuracy() {
        // 1 + erf cancels here in f32 (burn's composed form gives 0 from x ≈ −5.5 on);
        // the tail polynomial does not.
        for x in [-3.0f32, -5.0, -6.0, -8.0, -10.0, -12.0] {
            let v = f64::from(x);
            let exact = v * 0.5 * libm::erfc(-v * std::f64::consts::FRAC_1_SQRT_2);
            let got = f64::from(gelu(&[x])[0]);
            assert!(
                (got - exact).abs() / exact.abs() < 2e-6,
                "x = {x}: {got:e} vs {exact:e}"
            );
        }
    }

    #[test]
    fn silu_and_its_slope_match_the_f64_closed_form() {
        let x = grid(-100.0, 100.0, 400_000);
        let (y, slope) = silu_with_slope(&x);
        assert_eq!(y, silu(&x));
        let mut worst_s = 0.0f64;
        for (i, &v) in x.iter().enumerate() {
            let v = f64::from(v);
            let sigma = 1.0 / (1.0 + (-v).exp());
            let exact_slope = sigma * (1.0 + v * (1.0 - sigma));
            worst_s = worst_s.max((f64::from(slope[i]) - exact_slope).abs());
        }
        // Below x ≈ −87 the kernel's e^{−|x|} stops at e^−87: relative error in the
        // (tiny) value grows there, so the grid's far tail is checked in absolute terms.
        let far: f64 = x
            .iter()
            .zip(&y)
            .filter(|(x, _)| **x < -87.0)
            .map(|(&x, &y)| (f64::from(y) - f64::from(x) / (1.0 + (-f64::from(x)).exp())).abs())
            .fold(0.0, f64::max);
        assert!(far < 1e-35, "far tail {far:e}");
        assert!(worst_s < 2.5e-7, "max slope error {worst_s:e}");
        let near: f64 = x
            .iter()
            .zip(&y)
            .filter(|(x, _)| **x >= -80.0)
            .map(|(&x, &y)| {
                let v = f64::from(x);
                let exact = v / (1.0 + (-v).exp());
                (f64::from(y) - exact).abs() / exact.abs().max(1e-30)
            })
            .fold(0.0, f64::max);
        assert!(near < 3e-7, "max SiLU relative error {near:e}");
    }

    #[test]
    fn relu_and_its_backward_follow_burns_rule() {
        let x = [-1.0f32, -0.0, 0.0, 2.5, f32::NAN];
        let y = relu(&x);
        assert_eq!(&y[..4], &[0.0, 0.0, 0.0, 2.5]);
        assert!(y[4].is_nan());
        assert!(y[1].is_sign_positive());
        let g = relu_backward(&[1.0, 2.0, 3.0, 4.0, 5.0], &y);
        assert_eq!(g, vec![0.0, 0.0, 0.0, 4.0, 5.0]);
    }

    #[test]
    fn chunked_kernels_give_the_same_bits_as_one_element_at_a_time() {
        // Three and a half chunks: the last one partial.
        let x: Vec<f32> = (0..ELEMENTS_PER_TASK * 7 / 2)
            .map(|i| ((i as f32) * 0.618).sin() * 6.0)
            .collect();
        let (y, s) = gelu_with_slope(&x);
        for (i, &v) in x.iter().enumerate() {
            assert_eq!((y[i], s[i]), gelu_point(v));
        }
        let m = mul(&x, &y);
        assert_eq!(m.len(), x.len());
        assert_eq!(
            m[ELEMENTS_PER_TASK * 3 + 5],
            x[ELEMENTS_PER_TASK * 3 + 5] * y[ELEMENTS_PER_TASK * 3 + 5]
        );
    }
}
