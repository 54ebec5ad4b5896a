//! Mutation fuzzing of every parser that reads a user's file: `.npy`, `.npz`, CSV,
//! `.h5ad`, GPT-NeoX safetensors and `config.json`, Hugging Face `tokenizer.json`, the run
//! configuration's TOML and model checkpoints (weights, optimizer state, `state.json`,
//! `config.json`, `manifest.json`).
//!
//! No coverage-guided fuzzer builds on this project's stable toolchain (cargo-fuzz needs
//! nightly, afl.rs a compiler plugin toolchain), so inputs come from seeded, stacked
//! mutations of valid files written by the project's own writers or committed fixtures
//! ([`seeds`], [`mutate`]): bit flips, random bytes, zeroed blocks, truncation,
//! insertions, duplicated chunks, and little-endian integers overwritten with boundary
//! values (the sizes and offsets in headers). Input `i` of a target is a pure function of
//! `(target, i)` ([`input`]), so a crash is reproduced from its index alone.
//!
//! What counts as a finding: a panic, an abort (an allocation refused by the fuzzer's
//! allocation cap included), or a hang. A typed error is the expected answer to a damaged
//! file. `cargo xtask fuzz` runs every target for a fixed budget; every input that ever
//! failed is kept under `fuzz/regressions/<target>/` and replayed by this crate's tests.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use calmflow::backend::Cpu;
use calmflow::model::{CalmFlowConfig, CalmFlowModel};
use rand::{Rng as _, RngCore, SeedableRng};

mod resume;
mod seeds;

/// A parser of user files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `calmflow::data::npy::parse_npy`.
    Npy,
    /// `calmflow::data::npy::read_npz`.
    Npz,
    /// `calmflow::data::csv::parse_csv` (automatic delimiter and header).
    Csv,
    /// `calmflow::data::h5ad::read_h5ad` (dense, CSR, CSC; gzip and LZF chunks).
    H5ad,
    /// `CalmFlowModel::load_neox` (a GPT-NeoX safetensors file).
    Safetensors,
    /// `NeoxConfig::read` (a GPT-NeoX `config.json`).
    NeoxConfig,
    /// `HfTokenizer::from_json` (a Hugging Face `tokenizer.json`).
    Tokenizer,
    /// `RunConfig::parse` (the run configuration's TOML).
    Config,
    /// `CalmFlowModel::load_weights` (a checkpoint's `model.mpk`).
    Checkpoint,
    /// `Checkpoint::open` on a checkpoint whose `state.json` is the input.
    CheckpointState,
    /// `Checkpoint::open` and the model, flow settings and run record that `calmflow
    /// sample` reads from `config.json`, the input.
    CheckpointConfig,
    /// `Checkpoint::open` checking the other files against `manifest.json`, the input.
    CheckpointManifest,
    /// `--resume` from a checkpoint whose `optimizer.mpk` is the input, and a step with it.
    Optimizer,
}

impl Target {
    /// Every target, in the order `cargo xtask fuzz` runs them.
    pub const ALL: [Target; 13] = [
        Target::Npy,
        Target::Npz,
        Target::Csv,
        Target::H5ad,
        Target::Safetensors,
        Target::NeoxConfig,
        Target::Tokenizer,
        Target::Config,
        Target::Checkpoint,
        Target::CheckpointState,
        Target::CheckpointConfig,
        Target::CheckpointManifest,
        Target::Optimizer,
    ];

    /// The target's name (its folder under `fuzz/regressions/`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Npy => "npy",
            Target::Npz => "npz",
            Target::Csv => "csv",
            Target::H5ad => "h5ad",
            Target::Safetensors => "safetensors",
            Target::NeoxConfig => "neox-config",
            Target::Tokenizer => "tokenizer",
            Target::Config => "config",
            Target::Checkpoint => "checkpoint",
            Target::CheckpointState => "checkpoint-state",
            Target::CheckpointConfig => "checkpoint-config",
            Target::CheckpointManifest => "checkpoint-manifest",
            Target::Optimizer => "optimizer",
        }
    }

    /// The target called `name`.
    pub fn by_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the input is text (mutations then also edit its tokens).
    fn is_text(self) -> bool {
        matches!(
            self,
            Target::Csv
                | Target::NeoxConfig
                | Target::Tokenizer
                | Target::Config
                | Target::CheckpointState
                | Target::CheckpointConfig
                | Target::CheckpointManifest
        )
    }
}

/// What a parser made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The input was read.
    Read,
    /// The parser returned a typed error (the message).
    Refused(String),
    /// The parser panicked (the panic's message).
    Panicked(String),
}

/// The state a target's inputs run against: a scratch folder for parsers that read
/// paths (with a tiny run's checkpoint for each checkpoint target), and the tiny model
/// that weights load into.
pub struct Harness {
    scratch: tempfile::TempDir,
    model: CalmFlowModel<Cpu>,
}

/// The tiny model whose weights and GPT-NeoX export seed the checkpoint and safetensors
/// targets.
fn tiny_config() -> CalmFlowConfig {
    CalmFlowConfig::new(2)
        .with_hidden(8)
        .with_layers(1)
        .with_heads(2)
        .with_vocab_size(12)
}

impl Harness {
    /// A harness with a fresh scratch folder.
    pub fn new() -> std::io::Result<Self> {
        let model = tiny_config()
            .init::<Cpu>(&Default::default())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let scratch = tempfile::tempdir()?;
        resume::prepare(scratch.path()).map_err(std::io::Error::other)?;
        Ok(Self { scratch, model })
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.scratch.path().join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            panic!(
                "the fuzzer cannot write its scratch file {}: {e}",
                path.display()
            );
        }
        path
    }

    /// Runs `target`'s parser on `bytes`, catching a panic.
    pub fn run(&self, target: Target, bytes: &[u8]) -> Outcome {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.parse(target, bytes)));
        match result {
            Ok(Ok(())) => Outcome::Read,
            Ok(Err(message)) => Outcome::Refused(message),
            Err(payload) => Outcome::Panicked(
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into()),
            ),
        }
    }

    fn parse(&self, target: Target, bytes: &[u8]) -> Result<(), String> {
        let text = || String::from_utf8_lossy(bytes).into_owned();
        let device = Default::default();
        match target {
            Target::Npy => calmflow::data::npy::parse_npy(bytes, Path::new("fuzz.npy"))
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::Npz => calmflow::data::npy::read_npz(self.file("fuzz.npz", bytes))
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::Csv => calmflow::data::csv::parse_csv(
                bytes,
                "fuzz.csv",
                &calmflow::data::csv::CsvOptions::default(),
            )
            .map(drop)
            .map_err(|e| e.to_string()),
            Target::H5ad => calmflow::data::h5ad::read_h5ad(self.file("fuzz.h5ad", bytes))
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::Safetensors => self
                .model
                .clone()
                .load_neox(&self.file("model.safetensors", bytes), &device)
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::NeoxConfig => {
                calmflow::model::neox::NeoxConfig::read(&self.file("config.json", bytes))
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Target::Tokenizer => calmflow::tokenize::HfTokenizer::from_json(&text(), "fuzz")
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::Config => calmflow::run::config::RunConfig::parse(&text(), "fuzz.toml")
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::Checkpoint => self
                .model
                .clone()
                .load_weights(&self.file("model.mpk", bytes), &device)
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::CheckpointState
            | Target::CheckpointConfig
            | Target::CheckpointManifest
            | Target::Optimizer => {
                resume::parse(self.scratch.path(), &tiny_config(), target, bytes)
            }
        }
    }
}

/// The valid files `target`'s inputs are mutated from, named.
pub fn seeds(target: Target) -> Vec<(String, Vec<u8>)> {
    seeds::seeds(target, &tiny_config())
}

/// Boundary values written over header integers.
const BOUNDARIES: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    1 << 40,
];

/// Tokens a text mutation puts in place of another.
const TEXT_TOKENS: [&str; 14] = [
    "-1",
    "0",
    "1e308",
    "nan",
    "inf",
    "18446744073709551616",
    "\"",
    "[",
    "{",
    "}",
    "\n",
    ",",
    "=",
    "\u{0}",
];

/// One to four stacked mutations of `bytes`, drawn from `rng`.
pub fn mutate(bytes: &[u8], text: bool, rng: &mut impl RngCore) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..if text { 9 } else { 7 }) {
            0 if len > 0 => {
                for _ in 0..rng.random_range(1..=8) {
                    let i = rng.random_range(0..len);
                    out[i] ^= 1 << rng.random_range(0..8);
                }
            }
            1 if len > 0 => {
                let start = rng.random_range(0..len);
                let n = rng.random_range(1..=64).min(len - start);
                rng.fill_bytes(&mut out[start..start + n]);
            }
            2 if len > 0 => {
                let start = rng.random_range(0..len);
                let n = rng.random_range(1..=4096).min(len - start);
                out[start..start + n].fill(0);
            }
            3 => out.truncate(rng.random_range(0..=len)),
            4 => {
                let at = rng.random_range(0..=len);
                let mut extra = vec![0u8; rng.random_range(1..=32)];
                rng.fill_bytes(&mut extra);
                out.splice(at..at, extra);
            }
            5 if len > 0 => {
                let start = rng.random_range(0..len);
                let n = rng.random_range(1..=256).min(len - start);
                let chunk = out[start..start + n].to_vec();
                let at = rng.random_range(0..=len);
                out.splice(at..at, chunk);
            }
            6 if len >= 8 => {
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
                let at = rng.random_range(0..=len - width);
                let value = BOUNDARIES[rng.random_range(0..BOUNDARIES.len())]
                    .wrapping_add_signed(rng.random_range(-1..=1));
                out[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
            7 if len > 0 => {
                // Replace a run of digits or letters by a token.
                let at = rng.random_range(0..len);
                let end = (at..len)
                    .find(|&j| !out[j].is_ascii_alphanumeric())
                    .unwrap_or(len)
                    .max(at + 1);
                let token = TEXT_TOKENS[rng.random_range(0..TEXT_TOKENS.len())];
                out.splice(at..end, token.bytes());
            }
            8 if len > 0 => {
                // Delete or duplicate a line.
                let lines: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
                let k = rng.random_range(0..lines.len());
                let mut edited: Vec<u8> = Vec::with_capacity(len * 2);
                for (j, line) in lines.iter().enumerate() {
                    if j != k || rng.random_bool(0.5) {
                        edited.extend_from_slice(line);
                    }
                    if j == k {
                        edited.extend_from_slice(line);
                    }
                }
                out = edited;
            }
            _ => {}
        }
    }
    out
}

/// Input `i` of `target`: its seed `i mod seeds`, mutated by a generator seeded from
/// `(target, i)` (the seed itself is input `i` for `i < seeds`).
pub fn input(target: Target, seeds: &[(String, Vec<u8>)], i: u64) -> Vec<u8> {
    let (_, seed) = &seeds[(i % seeds.len() as u64) as usize];
    if i < seeds.len() as u64 {
        return seed.clone();
    }
    let salt = target
        .name()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let mut rng = rand::rngs::StdRng::seed_from_u64(salt ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    mutate(seed, target.is_text(), &mut rng)
}

/// The folder of `target`'s regression inputs in this repository.
pub fn regressions_dir(target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target.name())
}
