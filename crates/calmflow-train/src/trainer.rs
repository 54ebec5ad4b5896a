//! The flow-matching trainer: AdamW, warm-up and decay, global-norm clipping, validation,
//! a JSON-lines log, crash-safe checkpoints and exact resumption.
//!
//! Every random draw of step `s` (training pairs, path noise, dropout, latent noise) is
//! seeded from `(seed, s)`: a run resumed from a checkpoint at step `k` repeats the
//! uninterrupted run's steps `k + 1, …` exactly (on the CPU backend).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::collective::PeerId;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use calmflow_data::{Rng, seeded_rng};
use ndarray::Array2;
use serde::Serialize;

use crate::checkpoint::{CHECKPOINT_FORMAT, Checkpoint, TrainState, write_checkpoint};
use crate::condition::ConditionBatch;
use crate::data::FlowData;
use crate::error::{Result, TrainError, invalid, shape_error};
use crate::log::{LogRecord, LogWindow, open_log};
use crate::objective::{DrawnBatch, FlowObjective, MIXTURE_INIT_PAIRS};
use crate::parallel::{
    FailureLog, PeerGroup, Replica, Shared, StepInputs, StepStats, Work, replica_seed, replica_step,
};
use crate::prefetch::{PairPrefetch, PairSettings, Pairs, draw_pairs};
use crate::seed::step_seed;
use crate::train_config::TrainConfig;

/// Receives the trainer's progress (the command-line program draws a progress bar).
pub trait TrainObserver {
    /// After every step.
    fn on_step(&mut self, _step: usize, _total: usize, _loss: f64) {}
    /// After every logged step.
    fn on_log(&mut self, _record: &LogRecord) {}
    /// After a checkpoint was written.
    fn on_checkpoint(&mut self, _dir: &Path) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;
impl TrainObserver for Silent {}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSummary {
    /// Steps completed.
    pub steps: usize,
    /// Mean loss over the last logging window.
    pub final_loss: f64,
    /// Validation loss at the end.
    pub final_val_loss: f64,
    /// Seconds of training in this process.
    pub seconds: f64,
    /// Steps per second in this process.
    pub steps_per_second: f64,
    /// Of `seconds`, those the steps spent waiting for their batches on the host: for the
    /// pairs drawn ahead on another thread (data points, coupling) when they were not
    /// ready yet, and drawing the path noise.
    pub data_seconds: f64,
    /// The last checkpoint written, if any.
    pub checkpoint: Option<PathBuf>,
}

/// The stream of [`step_seed`] at step 0 (steps count from 1) that draws the pairs of a
/// model's data-dependent start.
const INIT_STREAM: u64 = 0x1417;

type Adam<M, B> = OptimizerAdaptor<AdamW, M, B>;

/// AdamW with the run's settings.
fn optimizer<B, M>(config: &TrainConfig) -> Adam<M, B>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    AdamWConfig::new()
        .with_beta_1(config.beta1 as f32)
        .with_beta_2(config.beta2 as f32)
        .with_epsilon(config.epsilon as f32)
        .with_weight_decay(config.weight_decay as f32)
        .init::<B, M>()
}

/// Trains a [`FlowObjective`] model.
pub struct Trainer<B, M>
where
    B: AutodiffBackend,
    M: FlowObjective<B> + AutodiffModule<B>,
{
    model: Option<M>,
    optim: Adam<M, B>,
    config: TrainConfig,
    settings: M::Settings,
    data: Arc<FlowData>,
    device: B::Device,
    replicas: Vec<B::Device>,
    step: usize,
    elapsed: f64,
    checkpoint_root: Option<PathBuf>,
    model_config: serde_json::Value,
    extra: serde_json::Value,
    log_path: Option<PathBuf>,
    log_window: LogWindow,
    history: Vec<LogRecord>,
    /// Seconds spent drawing batches since the current `run_until` began.
    data_seconds: f64,
}

impl<B, M> Trainer<B, M>
where
    B: AutodiffBackend,
    M: FlowObjective<B> + AutodiffModule<B>,
    M::InnerModule: FlowObjective<B::InnerBackend, Settings = M::Settings>,
{
    /// A trainer for `model` (built from `model_config`, which checkpoints store so that
    /// the model can be rebuilt) on `data`.
    pub fn new(
        model: M,
        model_config: serde_json::Value,
        settings: M::Settings,
        config: TrainConfig,
        data: FlowData,
        device: B::Device,
    ) -> Result<Self> {
        config.validate()?;
        model.check_settings(&settings)?;
        model.check_conditions(data.conditions.as_ref().map(|c| &c.table))?;
        let optim = optimizer::<B, M>(&config);
        let mut trainer = Self {
            model: Some(model),
            optim,
            config,
            settings,
            data: Arc::new(data),
            device,
            replicas: Vec::new(),
            step: 0,
            elapsed: 0.0,
            checkpoint_root: None,
            model_config,
            extra: serde_json::Value::Null,
            log_path: None,
            log_window: LogWindow::default(),
            history: Vec::new(),
            data_seconds: 0.0,
        };
        trainer.initialize_model()?;
        Ok(trainer)
    }

    /// The model's data-dependent start ([`FlowObjective::initialize`]), when it has one,
    /// from whole batches of coupled pairs (at least [`MIXTURE_INIT_PAIRS`]) drawn from a
    /// stream of their own: the steps' draws are the same with and without it.
    fn initialize_model(&mut self) -> Result<()> {
        if !self.model().initializes_from_data(&self.settings) {
            return Ok(());
        }
        let mut rng = seeded_rng(step_seed(self.config.seed, 0, INIT_STREAM));
        let per_batch = self.config.batch_size * M::pairs_per_example(&self.settings);
        let (mut x0, mut x1) = (Vec::new(), Vec::new());
        for _ in 0..MIXTURE_INIT_PAIRS.div_ceil(per_batch) {
            let (a, b, _) = self.pairs(&mut rng)?;
            x0.push(a);
            x1.push(b);
        }
        let stack = |parts: Vec<Array2<f32>>| {
            let views: Vec<_> = parts.iter().map(Array2::view).collect();
            ndarray::concatenate(ndarray::Axis(0), &views)
                .map_err(|e| shape_error("initialisation pairs", "equal widths", e))
        };
        let (x0, x1) = (stack(x0)?, stack(x1)?);
        let model = self.model.take().expect("the trainer holds its model");
        self.model = Some(model.initialize(&x0, &x1, &self.settings, &mut rng)?);
        Ok(())
    }

    /// Trains data-parallel: a replica of the model on each of `devices` besides the
    /// trainer's own device (which stays replica 0: it logs, validates and checkpoints),
    /// each step's `train.batch_size` examples split evenly among the replicas and the
    /// gradients averaged by burn-collective's all-reduce before every optimizer step
    /// (see `docs/scaling.md`). The devices may repeat (two replicas on one CPU).
    pub fn with_replicas(mut self, devices: Vec<B::Device>) -> Result<Self> {
        let peers = devices.len() + 1;
        if !self.config.batch_size.is_multiple_of(peers) {
            return Err(invalid(format!(
                "train.batch_size = {} does not split evenly among {peers} devices",
                self.config.batch_size
            )));
        }
        self.replicas = devices;
        Ok(self)
    }

    /// Writes checkpoints under `root`; `extra` is stored with them (e.g. how the data
    /// were specified, for sampling later).
    pub fn with_checkpoints(mut self, root: impl Into<PathBuf>, extra: serde_json::Value) -> Self {
        self.checkpoint_root = Some(root.into());
        self.extra = extra;
        self
    }

    /// Appends a JSON line per logged step to `path`: emptied when training starts from
    /// step 0; on a resumed run, first cut back to the lines of steps up to the checkpoint's.
    pub fn with_log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// Continues from `checkpoint`: loads weights, optimizer state and the step count.
    /// The model must have been built from the checkpoint's configuration.
    pub fn resume_from(mut self, checkpoint: &Checkpoint) -> Result<Self> {
        checkpoint.expect_kind(M::KIND)?;
        if checkpoint.state.seed != self.config.seed {
            return Err(TrainError::Checkpoint {
                path: checkpoint.dir().display().to_string(),
                message: format!(
                    "was trained with seed {}, this run has seed {}: resume with the same seed",
                    checkpoint.state.seed, self.config.seed
                ),
            });
        }
        if checkpoint.state.step > self.config.steps {
            return Err(invalid(format!(
                "the checkpoint is at step {}, beyond train.steps = {}",
                checkpoint.state.step, self.config.steps
            )));
        }
        self.check_resumed_settings(checkpoint)?;
        let model = self.take_model();
        let model = calmflow_model::load_module(model, &checkpoint.model_path(), &self.device)?;
        let record: calmflow_model::SortedParamRecord<_> =
            calmflow_model::load_optimizer_record::<B, _, _>(
                &model,
                &checkpoint.optimizer_path(),
                &self.device,
            )?;
        self.optim = self.optim.load_record(record.0);
        self.model = Some(model);
        self.step = checkpoint.state.step;
        self.elapsed = checkpoint.state.elapsed_seconds;
        self.log_window = checkpoint.state.log_window;
        Ok(self)
    }

    /// The run continues on the checkpoint's objective: a configuration that now resolves
    /// to other settings (a new default filled in, an edited file) would change the loss
    /// part-way through the run, so it is an error naming the fields. The checkpoint's
    /// settings are read through the current type, so fields it predates take their
    /// defaults. Fields that only shape a fresh start (`FlowObjective::START_SETTINGS`)
    /// may differ.
    fn check_resumed_settings(&self, checkpoint: &Checkpoint) -> Result<()> {
        let Ok(saved) = checkpoint.config_field::<M::Settings>("settings") else {
            return Ok(());
        };
        let as_map = |s: &M::Settings| match serde_json::to_value(s) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        };
        let (Some(saved), Some(now)) = (as_map(&saved), as_map(&self.settings)) else {
            return Ok(());
        };
        let differing: Vec<String> = now
            .iter()
            .filter(|(k, v)| !M::START_SETTINGS.contains(&k.as_str()) && saved.get(*k) != Some(*v))
            .map(|(k, v)| {
                let was = saved
                    .get(k)
                    .map_or("unset".to_string(), ToString::to_string);
                format!("{k} = {was} in the checkpoint, {v} in this run")
            })
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        Err(TrainError::Checkpoint {
            path: checkpoint.dir().display().to_string(),
            message: format!(
                "was trained with other settings ({}): resume with the checkpoint's values",
                differing.join("; ")
            ),
        })
    }

    fn take_model(&mut self) -> M {
        self.model
            .take()
            .expect("the trainer always holds its model between steps")
    }

    /// The model being trained.
    pub fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("the trainer always holds its model between steps")
    }

    /// The trained model.
    pub fn into_model(mut self) -> M {
        self.take_model()
    }

    /// Steps completed.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The records logged by this process.
    pub fn history(&self) -> &[LogRecord] {
        &self.history
    }

    /// Draws and couples one step's pairs from `rng`.
    fn pairs(&self, rng: &mut Rng) -> Result<Pairs> {
        draw_pairs(&self.data, &self.pair_settings(), rng)
    }

    fn pair_settings(&self) -> PairSettings {
        PairSettings {
            batch_size: self.config.batch_size,
            per_example: M::pairs_per_example(&self.settings),
            coupling: self.config.coupling,
        }
    }

    /// Mean loss on the validation set, with dropout off and fixed random draws.
    pub fn validation_loss(&self) -> Result<f64> {
        let model = self.model().valid();
        let (v0, v1) = &self.data.validation;
        let per = M::pairs_per_example(&self.settings);
        // Rows in example order, and each example's condition (conditional data).
        let (rows, conditions): (Vec<usize>, Option<Vec<usize>>) = match &self.data.conditions {
            None => ((0..v0.nrows() / per * per).collect(), None),
            Some(cd) => {
                let (rows, conditions) = cd.validation_examples(per);
                (rows, Some(conditions))
            }
        };
        if rows.is_empty() {
            return Err(invalid(format!(
                "the validation set has {} pairs, too few to fill one example of {per} pairs \
                 (of one condition)",
                v0.nrows()
            )));
        }
        let table = self.data.conditions.as_ref().map(|c| &c.table);
        let examples_per_chunk = self.config.batch_size;
        let seed = step_seed(self.config.seed, u64::MAX, 1);
        let mut rng = seeded_rng(seed);
        B::seed(&self.device, seed);
        let (mut total, mut weight) = (0.0, 0.0);
        let n_examples = rows.len() / per;
        let mut first = 0;
        while first < n_examples {
            let count = examples_per_chunk.min(n_examples - first);
            let chunk_rows = &rows[first * per..(first + count) * per];
            let a = v0.select(ndarray::Axis(0), chunk_rows);
            let b = v1.select(ndarray::Axis(0), chunk_rows);
            let chunk_conditions = conditions.as_ref().map(|c| &c[first..first + count]);
            let (a, b) = match chunk_conditions {
                None => self.config.coupling.couple(&a, &b, &mut rng)?,
                Some(c) => {
                    let groups: Vec<usize> = c
                        .iter()
                        .flat_map(|&k| std::iter::repeat_n(k, per))
                        .collect();
                    self.config
                        .coupling
                        .couple_grouped(&a, &b, &groups, &mut rng)?
                }
            };
            let batch = match (table, chunk_conditions) {
                (Some(table), Some(conditions)) => Some(ConditionBatch { table, conditions }),
                _ => None,
            };
            let terms = model.objective(
                &a,
                &b,
                batch.as_ref(),
                &self.settings,
                &mut rng,
                &self.device,
            )?;
            let len = (count * per) as f64;
            total += terms.total.into_scalar().elem::<f64>() * len;
            weight += len;
            first += count;
        }
        Ok(total / weight)
    }

    /// Writes a checkpoint of the current state; returns its directory.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        self.checkpoint_with_elapsed(self.elapsed)
    }

    /// Writes a checkpoint recording `elapsed` training seconds (mid-run, the seconds of
    /// this process are not yet added to `self.elapsed`).
    fn checkpoint_with_elapsed(&self, elapsed: f64) -> Result<PathBuf> {
        let root = self
            .checkpoint_root
            .as_ref()
            .ok_or_else(|| invalid("no checkpoint directory was set (with_checkpoints)"))?;
        let state = TrainState {
            format: CHECKPOINT_FORMAT,
            kind: M::KIND.to_string(),
            step: self.step,
            seed: self.config.seed,
            elapsed_seconds: elapsed,
            log_window: self.log_window,
        };
        let config = serde_json::json!({
            "kind": M::KIND,
            "model": self.model_config,
            "settings": self.settings,
            "train": self.config,
            "extra": self.extra,
        });
        write_checkpoint(root, &state, &config, self.config.keep_checkpoints, |dir| {
            calmflow_model::save_module(self.model(), &dir.join("model.mpk"))?;
            calmflow_model::save_record::<B, _>(
                calmflow_model::SortedParamRecord(self.optim.to_record()),
                &dir.join("optimizer.mpk"),
            )?;
            Ok(())
        })
    }

    /// Trains from the current step to `train.steps`.
    pub fn run(&mut self, observer: &mut dyn TrainObserver) -> Result<TrainSummary> {
        self.run_until(self.config.steps, observer)
    }

    /// Trains from the current step to `last_step` (at most `train.steps`), on the schedule
    /// of the whole run: stopping here and resuming later gives the uninterrupted run.
    pub fn run_until(
        &mut self,
        last_step: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainSummary> {
        if self.replicas.is_empty() {
            return self.run_loop(last_step, observer, None);
        }
        let shared = Shared {
            settings: self.settings.clone(),
            table: self.data.conditions.as_ref().map(|c| c.table.clone()),
            grad_clip: self.config.grad_clip,
            seed: self.config.seed,
        };
        let record = self.optim.to_record();
        let replicas: Vec<_> = self
            .replicas
            .iter()
            .map(|device| Replica {
                model: self.model().clone().fork(device),
                optim: optimizer::<B, M>(&self.config).load_record(record.clone()),
                device: device.clone(),
            })
            .collect();
        let (log, done) = (FailureLog::default(), AtomicBool::new(false));
        std::thread::scope(|scope| {
            let mut group = PeerGroup::start::<B, M, Adam<M, B>>(
                scope,
                &self.device,
                replicas,
                &shared,
                &log,
                &done,
            )?;
            let summary = self.run_loop(last_step, observer, Some(&mut group))?;
            group.finish::<B>()?;
            Ok(summary)
        })
    }

    /// One optimizer step: the step's draws, then the replicas' work (one replica without
    /// a group).
    fn train_step(
        &mut self,
        step: usize,
        lr: f64,
        pairs: &mut PairPrefetch,
        group: Option<&mut PeerGroup<'_>>,
    ) -> Result<StepStats> {
        let drawing = Instant::now();
        let ((x0, x1, conditions), mut rng) = pairs.next(step)?;
        let batch = self
            .model()
            .draw(&x0, &x1, conditions.as_deref(), &self.settings, &mut rng)?
            .at_progress((step - 1) as f64 / self.config.steps as f64);
        self.data_seconds += drawing.elapsed().as_secs_f64();
        let Some(group) = group else {
            return self.own_step(&batch, step, lr, None);
        };
        let peers = group.peers();
        for peer in 1..peers {
            let work = Work {
                step,
                lr,
                batch: batch.share(peer, peers)?,
            };
            if group.send(peer, work).is_err() {
                return Err(group.fail(None));
            }
        }
        let own = batch.share(0, peers)?;
        let stats = self.own_step(&own, step, lr, Some(PeerId::from(0usize)));
        let mut all = match stats {
            Ok(s) => vec![s],
            Err(e) => return Err(group.fail(Some((format!("{:?}", self.device), e)))),
        };
        for peer in 1..peers {
            match group.result(peer) {
                Ok(s) => all.push(s),
                Err(_) => return Err(group.fail(None)),
            }
        }
        Ok(StepStats::mean(&all))
    }

    /// The trainer's own replica's step on `batch` (all of it, or replica 0's share).
    fn own_step(
        &mut self,
        batch: &DrawnBatch,
        step: usize,
        lr: f64,
        peer: Option<PeerId>,
    ) -> Result<StepStats> {
        let inputs = StepInputs {
            batch,
            table: self.data.conditions.as_ref().map(|c| &c.table),
            settings: &self.settings,
            step,
            lr,
            grad_clip: self.config.grad_clip,
            seed: replica_seed(self.config.seed, step, 0),
        };
        let model = self
            .model
            .take()
            .expect("the trainer always holds its model between steps");
        let (model, stats) =
            replica_step::<B, M, _>(model, &mut self.optim, &inputs, &self.device, peer);
        self.model = Some(model);
        stats
    }

    fn run_loop(
        &mut self,
        last_step: usize,
        observer: &mut dyn TrainObserver,
        mut group: Option<&mut PeerGroup<'_>>,
    ) -> Result<TrainSummary> {
        let last_step = last_step.min(self.config.steps);
        let mut log = match &self.log_path {
            Some(path) => Some(open_log(path, self.step)?),
            None => None,
        };
        let schedule = self.config.schedule();
        let started = Instant::now();
        self.data_seconds = 0.0;
        let mut pairs = PairPrefetch::start(
            Arc::clone(&self.data),
            self.pair_settings(),
            self.config.seed,
            self.step + 1,
            last_step,
        )?;
        let start_step = self.step;
        let mut window_start = Instant::now();
        let mut window_first_step = self.step;
        let mut last_checkpoint = None;
        let mut last_record_loss = f64::NAN;
        let mut val_loss = f64::NAN;
        while self.step < last_step {
            let step = self.step + 1;
            let lr = schedule.at(step);
            let StepStats {
                loss,
                rec,
                kl,
                grad_norm,
            } = self.train_step(step, lr, &mut pairs, group.as_deref_mut())?;
            self.step = step;
            self.log_window.add(loss, rec, kl);
            observer.on_step(step, self.config.steps, loss);
            let last = step == last_step;
            let validate = last
                || (self.config.validate_every > 0
                    && step.is_multiple_of(self.config.validate_every));
            if step.is_multiple_of(self.config.log_every) || validate {
                if validate {
                    val_loss = self.validation_loss()?;
                }
                let (mean_loss, mean_rec, mean_kl) = self.log_window.means();
                let now = Instant::now();
                let record = LogRecord {
                    step,
                    loss: mean_loss,
                    rec: mean_rec,
                    kl: mean_kl,
                    lr,
                    grad_norm,
                    val_loss: validate.then_some(val_loss),
                    seconds: self.elapsed + started.elapsed().as_secs_f64(),
                    steps_per_second: (step - window_first_step) as f64
                        / now.duration_since(window_start).as_secs_f64().max(1e-9),
                };
                last_record_loss = record.loss;
                if let Some(file) = log.as_mut() {
                    let line = serde_json::to_string(&record).unwrap_or_default();
                    writeln!(file, "{line}").map_err(|e| TrainError::Io {
                        path: self
                            .log_path
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        source: e,
                    })?;
                }
                observer.on_log(&record);
                self.history.push(record);
                self.log_window = LogWindow::default();
                window_start = now;
                window_first_step = step;
            }
            let checkpoint_due = self.checkpoint_root.is_some()
                && (last
                    || (self.config.checkpoint_every > 0
                        && step.is_multiple_of(self.config.checkpoint_every)));
            if checkpoint_due {
                let dir =
                    self.checkpoint_with_elapsed(self.elapsed + started.elapsed().as_secs_f64())?;
                observer.on_checkpoint(&dir);
                last_checkpoint = Some(dir);
            }
        }
        if val_loss.is_nan() {
            val_loss = self.validation_loss()?;
        }
        let seconds = started.elapsed().as_secs_f64();
        self.elapsed += seconds;
        let done = self.step - start_step;
        Ok(TrainSummary {
            steps: self.step,
            final_loss: last_record_loss,
            final_val_loss: val_loss,
            seconds,
            steps_per_second: done as f64 / seconds.max(1e-9),
            data_seconds: self.data_seconds,
            checkpoint: last_checkpoint,
        })
    }
}
