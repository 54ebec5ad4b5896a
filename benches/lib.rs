//! Shared inputs of the calmflow criterion benchmarks (run them with `cargo xtask bench`,
//! which also writes `docs/benchmarks.md`).

use calmflow_data::{Sampler, StandardNormal, seeded_rng};
use ndarray::Array2;

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
    let tmp = path.with_extension("tmp");
    let text = serde_json::Value::Object(all).to_string();
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}
