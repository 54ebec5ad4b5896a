//! Training checkpoints, crash-safe.
//!
//! A checkpoint root holds one directory per saved step (`step-00001000/` with
//! `model.mpk`, `optimizer.mpk`, `state.json`, `config.json` and `manifest.json`) and a
//! file `latest` naming the newest. A step directory is complete before it is renamed into
//! place, and `latest` is replaced atomically afterwards, so a crash at any moment leaves
//! the previous checkpoint readable. Older step directories beyond `keep` are removed, and
//! so are staging directories that a killed run left behind.
//!
//! `manifest.json` records each file's length and SHA-256 (the digest `sha256sum`
//! prints). [`Checkpoint::open`] checks them, so a file cut by an interrupted copy,
//! damaged on disk, or taken from another checkpoint is refused by name before anything
//! is loaded. Checkpoints written before manifests existed open unchecked.

use std::path::{Path, PathBuf};

use calmflow_data::write_atomically;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::log::LogWindow;

/// The layout version written into `state.json`. Format 2 (2026-12-07): the model's head
/// is stored as one variant of an enum (`OutputHead`), the `flow` head as a learned
/// Gaussian with an adaptive-layer-norm velocity network, and models may carry
/// `context_noise`. Format 1 stored four optional heads and the earlier `flow` head.
pub const CHECKPOINT_FORMAT: u32 = 2;

/// What changed in each format this build no longer reads, for the refusal message.
fn format_history(format: u32) -> &'static str {
    match format {
        1 => {
            "format 1 (calmflow before 2026-12-07) stored the head as four optional heads \
             and an earlier flow head, which this build's models cannot hold"
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
    /// The losses summed since the last log line (empty in checkpoints written before
    /// it was kept).
    #[serde(default)]
    pub log_window: LogWindow,
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
        if !state.log_window.is_consistent_with(state.step) {
            return Err(error(
                &dir.join("state.json"),
                format!(
                    "is damaged: its log window ({} steps, losses summing to {}) cannot \
                     belong to a checkpoint at step {}",
                    state.log_window.steps, state.log_window.loss, state.step
                ),
            ));
        }
        for file in ["model.mpk", "optimizer.mpk"] {
            if !dir.join(file).is_file() {
                return Err(error(&dir, format!("{file} is missing")));
            }
        }
        let manifest = dir.join(MANIFEST);
        if manifest.is_file() {
            read_json::<Manifest>(&manifest)?.check(&dir)?;
        }
        let config = read_json(&dir.join("config.json"))?;
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

    /// Replaces `config.json` with `config` (to record what was learnt after training,
    /// such as the chosen sampling temperature), atomically, and its entry in the
    /// manifest after it (the other files, checked when the checkpoint was opened, are
    /// not read again). A checkpoint from before manifests stays without one.
    pub fn rewrite_config(&mut self, config: serde_json::Value) -> Result<()> {
        let text = pretty(&config);
        write_atomically(&self.dir.join("config.json"), |w| {
            w.write_all(text.as_bytes())
        })?;
        let path = self.dir.join(MANIFEST);
        if path.is_file() {
            let mut manifest: Manifest = read_json(&path)?;
            let (bytes, sha256) = sha256_of(&mut text.as_bytes(), &self.dir.join("config.json"))?;
            manifest
                .files
                .insert("config.json".into(), FileRecord { bytes, sha256 });
            let manifest = pretty(&manifest);
            write_atomically(&path, |w| w.write_all(manifest.as_bytes()))?;
        }
        self.config = config;
        Ok(())
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
        let manifest = Manifest::of(&staging)?;
        std::fs::write(staging.join(MANIFEST), pretty(&manifest)).map_err(|e| io(&staging, e))?;
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

/// The manifest's file name in a step directory.
const MANIFEST: &str = "manifest.json";

/// One file of a checkpoint as it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileRecord {
    /// Length in bytes.
    bytes: u64,
    /// SHA-256, lower-case hex.
    sha256: String,
}

/// The files of a step directory, by name, as they were written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    files: std::collections::BTreeMap<String, FileRecord>,
}

/// Length and SHA-256 (lower-case hex) of what `reader` holds; `path` names it in errors.
fn sha256_of(reader: &mut impl std::io::Read, path: &Path) -> Result<(u64, String)> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let bytes = std::io::copy(reader, &mut hasher).map_err(|e| error(path, e.to_string()))?;
    let digest = hasher.finalize();
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((bytes, hex))
}

/// [`sha256_of`] the file at `path`.
fn file_sha256(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| error(path, e.to_string()))?;
    sha256_of(&mut file, path)
}

impl Manifest {
    /// The manifest of every file in `dir` (the manifest itself excluded).
    fn of(dir: &Path) -> Result<Self> {
        let mut files = std::collections::BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| error(dir, e.to_string()))?;
        for entry in entries {
            let path = entry.map_err(|e| error(dir, e.to_string()))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name == MANIFEST || !path.is_file() {
                continue;
            }
            let (bytes, sha256) = file_sha256(&path)?;
            files.insert(name.to_string(), FileRecord { bytes, sha256 });
        }
        Ok(Self { files })
    }

    /// Checks every file the manifest lists against `dir`.
    fn check(&self, dir: &Path) -> Result<()> {
        for (name, want) in &self.files {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(error(
                    dir,
                    format!("{name} is missing (the checkpoint's manifest lists it)"),
                ));
            }
            let (bytes, sha256) = file_sha256(&path)?;
            if bytes != want.bytes {
                return Err(error(
                    dir,
                    format!(
                        "{name} has {bytes} bytes where the checkpoint's manifest records {}: \
                         it was cut (an interrupted copy?) or replaced after the checkpoint \
                         was written; use another checkpoint or restore the file \
                         (or delete manifest.json to open it unchecked)",
                        want.bytes
                    ),
                ));
            }
            if sha256 != want.sha256 {
                return Err(error(
                    dir,
                    format!(
                        "{name} does not match the SHA-256 the checkpoint's manifest records \
                         ({sha256} against {}): it was damaged or replaced after the \
                         checkpoint was written; use another checkpoint or restore the file \
                         (or delete manifest.json to open it unchecked)",
                        want.sha256
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Removes all but the newest `keep` (≥ 1) step directories, and the staging directories
/// that other processes left behind (a run killed while writing a checkpoint; one root
/// has one writer at a time); failures are ignored (an extra old checkpoint is harmless).
fn prune(root: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let ours = format!(".partial-{}", std::process::id());
    let entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    for stale in entries.iter().filter(|p| {
        p.is_dir()
            && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(".step-") && n.contains(".partial-") && !n.ends_with(&ours)
            })
    }) {
        let _ = std::fs::remove_dir_all(stale);
    }
    let mut steps: Vec<PathBuf> = entries
        .into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> TrainState {
        TrainState {
            format: CHECKPOINT_FORMAT,
            kind: "calmflow".into(),
            step,
            seed: 1,
            elapsed_seconds: 0.5,
            log_window: LogWindow::default(),
        }
    }

    /// A checkpoint with stand-in weight files.
    fn written(root: &Path) -> PathBuf {
        write_checkpoint(
            root,
            &state(3),
            &serde_json::json!({"kind": "calmflow"}),
            2,
            |d| {
                std::fs::write(d.join("model.mpk"), b"weights of the model").unwrap();
                std::fs::write(d.join("optimizer.mpk"), vec![7u8; 1000]).unwrap();
                Ok(())
            },
        )
        .unwrap()
    }

    #[test]
    fn the_manifest_records_every_file_with_its_length_and_sha256() {
        let root = tempfile::tempdir().unwrap();
        let dir = written(root.path());
        let manifest: Manifest = read_json(&dir.join(MANIFEST)).unwrap();
        let names: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["config.json", "model.mpk", "optimizer.mpk", "state.json"]
        );
        // SHA-256 of "weights of the model", as `sha256sum` prints it.
        assert_eq!(
            manifest.files["model.mpk"],
            FileRecord {
                bytes: 20,
                sha256: "ffef5ec7c636aae5274e3fa2b2f288981d9e10971df9198fe1d005d7397aec4e".into()
            }
        );
        assert_eq!(manifest.files["optimizer.mpk"].bytes, 1000);
        assert_eq!(Checkpoint::open(root.path()).unwrap().state, state(3));
    }

    #[test]
    fn staging_directories_left_by_killed_runs_are_removed_at_the_next_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join(".step-00000002.partial-4294967295");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("model.mpk"), b"half").unwrap();
        written(root.path());
        let left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(left, ["latest", "step-00000003"]);
    }

    #[test]
    fn a_cut_damaged_or_missing_file_is_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        let dir = written(root.path());
        let open_error = || Checkpoint::open(root.path()).unwrap_err().to_string();
        let optimizer = std::fs::read(dir.join("optimizer.mpk")).unwrap();
        std::fs::write(dir.join("optimizer.mpk"), &optimizer[..600]).unwrap();
        let e = open_error();
        assert!(
            e.contains("optimizer.mpk has 600 bytes where the checkpoint's manifest records 1000"),
            "{e}"
        );
        let mut damaged = optimizer.clone();
        damaged[10] ^= 1;
        std::fs::write(dir.join("optimizer.mpk"), &damaged).unwrap();
        let e = open_error();
        assert!(
            e.contains(
                "optimizer.mpk does not match the SHA-256 the checkpoint's manifest records"
            ),
            "{e}"
        );
        std::fs::write(dir.join("optimizer.mpk"), &optimizer).unwrap();
        Checkpoint::open(root.path()).unwrap();
        // state.json is listed too: a file from another checkpoint does not belong.
        std::fs::write(dir.join("state.json"), pretty(&state(4))).unwrap();
        let e = open_error();
        assert!(e.contains("state.json does not match the SHA-256"), "{e}");
        std::fs::write(dir.join("state.json"), pretty(&state(3))).unwrap();
        // A rewritten configuration is listed anew.
        let mut checkpoint = Checkpoint::open(root.path()).unwrap();
        checkpoint
            .rewrite_config(serde_json::json!({"kind": "calmflow", "extra": {"temperature": 0.7}}))
            .unwrap();
        let reopened = Checkpoint::open(root.path()).unwrap();
        assert_eq!(reopened.config["extra"]["temperature"], 0.7);
        std::fs::write(dir.join(MANIFEST), "{\"files\": 3}").unwrap();
        let e = open_error();
        assert!(
            e.contains("manifest.json") && e.contains("unreadable"),
            "{e}"
        );
        // Checkpoints from before manifests open unchecked.
        std::fs::remove_file(dir.join(MANIFEST)).unwrap();
        assert_eq!(Checkpoint::open(root.path()).unwrap().state, state(3));
    }
}
