//! Training checkpoints, crash-safe.
//!
//! A checkpoint root holds one directory per saved step (`step-00001000/` with
//! `model.mpk`, `optimizer.mpk`, `state.json`, `config.json`) and a file `latest` naming
//! the newest. A step directory is complete before it is renamed into place, and `latest`
//! is replaced atomically afterwards, so a crash at any moment leaves the previous
//! checkpoint readable. Older step directories beyond `keep` are removed.

use std::path::{Path, PathBuf};

use calmflow_data::write_atomically;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The layout version written into `state.json`. Format 2 (2026-12-07): the model's head
/// is stored as one variant of an enum (`OutputHead`), the `flow` head as a learned
/// Gaussian with an adaptive-layer-norm velocity network, and models may carry
/// `context_noise`. Format 1 stored four optional heads and the earlier `flow` head.
pub const CHECKPOINT_FORMAT: u32 = 2;

/// What changed in each format this build no longer reads, for the refusal message.
fn format_history(format: u32) -> &'static str {
    match format {
        1 => {
            "format 1 (calmflow before 2026-12-07) stored the head as four optional heads              and an earlier flow head, which this build's models cannot hold"
        }
        _ => "this build does not know that format (written by a newer calmflow?)",
    }
}

/// Where training stood when a checkpoint was written. All randomness of step `s` derives
/// from `(seed, s)`, so `(seed, step)` is the whole random state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Layout version ([`CHECKPOINT_FORMAT`]).
    pub format: u32,
    /// Model family (`"calmflow"`, `"cfm"`).
    pub kind: String,
    /// Steps completed.
    pub step: usize,
    /// The run's seed.
    pub seed: u64,
    /// Training seconds so far.
    pub elapsed_seconds: f64,
}

/// A readable checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    /// `state.json`.
    pub state: TrainState,
    /// `config.json`: `{kind, model, settings, train, extra}` as the trainer wrote it.
    pub config: serde_json::Value,
}

fn error(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| error(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| error(path, format!("unreadable: {e}")))
}

impl Checkpoint {
    /// Opens the newest checkpoint under `root` (a directory written by the trainer), or
    /// `root` itself when it is a step directory.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = if root.join("state.json").is_file() {
            root.to_path_buf()
        } else {
            let latest = root.join("latest");
            if !root.is_dir() {
                return Err(error(root, "no such directory"));
            }
            let name = std::fs::read_to_string(&latest).map_err(|_| {
                error(
                    root,
                    "not a checkpoint directory (no `latest` file): pass the directory that \
                     `calmflow train` wrote its checkpoints to",
                )
            })?;
            root.join(name.trim())
        };
        let state: TrainState = read_json(&dir.join("state.json"))?;
        if state.format != CHECKPOINT_FORMAT {
            return Err(error(
                &dir,
                format!(
                    "checkpoint format {} is not supported (this build reads format \
                     {CHECKPOINT_FORMAT}): {}; retrain, or read it with the calmflow that \
                     wrote it",
                    state.format,
                    format_history(state.format)
                ),
            ));
        }
        let config = read_json(&dir.join("config.json"))?;
        for file in ["model.mpk", "optimizer.mpk"] {
            if !dir.join(file).is_file() {
                return Err(error(&dir, format!("{file} is missing")));
            }
        }
        Ok(Self { dir, state, config })
    }

    /// The step directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model weights.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.mpk")
    }

    /// The optimizer state.
    pub fn optimizer_path(&self) -> PathBuf {
        self.dir.join("optimizer.mpk")
    }

    /// A field of `config.json` (`"model"`, `"settings"`, `"train"`, `"extra"`),
    /// deserialised.
    pub fn config_field<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<T> {
        let value = self
            .config
            .get(field)
            .cloned()
            .ok_or_else(|| error(&self.dir, format!("config.json has no `{field}` section")))?;
        serde_json::from_value(value)
            .map_err(|e| error(&self.dir, format!("config.json `{field}`: {e}")))
    }

    /// Checks that the checkpoint holds a model of family `kind`.
    pub fn expect_kind(&self, kind: &str) -> Result<()> {
        if self.state.kind != kind {
            return Err(error(
                &self.dir,
                format!("holds a `{}` model, expected `{kind}`", self.state.kind),
            ));
        }
        Ok(())
    }
}

/// Writes a checkpoint for `state` under `root`: `write_weights` fills a staging directory
/// with `model.mpk` and `optimizer.mpk`; then the directory is renamed into place, `latest`
/// updated and all but the newest `keep` step directories removed.
pub(crate) fn write_checkpoint(
    root: &Path,
    state: &TrainState,
    config: &serde_json::Value,
    keep: usize,
    write_weights: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let io = |path: &Path, e: std::io::Error| TrainError::Io {
        path: path.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let name = format!("step-{:08}", state.step);
    let staging = root.join(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| io(&staging, e))?;
    let result = (|| -> Result<PathBuf> {
        write_weights(&staging)?;
        std::fs::write(staging.join("state.json"), pretty(state)).map_err(|e| io(&staging, e))?;
        std::fs::write(staging.join("config.json"), pretty(config)).map_err(|e| io(&staging, e))?;
        let target = root.join(&name);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
        }
        std::fs::rename(&staging, &target).map_err(|e| io(&target, e))?;
        let latest = root.join("latest");
        write_atomically(&latest, |w| w.write_all(name.as_bytes()))?;
        Ok(target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let target = result?;
    prune(root, keep);
    Ok(target)
}

/// Removes all but the newest `keep` (≥ 1) step directories; failures are ignored (an
/// extra old checkpoint is harmless).
fn prune(root: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut steps: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for old in &steps[..excess] {
        let _ = std::fs::remove_dir_all(old);
    }
}

/// Pretty JSON of plain data (its serialisation cannot fail).
fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

use std::io::Write as _;
