//! Shared inputs of the calmflow criterion benchmarks (run them with `cargo xtask bench`,
//! which also writes `docs/benchmarks.md`).

use std::io::Write;
use std::path::{Path, PathBuf};

use calmflow::data::{Sampler, StandardNormal, seeded_rng, write_atomically};
use ndarray::Array2;
use serde_json::{Map, Value, json};

/// `n` seeded standard-normal points in dimension `d`, shifted by `shift` in every
/// coordinate.
pub fn normal_points(n: usize, d: usize, shift: f32, seed: u64) -> Array2<f32> {
    StandardNormal { dim: d }.sample(n, &mut seeded_rng(seed)) + shift
}

/// Floating-point operations of one CaLMFlow training step (forward + backward ≈ 3 ×
/// forward) on `batch` sequences of `tokens` tokens, counting the transformer's matrix
/// products only: per block, the QKV, output and two MLP projections
/// (`2·(4H² + 2·r·H²)` per token) and the two attention products (`4·T²·H` per
/// sequence; the causal mask does not skip work).
pub fn transformer_train_flops(
    hidden: usize,
    layers: usize,
    mlp_ratio: usize,
    tokens: usize,
    batch: usize,
) -> f64 {
    let (h, l, t, b, r) = (
        hidden as f64,
        layers as f64,
        tokens as f64,
        batch as f64,
        mlp_ratio as f64,
    );
    let projections = 2.0 * (4.0 * h * h + 2.0 * r * h * h) * t * b;
    let attention = 4.0 * t * t * h * b;
    3.0 * l * (projections + attention)
}

/// Records the work one iteration of benchmark `id` does (tokens processed and
/// floating-point operations), for `cargo xtask bench` to turn medians into tokens/s and
/// GFLOP/s. Written to `calmflow-work.json` in criterion's output folder:
/// `$CRITERION_HOME` when set (the GPU check sets it), else `target/criterion`.
pub fn record_work(id: &str, tokens: f64, flops: f64) {
    let dir = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
        });
    let path = dir.join("calmflow-work.json");
    let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    all.insert(
        id.to_string(),
        serde_json::json!({ "tokens": tokens, "flops": flops }),
    );
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let text = serde_json::Value::Object(all).to_string();
    let _ = write_atomically(&path, |w| w.write_all(text.as_bytes()));
}

/// One finished stage of a long run: its markdown, its JSON result and its seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The stage's part of the report.
    pub markdown: String,
    /// The stage's results.
    pub result: Value,
    /// Wall time of the run that computed it.
    pub seconds: f64,
}

/// The finished stages of a long run (the quality suite: one table each), saved to a file
/// after every stage, so that a stopped run resumes at its first unfinished stage when it
/// is started again with the same budget.
#[derive(Debug)]
pub struct StageProgress {
    path: PathBuf,
    budget: Value,
    done: Map<String, Value>,
    /// How many stages were loaded from the file.
    pub resumed: usize,
}

impl StageProgress {
    /// The stages that `path` holds for this `budget` (none when it was written with
    /// another budget or cannot be read; `fresh` removes the file).
    pub fn load(path: PathBuf, budget: Value, fresh: bool) -> Self {
        if fresh {
            let _ = std::fs::remove_file(&path);
        }
        let done = saved_stages(&path, &budget);
        let resumed = done.len();
        Self {
            path,
            budget,
            done,
            resumed,
        }
    }

    /// Takes in the stages that another run sharing the file has saved since.
    fn merge_saved(&mut self) {
        for (name, stage) in saved_stages(&self.path, &self.budget) {
            self.done.entry(name).or_insert(stage);
        }
    }

    /// Whether stage `name` was saved by an earlier run.
    pub fn is_done(&self, name: &str) -> bool {
        self.done.contains_key(name)
    }

    /// Stage `name`: the saved one, or what `run` returns (markdown, result), which is
    /// then saved. An error saving is reported and the run goes on.
    ///
    /// Runs that share the file (`--only` runs in parallel) reuse each other's stages.
    pub fn stage(&mut self, name: &str, run: impl FnOnce() -> (String, Value)) -> Stage {
        self.merge_saved();
        if let Some(s) = self.done.get(name)
            && let (Some(markdown), Some(seconds)) = (s["markdown"].as_str(), s["seconds"].as_f64())
        {
            return Stage {
                markdown: markdown.to_string(),
                result: s["result"].clone(),
                seconds,
            };
        }
        let started = std::time::Instant::now();
        let (markdown, result) = run();
        let seconds = started.elapsed().as_secs_f64();
        self.merge_saved();
        self.done.insert(
            name.to_string(),
            json!({ "markdown": markdown, "result": result, "seconds": seconds }),
        );
        let text = json!({ "budget": self.budget, "stages": self.done }).to_string();
        if let Err(e) = write_atomically(&self.path, |w| w.write_all(text.as_bytes())) {
            eprintln!("progress not saved to {}: {e}", self.path.display());
        }
        Stage {
            markdown,
            result,
            seconds,
        }
    }

    /// Removes the file: the run is complete, and a later one starts over.
    pub fn finish(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The stages saved in `path` for `budget`.
fn saved_stages(path: &Path, budget: &Value) -> Map<String, Value> {
    let saved: Option<Value> = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    match saved {
        Some(v) if v["budget"] == *budget => v["stages"].as_object().cloned().unwrap_or_default(),
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A progress file in a fresh temporary folder (removed when the guard drops).
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("progress.json");
        (dir, path)
    }

    #[test]
    fn a_stopped_run_resumes_with_its_finished_stages_only() {
        let (_dir, path) = scratch();
        let budget = json!({ "steps": 800 });
        let mut first = StageProgress::load(path.clone(), budget.clone(), false);
        assert_eq!(first.resumed, 0);
        let a = first.stage("a", || ("table a".into(), json!([1, 2])));
        assert_eq!(a.markdown, "table a");
        drop(first); // stopped before stage b

        let mut second = StageProgress::load(path.clone(), budget.clone(), false);
        assert_eq!(second.resumed, 1);
        assert!(second.is_done("a") && !second.is_done("b"));
        let mut calls = 0;
        let again = second.stage("a", || {
            calls += 1;
            ("recomputed".into(), json!(null))
        });
        assert_eq!(calls, 0);
        assert_eq!(again, a);
        let b = second.stage("b", || ("table b".into(), json!({ "w2": 0.5 })));
        assert_eq!(b.result["w2"], 0.5);
        second.finish();
        assert!(!path.exists());
    }

    #[test]
    fn runs_sharing_the_file_keep_each_others_stages() {
        let (_dir, path) = scratch();
        let budget = json!({ "steps": 800 });
        let mut one = StageProgress::load(path.clone(), budget.clone(), false);
        let mut two = StageProgress::load(path.clone(), budget.clone(), false);
        one.stage("a", || ("from one".into(), json!(1)));
        two.stage("b", || ("from two".into(), json!(2)));
        // `one` sees `b` without running it.
        let b = one.stage("b", || panic!("stage b was saved by the other run"));
        assert_eq!(b.markdown, "from two");
        let three = StageProgress::load(path.clone(), budget, false);
        assert!(three.is_done("a") && three.is_done("b"));
    }

    #[test]
    fn another_budget_or_fresh_starts_over() {
        let (_dir, path) = scratch();
        let mut run = StageProgress::load(path.clone(), json!({ "steps": 300 }), false);
        run.stage("a", || ("300 steps".into(), json!(1)));
        let load = |steps: u32, fresh: bool| {
            StageProgress::load(path.clone(), json!({ "steps": steps }), fresh).resumed
        };
        assert_eq!(load(800, false), 0);
        assert_eq!(load(300, false), 1);
        assert_eq!(load(300, true), 0);
        assert_eq!(load(300, false), 0, "--fresh removes the saved stages");
        std::fs::write(&path, "{ not json").expect("write");
        assert_eq!(load(300, false), 0);
    }
}
