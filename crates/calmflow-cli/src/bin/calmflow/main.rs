//! The `calmflow` command-line program: `demo`, `train`, `sample`, `eval`, `cfm train|sample`,
//! `plot`, `config`, `data` and `devices`. Errors are printed as one line and the program
//! exits with status 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use calmflow::backend::{DeviceSpec, MatmulCheck, compiled_backends};
use calmflow::data::seeded_rng;
use calmflow::metrics::{EvalOptions, MetricsReport};
use calmflow::run::cells::write_cells;
use calmflow::run::config::RunConfig;
use calmflow::run::io::write_points;
use calmflow::run::jobs::{
    DemoJob, EvaluateJob, HeldOutJob, ModelKind, PlotJob, SampleJob, TrainJob,
};
use calmflow::train::{AdaptiveSettings, OdeSolver};
use clap::Parser;

mod args;
use args::{CfmCommand, Cli, Command, HeldOutArgs, SampleArgs, Solver, TrainArgs};

// burn-ndarray allocates a fresh buffer for every tensor operation; with glibc's malloc
// many of those go back to the kernel and fault in again (a quarter of a training step's
// time was in the kernel). mimalloc keeps them: about 10 % off the demo's training step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Runs a job on `device`; backend and job errors become the one line the user sees.
fn on_device<T, V, E>(device: DeviceSpec, job: T) -> Result<V, String>
where
    T: calmflow::backend::BackendTask<Output = Result<V, E>>,
    E: std::fmt::Display,
{
    device
        .run(job)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

fn train(args: TrainArgs, kind: ModelKind) -> Result<(), String> {
    let (config, base) = match &args.config {
        Some(path) => (
            RunConfig::read(path).map_err(|e| e.to_string())?,
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        // What an empty file resolves to (the defaults that follow the head included),
        // as `calmflow config` prints it.
        None => (
            RunConfig::parse("", "the defaults").map_err(|e| e.to_string())?,
            PathBuf::from("."),
        ),
    };
    let mut config = config;
    if let Some(steps) = args.steps {
        config.train.steps = steps;
    }
    let devices: Vec<DeviceSpec> = if !args.devices.is_empty() {
        args.devices.clone()
    } else if let Some(device) = args.device {
        vec![device]
    } else if !config.train.devices.is_empty() {
        config
            .train
            .devices
            .iter()
            .map(|name| {
                name.parse()
                    .map_err(|e: calmflow::backend::BackendError| format!("train.devices: {e}"))
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![DeviceSpec::Cpu]
    };
    // The checkpoint records the devices the run used.
    config.train.devices = if devices.len() > 1 {
        devices.iter().map(DeviceSpec::to_string).collect()
    } else {
        Vec::new()
    };
    let default_out = match kind {
        ModelKind::CalmFlow => "runs/calmflow",
        ModelKind::Cfm => "runs/cfm",
    };
    let out = args
        .out
        .or_else(|| config.out.clone())
        .unwrap_or_else(|| PathBuf::from(default_out));
    let job = TrainJob {
        config,
        base,
        out: out.clone(),
        resume: args.resume,
        quiet: args.quiet,
        kind,
        init_from: args.init_from.clone(),
    };
    let outcome = if let [device] = devices[..] {
        on_device(device, job)?
    } else {
        DeviceSpec::run_parallel(&devices, job)
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let s = &outcome.summary;
    println!(
        "trained {} parameters for {} steps in {:.1} s ({:.2} steps/s; {:.0} % of it waiting for batches \
         from the host): final loss {:.4}, validation loss {:.4}",
        outcome.parameters,
        s.steps,
        s.seconds,
        s.steps_per_second,
        100.0 * s.data_seconds / s.seconds.max(1e-9),
        s.final_loss,
        s.final_val_loss
    );
    if let Some(sweep) = &outcome.temperature {
        println!(
            "sampling temperature τ = {} (lowest validation {} of {} candidates; recorded \
             in the checkpoint for `calmflow sample`)",
            sweep.best,
            sweep.score,
            sweep.scores.len()
        );
    }
    if let Some(dir) = &s.checkpoint {
        println!("checkpoint: {}", dir.display());
    }
    println!("log: {}", out.join("train_log.jsonl").display());
    Ok(())
}

fn sample(args: SampleArgs, kind: ModelKind) -> Result<(), String> {
    let solver = match args.solver {
        Solver::Euler => OdeSolver::Euler {
            steps: args.ode_steps,
        },
        Solver::Midpoint => OdeSolver::Midpoint {
            steps: args.ode_steps,
        },
        Solver::Rk4 => OdeSolver::Rk4 {
            steps: args.ode_steps,
        },
        Solver::Dopri5 => OdeSolver::Dopri5(AdaptiveSettings::default()),
    };
    let job = SampleJob {
        checkpoint: args.checkpoint,
        n: args.n,
        temperature: args.temperature,
        source: args.source,
        repeat: args.repeat,
        batch_size: args.batch_size,
        seed: args.seed,
        solver,
        trajectories: args.trajectories.is_some(),
        kind,
        condition: args.condition,
        prompt: args.prompt,
    };
    let wants_h5ad = args.out.extension().is_some_and(|e| e == "h5ad");
    let outcome = on_device(args.device, job)?;
    match (&outcome.cells, wants_h5ad) {
        (Some(cells), true) => write_cells(
            &args.out,
            &cells.record,
            &cells.condition,
            &outcome.samples,
            &cells.genes,
        )
        .map_err(|e| e.to_string())?,
        (None, true) => {
            return Err(format!(
                "{}: an .h5ad output is for models trained on cells ([data] h5ad); write .npy \
                 or .csv",
                args.out.display()
            ));
        }
        (_, false) => write_points(&args.out, outcome.samples.view()).map_err(|e| e.to_string())?,
    }
    let detail = match (outcome.temperature, outcome.nfe) {
        (Some(t), _) => format!(" at temperature {t}"),
        (_, Some(nfe)) => format!(" ({nfe} function evaluations)"),
        _ => String::new(),
    };
    let per_source = if args.repeat > 1 {
        format!(" ({} draws per source point)", args.repeat)
    } else {
        String::new()
    };
    let conditioned = outcome
        .cells
        .as_ref()
        .map(|c| format!(" of \"{}\"", c.condition.text.trim()))
        .unwrap_or_default();
    println!(
        "wrote {} samples{conditioned}{detail}{per_source} to {}",
        outcome.samples.nrows(),
        args.out.display()
    );
    match (&args.genes, &outcome.cells) {
        (Some(path), Some(cells)) => {
            write_points(path, cells.genes.view()).map_err(|e| e.to_string())?;
            println!(
                "wrote them in gene space ({} genes) to {}",
                cells.genes.ncols(),
                path.display()
            );
        }
        (Some(path), None) => {
            return Err(format!(
                "--genes {}: gene space is for models trained on cells ([data] h5ad)",
                path.display()
            ));
        }
        _ => {}
    }
    if let (Some(path), Some(t)) = (args.trajectories, outcome.trajectories) {
        calmflow::data::npy::write_npy_nd(&path, t.view().into_dyn()).map_err(|e| e.to_string())?;
        println!("wrote trajectories {:?} to {}", t.dim(), path.display());
    }
    Ok(())
}

fn print_side_by_side(columns: &[(&str, &MetricsReport)]) {
    let header: Vec<&str> = columns.iter().map(|c| c.0).collect();
    println!("| metric | {} |", header.join(" | "));
    println!("| --- |{}", " ---: |".repeat(columns.len()));
    for (name, _) in columns[0].1.rows() {
        let values: Vec<String> = columns
            .iter()
            .map(|c| {
                c.1.rows()
                    .iter()
                    .find(|r| r.0 == name)
                    .map(|r| format!("{:.4}", r.1))
                    .unwrap_or_else(|| "–".into())
            })
            .collect();
        println!("| {name} | {} |", values.join(" | "));
    }
}

fn heldout(args: HeldOutArgs) -> Result<(), String> {
    let h5ad = args
        .h5ad
        .unwrap_or_else(calmflow::data::h5ad::bundled_pbmc68k_reduced);
    let mut job = HeldOutJob::new(h5ad);
    job.cells.columns = args.conditions;
    if !args.hold_out.is_empty() {
        // Split against the file's labels when the job reads it: a label may contain '/'.
        job.cells.held_out = args.hold_out.iter().map(|h| vec![h.clone()]).collect();
    }
    job.cells.template = args.template;
    job.cells.pca = args.pca;
    job.cells.layer = args.layer;
    job.steps = args.steps;
    job.cfm_steps = args.cfm_steps;
    job.batch_size = args.batch;
    job.n_times = args.n_times;
    job.temperature = args.temperature;
    if let Some(head) = args.head {
        job.head = head;
        job.predict = head.default_predict();
    }
    if let Some(p) = &args.predict {
        job.predict = serde_json::from_value(serde_json::Value::String(p.clone()))
            .map_err(|_| format!("--predict {p:?}: expected state, increment or endpoint"))?;
    }
    job.path_sigma = args
        .path_sigma
        .unwrap_or(if job.predict.steps_to_endpoint() {
            calmflow::model::RECOMMENDED_BRIDGE_SIGMA
        } else {
            0.0
        });
    job.cells.init_from = args.init_from;
    job.cells.tokenizer = args.tokenizer;
    job.train_embeddings = args.train_embeddings;
    job.seed = args.seed;
    job.out = args.out;
    job.quiet = args.quiet;
    let outcome = on_device(args.device, job)?;
    println!(
        "held-out conditions of {} ({} training cells in {} conditions; PCA keeps {:.1}% of \
         the variance; prompts: {})",
        outcome.job.cells.h5ad.display(),
        outcome.n_train,
        outcome.n_train_conditions,
        100.0 * outcome.explained_variance,
        outcome.tokenizer
    );
    println!(
        "CaLMFlow: {} parameters, {:.1} steps/s; CFM: {} parameters, {:.1} steps/s\n",
        outcome.calmflow_training.parameters,
        outcome.calmflow_training.summary.steps_per_second,
        outcome.cfm_training.parameters,
        outcome.cfm_training.summary.steps_per_second
    );
    print!("{}", outcome.table);
    for f in &outcome.files {
        if f.extension().is_some_and(|e| e == "md" || e == "json") {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Heldout(args) => heldout(args),
        Command::Demo {
            out,
            steps,
            cfm_steps,
            n,
            n_validation,
            seed,
            device,
            quiet,
        } => {
            let job = DemoJob {
                out: out.clone(),
                steps,
                cfm_steps,
                n_eval: n,
                n_validation,
                seed,
                quiet,
                ..DemoJob::default()
            };
            let started = std::time::Instant::now();
            let r = on_device(device, job)?;
            println!(
                "\n8-Gaussians → moons, {n} generated vs {n} fresh target points \
                 (CaLMFlow at τ = {} chosen on validation data; I-CFM with dopri5, {} NFE):\n",
                r.temperature, r.cfm_nfe
            );
            print_side_by_side(&[
                ("CaLMFlow", &r.calmflow),
                ("I-CFM", &r.cfm),
                ("target vs target", &r.floor),
            ]);
            println!(
                "\ntraining: CaLMFlow {} steps at {:.2} steps/s ({} parameters), I-CFM {} steps \
                 at {:.1} steps/s ({} parameters); demo wall time {:.0} s",
                r.calmflow_training.summary.steps,
                r.calmflow_training.summary.steps_per_second,
                r.calmflow_training.parameters,
                r.cfm_training.summary.steps,
                r.cfm_training.summary.steps_per_second,
                r.cfm_training.parameters,
                started.elapsed().as_secs_f64()
            );
            println!("files:");
            for f in &r.files {
                println!("  {}", f.display());
            }
            Ok(())
        }
        Command::Train(args) => train(args, ModelKind::CalmFlow),
        Command::Sample(args) => sample(args, ModelKind::CalmFlow),
        Command::Cfm { command } => match command {
            CfmCommand::Train(args) => train(args, ModelKind::Cfm),
            CfmCommand::Sample(args) => sample(args, ModelKind::Cfm),
        },
        Command::Plot {
            target,
            samples,
            trajectories,
            out,
            title,
        } => {
            PlotJob {
                target,
                samples,
                trajectories,
                out: out.clone(),
                title,
            }
            .run()
            .map_err(|e| e.to_string())?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Config => {
            print!("{}", RunConfig::documented_defaults().documented_toml());
            Ok(())
        }
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
            let report = EvaluateJob {
                samples,
                target,
                options: EvalOptions {
                    exact_ot: !no_exact,
                    exact_w1: !no_exact,
                    sinkhorn: !no_sinkhorn,
                    sinkhorn_reg,
                    gamma,
                    knn_k: calmflow::metrics::KNN_K,
                },
                json,
            }
            .run()
            .map_err(|e| e.to_string())?;
            println!(
                "{} samples vs {} target points, dimension {}",
                report.n_samples, report.n_target, report.dim
            );
            println!("| metric | value |\n| --- | ---: |");
            for (name, value) in report.rows() {
                println!("| {name} | {value:.6} |");
            }
            Ok(())
        }
    }
}
