//! Data-parallel training with burn-collective: one model replica per device, each step's
//! batch split evenly among the replicas, gradients averaged by all-reduce before every
//! optimizer step.
//!
//! `g = (1/R) Σ_r ∇L_r` with `L_r` the mean loss on replica `r`'s `B/R` examples: as every
//! loss is a mean over examples, `g` is the gradient of the mean loss on the whole batch,
//! and replicas that start equal and apply the same AdamW step to the same `g` stay equal.
//!
//! The trainer's own thread is replica 0 (it logs, validates and writes checkpoints, once);
//! replicas `1..R` run on threads of their own for the duration of a run. burn-collective's
//! local server is one per process and backend, so one data-parallel run holds it at a
//! time ([`COLLECTIVE`]). A replica that fails or panics records why and raises the
//! failure flag; a watchdog then resets the collective until every replica has stopped,
//! which wakes replicas blocked in an all-reduce with an error instead of leaving them
//! waiting for a peer that will never come.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, MutexGuard};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, register, reset_collective,
};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::clip::{clip_global_norm, global_grad_norm};
use crate::condition::ConditionTable;
use crate::error::{Result, TrainError};
use crate::objective::{DrawnBatch, FlowObjective};
use crate::seed::step_seed;

/// The process-wide lock of burn-collective's local server.
static COLLECTIVE: Mutex<()> = Mutex::new(());

/// Held by a replica from seeding the backend to the end of its forward pass. burn's
/// backends draw random numbers (dropout, context noise, the heads' training noise) from
/// one process-wide generator, which [`AutodiffBackend::seed`] resets: without the lock,
/// one replica's seed lands in the middle of another's draws, and what each draws depends
/// on how the threads interleave. With it, a replica's draws depend on its seed alone.
/// The forward passes of the replicas take turns (on the CPU they run on the device's
/// thread pool anyway); their backward passes and all-reduces still overlap.
static BACKEND_DRAWS: Mutex<()> = Mutex::new(());

/// How often the watchdog resets the collective while a failed run winds down.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(10);

/// The backend seed of `replica` in step `step`: replica 0 (and a one-device run) uses
/// stream 2; replicas 1, 2, … streams of their own.
pub(crate) fn replica_seed(seed: u64, step: usize, replica: usize) -> u64 {
    let stream = if replica == 0 {
        2
    } else {
        0x1000 + replica as u64
    };
    step_seed(seed, step as u64, stream)
}

/// What one replica measured in one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepStats {
    /// Loss of the replica's examples (the trainer averages the replicas').
    pub loss: f64,
    /// Reconstruction term.
    pub rec: f64,
    /// KL term, when the objective has one.
    pub kl: Option<f64>,
    /// Global gradient norm before clipping (of the averaged gradient, with peers).
    pub grad_norm: f64,
}

impl StepStats {
    /// The mean over replicas of equal shares: the statistics of the whole batch.
    pub fn mean(all: &[StepStats]) -> StepStats {
        let n = all.len().max(1) as f64;
        let kl = all.iter().map(|s| s.kl).sum::<Option<f64>>().map(|k| k / n);
        StepStats {
            loss: all.iter().map(|s| s.loss).sum::<f64>() / n,
            rec: all.iter().map(|s| s.rec).sum::<f64>() / n,
            kl,
            grad_norm: all.first().map_or(f64::NAN, |s| s.grad_norm),
        }
    }
}

/// Everything a replica needs to take a step besides its model and optimizer.
pub(crate) struct StepInputs<'a, S> {
    pub batch: &'a DrawnBatch,
    pub table: Option<&'a ConditionTable>,
    pub settings: &'a S,
    pub step: usize,
    pub lr: f64,
    pub grad_clip: f64,
    /// The backend seed of this replica's draws in this step ([`replica_seed`]).
    pub seed: u64,
}

/// Forward, backward, (with `peer`) the gradient all-reduce, clipping and the optimizer
/// step of one replica. The model comes back whatever happens.
pub(crate) fn replica_step<B, M, O>(
    model: M,
    optim: &mut O,
    inputs: &StepInputs<'_, M::Settings>,
    device: &B::Device,
    peer: Option<PeerId>,
) -> (M, Result<StepStats>)
where
    B: AutodiffBackend,
    M: FlowObjective<B> + AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let forward = {
        let _draws = BACKEND_DRAWS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        B::seed(device, inputs.seed);
        model.batch_loss(inputs.batch, inputs.table, inputs.settings, device)
    };
    let terms = match forward {
        Ok(t) => t,
        Err(e) => return (model, Err(e)),
    };
    let loss: f64 = terms.total.clone().into_scalar().elem();
    if !loss.is_finite() {
        return (
            model,
            Err(TrainError::NonFiniteLoss {
                step: inputs.step,
                loss,
            }),
        );
    }
    let rec: f64 = terms.rec.clone().into_scalar().elem();
    let kl: Option<f64> = terms.kl.clone().map(|k| k.into_scalar().elem());
    let mut grads = GradientsParams::from_grads(terms.total.backward(), &model);
    if let Some(peer) = peer {
        let mut average = AverageGradients::<B> {
            grads: &mut grads,
            peer,
            error: None,
            backend: PhantomData,
        };
        model.visit(&mut average);
        if let Some(e) = average.error {
            return (
                model,
                Err(TrainError::Collective(format!(
                    "the gradient all-reduce failed on peer {}: {e:?}",
                    peer.0
                ))),
            );
        }
    }
    let grad_norm = if inputs.grad_clip > 0.0 {
        clip_global_norm::<B, M>(&model, &mut grads, inputs.grad_clip)
    } else {
        global_grad_norm::<B, M>(&model, &grads)
    };
    let model = optim.step(inputs.lr, model, grads);
    let stats = StepStats {
        loss,
        rec,
        kl,
        grad_norm,
    };
    (model, Ok(stats))
}

/// Replaces every gradient by its mean over all replicas, parameter by parameter in the
/// module's own order. burn-optim's `GradientsParams::all_reduce` goes in `ParamId`
/// order instead, and parameter ids are drawn at random when a model is built: replicas
/// built separately (in particular in separate processes) would pair different
/// parameters, while the module's order is the same wherever the model is built.
struct AverageGradients<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    peer: PeerId,
    error: Option<burn::collective::CollectiveError>,
    backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AverageGradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        match all_reduce::<B::InnerBackend>(
            self.peer,
            grad.into_primitive().tensor(),
            ReduceOperation::Mean,
        ) {
            Ok(mean) => self.grads.register(
                param.id,
                Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(mean)),
            ),
            Err(e) => self.error = Some(e),
        }
    }
}

/// One step's work for a helper replica.
pub(crate) struct Work {
    pub step: usize,
    pub lr: f64,
    pub batch: DrawnBatch,
}

/// Why a run's replicas stopped: the first failure wins, later ones are its echoes.
#[derive(Default)]
pub(crate) struct FailureLog {
    failed: AtomicBool,
    first: Mutex<Option<TrainError>>,
}

impl FailureLog {
    /// Records `error` of replica `peer` on `device` (kept only if it is the first).
    pub fn record(&self, peer: usize, device: String, error: TrainError) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(TrainError::Peer {
                peer,
                device,
                source: Box::new(error),
            });
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn take(&self) -> Option<TrainError> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The replicas `1..R` of a data-parallel run, alive for one [`Trainer::run_until`]
/// (crate::Trainer::run_until) call.
pub(crate) struct PeerGroup<'scope> {
    work: Vec<Sender<Work>>,
    results: Vec<Receiver<StepStats>>,
    helpers: Vec<ScopedJoinHandle<'scope, ()>>,
    watchdog: Option<ScopedJoinHandle<'scope, ()>>,
    log: &'scope FailureLog,
    done: &'scope AtomicBool,
    _lock: MutexGuard<'static, ()>,
}

/// A helper replica's model, optimizer and device.
pub(crate) struct Replica<M, O, D> {
    pub model: M,
    pub optim: O,
    pub device: D,
}

/// The read-only context every helper shares.
pub(crate) struct Shared<S> {
    pub settings: S,
    pub table: Option<ConditionTable>,
    pub grad_clip: f64,
    pub seed: u64,
}

/// The message of a caught panic (`panic!` payloads are a `String` or a `&str`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

impl<'scope> PeerGroup<'scope> {
    /// Registers replica 0 on `device0` and `replicas` (1, 2, …) with burn-collective and
    /// starts their threads in `scope`.
    pub fn start<'env, B, M, O>(
        scope: &'scope Scope<'scope, 'env>,
        device0: &B::Device,
        replicas: Vec<Replica<M, O, B::Device>>,
        shared: &'scope Shared<M::Settings>,
        log: &'scope FailureLog,
        done: &'scope AtomicBool,
    ) -> Result<Self>
    where
        B: AutodiffBackend,
        M: FlowObjective<B> + AutodiffModule<B> + 'scope,
        O: Optimizer<M, B> + Send + 'scope,
    {
        let lock = COLLECTIVE.lock().unwrap_or_else(|p| p.into_inner());
        reset_collective::<B::InnerBackend>();
        let peers = replicas.len() + 1;
        let config = CollectiveConfig::default().with_num_devices(peers);
        let mut devices = vec![device0.clone()];
        devices.extend(replicas.iter().map(|r| r.device.clone()));
        // Registration waits for every peer, so each registers from a thread of its own;
        // nothing fallible runs before it (an incomplete registration cannot be undone).
        let registered: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = devices
                .iter()
                .enumerate()
                .map(|(k, device)| {
                    let config = config.clone();
                    s.spawn(move || {
                        register::<B::InnerBackend>(PeerId::from(k), device.clone(), config)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        for (k, r) in registered.into_iter().enumerate() {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    reset_collective::<B::InnerBackend>();
                    return Err(TrainError::Collective(format!(
                        "peer {k} could not join the collective: {e:?}"
                    )));
                }
                Err(p) => {
                    reset_collective::<B::InnerBackend>();
                    return Err(TrainError::Collective(format!(
                        "peer {k} panicked while joining the collective: {}",
                        panic_message(p.as_ref())
                            .unwrap_or_else(|| "a panic without a message".into())
                    )));
                }
            }
        }
        let watchdog = scope.spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if log.failed() {
                    reset_collective::<B::InnerBackend>();
                }
                std::thread::sleep(WATCHDOG_PERIOD);
            }
        });
        let mut group = PeerGroup {
            work: Vec::new(),
            results: Vec::new(),
            helpers: Vec::new(),
            watchdog: Some(watchdog),
            log,
            done,
            _lock: lock,
        };
        for (i, replica) in replicas.into_iter().enumerate() {
            let peer = i + 1;
            let (work_tx, work_rx) = channel::<Work>();
            let (result_tx, result_rx) = channel::<StepStats>();
            let handle = scope.spawn(move || {
                let name = format!("{:?}", replica.device);
                let Replica {
                    mut model,
                    mut optim,
                    device,
                } = replica;
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    while let Ok(work) = work_rx.recv() {
                        let inputs = StepInputs {
                            batch: &work.batch,
                            table: shared.table.as_ref(),
                            settings: &shared.settings,
                            step: work.step,
                            lr: work.lr,
                            grad_clip: shared.grad_clip,
                            seed: replica_seed(shared.seed, work.step, peer),
                        };
                        let (m, stats) = replica_step::<B, M, O>(
                            model,
                            &mut optim,
                            &inputs,
                            &device,
                            Some(PeerId::from(peer)),
                        );
                        model = m;
                        match stats {
                            Ok(s) => {
                                if result_tx.send(s).is_err() {
                                    return Ok(());
                                }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                }));
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => log.record(peer, name, e),
                    Err(p) => log.record(
                        peer,
                        name,
                        TrainError::Collective(format!(
                            "the replica panicked: {}",
                            panic_message(p.as_ref())
                                .unwrap_or_else(|| "a panic without a message".into())
                        )),
                    ),
                }
            });
            group.work.push(work_tx);
            group.results.push(result_rx);
            group.helpers.push(handle);
        }
        Ok(group)
    }

    /// Replicas in the group, replica 0 included.
    pub fn peers(&self) -> usize {
        self.work.len() + 1
    }

    /// Hands replica `peer` (≥ 1) its share of a step.
    pub fn send(&self, peer: usize, work: Work) -> Result<()> {
        self.work[peer - 1]
            .send(work)
            .map_err(|_| TrainError::Collective(format!("replica {peer} has stopped")))
    }

    /// Waits for the statistics of replica `peer` (≥ 1); an error if it stopped instead.
    pub fn result(&self, peer: usize) -> Result<StepStats> {
        self.results[peer - 1]
            .recv()
            .map_err(|_| TrainError::Collective(format!("replica {peer} has stopped")))
    }

    /// Stops every replica after a failure of replica 0 (`own`, with its device) or of
    /// a helper, and returns the first failure.
    pub fn fail(&mut self, own: Option<(String, TrainError)>) -> TrainError {
        if let Some((device, e)) = own {
            self.log.record(0, device, e);
        }
        self.stop(true);
        self.log.take().unwrap_or_else(|| {
            TrainError::Collective("a replica stopped without saying why".into())
        })
    }

    /// Ends a run whose steps all succeeded.
    pub fn finish<B: AutodiffBackend>(mut self) -> Result<()> {
        self.stop(false);
        reset_collective::<B::InnerBackend>();
        match self.log.take() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Helpers leave when their work channel closes or, after a failure, when the
    /// watchdog's reset wakes them from an all-reduce; then the watchdog stops.
    fn stop(&mut self, failed: bool) {
        if failed {
            self.log.failed.store(true, Ordering::SeqCst);
        }
        self.work.clear();
        for h in self.helpers.drain(..) {
            // A helper's panic was caught and recorded inside it.
            let _ = h.join();
        }
        self.done.store(true, Ordering::SeqCst);
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

impl Drop for PeerGroup<'_> {
    /// A group left without [`PeerGroup::finish`] (an early return of the trainer) may
    /// have helpers inside an all-reduce: treat it as a failure so that they wake.
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.stop(true);
        }
    }
}
