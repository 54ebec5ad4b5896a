//! The CaLMFlow model on the CPU backend (on burn-wgpu or burn-cuda with this package's
//! `wgpu` or `cuda` feature, the facade's backend types): one training step (forward, backward, AdamW)
//! of a 4-layer, H = 128, 4-head model with P·K = 4 tokens per time point, as the number
//! of time points N (sequence length 4N) and the batch grow, and of the demo's model
//! (H = 64, 2 layers, 16 tokens, 128 sequences), the shapes of the PyTorch twin
//! (`benches/torch_twin.py`); the generation of 1000
//! samples (N = 16, P·K = 10) with the KV cache vs re-encoding the whole sequence at
//! every step; CFM sampling with dopri5 as D grows; and a square f32 matrix product, the
//! machine's reference rate for the training step's GFLOP/s.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use burn::backend::Autodiff;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use calmflow::model::{CalmFlowConfig, CalmFlowModel};
use calmflow::train::{AdaptiveSettings, OdeSolver, VelocityMlpConfig, cfm_sample};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::time::Duration;

// The program's allocator (`calmflow`'s binary): the steps are timed as it runs them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The backend the benches run on.
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
type Bk = calmflow::backend::Cpu;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
type Bk = calmflow::backend::Wgpu;
#[cfg(feature = "cuda")]
type Bk = calmflow::backend::Cuda;
type Ad = Autodiff<Bk>;

/// Waits for the device's queued work: GPU backends run asynchronously, so a timed
/// iteration ends only when its kernels have (a no-op on the CPU backend).
fn sync(device: &burn::tensor::Device<Bk>) {
    Bk::sync(device).expect("the device runs");
}

/// Square matrix sizes of the reference rate: larger on a GPU, where 1024² takes
/// microseconds.
const MATMUL_SIZES: &[usize] = if cfg!(any(feature = "wgpu", feature = "cuda")) {
    &[1024, 4096]
} else {
    &[256, 1024]
};

/// Reconstruction of slot j + P from slot j plus 0.3 × the KL term, last time excluded.
fn loss(model: &CalmFlowModel<Ad>, slots: Tensor<Ad, 3>, p: usize) -> Tensor<Ad, 1> {
    let [_, s, _] = slots.dims();
    let out = model
        .forward(slots.clone(), None, 1.0)
        .expect("valid shapes");
    let pred = out.decoded.narrow(1, 0, s - p);
    let target = slots.narrow(1, p, s - p);
    let rec = (pred - target).powi_scalar(2).sum_dim(2).mean();
    let k = model.n_space();
    let (mu, log_var) = (
        out.mu.expect("variational"),
        out.log_var.expect("variational"),
    );
    let keep = (s - p) * k;
    let (mu, log_var) = (mu.narrow(1, 0, keep), log_var.narrow(1, 0, keep));
    let kl = (mu.clone() * mu + log_var.clone().exp() - log_var - 1.0)
        .sum_dim(2)
        .mean()
        * 0.5;
    rec + kl * 0.3
}

fn training_step(c: &mut Criterion) {
    let device = Default::default();
    Ad::seed(&device, 0);
    // No dropout: the PyTorch twin (`benches/torch_twin.py`) has none, and the demo and
    // the quality suite train without it.
    let bench = CalmFlowConfig::new(2)
        .with_hidden(128)
        .with_layers(4)
        .with_heads(4)
        .with_dropout(0.0);
    let demo = CalmFlowConfig::new(2)
        .with_hidden(64)
        .with_layers(2)
        .with_heads(4)
        .with_dropout(0.0);
    // The CPU backend's fused kernels, as the program runs them; the
    // twin's two shapes are also timed without them (`train_step_composed`).
    calmflow::backend::register_cpu_kernels();
    let mut group = c.benchmark_group("model");
    // GPU backends compile and autotune kernels over the first steps of each shape
    // (seconds on CUDA): a longer warm-up keeps that out of the timed steps.
    let warm_up = if cfg!(any(feature = "wgpu", feature = "cuda")) {
        15
    } else {
        2
    };
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(warm_up))
        .measurement_time(Duration::from_secs(10));
    // (config, N, P, K, batch): the H = 128 model as N and the batch grow, and the demo's
    // shape (H = 64, 2 layers, 16 tokens × 128 sequences).
    let shapes = [
        (&bench, 8usize, 2usize, 2usize, 64usize),
        (&bench, 16, 2, 2, 64),
        (&bench, 32, 2, 2, 64),
        (&bench, 16, 2, 2, 32),
        (&demo, 16, 1, 1, 128),
    ];
    for (config, n, p, k, batch) in shapes {
        let config = config.clone().with_n_space(k);
        let mut model = Some(config.init::<Ad>(&device).expect("valid config"));
        let mut optim = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(0.01)
            .init::<Ad, CalmFlowModel<Ad>>();
        let slots =
            Tensor::<Ad, 3>::random([batch, n * p, 2], Distribution::Normal(0.0, 1.0), &device);
        let tokens = n * p * k;
        let (h, layers) = (config.hidden, config.layers);
        let id = format!("h{h}_l{layers}_t{tokens}_b{batch}");
        calmflow_benches::record_work(
            &format!("model/train_step/{id}"),
            (tokens * batch) as f64,
            calmflow_benches::transformer_train_flops(h, layers, 4, tokens, batch),
        );
        let mut step = || {
            let m = model.take().expect("model present");
            let l = loss(&m, slots.clone(), p);
            let grads = GradientsParams::from_grads(l.backward(), &m);
            model = Some(optim.step(1e-3, m, grads));
            sync(&device);
        };
        group.bench_function(BenchmarkId::new("train_step", &id), |bch| {
            bch.iter(&mut step)
        });
        let twin_shape = (n == 16 && batch == 64) || batch == 128;
        if cfg!(not(any(feature = "wgpu", feature = "cuda"))) && twin_shape {
            calmflow::backend::unregister_cpu_kernels();
            group.bench_function(BenchmarkId::new("train_step_composed", &id), |bch| {
                bch.iter(&mut step)
            });
            calmflow::backend::register_cpu_kernels();
        }
    }
    let gen_config = bench.clone().with_n_space(1);
    Bk::seed(&device, 1);
    let gen_model = gen_config.init::<Bk>(&device).expect("valid config");
    // 100 sequences × P = 10 trajectories = 1000 samples, N = 16.
    let x0 = Tensor::<Bk, 3>::random([100, 10, 2], Distribution::Normal(0.0, 1.0), &device);
    for use_cache in [true, false] {
        let name = if use_cache { "kv_cache" } else { "re_encode" };
        group.bench_function(BenchmarkId::new("generate_1000/n16_pk10", name), |bch| {
            bch.iter(|| {
                let out = gen_model
                    .rollout(x0.clone(), 16, 0.2, use_cache, None)
                    .expect("roll-out");
                sync(&device);
                out
            })
        });
    }
    group.finish();
}

/// One step of `calmflow train` on the demo's configuration with the default head (the
/// flow head over endpoints, N = 2, exact-OT pairs drawn a step ahead on their own
/// thread), through the trainer: the model, its loss, AdamW, clipping and the data
/// pipeline, as a user's run spends it (no validation or logging inside the timed steps).
fn default_training_step(c: &mut Criterion) {
    use calmflow::run::jobs::{DemoJob, ModelKind, init_calmflow};
    use calmflow::train::{Silent, Trainer};
    let device: burn::tensor::Device<Ad> = Default::default();
    calmflow::backend::register_cpu_kernels();
    let mut config = DemoJob::default().run_config(ModelKind::CalmFlow);
    // Room for every timed step, no validation or checkpoint inside them.
    config.train.steps = 1_000_000;
    config.train.validate_every = 0;
    config.train.log_every = 1_000_000;
    let (data, _) = config
        .data
        .load(std::path::Path::new("."), config.train.seed)
        .expect("the demo's data");
    let (model, model_config) =
        init_calmflow::<Ad>(&config, data.dim(), None, None, &device, true).expect("model");
    let json = serde_json::to_value(&model_config).expect("configuration as JSON");
    let head = format!("{:?}", model_config.head).to_lowercase();
    let mut trainer = Trainer::new(model, json, config.flow, config.train.clone(), data, device)
        .expect("trainer");
    let mut group = c.benchmark_group("model");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let id = format!(
        "{head}_h{}_l{}_n{}_b{}",
        model_config.hidden, model_config.layers, config.flow.n_times, config.train.batch_size
    );
    group.bench_function(BenchmarkId::new("train_step_default", id), |bch| {
        bch.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let last = trainer.step() + iters as usize;
            trainer
                .run_until(last, &mut Silent)
                .expect("training steps");
            start.elapsed()
        })
    });
    group.finish();
}

fn cfm_sampling(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("cfm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for d in [2usize, 100] {
        Bk::seed(&device, 2);
        let model = VelocityMlpConfig::new(d)
            .with_width(64)
            .init::<Bk>(&device)
            .expect("valid config");
        let x0 = calmflow_benches::normal_points(2000, d, 0.0, 3);
        let solver = OdeSolver::Dopri5(AdaptiveSettings::default());
        group.bench_function(
            BenchmarkId::new("dopri5_2000", format!("d{d}_w64")),
            |bch| {
                bch.iter(|| cfm_sample(&model, &x0, None, &solver, false, &device).expect("sample"))
            },
        );
    }
    group.finish();
}

fn matmul(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("matmul");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for &n in MATMUL_SIZES {
        let a = Tensor::<Bk, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<Bk, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        let id = format!("n{n}");
        calmflow_benches::record_work(&format!("matmul/f32/{id}"), 0.0, 2.0 * (n * n * n) as f64);
        group.bench_function(BenchmarkId::new("f32", &id), |bch| {
            bch.iter(|| {
                let c = a.clone().matmul(b.clone());
                sync(&device);
                c
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    matmul,
    training_step,
    default_training_step,
    cfm_sampling
);
criterion_main!(benches);
