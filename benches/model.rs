//! The CaLMFlow model on the CPU backend: one training step (forward, backward, AdamW)
//! of a 4-layer, H = 128, 4-head model on N = 16, P·K = 4 sequences, batch 64; and the
//! generation of 1000 samples (N = 16, P·K = 10) with the KV cache vs re-encoding the
//! whole sequence at every step.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use burn::backend::{Autodiff, NdArray};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use calmflow_model::{CalmFlowConfig, CalmFlowModel};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::time::Duration;

type Cpu = NdArray<f32>;
type Ad = Autodiff<Cpu>;

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
    let (n, p, k, batch) = (16, 2, 2, 64);
    let config = CalmFlowConfig::new(2)
        .with_n_space(k)
        .with_hidden(128)
        .with_layers(4)
        .with_heads(4);
    let mut model = Some(config.init::<Ad>(&device).expect("valid config"));
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(0.01)
        .init::<Ad, CalmFlowModel<Ad>>();
    let slots = Tensor::<Ad, 3>::random([batch, n * p, 2], Distribution::Normal(0.0, 1.0), &device);
    let mut group = c.benchmark_group("model");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("train_step/h128_l4_n16_pk4_b64", |bch| {
        bch.iter(|| {
            let m = model.take().expect("model present");
            let l = loss(&m, slots.clone(), p);
            let grads = GradientsParams::from_grads(l.backward(), &m);
            model = Some(optim.step(1e-3, m, grads));
        })
    });
    let gen_config = config.clone().with_n_space(1);
    Cpu::seed(&device, 1);
    let gen_model = gen_config.init::<Cpu>(&device).expect("valid config");
    // 100 sequences × P = 10 trajectories = 1000 samples, N = 16.
    let x0 = Tensor::<Cpu, 3>::random([100, 10, 2], Distribution::Normal(0.0, 1.0), &device);
    for use_cache in [true, false] {
        let name = if use_cache { "kv_cache" } else { "re_encode" };
        group.bench_function(BenchmarkId::new("generate_1000/n16_pk10", name), |bch| {
            bch.iter(|| {
                gen_model
                    .rollout(x0.clone(), 16, 0.2, use_cache, None)
                    .expect("roll-out")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, training_step);
criterion_main!(benches);
