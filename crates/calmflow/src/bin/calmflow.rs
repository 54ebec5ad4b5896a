//! The `calmflow` command-line program.
//!
//! Subcommands so far: `devices` (compiled backends, optional device check), `data`
//! (write samples of a built-in distribution) and `eval` (score samples against a target
//! with every metric). Training and generation arrive with the trainer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use calmflow::backend::{DeviceSpec, MatmulCheck, compiled_backends};
use calmflow::data::seeded_rng;
use calmflow::io::{read_points, write_points};
use calmflow::metrics::{EvalOptions, evaluate};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "calmflow",
    version,
    about = "CaLMFlow: Volterra flow matching with causal transformers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("calmflow: error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Devices { check, size } => {
            println!("compiled backends: {}", compiled_backends().join(", "));
            if let Some(device) = check {
                let report = device
                    .run(MatmulCheck { n: size })
                    .map_err(|e| e.to_string())?;
                println!(
                    "{device}: {size}×{size} matmul: first {:.3} ms (with kernel compilation), \
                     warm {:.3} ms = {:.1} GFLOP/s; max |error| vs f64 host {:.2e} (relative {:.2e})",
                    report.first_seconds * 1e3,
                    report.seconds * 1e3,
                    report.gflops,
                    report.max_abs_error,
                    report.relative_error
                );
                // TF32 tensor cores (CUDA) give ~1e-3 relative error; near 1e-2 the result
                // is wrong, not rounded.
                if !(report.relative_error < 1e-2) {
                    return Err(format!(
                        "{device}: matmul result is wrong (relative error {:.3e})",
                        report.relative_error
                    ));
                }
            }
            Ok(())
        }
        Command::Data {
            dataset,
            n,
            dim,
            seed,
            out,
        } => {
            let sampler =
                calmflow::data::sampler_by_name(&dataset, dim).map_err(|e| e.to_string())?;
            let x = sampler.sample(n, &mut seeded_rng(seed));
            write_points(&out, x.view()).map_err(|e| e.to_string())?;
            println!(
                "wrote {n} × {} points of {} to {}",
                x.ncols(),
                sampler.name(),
                out.display()
            );
            Ok(())
        }
        Command::Eval {
            samples,
            target,
            json,
            no_exact,
            no_sinkhorn,
            sinkhorn_reg,
            gamma,
        } => {
            let x = read_points(&samples).map_err(|e| e.to_string())?;
            let y = read_points(&target).map_err(|e| e.to_string())?;
            let options = EvalOptions {
                exact_ot: !no_exact,
                sinkhorn: !no_sinkhorn,
                sinkhorn_reg,
                gamma,
            };
            let report = evaluate(x.view(), y.view(), &options)
                .map_err(|e| format!("{}: {e}", samples.display()))?;
            println!(
                "{} samples vs {} target points, dimension {}",
                report.n_samples, report.n_target, report.dim
            );
            println!("| metric | value |\n| --- | ---: |");
            for (name, value) in report.rows() {
                println!("| {name} | {value:.6} |");
            }
            if let Some(path) = json {
                write_json(&path, &report.to_json())?;
            }
            Ok(())
        }
    }
}

fn write_json(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    calmflow::data::write_atomically(path, |w| w.write_all(text.as_bytes()))
        .map_err(|e| e.to_string())
}
