//! Fused kernels: one-pass implementations of the model's element-wise hot spots that a
//! backend may supply, with their backward pass.
//!
//! Composed from burn's tensor operations, a layer norm is nine passes over its input
//! forward and about twenty backward, each allocating a new tensor, and a `Linear`'s
//! backward copies its transposed input before the weight gradient's matrix product; on
//! the CPU backend such passes, not the arithmetic, bound the training step. A [`FusedKernels`]
//! implementation does each in one pass. The model never names a backend: it asks the
//! registry for the kernels of its backend type `B` and composes burn's operations when
//! none are registered, so every backend keeps working and a backend gains speed by
//! registering (the facade registers the CPU kernels when it selects the CPU backend).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use calmflow_model::fused;
//!
//! type B = NdArray<f32>;
//! let device = Default::default();
//! let x = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0]], &device);
//! // No kernels registered for this backend here: the composed form runs.
//! assert!(fused::kernels::<B>().is_none());
//! let y = fused::layer_norm(x, None, None, 0.0);
//! let s = (2.0f32 / 3.0).sqrt();
//! y.into_data().assert_approx_eq::<f32>(
//!     &burn::tensor::TensorData::from([[-1.0 / s, 0.0, 1.0 / s]]),
//!     burn::tensor::Tolerance::absolute(1e-6),
//! );
//! ```

use std::any::{Any, TypeId};
use std::sync::{Arc, RwLock};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bool, Tensor, TensorPrimitive, backend::Backend};

/// One-pass kernels for a backend `B`. The element-wise and row-wise ones work on the last
/// dimension of a tensor of any rank; on an autodiff backend each records its own backward
/// pass.
pub trait FusedKernels<B: Backend>: Send + Sync + 'static {
    /// The exact (erf) GELU `x·Φ(x)`, differentiated exactly (`Φ(x) + x·φ(x)`).
    fn gelu(&self, x: FloatTensor<B>) -> FloatTensor<B>;

    /// SiLU `x·σ(x)`, differentiated exactly (`σ(x)·(1 + x·(1 − σ(x)))`); burn's `silu`
    /// unless a backend overrides it.
    fn silu(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        on_primitive::<B>(x, |t| burn::tensor::activation::silu(t))
    }

    /// ReLU `max(x, 0)` (its gradient is zero where `x ≤ 0`); burn's `relu` unless a
    /// backend overrides it.
    fn relu(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        on_primitive::<B>(x, |t| burn::tensor::activation::relu(t))
    }

    /// `(x − mean) / sqrt(var + eps) · gamma + beta` over the last dimension (population
    /// variance); `gamma` and `beta` have the size of that dimension, and a missing one
    /// is 1 or 0.
    fn layer_norm(
        &self,
        x: FloatTensor<B>,
        gamma: Option<FloatTensor<B>>,
        beta: Option<FloatTensor<B>>,
        eps: f64,
    ) -> FloatTensor<B>;

    /// Softmax over the last dimension, `exp(x − max) / Σ exp(x − max)`.
    fn softmax(&self, x: FloatTensor<B>) -> FloatTensor<B>;

    /// The matrix product over the last two dimensions of rank-4 tensors with the same
    /// leading dimensions, `(I, J, m, k)·(I, J, k, n)` (attention's `q·kᵀ` and `p·v`).
    fn matmul(&self, a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B>;

    /// `x·weight + bias` over the last dimension of `x`, with `weight` `(in, out)` (burn's
    /// `Linear` layout) and `bias` `(out)`.
    fn linear(
        &self,
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: Option<FloatTensor<B>>,
    ) -> FloatTensor<B>;

    /// Causal self-attention of `layout.batch` sequences of `layout.len` tokens from the
    /// fused projection `qkv` `(B·L, 3H)` in GPT-NeoX order (per head: query, key,
    /// value): the rotary tables on queries and keys, then `softmax(q·kᵀ)·v` with the
    /// score set to `−1e9` where `mask` `(1 or B, 1, L, L)` is true (none hidden when
    /// `mask` is `None`), heads side by side `(B·L, H)`. `None` when the kernel does not
    /// take these shapes (the model then composes burn's operations).
    fn attention(
        &self,
        qkv: &FloatTensor<B>,
        layout: &AttentionLayout<'_>,
        mask: Option<&BoolTensor<B>>,
    ) -> Option<FloatTensor<B>>;
}

/// The sizes of one self-attention pass over whole sequences and its rotary tables on the
/// host, for [`FusedKernels::attention`].
#[derive(Debug, Clone, Copy)]
pub struct AttentionLayout<'a> {
    /// Sequences `B`.
    pub batch: usize,
    /// Tokens per sequence `L`.
    pub len: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of each head.
    pub head_dim: usize,
    /// Leading dimensions of each head that rotate (even): dimension `i < rot_dims/2`
    /// pairs with `i + rot_dims/2` (GPT-NeoX's "rotate half"); the others pass through.
    pub rot_dims: usize,
    /// `(L, head_dim)` row-major: the rotated query is `q·cos + rotate_half(q)·sin` with
    /// these tables, which carry the score scale `1/√head_dim`.
    pub q_cos: &'a [f32],
    /// See `q_cos`.
    pub q_sin: &'a [f32],
    /// `(L, head_dim)`: the key tables (no scale).
    pub k_cos: &'a [f32],
    /// See `k_cos`.
    pub k_sin: &'a [f32],
}

/// The registered kernels, one entry per backend type: `Arc<dyn FusedKernels<B>>` behind
/// `Any`, keyed by `TypeId::of::<B>()`.
type Entry = (TypeId, Arc<dyn Any + Send + Sync>);

static REGISTRY: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

/// Makes `kernels` the fused kernels of backend `B` for this process (replacing any
/// registered before).
pub fn register<B: Backend>(kernels: Arc<dyn FusedKernels<B>>) {
    let id = TypeId::of::<B>();
    let entry: Arc<dyn Any + Send + Sync> = Arc::new(kernels);
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    registry.retain(|(key, _)| *key != id);
    registry.push((id, entry));
}

/// Removes the kernels of backend `B`, so the model composes burn's operations again
/// (benchmarks compare the two in one process).
pub fn unregister<B: Backend>() {
    let id = TypeId::of::<B>();
    REGISTRY
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(key, _)| *key != id);
}

/// The kernels registered for backend `B`, if any.
pub fn kernels<B: Backend>() -> Option<Arc<dyn FusedKernels<B>>> {
    let id = TypeId::of::<B>();
    REGISTRY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(key, _)| *key == id)
        .and_then(|(_, entry)| entry.downcast_ref::<Arc<dyn FusedKernels<B>>>().cloned())
}

/// The exact GELU: the registered kernel, or burn's operations composed (see
/// [`gelu_composed`]).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match kernels::<B>() {
        Some(k) => {
            Tensor::from_primitive(TensorPrimitive::Float(k.gelu(x.into_primitive().tensor())))
        }
        None => gelu_composed(x),
    }
}

/// `f` applied to a primitive float tensor seen as a tensor of rank 1 (element-wise
/// operations do not care about the shape, which the primitive keeps): how an element-wise
/// kernel falls back to burn's operation.
pub fn on_primitive<B: Backend>(
    x: FloatTensor<B>,
    f: impl FnOnce(Tensor<B, 1>) -> Tensor<B, 1>,
) -> FloatTensor<B> {
    f(Tensor::from_primitive(TensorPrimitive::Float(x)))
        .into_primitive()
        .tensor()
}

/// SiLU `x·σ(x)`: the registered kernel, or burn's `silu`.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match kernels::<B>() {
        Some(k) => {
            Tensor::from_primitive(TensorPrimitive::Float(k.silu(x.into_primitive().tensor())))
        }
        None => burn::tensor::activation::silu(x),
    }
}

/// ReLU `max(x, 0)`: the registered kernel, or burn's `relu`.
pub fn relu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match kernels::<B>() {
        Some(k) => {
            Tensor::from_primitive(TensorPrimitive::Float(k.relu(x.into_primitive().tensor())))
        }
        None => burn::tensor::activation::relu(x),
    }
}

/// Layer normalisation over the last dimension: the registered kernel, or burn's
/// operations composed (see [`layer_norm_composed`]).
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    match kernels::<B>() {
        Some(k) => Tensor::from_primitive(TensorPrimitive::Float(k.layer_norm(
            x.into_primitive().tensor(),
            gamma.map(|g| g.into_primitive().tensor()),
            beta.map(|b| b.into_primitive().tensor()),
            eps,
        ))),
        None => layer_norm_composed(x, gamma, beta, eps),
    }
}

/// Softmax over the last dimension: the registered kernel, or burn's `softmax`.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match kernels::<B>() {
        Some(k) => Tensor::from_primitive(TensorPrimitive::Float(
            k.softmax(x.into_primitive().tensor()),
        )),
        None => burn::tensor::activation::softmax(x, D - 1),
    }
}

/// The batched matrix product `(I, J, m, k)·(I, J, k, n)`: the registered kernel, or
/// burn's `matmul`.
pub fn matmul<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    match kernels::<B>() {
        Some(k) => Tensor::from_primitive(TensorPrimitive::Float(
            k.matmul(a.into_primitive().tensor(), b.into_primitive().tensor()),
        )),
        None => a.matmul(b),
    }
}

/// `x·weight + bias` over the last dimension: the registered kernel, or burn's `linear`.
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    match kernels::<B>() {
        Some(k) => Tensor::from_primitive(TensorPrimitive::Float(k.linear(
            x.into_primitive().tensor(),
            weight.into_primitive().tensor(),
            bias.map(|b| b.into_primitive().tensor()),
        ))),
        None => burn::tensor::module::linear(x, weight, bias),
    }
}

/// Causal self-attention from the fused projection `qkv` `(B·L, 3H)` by the registered
/// kernel (see [`FusedKernels::attention`]), or `None` when backend `B` has no kernels or
/// the kernel does not take these shapes: the model then composes burn's operations.
pub fn attention<B: Backend>(
    qkv: Tensor<B, 2>,
    layout: &AttentionLayout<'_>,
    mask: Option<Tensor<B, 4, Bool>>,
) -> Option<Tensor<B, 2>> {
    let k = kernels::<B>()?;
    let mask = mask.map(Tensor::into_primitive);
    let out = k.attention(&qkv.into_primitive().tensor(), layout, mask.as_ref())?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// A burn [`Linear`] module applied through [`linear`].
pub fn linear_module<B: Backend, const D: usize>(
    module: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    linear(x, module.weight.val(), module.bias.as_ref().map(Param::val))
}

/// [`layer_norm`] from burn's operations, the reference the kernels are tested against:
/// with `gamma`, the backend's own `layer_norm` (what burn's `LayerNorm` module runs);
/// without, `(x − mean)/√(var + eps)` from `var_mean_bias`, then `beta` if given.
pub fn layer_norm_composed<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    if let Some(g) = gamma {
        return Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            g.into_primitive().tensor(),
            beta.map(|b| b.into_primitive().tensor()),
            eps,
        )));
    }
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    let y = (x - mean) / (var + eps).sqrt();
    match beta {
        Some(b) => y + b.unsqueeze(),
        None => y,
    }
}

/// The exact (erf) GELU `x·Φ(x)` from burn's operations, with the exact derivative
/// `Φ(x) + x·φ(x)`: the reference the kernels are tested against.
///
/// burn's `gelu` differentiates through the tanh approximation (≈1e-3 off the erf forward)
/// in fifteen element-wise passes, two of them `powf` and one `tanh`. Here the value and the
/// slope are computed on detached tensors, and the tracked result is
/// `value + (x − x̄)·slope` with `x̄ = x.detach()`: its value is exactly `value` (the
/// difference is an exact zero) and its gradient is `slope · grad`, one pass in the backward.
/// Without autodiff it is burn's `gelu`.
pub fn gelu_composed<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !B::ad_enabled(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    let xd = x.clone().detach();
    // Φ(x) = (1 + erf(x/√2)) / 2, in the order of burn's own gelu forward.
    let cdf = (xd.clone().div_scalar(std::f64::consts::SQRT_2).erf() + 1.0) * 0.5;
    let value = xd.clone() * cdf.clone();
    // φ(x) = exp(−x²/2) / √(2π).
    let inv_sqrt_2pi = 0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
    let pdf = (xd.clone() * xd.clone()).mul_scalar(-0.5).exp() * inv_sqrt_2pi;
    let slope = cdf + xd.clone() * pdf;
    value + (x - xd) * slope
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::activation::gelu as burn_gelu;
    use burn::tensor::{TensorData, Tolerance};

    type F64 = NdArray<f64>;

    #[test]
    fn gelu_composed_has_burns_value_and_the_exact_slope() {
        let device = Default::default();
        let xs: Vec<f64> = (0..801).map(|i| -8.0 + i as f64 * 0.02).collect();
        let x =
            || Tensor::<Autodiff<F64>, 1>::from_data(TensorData::new(xs.clone(), [801]), &device);
        let x1 = x().require_grad();
        let y = gelu_composed(x1.clone());
        let value_gap = (y.clone() - burn_gelu(x())).abs().max().into_scalar();
        assert_eq!(value_gap, 0.0);
        let grads = y.sum().backward();
        let slope = x1
            .grad(&grads)
            .expect("a gradient")
            .to_data()
            .to_vec::<f64>()
            .unwrap();
        // Central differences of burn's own (erf) GELU forward.
        let h = 1e-5;
        let at = |d: f64| {
            burn_gelu(Tensor::<F64, 1>::from_data(TensorData::new(xs.clone(), [801]), &device) + d)
        };
        let fd = ((at(h) - at(-h)) / (2.0 * h))
            .to_data()
            .to_vec::<f64>()
            .unwrap();
        let worst = slope
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-8, "max |slope − finite difference| = {worst:e}");
    }

    #[test]
    fn layer_norm_composed_matches_the_closed_form_in_each_form() {
        let device = Default::default();
        let xs: Vec<f64> = (0..24).map(|i| ((i * 7) % 11) as f64 - 4.0).collect();
        let (gs, bs) = ([0.5, -1.0, 2.0, 1.5], [0.1, 0.2, -0.3, 0.0]);
        let x = Tensor::<F64, 3>::from_data(TensorData::new(xs.clone(), [2, 3, 4]), &device);
        // From f64 data: `from_floats` would round 0.1 to f32 first.
        let vector = |v: [f64; 4]| Some(Tensor::<F64, 1>::from_data(TensorData::from(v), &device));
        let (gamma, beta) = (|| vector(gs), || vector(bs));
        for (affine, shift) in [(true, true), (true, false), (false, true), (false, false)] {
            let want: Vec<f64> = xs
                .chunks(4)
                .flat_map(|row| {
                    let mean = row.iter().sum::<f64>() / 4.0;
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
                    row.iter().enumerate().map(move |(j, v)| {
                        let h = (v - mean) / (var + 1e-5).sqrt();
                        let g = if affine { gs[j] } else { 1.0 };
                        let b = if shift { bs[j] } else { 0.0 };
                        h * g + b
                    })
                })
                .collect();
            let y = layer_norm_composed(
                x.clone(),
                if affine { gamma() } else { None },
                if shift { beta() } else { None },
                1e-5,
            );
            y.into_data().assert_approx_eq::<f64>(
                &TensorData::new(want, [2, 3, 4]),
                Tolerance::absolute(1e-12),
            );
        }
    }

    /// A backend type no other test uses: the registry is global to the test process.
    type Solo = NdArray<f64, i32>;

    #[derive(Debug)]
    struct Doubling;

    impl FusedKernels<Solo> for Doubling {
        fn gelu(&self, x: FloatTensor<Solo>) -> FloatTensor<Solo> {
            let x = Tensor::<Solo, 1>::from_primitive(TensorPrimitive::Float(x));
            (x * 2.0).into_primitive().tensor()
        }
        fn layer_norm(
            &self,
            x: FloatTensor<Solo>,
            _: Option<FloatTensor<Solo>>,
            _: Option<FloatTensor<Solo>>,
            _: f64,
        ) -> FloatTensor<Solo> {
            x
        }
        fn softmax(&self, x: FloatTensor<Solo>) -> FloatTensor<Solo> {
            x
        }
        fn linear(
            &self,
            x: FloatTensor<Solo>,
            _: FloatTensor<Solo>,
            _: Option<FloatTensor<Solo>>,
        ) -> FloatTensor<Solo> {
            x
        }
        fn matmul(&self, a: FloatTensor<Solo>, _: FloatTensor<Solo>) -> FloatTensor<Solo> {
            a
        }
        fn attention(
            &self,
            _: &FloatTensor<Solo>,
            _: &AttentionLayout<'_>,
            _: Option<&BoolTensor<Solo>>,
        ) -> Option<FloatTensor<Solo>> {
            None
        }
    }

    #[test]
    fn registered_kernels_are_found_by_backend_type_and_removed() {
        let device = Default::default();
        let x = || Tensor::<Solo, 1>::from_floats([1.0, -2.0], &device);
        register::<Solo>(Arc::new(Doubling));
        assert!(kernels::<F64>().is_none());
        assert_eq!(
            gelu(x()).to_data().to_vec::<f64>().unwrap(),
            vec![2.0, -4.0]
        );
        unregister::<Solo>();
        assert!(kernels::<Solo>().is_none());
        let composed = gelu(x()).to_data().to_vec::<f64>().unwrap();
        assert!((composed[0] - 0.841_344_746).abs() < 1e-8, "{composed:?}");
    }
}
