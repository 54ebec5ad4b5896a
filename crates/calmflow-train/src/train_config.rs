//! [`TrainConfig`]: the optimisation settings of a run (steps, batch, AdamW, the
//! learning-rate schedule, clipping, validation, logging, checkpoints, the coupling of
//! training pairs and the seed), with their validation.

use serde::{Deserialize, Serialize};

use crate::coupling::Coupling;
use crate::error::{Result, invalid};
use crate::schedule::{LrDecay, LrSchedule};

/// Optimisation settings; defaults follow docs/method.md §6 for small from-scratch models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Training examples per step (CaLMFlow: sequences of `P` trajectories).
    pub batch_size: usize,
    /// Peak learning rate (the paper: 1e-3 from scratch, 5e-5 with a pretrained backbone).
    pub learning_rate: f64,
    /// AdamW `β₁`.
    pub beta1: f64,
    /// AdamW `β₂`.
    pub beta2: f64,
    /// AdamW `ε` (PyTorch's 1e-8; burn's own default is 1e-5).
    pub epsilon: f64,
    /// Decoupled weight decay (the paper: 0.01).
    pub weight_decay: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Decay after warm-up (the paper: linear).
    pub decay: LrDecay,
    /// Final learning rate as a fraction of the peak.
    pub final_lr_fraction: f64,
    /// Clip the global gradient norm to this value (the paper: 1.0; 0 disables clipping).
    pub grad_clip: f64,
    /// Pairing of source and target points in a minibatch.
    pub coupling: Coupling,
    /// Seed of every random draw.
    pub seed: u64,
    /// Log (and call the observer) every this many steps.
    pub log_every: usize,
    /// Validation loss every this many steps (0: only at the end).
    pub validate_every: usize,
    /// Checkpoint every this many steps (0: only at the end, when checkpointing).
    pub checkpoint_every: usize,
    /// Step directories kept under the checkpoint root.
    pub keep_checkpoints: usize,
    /// Devices of a data-parallel run by name (`["cuda:0", "cuda:1"]`, `["cpu", "cpu"]`):
    /// a model replica on each, every step's `batch_size` examples split evenly among
    /// them (`docs/scaling.md`). Empty: one device. The program resolves the names
    /// ([`Trainer::with_replicas`](crate::Trainer::with_replicas) takes the devices).
    pub devices: Vec<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 5000,
            batch_size: 256,
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 100,
            decay: LrDecay::Linear,
            final_lr_fraction: 0.0,
            grad_clip: 1.0,
            coupling: Coupling::Independent,
            seed: 0,
            log_every: 50,
            validate_every: 500,
            checkpoint_every: 1000,
            keep_checkpoints: 2,
            devices: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(invalid(format!(
                    "train.{name} = {v} must be finite and > 0"
                )))
            }
        };
        if self.steps == 0 || self.batch_size == 0 || self.log_every == 0 {
            return Err(invalid(format!(
                "train.steps, train.batch_size and train.log_every must be ≥ 1 (got {}, {}, {})",
                self.steps, self.batch_size, self.log_every
            )));
        }
        if self.devices.len() > 1 && !self.batch_size.is_multiple_of(self.devices.len()) {
            return Err(invalid(format!(
                "train.batch_size = {} does not split evenly among the {} devices of \
                 train.devices",
                self.batch_size,
                self.devices.len()
            )));
        }
        positive("learning_rate", self.learning_rate)?;
        positive("epsilon", self.epsilon)?;
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(format!("train.{name} = {b} must lie in [0, 1)")));
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(invalid(format!(
                "train.weight_decay = {} must be finite and ≥ 0",
                self.weight_decay
            )));
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            return Err(invalid(format!(
                "train.final_lr_fraction = {} must lie in [0, 1]",
                self.final_lr_fraction
            )));
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return Err(invalid(format!(
                "train.grad_clip = {} must be finite and ≥ 0 (0 disables clipping)",
                self.grad_clip
            )));
        }
        self.coupling.validate()
    }

    /// The learning-rate schedule of this run.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            decay: self.decay,
            final_fraction: self.final_lr_fraction,
        }
    }
}
