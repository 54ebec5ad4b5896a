//! The targets that read a whole checkpoint: a tiny run's step-1 checkpoint, one of whose
//! files an input replaces. `state.json` and `config.json` are read through
//! `Checkpoint::open` and what `calmflow sample` takes from them; `manifest.json` is
//! checked against the other (valid) files; `optimizer.mpk` is loaded by `--resume`,
//! which then takes a step with it. Except for the manifest's own target, the checkpoint
//! has no manifest (as one written before manifests), so that the damaged file reaches
//! its parser rather than the manifest's hash check.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::backend::Backend as _;
use calmflow::backend::CpuAutodiff;
use calmflow::model::{CalmFlowConfig, CalmFlowModel};
use calmflow::run::jobs::RunExtra;
use calmflow::train::{
    CalmFlowSettings, Checkpoint, FlowData, PointSource, Silent, TrainConfig, Trainer,
};
use ndarray::Array2;

use crate::Target;

/// The tiny run's configuration: steps, batch, the model and its flow settings.
fn trainer(
    config: &CalmFlowConfig,
) -> Result<Trainer<CpuAutodiff, CalmFlowModel<CpuAutodiff>>, String> {
    let device = Default::default();
    // The same weights in every process: the seeds' checkpoint and the harness's match.
    CpuAutodiff::seed(&device, 7);
    let model = config
        .init::<CpuAutodiff>(&device)
        .map_err(|e| e.to_string())?;
    let points = |shift: f32| {
        Array2::from_shape_fn((40, config.dim), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f32 * 0.1 + shift
        })
    };
    let source = PointSource::points(points(0.0), "source").map_err(|e| e.to_string())?;
    let target = PointSource::points(points(1.0), "target").map_err(|e| e.to_string())?;
    let data = FlowData::new(source, target, 0.2, 8, 0).map_err(|e| e.to_string())?;
    let settings = CalmFlowSettings {
        n_times: 3,
        ..CalmFlowSettings::default()
    };
    let train = TrainConfig {
        steps: 2,
        batch_size: 4,
        log_every: 1,
        validate_every: 0,
        ..TrainConfig::default()
    };
    let model_config = serde_json::to_value(config).map_err(|e| e.to_string())?;
    Trainer::new(model, model_config, settings, train, data, device).map_err(|e| e.to_string())
}

/// A file's name and bytes.
type NamedFile = (String, Vec<u8>);

/// The files of the tiny run's step-1 checkpoint (name, bytes), written once per
/// process: the seeds and the harness's checkpoints are then the same files, even where
/// tests on other threads draw from the backend's process-wide random stream meanwhile.
fn reference() -> Result<&'static [NamedFile], String> {
    static FILES: OnceLock<Result<Vec<NamedFile>, String>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let root = tempfile::tempdir().map_err(|e| e.to_string())?;
            let dir = write_reference(root.path(), &crate::tiny_config())?;
            [
                "state.json",
                "config.json",
                "model.mpk",
                "optimizer.mpk",
                "manifest.json",
            ]
            .into_iter()
            .map(|name| {
                std::fs::read(dir.join(name))
                    .map(|bytes| (name.to_string(), bytes))
                    .map_err(|e| format!("{name}: {e}"))
            })
            .collect()
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// Trains the tiny run for one step with checkpoints under `root`; its step directory.
fn write_reference(root: &Path, config: &CalmFlowConfig) -> Result<PathBuf, String> {
    let extra = RunExtra {
        data: calmflow::run::config::DataSection::default(),
        base: PathBuf::from("."),
        temperature: Some(0.5),
        standardization: None,
        cells: None,
    };
    let extra = serde_json::to_value(&extra).map_err(|e| e.to_string())?;
    let mut trainer = trainer(config)?.with_checkpoints(root, extra);
    let summary = trainer
        .run_until(1, &mut Silent)
        .map_err(|e| e.to_string())?;
    summary
        .checkpoint
        .ok_or_else(|| "the tiny run wrote no checkpoint".to_string())
}

/// The file of the checkpoint that `target`'s inputs replace.
pub(crate) fn file_of(target: Target) -> Option<&'static str> {
    match target {
        Target::CheckpointState => Some("state.json"),
        Target::CheckpointConfig => Some("config.json"),
        Target::CheckpointManifest => Some("manifest.json"),
        Target::Optimizer => Some("optimizer.mpk"),
        _ => None,
    }
}

/// A copy of the reference checkpoint for each target, under `scratch`.
pub(crate) fn prepare(scratch: &Path) -> Result<(), String> {
    let files = reference()?;
    for target in Target::ALL {
        let Some(file) = file_of(target) else {
            continue;
        };
        let dir = scratch.join(target.name());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (name, bytes) in files {
            if name == "manifest.json" && file != "manifest.json" {
                continue;
            }
            std::fs::write(dir.join(name), bytes).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Replaces `target`'s file with `bytes` and reads the checkpoint as the program would.
pub(crate) fn parse(
    scratch: &Path,
    config: &CalmFlowConfig,
    target: Target,
    bytes: &[u8],
) -> Result<(), String> {
    let file = file_of(target).ok_or_else(|| format!("{} reads no checkpoint", target.name()))?;
    let dir = scratch.join(target.name());
    std::fs::write(dir.join(file), bytes).map_err(|e| e.to_string())?;
    let checkpoint = Checkpoint::open(&dir).map_err(|e| e.to_string())?;
    match target {
        Target::CheckpointConfig => {
            checkpoint
                .expect_kind("calmflow")
                .map_err(|e| e.to_string())?;
            let model: CalmFlowConfig = checkpoint
                .config_field("model")
                .map_err(|e| e.to_string())?;
            model.validate().map_err(|e| e.to_string())?;
            checkpoint
                .config_field::<CalmFlowSettings>("settings")
                .map_err(|e| e.to_string())?;
            checkpoint
                .config_field::<RunExtra>("extra")
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        Target::Optimizer => {
            let mut trainer = trainer(config)?
                .resume_from(&checkpoint)
                .map_err(|e| e.to_string())?;
            trainer
                .run(&mut Silent)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// The reference checkpoint's file that `target`'s inputs are mutated from.
pub(crate) fn seed(target: Target) -> Result<Vec<u8>, String> {
    let file = file_of(target).ok_or_else(|| format!("{} reads no checkpoint", target.name()))?;
    reference()?
        .iter()
        .find(|(name, _)| name == file)
        .map(|(_, bytes)| bytes.clone())
        .ok_or_else(|| format!("the tiny run's checkpoint has no {file}"))
}
