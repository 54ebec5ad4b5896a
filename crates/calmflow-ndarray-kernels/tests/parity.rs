//! The fused kernels against burn's composed operations: values and gradients on random
//! inputs, missing and untracked parameters, and a whole CaLMFlow model's loss and
//! gradients with and without the kernels.

use std::sync::Mutex;

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::tensor::{Distribution, Tensor, TensorData, Tolerance, backend::Backend};
use calmflow_model::fused;

type Cpu = NdArray<f32>;
type Ad = Autodiff<Cpu>;

/// The registry is global to the process: tests that register or unregister run one at
/// a time.
static REGISTRY: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn random<B: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    let device = Default::default();
    B::seed(&device, seed);
    Tensor::random(shape, Distribution::Normal(0.5, 2.0), &device)
}

fn max_gap<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn gelu_equals_burns_composed_gelu_to_f32_rounding() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    // 3·70·400 elements: several parallel chunks, the last one partial.
    let x = random::<Cpu, 3>([3, 70, 400], 1);
    let fused = fused::gelu(x.clone());
    let composed = burn::tensor::activation::gelu(x.clone());
    // The kernel's normal tail is a polynomial in f32, burn's `erf` runs in f64: both
    // round to within an ulp or two of the exact value (|x| < 8 here, so 2.5e-7·8).
    let gap = max_gap(fused.clone(), composed);
    assert!(gap < 2e-6, "max |Δ| = {gap:e}");
    assert!(
        gap > 0.0,
        "the kernel is not burn's gelu: the test would see no change"
    );
    assert_eq!(fused.dims(), x.dims());
}

#[test]
fn silu_and_relu_match_burns_values_and_gradients() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let x0 = random::<Ad, 3>([3, 70, 400], 4);
    let w = random::<Ad, 3>([3, 70, 400], 5);
    type Act = fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>;
    let run = |f: Act| {
        let x = x0.clone().detach().require_grad();
        let y = f(x.clone());
        let grads = (y.clone() * w.clone()).sum().backward();
        (y.inner(), x.grad(&grads).expect("gradient"))
    };
    let (y_silu, g_silu) = run(fused::silu);
    let (y_burn, g_burn) = run(burn::tensor::activation::silu);
    let (gap_y, gap_g) = (max_gap(y_silu, y_burn), max_gap(g_silu, g_burn));
    // |x| < 10 and |w| < 10 here: a few ulps of values of order 10 and 100.
    assert!(gap_y < 5e-6, "SiLU max |Δ| = {gap_y:e}");
    assert!(gap_g < 5e-5, "SiLU gradient max |Δ| = {gap_g:e}");
    let (y_relu, g_relu) = run(fused::relu);
    let (y_burn, g_burn) = run(burn::tensor::activation::relu);
    assert_eq!(y_relu.into_data(), y_burn.into_data());
    assert_eq!(g_relu.into_data(), g_burn.into_data());
}

#[test]
fn gelu_gradient_matches_the_composed_exact_slope() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let x0 = random::<Ad, 2>([130, 257], 2);
    let w = random::<Ad, 2>([130, 257], 3);
    let grad_of = |f: &dyn Fn(Tensor<Ad, 2>) -> Tensor<Ad, 2>| {
        let x = x0.clone().detach().require_grad();
        let grads = (f(x.clone()) * w.clone()).sum().backward();
        x.grad(&grads).expect("gradient")
    };
    let fused = grad_of(&|x| fused::gelu(x));
    let composed = grad_of(&|x| fused::gelu_composed(x));
    let gap = max_gap(fused, composed);
    assert!(gap < 1e-5, "max |Δ grad| = {gap:e}");
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("float values")
}

/// `max |a − reference|`.
fn worst(a: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(a.len(), reference.len());
    a.iter()
        .zip(reference)
        .fold(0.0, |m, (a, r)| m.max((a - r).abs()))
}

/// Layer norm of rows of `n` in `f64` and the gradients of `Σ w ⊙ LN(x)` (input, γ, β),
/// from the closed forms: the independent reference.
fn layer_norm_reference(
    x: &[f64],
    w: &[f64],
    gamma: &[f64],
    beta: &[f64],
    n: usize,
) -> [Vec<f64>; 4] {
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut dg, mut db) = (vec![0.0; n], vec![0.0; n]);
    for r in 0..x.len() / n {
        let row = &x[r * n..(r + 1) * n];
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + 1e-5).sqrt();
        let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * inv).collect();
        let gw: Vec<f64> = (0..n).map(|j| w[r * n + j] * gamma[j]).collect();
        let mean_gw = gw.iter().sum::<f64>() / n as f64;
        let mean_gwx = gw.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n as f64;
        for j in 0..n {
            y[r * n + j] = xhat[j] * gamma[j] + beta[j];
            dx[r * n + j] = inv * (gw[j] - mean_gw - xhat[j] * mean_gwx);
            dg[j] += w[r * n + j] * xhat[j];
            db[j] += w[r * n + j];
        }
    }
    [y, dx, dg, db]
}

#[test]
fn layer_norm_matches_an_f64_reference_in_value_and_every_gradient() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let (rows, n) = (150, 48);
    let x0 = random::<Ad, 3>([3, rows / 3, n], 4);
    let gamma0 = random::<Ad, 1>([n], 5);
    let beta0 = random::<Ad, 1>([n], 6);
    let w = random::<Ad, 3>([3, rows / 3, n], 7);
    for affine in [true, false] {
        let run = |composed: bool| {
            let x = x0.clone().detach().require_grad();
            let gamma = gamma0.clone().detach().require_grad();
            let beta = beta0.clone().detach().require_grad();
            let (g, b) = if affine {
                (Some(gamma.clone()), Some(beta.clone()))
            } else {
                (None, None)
            };
            let y = if composed {
                fused::layer_norm_composed(x.clone(), g, b, 1e-5)
            } else {
                fused::layer_norm(x.clone(), g, b, 1e-5)
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let dg = gamma.grad(&grads).map(values);
            let db = beta.grad(&grads).map(values);
            let dx = values(x.grad(&grads).expect("dx"));
            (values(y.inner()), dx, dg, db)
        };
        let (ones, zeros) = (vec![1.0; n], vec![0.0; n]);
        let (g64, b64) = if affine {
            (
                values(gamma0.clone().inner()),
                values(beta0.clone().inner()),
            )
        } else {
            (ones, zeros)
        };
        let [y, dx, dg, db] = layer_norm_reference(
            &values(x0.clone().inner()),
            &values(w.clone().inner()),
            &g64,
            &b64,
            n,
        );
        let fused = run(false);
        let composed = run(true);
        // Measured: y 1.8e-6, dx 1.8e-6 (burn's composed backward 5e-4), dγ 1e-5 over 150-row
        // column sums.
        for (what, f, c, reference, tol) in [
            ("y", &fused.0, &composed.0, &y, 5e-6),
            ("dx", &fused.1, &composed.1, &dx, 5e-6),
        ] {
            let (ef, ec) = (worst(f, reference), worst(c, reference));
            eprintln!("affine {affine} {what}: kernel {ef:e}, composed {ec:e}");
            assert!(ef < tol, "affine {affine} {what}: kernel off by {ef:e}");
        }
        match (fused.2, fused.3) {
            (Some(fg), Some(fb)) => {
                assert!(affine, "parameter gradients without parameters");
                let (eg, eb) = (worst(&fg, &dg), worst(&fb, &db));
                eprintln!("dγ kernel {eg:e}, dβ kernel {eb:e}");
                assert!(eg < 1e-4 && eb < 1e-4, "dγ off by {eg:e}, dβ by {eb:e}");
            }
            (None, None) => assert!(!affine, "no parameter gradients"),
            _ => panic!("one parameter gradient only"),
        }
    }
}

#[test]
fn softmax_matches_an_f64_reference_in_value_and_gradient_with_masked_keys() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let device = Default::default();
    let x0 = random::<Ad, 4>([6, 4, 16, 16], 14);
    let w = random::<Ad, 4>([6, 4, 16, 16], 15);
    // Attention's causal mask fills hidden scores with −1e9 before the softmax.
    let mask = Tensor::<Ad, 2, burn::tensor::Bool>::tril_mask([16, 16], 0, &device)
        .reshape([1, 1, 16, 16])
        .expand([6, 4, 16, 16]);
    let run = |composed: bool| {
        let x = x0.clone().detach().require_grad();
        let scores = x.clone().mask_fill(mask.clone(), -1.0e9);
        let y = if composed {
            burn::tensor::activation::softmax(scores, 3)
        } else {
            fused::softmax(scores)
        };
        let grads = (y.clone() * w.clone()).sum().backward();
        (y.inner(), values(x.grad(&grads).expect("dx")))
    };
    let (xs, ws) = (values(x0.clone().inner()), values(w.clone().inner()));
    let (mut y, mut dx) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
    for r in 0..xs.len() / 16 {
        let visible = r % 16 + 1;
        let row = &xs[r * 16..r * 16 + visible];
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        let dot: f64 = (0..visible)
            .map(|j| (row[j] - max).exp() / sum * ws[r * 16 + j])
            .sum();
        for j in 0..visible {
            y[r * 16 + j] = (row[j] - max).exp() / sum;
            dx[r * 16 + j] = y[r * 16 + j] * (ws[r * 16 + j] - dot);
        }
    }
    let (yf, dxf) = run(false);
    let (yc, dxc) = run(true);
    let (eyf, eyc) = (worst(&values(yf.clone()), &y), worst(&values(yc), &y));
    let (edf, edc) = (worst(&dxf, &dx), worst(&dxc, &dx));
    eprintln!("y: kernel {eyf:e}, composed {eyc:e}; dx: kernel {edf:e}, composed {edc:e}");
    assert!(eyf < 1e-6, "y off by {eyf:e}");
    // burn's composed backward measured 1.3e-4 off here; the kernel is at f32 rounding.
    assert!(edf < 2e-6, "dx off by {edf:e}");
    // Hidden keys get exactly zero.
    let first_row = yf
        .narrow(2, 0, 1)
        .narrow(3, 1, 15)
        .abs()
        .max()
        .into_scalar();
    assert_eq!(first_row, 0.0);
}

#[test]
fn linear_matches_burns_in_value_and_every_gradient_on_rank_3_inputs() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let x0 = random::<Ad, 3>([4, 75, 24], 16);
    let w0 = random::<Ad, 2>([24, 40], 17);
    let b0 = random::<Ad, 1>([40], 18);
    let g = random::<Ad, 3>([4, 75, 40], 19);
    for with_bias in [true, false] {
        let run = |composed: bool| {
            let x = x0.clone().detach().require_grad();
            let w = w0.clone().detach().require_grad();
            let b = b0.clone().detach().require_grad();
            let bias = with_bias.then(|| b.clone());
            let y = if composed {
                burn::tensor::module::linear(x.clone(), w.clone(), bias)
            } else {
                fused::linear(x.clone(), w.clone(), bias)
            };
            let grads = (y.clone() * g.clone()).sum().backward();
            (
                values(y.inner()),
                values(x.grad(&grads).expect("dx")),
                values(w.grad(&grads).expect("dw")),
                b.grad(&grads).map(values),
            )
        };
        let (fused, composed) = (run(false), run(true));
        // Sums of 24 (y, dx) and of 300 (dw, db) products of N(0.5, 2²) draws: f32
        // rounding of the order of 1e-6 relative to their size.
        for (what, f, c) in [
            ("y", &fused.0, &composed.0),
            ("dx", &fused.1, &composed.1),
            ("dw", &fused.2, &composed.2),
        ] {
            let scale = c.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let gap = worst(f, c) / scale;
            assert!(gap < 1e-5, "bias {with_bias} {what}: relative gap {gap:e}");
        }
        match (&fused.3, &composed.3) {
            (Some(f), Some(c)) => {
                assert!(with_bias);
                let scale = c.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                let gap = worst(f, c) / scale;
                assert!(gap < 1e-5, "db: relative gap {gap:e}");
            }
            (None, None) => assert!(!with_bias),
            _ => panic!("a bias gradient in one form only"),
        }
    }
    // A frozen weight gets no gradient; the input still does.
    let x = x0.clone().detach().require_grad();
    let w = w0.clone().detach();
    let grads = fused::linear(x.clone(), w.clone(), None).sum().backward();
    assert!(x.grad(&grads).is_some() && w.grad(&grads).is_none());
}

#[test]
fn batched_matmul_of_transposed_views_matches_burns_with_gradients() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    // As in attention: q (B, heads, L, d) and k stored (B, L, heads, d), used as kᵀ.
    let q0 = random::<Ad, 4>([3, 6, 4, 8], 20).swap_dims(1, 2);
    let k0 = random::<Ad, 4>([3, 6, 4, 8], 21).swap_dims(1, 2);
    let g = random::<Ad, 4>([3, 4, 6, 6], 22);
    let run = |composed: bool| {
        let q = q0.clone().detach().require_grad();
        let k = k0.clone().detach().require_grad();
        let kt = k.clone().swap_dims(2, 3);
        let s = if composed {
            q.clone().matmul(kt)
        } else {
            fused::matmul(q.clone(), kt)
        };
        let grads = (s.clone() * g.clone()).sum().backward();
        (
            values(s.inner()),
            values(q.grad(&grads).expect("dq")),
            values(k.grad(&grads).expect("dk")),
        )
    };
    let (fused, composed) = (run(false), run(true));
    for (what, f, c) in [
        ("scores", &fused.0, &composed.0),
        ("dq", &fused.1, &composed.1),
        ("dk", &fused.2, &composed.2),
    ] {
        let scale = c.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let gap = worst(f, c) / scale;
        assert!(gap < 1e-6, "{what}: relative gap {gap:e}");
    }
    // Leading dimensions that differ go to burn's broadcasting product.
    let a = random::<Cpu, 4>([1, 2, 3, 4], 23);
    let b = random::<Cpu, 4>([2, 2, 4, 5], 24);
    assert_eq!(fused::matmul(a, b).dims(), [2, 2, 3, 5]);
}

#[test]
fn layer_norm_with_frozen_parameters_gives_the_input_gradient_only() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let x = random::<Ad, 2>([5, 16], 8).require_grad();
    let gamma = random::<Ad, 1>([16], 9);
    let y = fused::layer_norm(x.clone(), Some(gamma.clone()), None, 1e-5);
    let grads = (y * random::<Ad, 2>([5, 16], 10)).sum().backward();
    assert!(x.grad(&grads).is_some());
    assert!(gamma.grad(&grads).is_none());
}

#[test]
fn inference_backend_layer_norm_matches_burns_module() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let device = Default::default();
    let mut module = burn::nn::LayerNormConfig::new(32)
        .with_epsilon(1e-5)
        .init::<Cpu>(&device);
    module.gamma = burn::module::Param::from_tensor(random::<Cpu, 1>([32], 11));
    module.beta = Some(burn::module::Param::from_tensor(random::<Cpu, 1>([32], 12)));
    let x = random::<Cpu, 2>([300, 32], 13);
    let fused = fused::layer_norm(
        x.clone(),
        Some(module.gamma.val()),
        module.beta.as_ref().map(|b| b.val()),
        1e-5,
    );
    fused
        .into_data()
        .assert_approx_eq::<f32>(&module.forward(x).into_data(), Tolerance::absolute(2e-6));
}

#[test]
fn empty_and_degenerate_shapes_fall_back_without_panicking() {
    let _guard = lock();
    calmflow_ndarray_kernels::register();
    let device = Default::default();
    let empty = Tensor::<Cpu, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 4]), &device);
    assert_eq!(
        fused::layer_norm(empty.clone(), None, None, 1e-5).dims(),
        [0, 4]
    );
    assert_eq!(fused::gelu(empty).dims(), [0, 4]);
    // A single feature normalises to zero (population variance 0, eps keeps it finite).
    let one = Tensor::<Cpu, 2>::from_floats([[3.0], [-1.0]], &device);
    let y = fused::layer_norm(one, None, None, 1e-5)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(y, vec![0.0, 0.0]);
}

/// What the model attends with besides causality.
#[derive(Debug, Clone, Copy)]
enum Context {
    /// Flow tokens only.
    Plain,
    /// A left-padded prompt before the flow tokens (key padding; one sequence's prompt is
    /// all padding).
    PaddedPrompt,
    /// The Markov control: each flow token sees its own time point only.
    Markov,
}

/// The training loss of a small CaLMFlow model (the paper's head, whose decoder also runs
/// layer norms) on fixed slots, and the gradient of every parameter in module order.
fn loss_and_gradients(seed: u64, context: Context) -> (f32, Vec<f32>) {
    use calmflow_model::{CalmFlowConfig, HeadKind, Prompt};
    let device = Default::default();
    Ad::seed(&device, seed);
    let config = CalmFlowConfig::new(3)
        .with_hidden(32)
        .with_layers(2)
        .with_heads(4)
        .with_dropout(0.0)
        .with_head(HeadKind::Variational)
        .with_markov_slots(usize::from(matches!(context, Context::Markov)));
    let model = config.init::<Ad>(&device).expect("model");
    let layout = calmflow_tokenize::SpaceTimeLayout::new(5, 1, 1).expect("layout");
    let slots = random::<Ad, 3>([8, 5, 3], seed + 1);
    let prompt = matches!(context, Context::PaddedPrompt).then(|| {
        // Prompt lengths 0..=3 of 3 positions, left-padded.
        let padding: Vec<bool> = (0..8 * 3).map(|t| t % 3 < 3 - (t / 3) % 4).collect();
        Prompt {
            embeddings: random::<Ad, 3>([8, 3, 32], seed + 3),
            padding: Some(Tensor::from_data(TensorData::new(padding, [8, 3]), &device)),
        }
    });
    // The variational head draws its latent noise from the backend's generator.
    Ad::seed(&device, seed + 2);
    let terms = model
        .head_loss(slots, prompt.as_ref(), &layout)
        .expect("loss");
    let loss = terms.rec + terms.kl.expect("a KL term") * 0.01;
    let value = loss.clone().into_scalar();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
    struct Collect<'a> {
        grads: &'a burn::optim::GradientsParams,
        flat: Vec<f32>,
    }
    impl burn::module::ModuleVisitor<Ad> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Ad, D>>) {
            if let Some(g) = self.grads.get::<Cpu, D>(param.id) {
                self.flat
                    .extend(g.into_data().to_vec::<f32>().expect("f32"));
            }
        }
    }
    let mut collect = Collect {
        grads: &grads,
        flat: Vec::new(),
    };
    model.visit(&mut collect);
    (value, collect.flat)
}

#[test]
fn a_model_trains_on_the_same_loss_and_gradients_with_and_without_the_kernels() {
    for context in [Context::Plain, Context::PaddedPrompt, Context::Markov] {
        same_loss_and_gradients(context);
    }
}

fn same_loss_and_gradients(context: Context) {
    let _guard = lock();
    calmflow_ndarray_kernels::unregister();
    let (loss_c, grads_c) = loss_and_gradients(21, context);
    calmflow_ndarray_kernels::register();
    let (loss_f, grads_f) = loss_and_gradients(21, context);
    assert!(!grads_c.is_empty());
    assert_eq!(grads_c.len(), grads_f.len());
    assert!(
        (loss_c - loss_f).abs() <= 1e-5 * loss_c.abs().max(1.0),
        "{context:?}: loss {loss_c} composed vs {loss_f} fused"
    );
    let scale = grads_c.iter().fold(0.0f32, |m, g| m.max(g.abs())).max(1e-3);
    let worst = grads_c
        .iter()
        .zip(&grads_f)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "{context:?}: max |Δ grad| {worst:e} against largest gradient {scale:e}"
    );
}
