//! The command line: every subcommand and its options (clap).

use std::path::PathBuf;

use calmflow::backend::DeviceSpec;
use calmflow::model::HeadKind;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "calmflow",
    version,
    about = "CaLMFlow: Volterra flow matching with causal transformers"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// The main job: train CaLMFlow and I-CFM on 8-Gaussians → moons on the CPU, choose
    /// the temperature on validation data, sample 2000 points from each, print the metrics
    /// side by side and write plots (a few minutes in release mode).
    Demo {
        /// Output directory.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// CaLMFlow training steps.
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        /// I-CFM training steps.
        #[arg(long, default_value_t = 5000)]
        cfm_steps: usize,
        /// Generated (and fresh target) points compared.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// Validation points of the temperature sweep.
        #[arg(long, default_value_t = 1000)]
        n_validation: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Device: cpu, wgpu[:i] or cuda[:i] (among the compiled backends).
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
    },
    /// Text-conditioned generation of unseen condition combinations on single-cell data:
    /// hold out (cell_type, phase) pairs of an .h5ad file (default: the bundled
    /// pbmc68k_reduced), train prompted CaLMFlow and one-hot conditional CFM on the rest,
    /// and score both on the held-out cells (MMD², energy distance, R² of mean expression,
    /// in PCA and gene space).
    Heldout(HeldOutArgs),
    /// Train CaLMFlow from a TOML configuration (see docs/config.md; `calmflow config`
    /// prints every field with its default).
    Train(TrainArgs),
    /// Generate points with a trained CaLMFlow checkpoint.
    Sample(SampleArgs),
    /// The conditional flow matching baselines (I-CFM, OT-CFM, SB-CFM).
    Cfm {
        #[command(subcommand)]
        command: CfmCommand,
    },
    /// Scatter plots of samples against a target, or of trajectories, as PNG or SVG.
    Plot {
        /// Target points (.npy, .csv), drawn in grey.
        #[arg(long)]
        target: Option<PathBuf>,
        /// Sample files to overlay (repeatable; labelled by file name).
        #[arg(long)]
        samples: Vec<PathBuf>,
        /// A trajectories file (.npy of shape (n, steps, D)) to draw as lines.
        #[arg(long)]
        trajectories: Option<PathBuf>,
        /// Output file (.png or .svg).
        #[arg(long)]
        out: PathBuf,
        /// Title.
        #[arg(long, default_value = "calmflow")]
        title: String,
    },
    /// Print the run configuration with every default, as TOML.
    Config,
    /// List the compiled backends; with --check, run a matmul on a device and compare it
    /// with a host computation.
    Devices {
        /// Device to check: cpu, wgpu[:i] or cuda[:i].
        #[arg(long)]
        check: Option<DeviceSpec>,
        /// Matrix size of the check.
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
    /// Draw samples from a built-in distribution and write them to a .npy or .csv file.
    Data {
        /// 8gaussians, moons, circles, checkerboard, swissroll, spiral or normal.
        #[arg(long)]
        dataset: String,
        /// Number of points.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// Dimension (only for `normal`).
        #[arg(long, default_value_t = 2)]
        dim: usize,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file (.npy or .csv).
        #[arg(long)]
        out: PathBuf,
    },
    /// Score generated samples against a target set with every metric.
    Eval {
        /// Generated points (.npy, .csv).
        #[arg(long)]
        samples: PathBuf,
        /// Target points (.npy, .csv).
        #[arg(long)]
        target: PathBuf,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Skip the exact W1/W2 (O(n³)).
        #[arg(long)]
        no_exact: bool,
        /// Skip the Sinkhorn metrics (slow for large sets).
        #[arg(long)]
        no_sinkhorn: bool,
        /// Regularisation of the Sinkhorn divergence, in squared data units.
        #[arg(long, default_value_t = 1.0)]
        sinkhorn_reg: f64,
        /// γ of the single-kernel MMD.
        #[arg(long, default_value_t = 1.0)]
        gamma: f64,
    },
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The run configuration (TOML).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Output directory (overrides `out` in the file; default runs/calmflow or runs/cfm).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Override train.steps.
    #[arg(long)]
    pub(crate) steps: Option<usize>,
    /// Continue from the newest checkpoint in the output directory.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Initialise the backbone from a local GPT-NeoX / Pythia directory (model.safetensors
    /// + config.json); its shape replaces the [model] backbone fields. Nothing is downloaded.
    #[arg(long)]
    pub(crate) init_from: Option<PathBuf>,
    /// Device: cpu, wgpu[:i] or cuda[:i] (among the compiled backends) [default: cpu,
    /// or the devices of [train] devices].
    #[arg(long)]
    pub(crate) device: Option<DeviceSpec>,
    /// Train data-parallel on these devices of one backend, comma-separated (e.g.
    /// cuda:0,cuda:1, or cpu,cpu): a model replica on each, every step's batch split
    /// evenly among them; overrides [train] devices.
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    pub(crate) devices: Vec<DeviceSpec>,
    /// No progress output.
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Args)]
pub(crate) struct HeldOutArgs {
    /// The AnnData file (default: the bundled pbmc68k_reduced.h5ad).
    #[arg(long)]
    pub(crate) h5ad: Option<PathBuf>,
    /// obs columns whose label combination is the condition (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "cell_type,phase")]
    pub(crate) conditions: Vec<String>,
    /// A combination to hold out, labels joined by '/' in column order, e.g.
    /// "CD19+ B/S" or "CD19+ B/G2/M" (labels may contain '/': the split that names a label
    /// of every column is used); repeatable; default: four pairs of pbmc68k_reduced.
    #[arg(long = "hold-out")]
    pub(crate) hold_out: Vec<String>,
    /// Prompt template; {column} fields are filled from the labels.
    #[arg(long, default_value = calmflow::run::jobs::DEFAULT_TEMPLATE)]
    pub(crate) template: String,
    /// PCA components.
    #[arg(long, default_value_t = 16)]
    pub(crate) pca: usize,
    /// Read this layer of the file as the expression instead of X.
    #[arg(long)]
    pub(crate) layer: Option<String>,
    /// CaLMFlow training steps.
    #[arg(long, default_value_t = 2000)]
    pub(crate) steps: usize,
    /// CFM training steps.
    #[arg(long, default_value_t = 5000)]
    pub(crate) cfm_steps: usize,
    /// Sequences (CaLMFlow) or pairs (CFM) per step.
    #[arg(long, default_value_t = 64)]
    pub(crate) batch: usize,
    /// Time points per trajectory.
    #[arg(long, default_value_t = 16)]
    pub(crate) n_times: usize,
    /// Generation temperature.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) temperature: f64,
    /// CaLMFlow's distribution head: variational (the paper's), cvae, mixture or flow
    /// (default: mixture over increments, the best measured on this study).
    #[arg(long)]
    pub(crate) head: Option<HeadKind>,
    /// What the head predicts: state, increment or endpoint (default: increment; with
    /// --head, that head's own: endpoint for mixture, state for variational).
    #[arg(long)]
    pub(crate) predict: Option<String>,
    /// Brownian-bridge noise σ of the training paths (default: 0.3 when the head predicts
    /// the endpoint, else 0).
    #[arg(long)]
    pub(crate) path_sigma: Option<f64>,
    /// Local GPT-NeoX / Pythia directory (model.safetensors, config.json, tokenizer.json)
    /// to initialise the backbone and tokenize prompts. Nothing is downloaded.
    #[arg(long)]
    pub(crate) init_from: Option<PathBuf>,
    /// A Hugging Face tokenizer.json for the prompts (default: the one in --init-from,
    /// else a word-level tokenizer built from the prompts).
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    /// Train the token-embedding table (frozen by default).
    #[arg(long)]
    pub(crate) train_embeddings: bool,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Output directory.
    #[arg(long, default_value = "runs/heldout")]
    pub(crate) out: PathBuf,
    /// Device: cpu, wgpu[:i] or cuda[:i] (among the compiled backends).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: DeviceSpec,
    /// No progress output.
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Args)]
pub(crate) struct SampleArgs {
    /// Checkpoint directory (a run's `checkpoints/`, or one of its step directories).
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// Points to generate (drawn from the run's source distribution).
    #[arg(long, default_value_t = 2000)]
    pub(crate) n: usize,
    /// Temperature τ (CaLMFlow; default: the one the run chose, else 1 for a conditional
    /// model and 0.2 otherwise).
    #[arg(long)]
    pub(crate) temperature: Option<f64>,
    /// The condition of a model trained on cells ([data] h5ad), as column=label, once per
    /// condition column: --condition cell_type="CD19+ B" --condition phase=S.
    #[arg(long, value_name = "COLUMN=LABEL", value_parser = parse_condition)]
    pub(crate) condition: Vec<(String, String)>,
    /// Free-text prompt for a CaLMFlow model trained on cells, instead of --condition.
    #[arg(long, conflicts_with = "condition")]
    pub(crate) prompt: Option<String>,
    /// Also write the generated cells in gene space (.npy or .csv; conditional models).
    #[arg(long)]
    pub(crate) genes: Option<PathBuf>,
    /// Push these t = 0 points (.npy, .csv) through the model instead of drawing them.
    #[arg(long)]
    pub(crate) source: Option<PathBuf>,
    /// Draws per source point (≥ 1): each source point is pushed through the model R times,
    /// and output row i·R + r is draw r from source point i (n·R rows in all), to look at the
    /// spread of the samples from one fixed x0.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub(crate) repeat: usize,
    /// Output file: .npy or .csv (the model's coordinates: PCA scores for a model of
    /// cells), or .h5ad for a model of cells (an AnnData with X in gene space, the
    /// condition in obs and the PCA scores in obsm/X_pca).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Also write the trajectories (n·R, steps, D) to this .npy file.
    #[arg(long)]
    pub(crate) trajectories: Option<PathBuf>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 500)]
    pub(crate) batch_size: usize,
    /// ODE solver of the CFM baselines.
    #[arg(long, value_enum, default_value_t = Solver::Dopri5)]
    pub(crate) solver: Solver,
    /// Steps of the fixed-step solvers.
    #[arg(long, default_value_t = 100)]
    pub(crate) ode_steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Device: cpu, wgpu[:i] or cuda[:i].
    #[arg(long, default_value = "cpu")]
    pub(crate) device: DeviceSpec,
}

#[derive(Subcommand)]
pub(crate) enum CfmCommand {
    /// Train a CFM baseline: the `[cfm]` section picks the variant (i-cfm, ot-cfm, sb-cfm),
    /// `[data]` and `[train]` as for CaLMFlow.
    Train(TrainArgs),
    /// Sample a CFM checkpoint with an ODE solver.
    Sample(SampleArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Solver {
    Euler,
    Midpoint,
    Rk4,
    Dopri5,
}

/// `column=label` of `--condition` (the label may contain '=' and '/').
pub(crate) fn parse_condition(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((column, label)) if !column.trim().is_empty() && !label.is_empty() => {
            Ok((column.trim().to_string(), label.to_string()))
        }
        _ => Err(format!(
            "`{text}` is not COLUMN=LABEL (e.g. --condition cell_type=\"CD19+ B\")"
        )),
    }
}
