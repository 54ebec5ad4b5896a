//! The kernels on the autodiff backend: each forward pass keeps what its backward needs
//! (GELU its slope, layer norm `x̂` and `1/σ` per row, softmax its output) and registers
//! one backward step.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Shape, Tensor, TensorMetadata};
use calmflow_model::fused::{self, AttentionLayout, FusedKernels};

use crate::rows::{self, LayerNormSaved};
use crate::{
    AttentionRecord, Cpu, CpuAutodiff, CpuKernels, attention_forward, elementwise, f32_cow,
    f32_values, from_values, gelu_fallback, last_dim, layer_norm_fallback, layer_norm_inputs,
    linear_fallback, linear_values, matmul_values, softmax_fallback, view4,
};
use crate::{attention, gemm};
use burn::tensor::ops::FloatTensorOps;

/// The backward step of an element-wise activation: its rule applied to the upstream
/// gradient and the state the forward saved (GELU and SiLU save their slope, and the rule
/// multiplies by it; ReLU saves its output, and the rule keeps the gradient where it is
/// positive).
#[derive(Debug)]
struct ActivationBackward(fn(&[f32], &[f32]) -> Vec<f32>);

impl Backward<Cpu, 1> for ActivationBackward {
    type State = FloatTensor<Cpu>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        if let Some(parent) = parent {
            let shape = grad.shape();
            let dx = (self.0)(&f32_cow(&grad), &f32_cow(&ops.state));
            grads.register::<Cpu>(parent.id, from_values(dx, shape));
        }
    }
}

/// An element-wise activation on the autodiff backend: `forward` gives the value and what
/// its backward step keeps (a slope buffer, or `None` to keep the output itself, as ReLU
/// does), `value` the value alone (untracked inputs), `fallback` burn's operations for
/// element types the kernels do not take.
fn activation(
    x: FloatTensor<CpuAutodiff>,
    step: ActivationBackward,
    forward: impl FnOnce(&[f32]) -> (Vec<f32>, Option<Vec<f32>>),
    value: impl FnOnce(&[f32]) -> Vec<f32>,
    fallback: impl FnOnce(FloatTensor<CpuAutodiff>) -> FloatTensor<CpuAutodiff>,
) -> FloatTensor<CpuAutodiff> {
    let Some(values) = f32_values(&x.primitive) else {
        return fallback(x);
    };
    let shape = x.primitive.shape();
    match step
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, saved) = forward(&values);
            let y = from_values(y, shape.clone());
            let state = match saved {
                Some(slope) => from_values(slope, shape),
                None => y.clone(),
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(from_values(value(&values), shape)),
    }
}

/// Layer norm's backward step for the input, `gamma` and `beta` (each when tracked).
#[derive(Debug)]
struct LayerNormBackward;

/// What the layer-norm backward keeps: the forward's `x̂` and `1/σ`, `gamma`'s values,
/// the input's shape and the size of the normalised dimension.
#[derive(Debug, Clone)]
struct LayerNormState {
    saved: LayerNormSaved,
    gamma: Option<Vec<f32>>,
    shape: Shape,
    n: usize,
}

impl Backward<Cpu, 3> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_parent, gamma_parent, beta_parent] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        let grad = f32_cow(&grad);
        let LayerNormState {
            saved,
            gamma,
            shape,
            n,
        } = ops.state;
        let (dx, dgamma, dbeta) = rows::layer_norm_backward(&grad, n, gamma.as_deref(), &saved);
        for (parent, value, shape) in [
            (x_parent, dx, shape),
            (gamma_parent, dgamma, Shape::new([n])),
            (beta_parent, dbeta, Shape::new([n])),
        ] {
            if let Some(parent) = parent {
                grads.register::<Cpu>(parent.id, from_values(value, shape));
            }
        }
    }
}

/// Softmax's backward step: `y ⊙ (g − Σ g·y)` from the saved output `y`.
#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Cpu, 1> for SoftmaxBackward {
    type State = (FloatTensor<Cpu>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        if let Some(parent) = parent {
            let (y, n) = ops.state;
            let shape = grad.shape();
            let dx = rows::softmax_backward(&f32_cow(&y), &f32_cow(&grad), n);
            grads.register::<Cpu>(parent.id, from_values(dx, shape));
        }
    }
}

/// The affine map's backward step for the input, the weight and the bias (each when
/// tracked), from the saved input and weight.
#[derive(Debug)]
struct LinearBackward;

/// What the affine map's backward keeps: its input and weight (shared, not copied), the
/// sizes `[m, k, n]` and the input's shape.
#[derive(Debug, Clone)]
struct LinearState {
    x: FloatTensor<Cpu>,
    w: FloatTensor<Cpu>,
    dims: [usize; 3],
    x_shape: Shape,
}

impl Backward<Cpu, 3> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_parent, w_parent, b_parent] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        let grad = f32_cow(&grad);
        let LinearState {
            x,
            w,
            dims,
            x_shape,
        } = ops.state;
        let [_, k, n] = dims;
        let want = [x_parent.is_some(), w_parent.is_some(), b_parent.is_some()];
        let (xs, ws) = (f32_cow(&x), f32_cow(&w));
        // The sizes were checked in the forward pass, so the products always run.
        let Some([dx, dw, db]) = gemm::linear_backward(&grad, &xs, &ws, dims, want) else {
            return;
        };
        for (parent, value, shape) in [
            (x_parent, dx, x_shape),
            (w_parent, dw, Shape::new([k, n])),
            (b_parent, db, Shape::new([n])),
        ] {
            if let (Some(parent), Some(value)) = (parent, value) {
                grads.register::<Cpu>(parent.id, from_values(value, shape));
            }
        }
    }
}

/// The batched product's backward step: `da = g·bᵀ`, `db = aᵀ·g` from the saved factors.
#[derive(Debug)]
struct MatmulBackward;

impl Backward<Cpu, 2> for MatmulBackward {
    type State = (FloatTensor<Cpu>, FloatTensor<Cpu>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [a_parent, b_parent] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        let (a, b) = ops.state;
        let (a_shape, b_shape) = (a.shape(), b.shape());
        let want = [a_parent.is_some(), b_parent.is_some()];
        let fused = match (view4(&grad), view4(&a), view4(&b)) {
            (Some(g), Some(av), Some(bv)) => gemm::batched_matmul_backward(&g, &av, &bv, want),
            _ => None,
        };
        let [da, db] = match fused {
            Some([da, db]) => [
                da.map(|v| from_values(v, a_shape)),
                db.map(|v| from_values(v, b_shape)),
            ],
            // Shapes and types the kernel does not take: burn's own products.
            None => [
                want[0].then(|| Cpu::float_matmul(grad.clone(), Cpu::float_swap_dims(b, 2, 3))),
                want[1].then(|| Cpu::float_matmul(Cpu::float_swap_dims(a, 2, 3), grad)),
            ],
        };
        for (parent, value) in [(a_parent, da), (b_parent, db)] {
            if let (Some(parent), Some(value)) = (parent, value) {
                grads.register::<Cpu>(parent.id, value);
            }
        }
    }
}

/// Attention's backward step: the projection's gradient from the saved projection,
/// rotated queries and keys, and attention weights.
#[derive(Debug)]
struct AttentionBackward;

/// What attention's backward keeps: the projection (shared, not copied) and what the
/// forward recorded.
#[derive(Debug, Clone)]
struct AttentionState {
    qkv: FloatTensor<Cpu>,
    record: AttentionRecord,
}

impl Backward<Cpu, 1> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        let Some(parent) = parent else {
            return;
        };
        let AttentionState { qkv, record } = ops.state;
        let shape = qkv.shape();
        // The sizes were checked in the forward pass, so the kernel always runs.
        if let Some(dqkv) = attention::backward(
            &f32_cow(&grad),
            &f32_cow(&qkv),
            &record.dims,
            &record.tables,
            record.mask.as_ref(),
            &record.saved,
        ) {
            grads.register::<Cpu>(parent.id, from_values(dqkv, shape));
        }
    }
}

impl FusedKernels<CpuAutodiff> for CpuKernels {
    fn attention(
        &self,
        qkv: &FloatTensor<CpuAutodiff>,
        layout: &AttentionLayout<'_>,
        mask: Option<&BoolTensor<CpuAutodiff>>,
    ) -> Option<FloatTensor<CpuAutodiff>> {
        let (out, record) = attention_forward(&qkv.primitive, layout, mask)?;
        Some(
            match AttentionBackward
                .prepare::<NoCheckpointing>([qkv.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = AttentionState {
                        qkv: qkv.primitive.clone(),
                        record,
                    };
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
        )
    }

    fn gelu(&self, x: FloatTensor<CpuAutodiff>) -> FloatTensor<CpuAutodiff> {
        activation(
            x,
            ActivationBackward(elementwise::mul),
            |x| {
                let (y, slope) = elementwise::gelu_with_slope(x);
                (y, Some(slope))
            },
            elementwise::gelu,
            gelu_fallback::<CpuAutodiff>,
        )
    }

    fn silu(&self, x: FloatTensor<CpuAutodiff>) -> FloatTensor<CpuAutodiff> {
        activation(
            x,
            ActivationBackward(elementwise::mul),
            |x| {
                let (y, slope) = elementwise::silu_with_slope(x);
                (y, Some(slope))
            },
            elementwise::silu,
            |x| fused::on_primitive::<CpuAutodiff>(x, burn::tensor::activation::silu),
        )
    }

    fn relu(&self, x: FloatTensor<CpuAutodiff>) -> FloatTensor<CpuAutodiff> {
        activation(
            x,
            ActivationBackward(elementwise::relu_backward),
            |x| (elementwise::relu(x), None),
            elementwise::relu,
            |x| fused::on_primitive::<CpuAutodiff>(x, burn::tensor::activation::relu),
        )
    }

    fn layer_norm(
        &self,
        x: FloatTensor<CpuAutodiff>,
        gamma: Option<FloatTensor<CpuAutodiff>>,
        beta: Option<FloatTensor<CpuAutodiff>>,
        eps: f64,
    ) -> FloatTensor<CpuAutodiff> {
        let shape = x.primitive.shape();
        let Some((values, n, [g, b])) = layer_norm_inputs(
            &x.primitive,
            gamma.as_ref().map(|g| &g.primitive),
            beta.as_ref().map(|b| &b.primitive),
        ) else {
            return layer_norm_fallback::<CpuAutodiff>(x, gamma, beta, eps);
        };
        // The step always has three parents; a missing parameter is an untracked constant,
        // whose parent slot the backward pass receives as `None`.
        let constant = |value: f32| {
            Tensor::<CpuAutodiff, 1>::full([n], value, &Default::default())
                .into_primitive()
                .tensor()
                .node
        };
        let gamma_node = gamma
            .as_ref()
            .map_or_else(|| constant(1.0), |g| g.node.clone());
        let beta_node = beta
            .as_ref()
            .map_or_else(|| constant(0.0), |b| b.node.clone());
        match LayerNormBackward
            .prepare::<NoCheckpointing>([x.node.clone(), gamma_node, beta_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, saved) =
                    rows::layer_norm_saving(&values, n, g.as_deref(), b.as_deref(), eps as f32);
                let state = LayerNormState {
                    saved,
                    gamma: g.map(|g| g.into_owned()),
                    shape: shape.clone(),
                    n,
                };
                prep.finish(state, from_values(y, shape))
            }
            OpsKind::UnTracked(prep) => {
                let y = rows::layer_norm(&values, n, g.as_deref(), b.as_deref(), eps as f32);
                prep.finish(from_values(y, shape))
            }
        }
    }

    fn softmax(&self, x: FloatTensor<CpuAutodiff>) -> FloatTensor<CpuAutodiff> {
        let shape = x.primitive.shape();
        let n = last_dim(&shape);
        let values = match f32_values(&x.primitive) {
            Some(values) if n > 0 => values,
            _ => return softmax_fallback::<CpuAutodiff>(x),
        };
        let y = rows::softmax(&values, n);
        match SoftmaxBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = from_values(y, shape);
                prep.finish((y.clone(), n), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(from_values(y, shape)),
        }
    }

    fn linear(
        &self,
        x: FloatTensor<CpuAutodiff>,
        weight: FloatTensor<CpuAutodiff>,
        bias: Option<FloatTensor<CpuAutodiff>>,
    ) -> FloatTensor<CpuAutodiff> {
        let x_shape = x.primitive.shape();
        let Some((y, dims, out)) = linear_values(
            &x.primitive,
            &weight.primitive,
            bias.as_ref().map(|b| &b.primitive),
        ) else {
            return linear_fallback::<CpuAutodiff>(x, weight, bias);
        };
        let n = dims[2];
        let bias_node = match &bias {
            Some(b) => b.node.clone(),
            None => {
                Tensor::<CpuAutodiff, 1>::zeros([n], &Default::default())
                    .into_primitive()
                    .tensor()
                    .node
            }
        };
        match LinearBackward
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = LinearState {
                    x: x.primitive.clone(),
                    w: weight.primitive.clone(),
                    dims,
                    x_shape,
                };
                prep.finish(state, from_values(y, out))
            }
            OpsKind::UnTracked(prep) => prep.finish(from_values(y, out)),
        }
    }

    fn matmul(
        &self,
        a: FloatTensor<CpuAutodiff>,
        b: FloatTensor<CpuAutodiff>,
    ) -> FloatTensor<CpuAutodiff> {
        let Some(c) = matmul_values(&a.primitive, &b.primitive) else {
            return CpuAutodiff::float_matmul(a, b);
        };
        match MatmulBackward
            .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((a.primitive.clone(), b.primitive.clone()), c),
            OpsKind::UnTracked(prep) => prep.finish(c),
        }
    }
}
