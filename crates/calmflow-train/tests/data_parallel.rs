//! Data-parallel training (burn-collective): two replicas with the global batch `B` take
//! the steps of one device with batch `B` (losses and weights within f32 rounding), for
//! CaLMFlow (with and without prompts) and CFM; resumption is exact; an uneven split, a
//! failing replica and a panicking replica are typed errors that arrive in bounded time.

mod backend;
mod prompts;

use std::sync::Mutex;
use std::time::Duration;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use calmflow_data::{Rng, Sampler, seeded_rng};
use calmflow_model::{CalmFlowConfig, HeadKind};
use calmflow_train::{
    CalmFlowSettings, CfmSettings, CfmVariant, Checkpoint, ConditionTable, DrawnBatch, FlowData,
    FlowObjective, LossTerms, PointSource, Silent, TrainConfig, TrainError, Trainer, VelocityMlp,
    VelocityMlpConfig,
};
use ndarray::Array2;
use rand_distr::{Distribution, Normal};

type B = Autodiff<backend::TestBackend>;

/// burn-ndarray's RNG is process-global: tests that seed it must not interleave.
static RNG_LOCK: Mutex<()> = Mutex::new(());

/// Relative tolerance of f32 rounding: the replicas sum their shares' gradients in
/// another order than one device does.
const REL: f64 = 1e-4;

/// Relative tolerance of the logged gradient norms. The norm is taken of a sum of
/// per-sequence gradients that nearly cancel once the mixture has fitted, which amplifies
/// the rounding of the sum: on a 2-core AMD EPYC, step 12 of the CaLMFlow run below
/// differed by 1.5e-4 while its loss agreed to 1e-7 (the other steps to 1e-5). A replica
/// that dropped or double-counted a share would move the losses, which stay at [`REL`], and
/// the norms by far more than this.
const GRAD_NORM_REL: f64 = 1e-3;

/// Largest difference allowed between the two runs' weights, as a fraction of the learning
/// rate. Adam moves a weight by up to the learning rate per step whatever its gradient's
/// size, so a gradient at the level of rounding can move it either way: on the machine
/// above, two of the CaLMFlow run's 6536 weights ended 1.3e-4 and 1.5e-4 apart (0.15 of
/// the learning rate) and the rest within 5e-5. Half a step is below what one step in
/// the wrong direction (two learning rates) would leave.
const WEIGHT_STEPS: f64 = 0.5;

/// N(mean, I) in `dim` dimensions.
struct Gaussian {
    mean: f64,
    dim: usize,
}

impl Sampler for Gaussian {
    fn name(&self) -> String {
        format!("N({}, I)", self.mean)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        let d = Normal::new(self.mean, 1.0).expect("valid normal");
        Array2::from_shape_fn((n, self.dim), |_| d.sample(rng) as f32)
    }
}

fn gaussian_data(dim: usize) -> FlowData {
    FlowData::new(
        PointSource::Sampler(Box::new(Gaussian { mean: 0.0, dim })),
        PointSource::Sampler(Box::new(Gaussian { mean: 2.0, dim })),
        0.1,
        64,
        5,
    )
    .unwrap()
}

/// Every float parameter of `module`, in visiting order, except the attention's key
/// bias: its gradient is zero in exact arithmetic (softmax is unchanged when every score
/// of a query moves by the same `q·b_k`), so AdamW turns the rounding noise of that
/// gradient into steps of the learning rate's size, which differ between any two orders
/// of summation (one device, or two replicas). The model's output does not depend on it.
struct Flatten {
    values: Vec<f32>,
    path: Vec<String>,
    head_dim: usize,
}

impl<Bk: Backend> ModuleVisitor<Bk> for Flatten {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        let data = param
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap();
        // The path ends with the parameter's own name, after its module's.
        let fused_bias = self
            .path
            .ends_with(&["qkv".to_string(), "bias".to_string()]);
        let hd = self.head_dim;
        self.values.extend(
            data.iter()
                .enumerate()
                .filter(|(i, _)| !(fused_bias && (i % (3 * hd)) / hd == 1))
                .map(|(_, v)| *v),
        );
    }
}

/// The compared weights of a model (see [`Flatten`]); `head_dim` of the test models.
fn weights<M: Module<B>>(module: &M) -> Vec<f32> {
    let mut v = Flatten {
        values: Vec::new(),
        path: Vec::new(),
        head_dim: 8,
    };
    module.visit(&mut v);
    v.values
}

fn assert_close(what: &str, a: &[f64], b: &[f64]) {
    assert_close_within(what, a, b, REL);
}

fn assert_close_within(what: &str, a: &[f64], b: &[f64], rel: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = x.abs().max(y.abs()).max(1e-3);
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}[{i}]: {x} vs {y} (relative {:.2e})",
            (x - y).abs() / scale
        );
    }
}

/// The weights of one device's run against the replicas' ([`WEIGHT_STEPS`]).
fn assert_weights_close(a: &[f32], b: &[f32]) {
    assert_weights_within(a, b, WEIGHT_STEPS * TrainConfig::default().learning_rate);
}

fn assert_weights_within(a: &[f32], b: &[f32], tolerance: f64) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    assert!(
        worst <= tolerance,
        "weights differ by {worst:.3e} (tolerance {tolerance:.1e})"
    );
}

fn train_config(steps: usize, batch_size: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size,
        log_every: 1,
        validate_every: 0,
        warmup_steps: 3,
        ..TrainConfig::default()
    }
}

/// Trains `model` on `data` with one extra replica or none; the logged losses, gradient
/// norms and the final weights.
fn run<M>(
    model: M,
    settings: M::Settings,
    train: TrainConfig,
    data: FlowData,
    replicas: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f32>)
where
    M: FlowObjective<B> + AutodiffModule<B>,
    M::InnerModule: FlowObjective<
            <B as burn::tensor::backend::AutodiffBackend>::InnerBackend,
            Settings = M::Settings,
        >,
{
    let mut trainer = Trainer::new(
        model,
        serde_json::Value::Null,
        settings,
        train,
        data,
        backend::device(),
    )
    .unwrap()
    .with_replicas(vec![backend::device(); replicas])
    .unwrap();
    trainer.run(&mut Silent).unwrap();
    let losses = trainer.history().iter().map(|r| r.loss).collect();
    let norms = trainer.history().iter().map(|r| r.grad_norm).collect();
    (losses, norms, weights(trainer.model()))
}

fn calmflow_model(dim: usize) -> calmflow_model::CalmFlowModel<B> {
    prompted_model(dim, 0)
}

/// With a token-embedding table of `vocab` rows (0: none).
fn prompted_model(dim: usize, vocab: usize) -> calmflow_model::CalmFlowModel<B> {
    let device = backend::device();
    B::seed(&device, 11);
    CalmFlowConfig::new(dim)
        .with_hidden(16)
        .with_layers(1)
        .with_heads(2)
        .with_vocab_size(vocab)
        .with_head(HeadKind::Mixture)
        .with_dropout(0.0)
        .init::<B>(&device)
        .unwrap()
}

/// Annealed over the first half of the steps, so the replicas must read the step's
/// progress from their share of the batch.
fn calmflow_settings() -> CalmFlowSettings {
    CalmFlowSettings {
        n_times: 4,
        anneal_temperature: 10.0,
        ..CalmFlowSettings::default()
    }
}

/// The test: 20 steps of CaLMFlow (mixture head) with batch 8 on one device, and
/// on two replicas of 4 sequences each.
#[test]
fn two_replicas_take_the_one_device_steps_calmflow() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let train = train_config(20, 8);
    let one = run(
        calmflow_model(2),
        calmflow_settings(),
        train.clone(),
        gaussian_data(2),
        0,
    );
    let two = run(
        calmflow_model(2),
        calmflow_settings(),
        train,
        gaussian_data(2),
        1,
    );
    assert_eq!(one.0.len(), 20);
    assert_close("loss", &one.0, &two.0);
    assert_close_within("gradient norm", &one.1, &two.1, GRAD_NORM_REL);
    assert_weights_close(&one.2, &two.2);
    // The steps changed the weights: equality is not that of two untouched models.
    let untouched = weights(&calmflow_model(2));
    assert!(
        untouched
            .iter()
            .zip(&one.2)
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
}

/// Two replicas run twice give the same bits: the replicas' concurrent backward passes,
/// which allocate in an order that depends on the threads' timing, compute nothing whose
/// result depends on where a buffer lies (burn-ndarray is built without its approximate,
/// alignment-dependent SIMD reciprocal; docs/scaling.md). The summation order of the
/// averaged gradients is fixed (replica order), so the runs are equal, not close.
#[test]
fn replicas_repeat_their_run_bit_for_bit() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let train = train_config(12, 8);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            run(
                calmflow_model(2),
                calmflow_settings(),
                train.clone(),
                gaussian_data(2),
                1,
            )
        })
        .collect();
    for other in &runs[1..] {
        assert_eq!(runs[0].0, other.0, "losses");
        assert_eq!(runs[0].1, other.1, "gradient norms");
        assert!(runs[0].2 == other.2, "weights");
    }
}

/// The same for a model that draws random numbers on the device in every forward pass:
/// the flow head's training noise, dropout and context noise. burn's backend has one
/// process-wide generator that each replica seeds for its step; the replicas draw in turn,
/// each from its own seed, so three runs of two replicas give the same bits.
#[test]
fn replicas_that_draw_on_the_device_repeat_their_run_bit_for_bit() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let model = || {
        let device = backend::device();
        B::seed(&device, 13);
        CalmFlowConfig::new(2)
            .with_hidden(16)
            .with_layers(1)
            .with_heads(2)
            .with_head(HeadKind::Flow)
            .with_predict(calmflow_model::Predict::Endpoint)
            .with_dropout(0.1)
            .with_context_noise(0.5)
            .init::<B>(&device)
            .unwrap()
    };
    let train = train_config(10, 8);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            run(
                model(),
                CalmFlowSettings {
                    n_times: 3,
                    ..CalmFlowSettings::default()
                },
                train.clone(),
                gaussian_data(2),
                1,
            )
        })
        .collect();
    for other in &runs[1..] {
        assert_eq!(runs[0].0, other.0, "losses");
        assert!(runs[0].2 == other.2, "weights");
    }
}

/// The same for I-CFM with exact-OT pairs (the coupling sees the whole batch once) and
/// three replicas.
#[test]
fn three_replicas_take_the_one_device_steps_cfm() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let model = || {
        let device = backend::device();
        B::seed(&device, 3);
        VelocityMlpConfig::new(3)
            .with_width(32)
            .init::<B>(&device)
            .unwrap()
    };
    let (settings, coupling) = CfmVariant::OtCfm.setup(0.01);
    let train = TrainConfig {
        coupling,
        ..train_config(20, 12)
    };
    let one = run(model(), settings, train.clone(), gaussian_data(3), 0);
    let three = run(model(), settings, train, gaussian_data(3), 2);
    assert_close("loss", &one.0, &three.0);
    assert_close_within("gradient norm", &one.1, &three.1, GRAD_NORM_REL);
    assert_weights_close(&one.2, &three.2);
}

/// 200 points: condition "lo" ~ N(−2, 0.3²), "hi" ~ N(2, 0.3²), with prompts.
fn prompted_data() -> FlowData {
    let mut rng = seeded_rng(8);
    let noise = Normal::new(0.0, 0.3).unwrap();
    let conditions: Vec<usize> = (0..200).map(|i| i % 2).collect();
    let target = Array2::from_shape_fn((200, 1), |(i, _)| {
        (if conditions[i] == 0 { -2.0 } else { 2.0 } + noise.sample(&mut rng)) as f32
    });
    let (table, _) = prompts::level_table();
    FlowData::conditional(
        PointSource::Sampler(Box::new(Gaussian { mean: 0.0, dim: 1 })),
        target,
        conditions,
        table,
        0.1,
        8,
    )
    .unwrap()
}

/// Prompted CaLMFlow: each replica embeds the prompts of its own sequences.
#[test]
fn two_replicas_take_the_one_device_steps_with_prompts() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let data = prompted_data;
    let train = train_config(10, 8);
    let vocab = match &data().conditions {
        Some(c) => c.table.max_token_id().map_or(1, |t| t as usize + 1),
        None => unreachable!("the data are conditional"),
    };
    let one = run(
        prompted_model(1, vocab),
        calmflow_settings(),
        train.clone(),
        data(),
        0,
    );
    let two = run(
        prompted_model(1, vocab),
        calmflow_settings(),
        train,
        data(),
        1,
    );
    assert_close("loss", &one.0, &two.0);
    assert_weights_close(&one.2, &two.2);
}

/// Two replicas for six steps, or three, a checkpoint (written once) and three more on a
/// fresh trainer with two replicas: the same losses and weights, to f32 rounding (not bit
/// for bit: burn 0.21's autodiff sums some gradients in another order when two backward
/// passes run at once in one process, see `docs/scaling.md`).
#[test]
fn data_parallel_runs_resume() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let train = TrainConfig {
        checkpoint_every: 3,
        ..train_config(6, 8)
    };
    let (want, _, want_weights) = run(
        calmflow_model(2),
        calmflow_settings(),
        train.clone(),
        gaussian_data(2),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let trainer = |model| {
        Trainer::new(
            model,
            serde_json::Value::Null,
            calmflow_settings(),
            train.clone(),
            gaussian_data(2),
            backend::device(),
        )
        .unwrap()
        .with_replicas(vec![backend::device()])
        .unwrap()
        .with_checkpoints(dir.path(), serde_json::Value::Null)
    };
    let mut part = trainer(calmflow_model(2));
    part.run_until(3, &mut Silent).unwrap();
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(checkpoint.state.step, 3);
    let steps = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(
        steps, 1,
        "one checkpoint directory, written by replica 0 only"
    );
    let device = backend::device();
    B::seed(&device, 999);
    let mut resumed = trainer(calmflow_model(2)).resume_from(&checkpoint).unwrap();
    resumed.run(&mut Silent).unwrap();
    let mut got: Vec<f64> = part.history().iter().map(|r| r.loss).collect();
    got.extend(resumed.history().iter().map(|r| r.loss));
    assert_close("loss", &got, &want);
    // Both runs sum the same shares in the same order: only the resume could tell them
    // apart, so the weights are held to f32 rounding, not to Adam's.
    let largest = want_weights
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs() as f64));
    assert_weights_within(&weights(resumed.model()), &want_weights, REL * largest);
}

#[test]
fn uneven_split_is_an_error() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let err = Trainer::new(
        calmflow_model(2),
        serde_json::Value::Null,
        calmflow_settings(),
        train_config(2, 9),
        gaussian_data(2),
        backend::device(),
    )
    .unwrap()
    .with_replicas(vec![backend::device()])
    .err()
    .expect("9 sequences do not split among 2 devices");
    assert!(
        err.to_string()
            .contains("train.batch_size = 9 does not split evenly among 2 devices"),
        "{err}"
    );
}

mod flaky {
    //! burn's `Module` derive names the backend parameter `B`, which the file's alias
    //! would otherwise shadow.
    use super::*;

    /// How the [`Flaky`] model misbehaves on replicas other than the trainer's own.
    #[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
    pub enum Fault {
        Error,
        Panic,
    }

    /// CFM whose loss fails (error or panic) on every thread but the one that built the
    /// trainer: replica 0 stays healthy and waits in the all-reduce for a peer that failed.
    #[derive(Module, Debug)]
    pub struct Flaky<B: Backend> {
        pub inner: VelocityMlp<B>,
    }

    impl<B: Backend> FlowObjective<B> for Flaky<B> {
        type Settings = (CfmSettings, Fault);
        const KIND: &'static str = "cfm";

        fn pairs_per_example(_: &Self::Settings) -> usize {
            1
        }
        fn check_settings(&self, s: &Self::Settings) -> calmflow_train::Result<()> {
            self.inner.check_settings(&s.0)
        }
        fn check_conditions(&self, table: Option<&ConditionTable>) -> calmflow_train::Result<()> {
            self.inner.check_conditions(table)
        }
        fn draw(
            &self,
            x0: &Array2<f32>,
            x1: &Array2<f32>,
            conditions: Option<&[usize]>,
            s: &Self::Settings,
            rng: &mut Rng,
        ) -> calmflow_train::Result<DrawnBatch> {
            self.inner.draw(x0, x1, conditions, &s.0, rng)
        }
        fn batch_loss(
            &self,
            batch: &DrawnBatch,
            table: Option<&ConditionTable>,
            s: &Self::Settings,
            device: &B::Device,
        ) -> calmflow_train::Result<LossTerms<B>> {
            if std::thread::current().name().is_none() {
                match s.1 {
                    Fault::Error => {
                        return Err(TrainError::InvalidConfig("injected failure".into()));
                    }
                    Fault::Panic => panic!("injected panic"),
                }
            }
            self.inner.batch_loss(batch, table, &s.0, device)
        }
    }
}
use flaky::{Fault, Flaky};

/// Runs a two-replica [`Flaky`] training on a named thread and waits at most a minute.
fn flaky_run(fault: Fault) -> TrainError {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let device = backend::device();
            let model = Flaky {
                inner: VelocityMlpConfig::new(2).init::<B>(&device).unwrap(),
            };
            let mut trainer = Trainer::new(
                model,
                serde_json::Value::Null,
                (CfmSettings::default(), fault),
                train_config(5, 8),
                gaussian_data(2),
                device,
            )
            .unwrap()
            .with_replicas(vec![backend::device()])
            .unwrap();
            let _ = tx.send(trainer.run(&mut Silent).map(|_| ()));
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(outcome) => outcome.expect_err("a failing replica stops the run"),
        Err(_) => panic!("the run with a failing replica did not stop within 60 s"),
    }
}

#[test]
fn a_failing_replica_stops_the_run_with_its_error() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let err = flaky_run(Fault::Error);
    match &err {
        TrainError::Peer { peer, source, .. } => {
            assert_eq!(*peer, 1, "{err}");
            assert!(
                matches!(**source, TrainError::InvalidConfig(ref m) if m == "injected failure"),
                "{err}"
            );
        }
        other => panic!("expected a replica failure, got {other}"),
    }
    assert!(err.to_string().contains("replica 1"), "{err}");
    // The collective is usable again: a healthy data-parallel run succeeds afterwards.
    let (losses, _, _) = run(
        calmflow_model(2),
        calmflow_settings(),
        train_config(2, 4),
        gaussian_data(2),
        1,
    );
    assert!(losses.iter().all(|l| l.is_finite()));
}

#[test]
fn a_panicking_replica_stops_the_run_with_its_message() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let err = flaky_run(Fault::Panic);
    assert!(matches!(err, TrainError::Peer { peer: 1, .. }), "{err}");
    assert!(err.to_string().contains("injected panic"), "{err}");
}
