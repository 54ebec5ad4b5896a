//! Every distribution head under the model's contracts: KV-cached roll-outs equal
//! re-encoding with the same noise, weights survive a save/load round trip, the heads'
//! losses match independent re-computations, and bad head settings are typed errors.

mod backend;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use calmflow_model::{CalmFlowConfig, DistributionHead, HeadKind, Predict};
use calmflow_tokenize::{SpaceTimeLayout, pack};

use backend::{max_abs_diff, model, random, rng_lock};

type B = backend::TestBackend;

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn config(head: HeadKind, predict: Predict) -> CalmFlowConfig {
    CalmFlowConfig::new(3)
        .with_n_space(2)
        .with_hidden(16)
        .with_layers(2)
        .with_heads(2)
        .with_dropout(0.0)
        .with_head(head)
        .with_predict(predict)
        .with_mixture_components(3)
        .with_flow_steps(3)
}

const PREDICTS: [Predict; 3] = [Predict::State, Predict::Increment, Predict::Endpoint];

#[test]
fn cached_rollout_equals_re_encoding_with_the_same_noise_for_every_head() {
    let device = Default::default();
    for head in HeadKind::ALL {
        for predict in PREDICTS {
            let m = model(&config(head, predict).with_bridge_sigma(0.2), 1);
            let x0 = random([2, 2, 3], 2);
            let run = |cache: bool| {
                let _guard = rng_lock();
                B::seed(&device, 3);
                m.rollout(x0.clone(), 5, 1.0, cache, None).unwrap()
            };
            let (cached, full) = (run(true), run(false));
            let diff = max_abs_diff(cached.clone(), full);
            assert!(
                diff <= 1e-4,
                "{head}/{predict}: cached vs re-encoded {diff}"
            );
            // The noise matters: another seed gives other samples.
            let other = {
                let _guard = rng_lock();
                B::seed(&device, 4);
                m.rollout(x0.clone(), 5, 1.0, true, None).unwrap()
            };
            assert!(
                max_abs_diff(cached, other) > 1e-3,
                "{head}/{predict}: the samples ignore the noise"
            );
        }
    }
}

/// Context noise perturbs every state after the first, in training and in the roll-out,
/// and nothing else: a one-step roll-out and a loss whose context is the source alone are
/// unchanged, longer ones are not, and the KV-cached and re-encoded roll-outs draw the
/// same noise.
#[test]
fn context_noise_reaches_every_state_but_the_first() {
    let device = Default::default();
    let clean = config(HeadKind::Mixture, Predict::Endpoint);
    let noisy = clean.clone().with_context_noise(0.5);
    let (a, b) = (model(&clean, 11), model(&noisy, 11));
    assert_eq!(b.context_noise(), 0.5);
    let x0 = random([2, 2, 3], 12);
    let roll = |m: &calmflow_model::CalmFlowModel<B>, n: usize, cache: bool| {
        let _guard = rng_lock();
        B::seed(&device, 13);
        m.rollout(x0.clone(), n, 0.0, cache, None).unwrap()
    };
    assert_eq!(max_abs_diff(roll(&a, 2, true), roll(&b, 2, true)), 0.0);
    let changed = max_abs_diff(roll(&a, 4, true), roll(&b, 4, true));
    assert!(
        changed > 1e-3,
        "context noise left a 4-point roll-out unchanged ({changed})"
    );
    let drift = max_abs_diff(roll(&b, 4, true), roll(&b, 4, false));
    assert!(
        drift <= 1e-4,
        "cached vs re-encoded with context noise: {drift}"
    );

    let loss = |m: &calmflow_model::CalmFlowModel<B>, n_times: usize| {
        let layout = SpaceTimeLayout::new(n_times, 2, 2).unwrap();
        let slots = pack(random([2, n_times, 3], 14), &layout).unwrap();
        let _guard = rng_lock();
        B::seed(&device, 15);
        values(m.head_loss(slots, None, &layout).unwrap().rec)[0]
    };
    assert_eq!(loss(&a, 2), loss(&b, 2), "the source slots were noised");
    assert!(
        (loss(&a, 4) - loss(&b, 4)).abs() > 1e-4,
        "the later slots were not noised"
    );

    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        assert!(
            clean
                .clone()
                .with_context_noise(bad)
                .init::<B>(&device)
                .is_err(),
            "{bad}"
        );
    }
}

#[test]
fn weights_round_trip_for_every_head() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    for head in HeadKind::ALL {
        let c = config(head, Predict::Increment);
        let a = model(&c, 5);
        let path = dir.path().join(format!("{head}.mpk"));
        a.save_weights(&path).unwrap();
        let b = model(&c, 6).load_weights(&path, &device).unwrap();
        let x0 = random([2, 1, 3], 7);
        let ya = a.rollout(x0.clone(), 4, 0.0, true, None).unwrap();
        let yb = b.rollout(x0, 4, 0.0, true, None).unwrap();
        assert_eq!(max_abs_diff(ya, yb), 0.0, "{head}");
        // Another head's weights are refused with a typed error.
        let other = if head == HeadKind::Flow {
            HeadKind::Mixture
        } else {
            HeadKind::Flow
        };
        assert!(
            model(&config(other, Predict::Increment), 8)
                .load_weights(&path, &device)
                .is_err(),
            "{head} weights loaded into a {other} model"
        );
    }
}

/// The variational head's loss through `head_loss` equals the paper's loss written out on
/// the decoded output of `forward` (same noise: τ = 0 has none, and without dropout the
/// only randomness is the latent draw, which we switch off by comparing the deterministic
/// variant).
#[test]
fn variational_head_loss_matches_the_written_out_paper_loss() {
    let c = config(HeadKind::Variational, Predict::State).with_variational(false);
    let m = model(&c, 9);
    let layout = SpaceTimeLayout::new(4, 2, 2).unwrap();
    let slots = pack(random([4, 4, 3], 10), &layout).unwrap();
    let terms = m.head_loss(slots.clone(), None, &layout).unwrap();
    assert!(terms.kl.is_none());
    let decoded = m.forward(slots.clone(), None, 0.0).unwrap().decoded;
    let [b, s, d] = slots.dims();
    let want = (decoded.narrow(1, 0, s - 2) - slots.narrow(1, 2, s - 2))
        .powi_scalar(2)
        .sum()
        .into_scalar() as f64
        / (b * (s - 2)) as f64;
    let got = terms.rec.into_scalar() as f64;
    assert!(
        (got - want).abs() <= 1e-5 * want.max(1.0),
        "{got} vs {want} (D = {d})"
    );
}

/// The annealed mixture loss `−T·log Σ_m exp(ℓ_m/T)` (averaged over slots): the loss
/// itself at `T = 1`, and at every `T` for one component (`T·ℓ/T = ℓ`); for several,
/// between `loss − T·ln M` and `loss`, and decreasing in `T` (its derivative in `T` is
/// minus the entropy of the tempered posterior). Temperatures below 1 are errors.
#[test]
fn annealed_mixture_loss_tempers_the_posterior_over_components() {
    let layout = SpaceTimeLayout::new(4, 2, 2).unwrap();
    let slots = pack(random([4, 4, 3], 12), &layout).unwrap();
    for components in [1usize, 3] {
        let m = model(
            &config(HeadKind::Mixture, Predict::Endpoint).with_mixture_components(components),
            13,
        );
        let at = |t: f64| {
            m.annealed_head_loss(slots.clone(), None, &layout, t)
                .unwrap()
                .rec
                .into_scalar() as f64
        };
        let loss = m
            .head_loss(slots.clone(), None, &layout)
            .unwrap()
            .rec
            .into_scalar() as f64;
        let tol = 1e-5 * loss.abs().max(1.0);
        assert!((at(1.0) - loss).abs() <= tol, "{} vs {loss}", at(1.0));
        let mut previous = loss;
        for t in [2.0, 10.0, 100.0] {
            let a = at(t);
            if components == 1 {
                assert!(
                    (a - loss).abs() <= 10.0 * tol,
                    "M = 1, T = {t}: {a} vs {loss}"
                );
            } else {
                let floor = loss - t * (components as f64).ln();
                assert!(
                    a >= floor - tol && a <= loss + tol,
                    "T = {t}: {a} outside [{floor}, {loss}]"
                );
                assert!(a < previous, "T = {t}: {a} not below {previous}");
                previous = a;
            }
        }
        for bad in [0.5, f64::NAN, f64::INFINITY] {
            assert!(
                m.annealed_head_loss(slots.clone(), None, &layout, bad)
                    .is_err()
            );
        }
    }
}

/// The mixture head's NLL against a direct evaluation of the mixture density from its own
/// parameters, through a one-component model whose density is checked by sampling: the
/// sample mean and variance of many draws at τ = 1 match the NLL-implied Gaussian.
#[test]
fn mixture_loss_is_the_negative_log_likelihood_of_its_samples() {
    let c = config(HeadKind::Mixture, Predict::State)
        .with_mixture_components(1)
        .with_n_space(1);
    let m = model(&c, 11);
    let head = m.head();
    let device = Default::default();
    let context = Tensor::<B, 2>::from_data(
        TensorData::new((0..16).map(|i| (i as f32 * 0.37).sin()).collect(), [1, 16]),
        &device,
    );
    let n = 20_000;
    let draws = {
        let _guard = rng_lock();
        B::seed(&device, 12);
        head.sample(context.clone().repeat_dim(0, n), 1.0)
    };
    let x = values(draws);
    let (mut mean, mut var) = ([0.0f64; 3], [0.0f64; 3]);
    for row in x.chunks(3) {
        for k in 0..3 {
            mean[k] += row[k] as f64 / n as f64;
        }
    }
    for row in x.chunks(3) {
        for k in 0..3 {
            var[k] += (row[k] as f64 - mean[k]).powi(2) / (n - 1) as f64;
        }
    }
    // NLL of the Gaussian fitted to the draws, at the draws' mean: closed form.
    let at_mean = Tensor::<B, 2>::from_data(
        TensorData::new(mean.iter().map(|v| *v as f32).collect(), [1, 3]),
        &device,
    );
    let nll = head.loss(context, at_mean).rec.into_scalar() as f64;
    let want: f64 = var
        .iter()
        .map(|v| 0.5 * (2.0 * std::f64::consts::PI * v).ln())
        .sum();
    assert!((nll - want).abs() < 0.05, "NLL {nll} vs {want}");
}

#[test]
fn bad_head_settings_are_typed_errors() {
    let device = Default::default();
    for bad in [
        config(HeadKind::Mixture, Predict::State).with_mixture_components(0),
        config(HeadKind::Mixture, Predict::State).with_mixture_min_std(0.0),
        config(HeadKind::Flow, Predict::State).with_flow_steps(0),
        config(HeadKind::Flow, Predict::State).with_flow_draws(0),
        config(HeadKind::Flow, Predict::State).with_flow_blocks(0),
        config(HeadKind::Cvae, Predict::Endpoint).with_bridge_sigma(-1.0),
    ] {
        assert!(bad.init::<B>(&device).is_err(), "{bad:?}");
    }
    assert_eq!("flow".parse::<HeadKind>().unwrap(), HeadKind::Flow);
    assert!("gmm".parse::<HeadKind>().unwrap_err().contains("mixture"));
}

#[test]
fn decoder_width_sets_the_head_size() {
    let c = CalmFlowConfig::new(200)
        .with_hidden(16)
        .with_layers(1)
        .with_heads(2);
    assert_eq!(c.head_width(), 200);
    // Twice the context width, whatever D.
    assert_eq!(c.clone().with_head(HeadKind::Mixture).head_width(), 32);
    assert_eq!(c.clone().with_head(HeadKind::Cvae).head_width(), 16);
    // The flow head's velocity network keeps a floor under a small transformer.
    assert_eq!(c.clone().with_head(HeadKind::Flow).head_width(), 256);
    let wide = c.clone().with_hidden(256).with_heads(4);
    assert_eq!(wide.with_head(HeadKind::Flow).head_width(), 512);
    assert_eq!(c.clone().with_decoder_width(24).head_width(), 24);
    let count = |c: &CalmFlowConfig| {
        use burn::module::Module;
        model(c, 13).num_params()
    };
    let paper = count(&c);
    let narrow = count(&c.clone().with_decoder_width(16));
    // Two 200×200 layers and the 16→200 / 200→200 in- and output layers shrink.
    let want = (16 * 200 + 200) + (200 * 200 + 200) + (200 * 200 + 200)
        - ((16 * 16 + 16) + (16 * 16 + 16) + (16 * 200 + 200));
    assert_eq!(paper - narrow, want);
}

/// Placing the mixture's means moves every component's mean by exactly the change of
/// its centre, whatever the context: with one component, the `τ = 0` roll-out (that
/// component's mean, reached in one endpoint step) of centres `a` and `b` differs by
/// `b − a` at every source point. Other heads, another length and non-finite centres are
/// typed errors, and the model is left usable after one.
#[test]
fn mixture_means_are_placed_at_the_given_centres() {
    let c = config(HeadKind::Mixture, Predict::Endpoint).with_mixture_components(1);
    let x0 = random([4, 2, 3], 5);
    let step = |centres: &[f32]| {
        let m = model(&c, 1).with_mixture_means(centres).unwrap();
        m.rollout(x0.clone(), 2, 0.0, true, None)
            .unwrap()
            .narrow(1, 1, 1)
    };
    let (a, b) = ([0.0f32, 0.0, 0.0], [5.0f32, -2.0, 0.5]);
    let moved = values(step(&b) - step(&a));
    for (i, v) in moved.iter().enumerate() {
        assert!(
            (v - b[i % 3]).abs() < 1e-5,
            "value {i}: {v} against {}",
            b[i % 3]
        );
    }
    let fresh = model(&c, 1);
    assert_eq!(fresh.mixture_components(), Some(1));
    let e = |r: Result<_, calmflow_model::ModelError>| r.err().unwrap().to_string();
    assert!(e(model(&c, 1).with_mixture_means(&[1.0, 2.0])).contains("need 3 values, got 2"));
    assert!(e(model(&c, 1).with_mixture_means(&[0.0, f32::NAN, 0.0])).contains("value 1 is NaN"));
    let flow = model(&config(HeadKind::Flow, Predict::Endpoint), 1);
    assert_eq!(flow.mixture_components(), None);
    assert!(e(flow.with_mixture_means(&[0.0; 3])).contains("head = \"flow\""));
}
