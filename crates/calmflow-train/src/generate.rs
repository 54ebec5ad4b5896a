//! Generation (docs/method.md §7): source points are grouped `P` to a sequence and rolled out over
//! `N` time points, each step decoding the last `P` slots at temperature `τ`.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use calmflow_metrics::{energy_distance, mmd2_unbiased_median, w2_exact};
use calmflow_model::{CalmFlowModel, Prompt};
use ndarray::{Array2, Array3, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid, shape_error};

/// Settings of a roll-out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationOptions {
    /// Time points `N` (as in training).
    pub n_times: usize,
    /// Trajectories per sequence `P` (as in training).
    pub n_traj: usize,
    /// Temperature `τ` of the latent noise (the paper: best ≈ 0.2 on 8-Gaussians → moons).
    pub temperature: f64,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Decode with the key/value cache (the result equals re-encoding, up to rounding).
    pub use_cache: bool,
    /// Seed of the latent noise.
    pub seed: u64,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            n_times: 16,
            n_traj: 1,
            temperature: 0.2,
            batch_size: 500,
            use_cache: true,
            seed: 0,
        }
    }
}

/// Generated points.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The `t = 1` states `(n, D)`, in the order of the source points.
    pub samples: Array2<f32>,
    /// Whole trajectories `(n, N, D)`, when requested.
    pub trajectories: Option<Array3<f32>>,
}

/// Rolls out `model` from the source points `x0` `(n, D)`. When `n` is not a multiple of
/// `P`, the last sequence is completed with copies of its first points, whose outputs are
/// dropped. `prompt`, if any, is a single prompt `(1, L_p, H)` shared by every sequence.
pub fn generate<B: Backend>(
    model: &CalmFlowModel<B>,
    x0: &Array2<f32>,
    options: &GenerationOptions,
    prompt: Option<&Prompt<B>>,
    keep_trajectories: bool,
    device: &B::Device,
) -> Result<Generated> {
    let (n, d) = x0.dim();
    if n == 0 || d != model.dim() {
        return Err(shape_error(
            "source points",
            format!("(n ≥ 1, {})", model.dim()),
            x0.dim(),
        ));
    }
    calmflow_data::ensure_finite(x0.view(), "source points")?;
    if options.n_times < 2 || options.n_traj == 0 || options.batch_size == 0 {
        return Err(invalid(format!(
            "generation needs n_times ≥ 2, n_traj ≥ 1 and batch_size ≥ 1 (got {}, {}, {})",
            options.n_times, options.n_traj, options.batch_size
        )));
    }
    if !(options.temperature >= 0.0 && options.temperature.is_finite()) {
        return Err(invalid(format!(
            "temperature = {} must be finite and ≥ 0",
            options.temperature
        )));
    }
    let (p, nt) = (options.n_traj, options.n_times);
    let sequences = n.div_ceil(p);
    B::seed(device, options.seed);
    let mut samples = Array2::<f32>::zeros((n, d));
    let mut trajectories = keep_trajectories.then(|| Array3::<f32>::zeros((n, nt, d)));
    let mut seq = 0;
    while seq < sequences {
        let count = options.batch_size.min(sequences - seq);
        // Rows of this chunk: sequences seq..seq+count, P points each, padded past n.
        let first = seq * p;
        let rows: Vec<usize> = (0..count * p)
            .map(|k| {
                let r = first + k;
                if r < n {
                    r
                } else {
                    first + (r - n) % (n - first)
                }
            })
            .collect();
        let chunk = x0.select(Axis(0), &rows);
        let start = Tensor::<B, 3>::from_data(
            TensorData::new(chunk.iter().copied().collect::<Vec<_>>(), [count, p, d]),
            device,
        );
        let shared;
        let prompt = match prompt {
            Some(pr) if count > 1 && pr.embeddings.dims()[0] == 1 => {
                let [_, l, h] = pr.embeddings.dims();
                shared = Prompt {
                    embeddings: pr.embeddings.clone().expand([count, l, h]),
                    padding: pr.padding.clone().map(|m| m.expand([count, l])),
                };
                Some(&shared)
            }
            other => other,
        };
        let paths = model.rollout(start, nt, options.temperature, options.use_cache, prompt)?;
        let values = paths
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| invalid(format!("reading samples back: {e:?}")))?;
        // paths: (count, N, P, D).
        for s in 0..count {
            for q in 0..p {
                let row = first + s * p + q;
                if row >= n {
                    continue;
                }
                for i in 0..nt {
                    let offset = ((s * nt + i) * p + q) * d;
                    let point = &values[offset..offset + d];
                    if i == nt - 1 {
                        samples
                            .row_mut(row)
                            .iter_mut()
                            .zip(point)
                            .for_each(|(o, v)| *o = *v);
                    }
                    if let Some(t) = trajectories.as_mut() {
                        for (k, v) in point.iter().enumerate() {
                            t[[row, i, k]] = *v;
                        }
                    }
                }
            }
        }
        seq += count;
    }
    if samples.iter().any(|v| !v.is_finite()) {
        return Err(invalid(
            "the model produced non-finite samples (diverged weights or extreme temperature)",
        ));
    }
    Ok(Generated {
        samples,
        trajectories,
    })
}

/// The temperatures a sweep tries by default: coarse from 0 to 2, fine around 1, where
/// models trained at `τ = 1` are usually best on 2-D data (docs/method.md §7: the best `τ` is
/// data-dependent, so it is chosen on validation data).
pub const TEMPERATURE_GRID: [f64; 13] = [
    0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5, 2.0,
];

/// The score a temperature sweep minimises on validation data.
///
/// Exact W2 rewards shrinkage above two dimensions (a set pulled toward the target's mean
/// can sit below the two-sample noise floor), so the default is the energy distance, which
/// punishes a wrong spread as much as a wrong location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemperatureScore {
    /// Energy distance `2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖`.
    #[default]
    Energy,
    /// Unbiased MMD² with an RBF kernel at the median pairwise distance.
    Mmd,
    /// Exact 2-Wasserstein distance (validation sets whose sizes multiply to at most
    /// [`calmflow_metrics::MAX_EXACT_ENTRIES`]).
    W2,
}

impl TemperatureScore {
    /// The name used in configuration files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Energy => "energy",
            Self::Mmd => "mmd",
            Self::W2 => "w2",
        }
    }

    /// The score of `generated` against `target` (smaller is better).
    pub fn score(self, generated: &Array2<f32>, target: &Array2<f32>) -> Result<f64> {
        Ok(match self {
            Self::Energy => energy_distance(generated.view(), target.view())?,
            Self::Mmd => mmd2_unbiased_median(generated.view(), target.view())?.0,
            Self::W2 => w2_exact(generated.view(), target.view())?,
        })
    }
}

impl std::fmt::Display for TemperatureScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of a temperature sweep on validation data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemperatureSweep {
    /// The score that was minimised.
    pub score: TemperatureScore,
    /// `(τ, score against the validation targets)` for every candidate.
    pub scores: Vec<(f64, f64)>,
    /// The candidate with the smallest score.
    pub best: f64,
}

/// Generates from the validation sources `x0` at every candidate temperature and picks the
/// one whose samples score best against the validation targets `x1` (never the
/// evaluation set).
pub fn choose_temperature<B: Backend>(
    model: &CalmFlowModel<B>,
    x0: &Array2<f32>,
    x1: &Array2<f32>,
    candidates: &[f64],
    options: &GenerationOptions,
    score: TemperatureScore,
    device: &B::Device,
) -> Result<TemperatureSweep> {
    if candidates.is_empty() {
        return Err(invalid(
            "the temperature sweep needs at least one candidate",
        ));
    }
    let mut scores = Vec::with_capacity(candidates.len());
    for &temperature in candidates {
        let generated = generate(
            model,
            x0,
            &GenerationOptions {
                temperature,
                ..*options
            },
            None,
            false,
            device,
        )?;
        scores.push((temperature, score.score(&generated.samples, x1)?));
    }
    let best = scores
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(candidates[0], |s| s.0);
    Ok(TemperatureSweep {
        score,
        scores,
        best,
    })
}
