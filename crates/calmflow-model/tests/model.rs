//! The model's contracts, checked numerically with fixed seeds on the test backend (the CPU
//! backend, or wgpu with the `wgpu` feature).

mod backend;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use calmflow_model::{
    BackboneSettings, CalmFlowConfig, CalmFlowModel, CausalBackbone, RotaryEmbedding,
};
use calmflow_tokenize::{SpaceTimeLayout, pack};

use backend::{max_abs_diff, model, random, rng_lock};

type B = backend::TestBackend;
type AD = Autodiff<B>;

fn small_config(dim: usize, n_space: usize) -> CalmFlowConfig {
    CalmFlowConfig::new(dim)
        .with_n_space(n_space)
        .with_hidden(32)
        .with_layers(2)
        .with_heads(4)
        .with_rotary_fraction(0.5)
}

#[test]
fn backbone_is_causal_at_the_token_level() {
    let device = Default::default();
    let guard = rng_lock();
    B::seed(&device, 1);
    let settings = BackboneSettings {
        hidden: 32,
        layers: 3,
        heads: 4,
        mlp_width: 64,
        rotary_fraction: 0.25,
        rotary_base: 10000.0,
        dropout: 0.0,
        layer_norm_eps: 1e-5,
        parallel_residual: true,
        vocab_size: 0,
        freeze_embeddings: true,
    };
    let backbone = CausalBackbone::<B>::new(&settings, &device);
    drop(guard);
    let x = random([2, 12, 32], 2);
    let base = backbone.forward(x.clone(), None, None, None);
    for n in [1, 5, 11] {
        let changed = Tensor::cat(
            vec![
                x.clone().narrow(1, 0, n),
                random([2, 12 - n, 32], 3 + n as u64),
            ],
            1,
        );
        let out = backbone.forward(changed, None, None, None);
        let diff = max_abs_diff(out.clone().narrow(1, 0, n), base.clone().narrow(1, 0, n));
        assert!(diff <= 1e-6, "positions < {n} changed by {diff}");
        // And the later positions do change: the test can fail.
        assert!(max_abs_diff(out.narrow(1, n, 12 - n), base.clone().narrow(1, n, 12 - n)) > 1e-3);
    }
}

#[test]
fn model_predictions_are_causal_in_slots() {
    let m = model(&small_config(3, 2), 4);
    let slots = random([2, 8, 3], 5);
    let base = m.forward(slots.clone(), None, 0.0).unwrap().decoded;
    let changed = Tensor::cat(vec![slots.narrow(1, 0, 4), random([2, 4, 3], 6)], 1);
    let out = m.forward(changed, None, 0.0).unwrap().decoded;
    assert!(max_abs_diff(out.narrow(1, 0, 4), base.narrow(1, 0, 4)) <= 1e-6);
}

#[test]
fn kv_cache_matches_the_full_forward() {
    for (n, p, k) in [(4, 1, 1), (5, 2, 2), (4, 4, 3), (6, 3, 1)] {
        let layout = SpaceTimeLayout::new(n, p, k).unwrap();
        let m = model(&small_config(3, k), 7);
        let trajectories = random([2 * p, n, 3], 8);
        let slots = pack(trajectories, &layout).unwrap();
        let full = m.forward(slots.clone(), None, 0.0).unwrap().decoded;
        let mut cache = m.new_cache();
        let mut worst: f32 = 0.0;
        for i in 0..n {
            let step = m
                .step(slots.clone().narrow(1, i * p, p), &mut cache, 0.0)
                .unwrap();
            worst = worst.max(max_abs_diff(step, full.clone().narrow(1, i * p, p)));
        }
        assert_eq!(cache.len(), layout.seq_len());
        assert!(
            worst <= 1e-5,
            "(N, P, K) = ({n}, {p}, {k}): max diff {worst}"
        );
    }
}

#[test]
fn rollout_with_and_without_cache_agree_at_zero_temperature() {
    let m = model(&small_config(2, 2), 9);
    let x0 = random([3, 2, 2], 10);
    let cached = m.rollout(x0.clone(), 6, 0.0, true, None).unwrap();
    let recomputed = m.rollout(x0.clone(), 6, 0.0, false, None).unwrap();
    assert_eq!(cached.dims(), [3, 6, 2, 2]);
    assert!(max_abs_diff(cached.clone(), recomputed) <= 1e-5);
    // The first time point is the source itself.
    assert!(max_abs_diff(cached.narrow(1, 0, 1).reshape([3, 2, 2]), x0) == 0.0);
}

#[test]
fn rotary_dot_products_depend_only_on_the_offset() {
    let rot = RotaryEmbedding::new(16, 0.5, 10000.0);
    assert_eq!(rot.rot_dims(), 8);
    let q = random([1, 1, 1, 16], 11);
    let k = random([1, 1, 1, 16], 12);
    let dot = |m: usize, n: usize| {
        let qm = rot.apply(q.clone(), m);
        let kn = rot.apply(k.clone(), n);
        (qm * kn).sum().into_scalar()
    };
    let d1 = dot(3, 1);
    for (m, n) in [(10, 8), (102, 100), (2, 0)] {
        assert!(
            (dot(m, n) - d1).abs() < 1e-4,
            "({m}, {n}): {} vs {d1}",
            dot(m, n)
        );
    }
    assert!(
        (dot(5, 1) - d1).abs() > 1e-3,
        "a different offset gave the same product"
    );
    // Norms are preserved; a fraction of 0 is the identity.
    let qn = rot.apply(q.clone(), 7);
    let norm = |t: Tensor<B, 4>| (t.clone() * t).sum().into_scalar();
    assert!((norm(qn) - norm(q.clone())).abs() < 1e-4);
    let none = RotaryEmbedding::new(16, 0.0, 10000.0);
    assert_eq!(max_abs_diff(none.apply(q.clone(), 9), q), 0.0);
}

#[test]
fn zero_temperature_is_deterministic_and_decodes_the_mean() {
    let m = model(&small_config(3, 2), 13);
    let slots = random([2, 6, 3], 14);
    let a = m.forward(slots.clone(), None, 0.0).unwrap();
    let b = m.forward(slots.clone(), None, 0.0).unwrap();
    assert_eq!(max_abs_diff(a.decoded.clone(), b.decoded), 0.0);
    let mu = a.mu.clone().unwrap();
    assert_eq!(
        max_abs_diff(m.decoder().unwrap().decode_latents(mu), a.decoded.clone()),
        0.0
    );
    // Positive temperature samples around the mean.
    let hot = m.forward(slots, None, 1.0).unwrap().decoded;
    assert!(max_abs_diff(hot, a.decoded) > 1e-4);
    assert!(
        a.log_var
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| *v >= (1e-4f32).ln() - 1e-6)
    );
}

/// Records, for each float parameter, whether it is trainable and whether it got a gradient.
struct GradientAudit<'a> {
    grads: &'a <AD as burn::tensor::backend::AutodiffBackend>::Gradients,
    trainable_without_grad: Vec<String>,
    frozen_with_grad: usize,
    frozen: usize,
    trainable: usize,
}

impl ModuleVisitor<AD> for GradientAudit<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        let tensor = param.val();
        let grad = tensor.grad(self.grads);
        if param.is_require_grad() {
            self.trainable += 1;
            let nonzero = grad
                .map(|g| g.abs().sum().into_scalar() > 0.0)
                .unwrap_or(false);
            if !nonzero {
                self.trainable_without_grad
                    .push(format!("{:?} {:?}", param.id, tensor.dims()));
            }
        } else {
            self.frozen += 1;
            if grad.is_some() {
                self.frozen_with_grad += 1;
            }
        }
    }
}

#[test]
fn gradients_reach_every_trainable_parameter_and_not_the_frozen_embedding() {
    let device = Default::default();
    let _guard = rng_lock();
    AD::seed(&device, 15);
    let config = small_config(3, 2).with_vocab_size(11);
    let m: CalmFlowModel<AD> = config.init(&device).unwrap();
    let ids = Tensor::<AD, 2, Int>::from_data(
        TensorData::new(vec![1i64, 4, 7, 2, 9, 3], [2, 3]),
        &device,
    );
    let prompt = m.embed_prompt(ids, None).unwrap();
    let slots = Tensor::<AD, 3>::random([2, 6, 3], Distribution::Normal(0.0, 1.0), &device);
    let out = m.forward(slots.clone(), Some(&prompt), 1.0).unwrap();
    let mu = out.mu.unwrap();
    let log_var = out.log_var.unwrap();
    let kl = (mu.clone() * mu + log_var.clone().exp() - log_var - 1.0).mean();
    let loss = (out.decoded - slots).powi_scalar(2).mean() + kl;
    let grads = loss.backward();
    let mut audit = GradientAudit {
        grads: &grads,
        trainable_without_grad: vec![],
        frozen_with_grad: 0,
        frozen: 0,
        trainable: 0,
    };
    m.visit(&mut audit);
    assert_eq!(audit.frozen, 1, "exactly the embedding table is frozen");
    assert_eq!(audit.frozen_with_grad, 0);
    assert!(audit.trainable > 20);
    assert!(
        audit.trainable_without_grad.is_empty(),
        "no gradient: {:?}",
        audit.trainable_without_grad
    );
}

#[test]
fn weights_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.mpk");
    let config = small_config(2, 1);
    let a = model(&config, 16);
    a.save_weights(&path).unwrap();
    assert!(path.is_file());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary files left behind"
    );
    let b = model(&config, 17)
        .load_weights(&path, &Default::default())
        .unwrap();
    let x = random([2, 4, 2], 18);
    let (ya, yb) = (
        a.forward(x.clone(), None, 0.0).unwrap().decoded,
        b.forward(x, None, 0.0).unwrap().decoded,
    );
    assert_eq!(max_abs_diff(ya, yb), 0.0);
    assert!(
        model(&config, 19)
            .load_weights(&dir.path().join("missing.mpk"), &Default::default())
            .is_err()
    );
    std::fs::write(dir.path().join("bad.mpk"), b"not a record").unwrap();
    assert!(
        model(&config, 20)
            .load_weights(&dir.path().join("bad.mpk"), &Default::default())
            .is_err()
    );
    let other = model(&small_config(3, 1), 21);
    assert!(
        other.load_weights(&path, &Default::default()).is_err(),
        "weights of another shape loaded"
    );
}

#[test]
fn invalid_configs_and_inputs_are_typed_errors() {
    assert!(
        CalmFlowConfig::new(2)
            .with_hidden(30)
            .with_heads(4)
            .validate()
            .is_err()
    );
    assert!(CalmFlowConfig::new(0).validate().is_err());
    assert!(CalmFlowConfig::new(2).with_dropout(1.0).validate().is_err());
    assert!(
        CalmFlowConfig::new(2)
            .with_rotary_fraction(1.5)
            .validate()
            .is_err()
    );
    let m = model(&small_config(3, 1), 22);
    assert!(m.forward(random([2, 4, 5], 23), None, 0.0).is_err());
    assert!(
        m.rollout(random([2, 1, 3], 24), 1, 0.0, true, None)
            .is_err()
    );
    let ids = Tensor::<B, 2, Int>::zeros([1, 2], &Default::default());
    assert!(matches!(
        m.embed_prompt(ids, None),
        Err(calmflow_model::ModelError::NoVocabulary)
    ));
    let defaults = CalmFlowConfig::new(2);
    assert_eq!(
        (
            defaults.hidden,
            defaults.layers,
            defaults.heads,
            defaults.n_space
        ),
        (128, 4, 4, 1)
    );
    assert!(m.num_params() > 1000);
}

#[test]
fn same_seed_same_weights_regardless_of_later_rng_use() {
    let config = small_config(2, 1);
    let device = Default::default();
    let guard = rng_lock();
    B::seed(&device, 30);
    let a = config.init::<B>(&device).unwrap();
    let _ = Tensor::<B, 2>::random([5, 5], Distribution::Default, &device);
    let a_clone = a.clone();
    B::seed(&device, 30);
    let b = config.init::<B>(&device).unwrap();
    drop(guard);
    let x = random([2, 3, 2], 31);
    let y = |m: &CalmFlowModel<B>| m.forward(x.clone(), None, 0.0).unwrap().decoded;
    assert_eq!(max_abs_diff(y(&a), y(&b)), 0.0);
    assert_eq!(max_abs_diff(y(&a_clone), y(&a)), 0.0);
}

#[test]
fn left_padding_is_ignored_and_cached_prompts_match() {
    let m = model(&small_config(2, 2).with_vocab_size(8), 40);
    let device = Default::default();
    let ids =
        |v: Vec<i64>, l: usize| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, l]), &device);
    let slots = random([1, 4, 2], 41);
    // The same prompt with and without one left padding token: rotary attention depends on
    // relative positions only, so masking the pad gives identical flow outputs.
    let plain = m.embed_prompt(ids(vec![3, 5], 2), None).unwrap();
    let pad_mask =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 0, 0], [1, 3]), &device).bool();
    let padded = m
        .embed_prompt(ids(vec![0, 3, 5], 3), Some(pad_mask))
        .unwrap();
    let a = m.forward(slots.clone(), Some(&plain), 0.0).unwrap().decoded;
    let b = m
        .forward(slots.clone(), Some(&padded), 0.0)
        .unwrap()
        .decoded;
    assert!(max_abs_diff(a.clone(), b) <= 1e-5);
    // Without the mask the pad token is attended to and the outputs move.
    let unmasked = m.embed_prompt(ids(vec![0, 3, 5], 3), None).unwrap();
    assert!(
        max_abs_diff(
            a.clone(),
            m.forward(slots.clone(), Some(&unmasked), 0.0)
                .unwrap()
                .decoded
        ) > 1e-4
    );
    // Prefill + steps equal the teacher-forced forward with the (padded) prompt.
    let mut cache = m.new_cache();
    m.prefill(&padded, &mut cache).unwrap();
    let mut worst: f32 = 0.0;
    for i in 0..4 {
        let step = m
            .step(slots.clone().narrow(1, i, 1), &mut cache, 0.0)
            .unwrap();
        worst = worst.max(max_abs_diff(step, a.clone().narrow(1, i, 1)));
    }
    assert!(worst <= 1e-5, "{worst}");
}

/// The Markov control (`markov_slots = P`): a slot's prediction ignores the states of
/// earlier time points (which the full, Volterra context reads), and the KV-cached
/// roll-out after a prompt equals re-encoding the whole sequence.
#[test]
fn markov_context_sees_only_the_prompt_and_the_current_time_point() {
    let (p, n, d) = (2, 4, 3);
    let slots = random([1, n * p, d], 31);
    let changed = slots.clone().slice_assign(
        [0..1, 0..p, 0..d],
        Tensor::<B, 3>::ones([1, p, d], &Default::default()) * 5.0,
    );
    for markov in [true, false] {
        let config = small_config(d, 2)
            .with_variational(false)
            .with_markov_slots(if markov { p } else { 0 });
        let m = model(&config, 7);
        let later = |t: Tensor<B, 3>| t.narrow(1, p, (n - 1) * p);
        let a = m.forward(slots.clone(), None, 0.0).unwrap().decoded;
        let b = m.forward(changed.clone(), None, 0.0).unwrap().decoded;
        let diff = max_abs_diff(later(a), later(b));
        if markov {
            assert!(diff < 1e-6, "Markov predictions moved by {diff}");
        } else {
            assert!(
                diff > 1e-3,
                "the full context ignored the first time point ({diff})"
            );
        }
        let prompt = calmflow_model::Prompt {
            embeddings: random([1, 3, config.hidden], 32),
            padding: None,
        };
        let x0 = random([1, p, d], 33);
        let cached = m.rollout(x0.clone(), n, 0.0, true, Some(&prompt)).unwrap();
        let full = m.rollout(x0, n, 0.0, false, Some(&prompt)).unwrap();
        assert!(max_abs_diff(cached, full) < 1e-4);
    }
    let m = model(&small_config(d, 2).with_markov_slots(p), 7);
    assert!(
        m.rollout(random([1, p + 1, d], 34), n, 0.0, true, None)
            .is_err()
    );
}
