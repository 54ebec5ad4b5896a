//! Fused CPU kernels for burn-ndarray (layer norm, exact GELU, SiLU, ReLU, softmax, causal
//! self-attention, matrix products): calmflow's [`FusedKernels`] for `NdArray<f32>` and,
//! with their backward passes, for `Autodiff<NdArray<f32>>`.
//!
//! burn-ndarray runs each element-wise operation as its own single-threaded pass that
//! allocates a new tensor; composed that way, a layer norm is about thirty passes forward
//! and backward, the exact GELU about ten and a softmax about fifteen, and attention about
//! twenty operations each way. Here each is one multi-threaded pass forward and one
//! backward, and matrix products run on strided views through the `gemm` crate. The
//! facade registers these kernels when it selects the CPU backend ([`register`]); the
//! model finds them by backend type and composes burn's operations for every other
//! backend.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::tensor::Tensor;
//! use calmflow_model::fused;
//!
//! calmflow_ndarray_kernels::register();
//! type B = Autodiff<NdArray<f32>>;
//! assert!(fused::kernels::<B>().is_some());
//! let device = Default::default();
//! let x = Tensor::<B, 2>::from_floats([[-1.0, 0.0, 2.0]], &device).require_grad();
//! let y = fused::gelu(x.clone());
//! let grads = y.sum().backward();
//! // d/dx [x·Φ(x)] = Φ(x) + x·φ(x): 1/2 at 0.
//! let slope = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
//! assert!((slope[1] - 0.5).abs() < 1e-7);
//! ```

mod attention;
mod autodiff;
mod elementwise;
mod gemm;
mod rows;

use std::borrow::Cow;
use std::sync::Arc;

use burn::backend::ndarray::{NdArray, NdArrayTensor};
use burn::backend::{Autodiff, autodiff::checkpoint::strategy::NoCheckpointing};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{BoolTensor, FloatTensor, FloatTensorOps};
use burn::tensor::{Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use calmflow_model::fused::{self, AttentionLayout, FusedKernels};

/// The CPU backend these kernels serve.
pub type Cpu = NdArray<f32>;
/// The CPU backend with automatic differentiation.
pub type CpuAutodiff = Autodiff<Cpu, NoCheckpointing>;

/// The fused kernels of burn-ndarray with `f32` elements (with and without autodiff).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuKernels;

/// Registers [`CpuKernels`] for [`Cpu`] and [`CpuAutodiff`] in this process.
pub fn register() {
    fused::register::<Cpu>(Arc::new(CpuKernels));
    fused::register::<CpuAutodiff>(Arc::new(CpuKernels));
}

/// Removes them again: the model composes burn's operations (benchmarks compare both).
pub fn unregister() {
    fused::unregister::<Cpu>();
    fused::unregister::<CpuAutodiff>();
}

/// The elements of an `f32` tensor in row-major order (borrowed when it is already
/// contiguous), or `None` for another element type.
fn f32_values(t: &NdArrayTensor) -> Option<Cow<'_, [f32]>> {
    match t {
        NdArrayTensor::F32(storage) => {
            let view = storage.view();
            Some(match view.to_slice() {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(view.iter().copied().collect()),
            })
        }
        _ => None,
    }
}

/// A tensor of `shape` holding `values` (no copy: burn-ndarray adopts the vector).
fn from_values(values: Vec<f32>, shape: Shape) -> NdArrayTensor {
    NdArrayTensor::from_data(TensorData::new(values, shape))
}

/// The size of the last dimension (1 for a scalar).
fn last_dim(shape: &Shape) -> usize {
    shape.as_slice().last().copied().unwrap_or(1)
}

/// The elements of a tensor as `f32` in row-major order: borrowed when the tensor is a
/// contiguous `f32` one, converted otherwise.
fn f32_cow(t: &NdArrayTensor) -> Cow<'_, [f32]> {
    match f32_values(t) {
        Some(values) => values,
        None => Cow::Owned(
            Tensor::<Cpu, 1>::from_primitive(TensorPrimitive::Float(t.clone()))
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default(),
        ),
    }
}

/// The composed GELU of burn's operations on `t` (element types the kernels do not take).
fn gelu_fallback<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let x = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t));
    fused::gelu_composed(x).into_primitive().tensor()
}

/// burn's softmax over the last dimension of `t`.
fn softmax_fallback<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let shape = t.shape();
    let n = last_dim(&shape);
    let rows = shape.num_elements() / n.max(1);
    let x = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t)).reshape([rows, n]);
    let y = burn::tensor::activation::softmax(x, 1);
    B::float_reshape(y.into_primitive().tensor(), shape)
}

/// The composed layer norm on `t` viewed as rows of its last dimension.
fn layer_norm_fallback<B: Backend>(
    t: FloatTensor<B>,
    gamma: Option<FloatTensor<B>>,
    beta: Option<FloatTensor<B>>,
    eps: f64,
) -> FloatTensor<B> {
    let shape = t.shape();
    let n = last_dim(&shape);
    let rows = shape.num_elements() / n.max(1);
    let x = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t)).reshape([rows, n]);
    let param = |p: FloatTensor<B>| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(p));
    let y = fused::layer_norm_composed(x, gamma.map(param), beta.map(param), eps);
    B::float_reshape(y.into_primitive().tensor(), shape)
}

/// The sizes `[m, k, n]` of `x (…, k)·w (k, n)` (`m` the product of `x`'s leading
/// dimensions) and the output's shape, or `None` when the shapes do not chain or a size
/// is zero (burn's own `linear` then reports or handles it).
fn linear_dims(x: &Shape, w: &Shape) -> Option<([usize; 3], Shape)> {
    let (&[k, n], Some((&k_x, leading))) = (w.as_slice(), x.as_slice().split_last()) else {
        return None;
    };
    let m: usize = leading.iter().product();
    if k != k_x || m == 0 || k == 0 || n == 0 {
        return None;
    }
    let mut out = x.clone();
    let last = out.num_dims() - 1;
    out.as_mut_slice()[last] = n;
    Some(([m, k, n], out))
}

/// burn's `linear` on `x` viewed as rows of its last dimension.
fn linear_fallback<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    b: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let shape = x.shape();
    let Some((&k, leading)) = shape.as_slice().split_last() else {
        return x;
    };
    let m: usize = leading.iter().product();
    let x = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(x)).reshape([m, k]);
    let w = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(w));
    let b = b.map(|b| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(b)));
    let y = burn::tensor::module::linear(x, w, b);
    let mut out = shape.clone();
    out.as_mut_slice()[shape.num_dims() - 1] = y.dims()[1];
    B::float_reshape(y.into_primitive().tensor(), out)
}

/// A rank-4 `f32` tensor as a strided view (no copy), or `None`.
fn view4(t: &NdArrayTensor) -> Option<ndarray::ArrayView4<'_, f32>> {
    match t {
        NdArrayTensor::F32(storage) => storage.view().into_dimensionality().ok(),
        _ => None,
    }
}

/// `a·b` over the last two dimensions by the kernel, or `None` for shapes or element types
/// it does not take.
fn matmul_values(a: &NdArrayTensor, b: &NdArrayTensor) -> Option<NdArrayTensor> {
    let (av, bv) = (view4(a)?, view4(b)?);
    let c = gemm::batched_matmul(&av, &bv)?;
    let shape = Shape::new([av.shape()[0], av.shape()[1], av.shape()[2], bv.shape()[3]]);
    Some(from_values(c, shape))
}

/// What the layer-norm kernel reads: the values of `x`, the size `n` of its last
/// dimension (the rows it normalises) and `gamma`, `beta` as slices of `n`.
type LayerNormInputs<'a> = (Cow<'a, [f32]>, usize, [Option<Cow<'a, [f32]>>; 2]);

/// The inputs of the layer-norm kernel, or `None` for an empty tensor, another element
/// type, or a parameter of another size (burn's composed form then reports or
/// broadcasts).
fn layer_norm_inputs<'a>(
    x: &'a NdArrayTensor,
    gamma: Option<&'a NdArrayTensor>,
    beta: Option<&'a NdArrayTensor>,
) -> Option<LayerNormInputs<'a>> {
    let shape = x.shape();
    let n = last_dim(&shape);
    if n == 0 || shape.num_elements() == 0 {
        return None;
    }
    let param = |p: Option<&'a NdArrayTensor>| match p {
        None => Some(None),
        Some(p) => f32_values(p).filter(|v| v.len() == n).map(Some),
    };
    Some((f32_values(x)?, n, [param(gamma)?, param(beta)?]))
}

/// `x·w + b` by the kernel, with its sizes `[m, k, n]` and the output's shape, or `None`
/// for shapes or element types it does not take.
fn linear_values(
    x: &NdArrayTensor,
    w: &NdArrayTensor,
    b: Option<&NdArrayTensor>,
) -> Option<(Vec<f32>, [usize; 3], Shape)> {
    let (dims, out) = linear_dims(&x.shape(), &w.shape())?;
    let (xs, ws) = (f32_values(x)?, f32_values(w)?);
    let y = match b {
        None => gemm::linear(&xs, &ws, None, dims)?,
        Some(b) => gemm::linear(&xs, &ws, Some(&f32_values(b)?), dims)?,
    };
    Some((y, dims, out))
}

/// What the attention kernel's backward needs from its forward besides the projection:
/// the sizes, the rotary tables, the hidden keys and the saved queries, keys and weights.
#[derive(Debug, Clone)]
struct AttentionRecord {
    dims: attention::Dims,
    tables: attention::Tables,
    mask: Option<attention::Mask>,
    saved: attention::Saved,
}

/// The attention kernel's forward: the output `(B·L, H)` and its [`AttentionRecord`], or
/// `None` when `qkv` is not `(B·L, 3H)` for the layout or the mask does not broadcast to
/// `(B, 1, L, L)`.
fn attention_forward(
    qkv: &NdArrayTensor,
    layout: &AttentionLayout<'_>,
    mask: Option<&NdArrayTensor>,
) -> Option<(NdArrayTensor, AttentionRecord)> {
    let dims = attention::Dims {
        batch: layout.batch,
        len: layout.len,
        heads: layout.heads,
        head_dim: layout.head_dim,
        rot_dims: layout.rot_dims,
    };
    let (rows, h3) = (dims.batch * dims.len, 3 * dims.heads * dims.head_dim);
    if qkv.shape().as_slice() != [rows, h3] || rows * h3 == 0 {
        return None;
    }
    let mask = match mask {
        None => None,
        Some(NdArrayTensor::Bool(storage)) => {
            let view = storage.view();
            let (b, l) = (dims.batch, dims.len);
            let shared = view.shape().first() == Some(&1);
            let blocks = if shared { 1 } else { b };
            let full = view.broadcast(ndarray::IxDyn(&[blocks, 1, l, l]))?;
            Some(attention::Mask {
                hidden: full.iter().copied().collect(),
                per_sequence: !shared,
            })
        }
        Some(_) => return None,
    };
    let tables = attention::Tables {
        q_cos: layout.q_cos.to_vec(),
        q_sin: layout.q_sin.to_vec(),
        k_cos: layout.k_cos.to_vec(),
        k_sin: layout.k_sin.to_vec(),
    };
    let (out, saved) = attention::forward(&f32_cow(qkv), &dims, &tables, mask.as_ref())?;
    let out = from_values(out, Shape::new([rows, dims.heads * dims.head_dim]));
    let record = AttentionRecord {
        dims,
        tables,
        mask,
        saved,
    };
    Some((out, record))
}

impl FusedKernels<Cpu> for CpuKernels {
    fn attention(
        &self,
        qkv: &FloatTensor<Cpu>,
        layout: &AttentionLayout<'_>,
        mask: Option<&BoolTensor<Cpu>>,
    ) -> Option<FloatTensor<Cpu>> {
        attention_forward(qkv, layout, mask).map(|(out, _)| out)
    }

    fn gelu(&self, x: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
        match f32_values(&x) {
            Some(values) => from_values(elementwise::gelu(&values), x.shape()),
            None => gelu_fallback::<Cpu>(x),
        }
    }

    fn silu(&self, x: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
        match f32_values(&x) {
            Some(values) => from_values(elementwise::silu(&values), x.shape()),
            None => fused::on_primitive::<Cpu>(x, burn::tensor::activation::silu),
        }
    }

    fn relu(&self, x: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
        match f32_values(&x) {
            Some(values) => from_values(elementwise::relu(&values), x.shape()),
            None => fused::on_primitive::<Cpu>(x, burn::tensor::activation::relu),
        }
    }

    fn layer_norm(
        &self,
        x: FloatTensor<Cpu>,
        gamma: Option<FloatTensor<Cpu>>,
        beta: Option<FloatTensor<Cpu>>,
        eps: f64,
    ) -> FloatTensor<Cpu> {
        if let Some((values, n, [g, b])) = layer_norm_inputs(&x, gamma.as_ref(), beta.as_ref()) {
            let y = rows::layer_norm(&values, n, g.as_deref(), b.as_deref(), eps as f32);
            return from_values(y, x.shape());
        }
        layer_norm_fallback::<Cpu>(x, gamma, beta, eps)
    }

    fn linear(
        &self,
        x: FloatTensor<Cpu>,
        weight: FloatTensor<Cpu>,
        bias: Option<FloatTensor<Cpu>>,
    ) -> FloatTensor<Cpu> {
        match linear_values(&x, &weight, bias.as_ref()) {
            Some((y, _, out)) => from_values(y, out),
            None => linear_fallback::<Cpu>(x, weight, bias),
        }
    }

    fn matmul(&self, a: FloatTensor<Cpu>, b: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
        matmul_values(&a, &b).unwrap_or_else(|| Cpu::float_matmul(a, b))
    }

    fn softmax(&self, x: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
        let shape = x.shape();
        let n = last_dim(&shape);
        match f32_values(&x) {
            Some(values) if n > 0 => from_values(rows::softmax(&values, n), shape),
            _ => softmax_fallback::<Cpu>(x),
        }
    }
}
