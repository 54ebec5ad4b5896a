//! The `--probe TASK` mode: one CaLMFlow configuration on one task, printed line by line,
//! nothing saved (unless `--dump DIR`).

use std::path::PathBuf;

use calmflow::model::{HeadKind, Predict};
use calmflow::train::{CfmVariant, Coupling, MixtureInit, generate};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::runs::{
    Budget, CalmKnobs, calmflow_row, calmflow_run_config, describe, generation_options, run_cfm,
    score_calmflow, train_calmflow,
};
use crate::tasks::{Task, seed_sets};

/// The probe's settings: each one left out keeps the suite's value (the repaired head's
/// knobs, the suite's budget), except the seeds (0).
#[derive(Debug, Args)]
#[command(next_help_heading = "Probe (with --probe TASK)")]
pub struct ProbeArgs {
    /// The distribution head: variational, cvae, mixture or flow (variational also
    /// predicts the state unless --predict says otherwise).
    #[arg(long, value_name = "H", requires = "probe", value_parser = head)]
    head: Option<HeadKind>,
    /// What the head predicts: state, increment or endpoint.
    #[arg(long, value_name = "P", requires = "probe", value_parser = predict)]
    predict: Option<Predict>,
    /// Brownian-bridge path noise σ (0: straight paths).
    #[arg(
        long,
        value_name = "S",
        requires = "probe",
        allow_negative_numbers = true
    )]
    sigma: Option<f64>,
    /// KL weight β (variational and cvae heads).
    #[arg(
        long,
        value_name = "B",
        requires = "probe",
        allow_negative_numbers = true
    )]
    beta: Option<f64>,
    /// Sampling temperature τ.
    #[arg(
        long,
        value_name = "T",
        requires = "probe",
        allow_negative_numbers = true
    )]
    tau: Option<f64>,
    /// Training steps of every method.
    #[arg(long, value_name = "N", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    steps: Option<usize>,
    /// Time points N.
    #[arg(long, value_name = "N", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    n_times: Option<usize>,
    /// Hidden width H of the backbone.
    #[arg(long, value_name = "H", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    hidden: Option<usize>,
    /// Spatial tokens K.
    #[arg(long, value_name = "K", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    n_space: Option<usize>,
    /// Inner width of the head's MLPs (0: the model's automatic width).
    #[arg(long, value_name = "W", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    width: Option<usize>,
    /// Components of the mixture head.
    #[arg(long, value_name = "M", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    components: Option<usize>,
    /// Peak learning rate of CaLMFlow's optimiser.
    #[arg(
        long,
        value_name = "LR",
        requires = "probe",
        allow_negative_numbers = true
    )]
    lr: Option<f64>,
    /// Starting temperature of the mixture's annealing (0: D, 1: off).
    #[arg(
        long,
        value_name = "T0",
        requires = "probe",
        allow_negative_numbers = true
    )]
    anneal: Option<f64>,
    /// Fraction of the steps over which the annealing reaches 1.
    #[arg(
        long,
        value_name = "F",
        requires = "probe",
        allow_negative_numbers = true
    )]
    anneal_fraction: Option<f64>,
    /// Noise on the context's states.
    #[arg(
        long,
        value_name = "G",
        requires = "probe",
        allow_negative_numbers = true
    )]
    context_noise: Option<f64>,
    /// Noise draws per slot in the flow head's loss.
    #[arg(long, value_name = "N", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    flow_draws: Option<usize>,
    /// Share of each batch trained on the model's own roll-out (0–1).
    #[arg(
        long,
        value_name = "R",
        requires = "probe",
        allow_negative_numbers = true
    )]
    rollout_fraction: Option<f64>,
    /// How the mixture's components start.
    #[arg(
        long,
        value_name = "INIT",
        requires = "probe",
        value_parser = PossibleValuesParser::new(["kmeans", "random"]).map(|s| {
            if s == "kmeans" { MixtureInit::Kmeans } else { MixtureInit::Random }
        })
    )]
    mixture_init: Option<MixtureInit>,
    /// How CaLMFlow's training pairs are coupled: independent, exact-ot or entropic:REG.
    #[arg(long, value_name = "C", requires = "probe", value_parser = coupling)]
    coupling: Option<Coupling>,
    /// Seeds, comma-separated [default: 0].
    #[arg(long, value_name = "S,...", requires = "probe", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Generated and target points per seed (a finite data set scores its held-out part).
    #[arg(long, value_name = "N", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    n_eval: Option<usize>,
    /// Batch size of every method.
    #[arg(long, value_name = "B", requires = "probe", allow_negative_numbers = true, value_parser = count)]
    batch: Option<usize>,
    /// Also train and score OT-CFM at equal steps.
    #[arg(long, requires = "probe")]
    cfm: bool,
    /// Write the generated points, the roll-outs `(n, N, D)`, the sources and the target
    /// as `.npy` files to this (existing) folder, per seed, and the run configuration
    /// (`run-seedS.toml`).
    #[arg(long, value_name = "DIR", requires = "probe")]
    dump: Option<PathBuf>,
}

/// A count, read as any number and truncated (as the probe always has: `1e3` is 1000).
fn count(s: &str) -> Result<usize, String> {
    s.parse::<f64>()
        .map(|v| v as usize)
        .map_err(|_| format!("not a number: {s:?}"))
}

fn head(s: &str) -> Result<HeadKind, String> {
    s.parse()
}

fn predict(s: &str) -> Result<Predict, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("unknown predict {s:?}"))
}

fn coupling(s: &str) -> Result<Coupling, String> {
    match s {
        "independent" => Ok(Coupling::Independent),
        "exact-ot" => Ok(Coupling::ExactOt),
        other => match other.strip_prefix("entropic:").map(str::parse) {
            Some(Ok(reg)) => Ok(Coupling::Entropic { reg }),
            _ => Err(format!("unknown coupling {other:?}")),
        },
    }
}

/// Ends the program after an error of the probe (status 2).
fn fail(m: String) -> ! {
    eprintln!("quality --probe: {m}");
    std::process::exit(2)
}

/// `quality --probe TASK [--head H] [--predict P] [--sigma S] [--beta B] [--tau T] [--steps N]
/// [--n-times N] [--hidden H] [--n-space K] [--width W] [--components M] [--lr LR] [--anneal T0]
/// [--anneal-fraction F] [--context-noise G] [--flow-draws N] [--mixture-init kmeans|random]
/// [--coupling independent|exact-ot|entropic:REG] [--seeds 0,1]
/// [--n-eval N] [--batch B] [--cfm] [--dump DIR]`: one CaLMFlow configuration (default: the
/// repaired head) on the task whose name contains `TASK`, printed after each seed's
/// two-sample floor, nothing else saved; `--dump DIR` writes the generated points, the
/// roll-outs `(n, N, D)`, the sources and the target as `.npy` files there (per seed), for
/// looking at where samples go wrong, and the row's run configuration (`run-seedS.toml`,
/// what `calmflow train --config` reads to train the same model).
pub fn probe(
    needle: &str,
    args: &ProbeArgs,
    tasks: &[Task],
    pair: &Task,
    budget: &Budget,
    best: CalmKnobs,
) {
    let Some(task) = tasks
        .iter()
        .chain(std::iter::once(pair))
        .find(|t| t.name.contains(needle))
    else {
        eprintln!("quality --probe: no task matches {needle:?}");
        std::process::exit(2);
    };
    let mut knobs = best;
    if let Some(h) = args.head {
        knobs.head = h;
    }
    if let Some(p) = args.predict {
        knobs.predict = p;
    }
    knobs.sigma = args.sigma.unwrap_or(knobs.sigma);
    knobs.beta = args.beta.unwrap_or(knobs.beta);
    knobs.temperature = args.tau.unwrap_or(knobs.temperature);
    knobs.decoder_width = args.width.unwrap_or(knobs.decoder_width);
    knobs.components = args.components.unwrap_or(knobs.components);
    knobs.n_space = args.n_space.unwrap_or(knobs.n_space);
    knobs.learning_rate = args.lr.unwrap_or(knobs.learning_rate);
    knobs.n_times = args.n_times.unwrap_or(knobs.n_times);
    knobs.anneal = args.anneal.unwrap_or(knobs.anneal);
    knobs.anneal_fraction = args.anneal_fraction.unwrap_or(knobs.anneal_fraction);
    knobs.context_noise = args.context_noise.unwrap_or(knobs.context_noise);
    knobs.flow_draws = args.flow_draws.unwrap_or(knobs.flow_draws);
    knobs.rollout_fraction = args.rollout_fraction.unwrap_or(knobs.rollout_fraction);
    if let Some(init) = args.mixture_init {
        knobs.mixture_init = init;
    }
    if let Some(c) = args.coupling {
        knobs.coupling = c;
    }
    if knobs.head == HeadKind::Variational && args.predict.is_none() {
        knobs.predict = Predict::State;
    }
    let budget = Budget {
        steps: args.steps.unwrap_or(budget.steps),
        hidden: args.hidden.unwrap_or(budget.hidden),
        n_eval: args.n_eval.unwrap_or(budget.n_eval),
        batch: args.batch.unwrap_or(budget.batch),
        seeds: if args.seeds.is_empty() {
            vec![0]
        } else {
            args.seeds.clone()
        },
        ..budget.clone()
    };
    for &seed in &budget.seeds {
        let (x0, target, floor) = seed_sets(task, &budget, seed);
        println!(
            "{} | two-sample floor | seed {seed} | {} points | MMD² {:.5} energy {:.4} Fréchet {:.3} precision {:.3} recall {:.3}",
            task.name,
            target.nrows(),
            floor.mmd2_median,
            floor.energy,
            floor.frechet.unwrap_or(f64::NAN),
            floor.knn.map_or(f64::NAN, |k| k.precision),
            floor.knn.map_or(f64::NAN, |k| k.recall)
        );
        let (model, train_seconds, parameters) = train_calmflow(task, &budget, knobs, seed);
        let (report, calm_samples) = score_calmflow(&model, knobs, seed, &x0, &target);
        let calm = calmflow_row(&budget, knobs, seed, report, train_seconds, parameters);
        let mut rows = vec![calm];
        let mut dumps = vec![("calmflow", calm_samples)];
        if args.cfm {
            let (r, s) = run_cfm(task, &budget, CfmVariant::OtCfm, seed, &x0, &target, None);
            rows.push(r);
            dumps.push(("ot-cfm", s));
        }
        if let Some(dir) = &args.dump {
            let options = generation_options(knobs, seed);
            let paths = generate(&model, &x0, &options, None, true, &Default::default())
                .ok()
                .and_then(|g| g.trajectories)
                .unwrap_or_else(|| fail("no trajectories".into()));
            let path = dir.join(format!("paths-seed{seed}.npy"));
            calmflow::data::npy::write_npy_nd(&path, paths.into_dyn().view())
                .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
            // The row as a run configuration: `calmflow train --config` trains the same model
            // on data files given in its `[data]` section.
            let toml_path = dir.join(format!("run-seed{seed}.toml"));
            let toml = calmflow_run_config(&budget, knobs, seed).to_toml();
            calmflow::data::write_atomically(&toml_path, |w| {
                std::io::Write::write_all(w, toml.as_bytes())
            })
            .unwrap_or_else(|e| fail(format!("writing {}: {e}", toml_path.display())));
            dumps.push(("target", target.clone()));
            dumps.push(("source", x0.clone()));
            for (name, x) in &dumps {
                let path = dir.join(format!("{name}-seed{seed}.npy"));
                calmflow::data::npy::write_npy(&path, x.view())
                    .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
            }
        }
        for r in rows {
            let d = r.report.dispersion.clone();
            println!(
                "{} | {} | seed {seed} | {} | W2 {:.3} MMD² {:.5} energy {:.4} Fréchet {:.3} trace {:.3} precision {:.3} recall {:.3} leading {:?} rest {:?} | {:.0} s",
                task.name,
                if r.method == "CaLMFlow" {
                    format!("CaLMFlow {} τ {}", describe(&knobs), knobs.temperature)
                } else {
                    r.method.clone()
                },
                budget.steps,
                r.report.w2.unwrap_or(f64::NAN),
                r.report.mmd2_median,
                r.report.energy,
                r.report.frechet.unwrap_or(f64::NAN),
                d.as_ref().map_or(f64::NAN, |d| d.trace_ratio),
                r.report.knn.map_or(f64::NAN, |k| k.precision),
                r.report.knn.map_or(f64::NAN, |k| k.recall),
                d.as_ref().map(|d| d
                    .leading
                    .iter()
                    .map(|v| (v * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()),
                d.as_ref()
                    .and_then(|d| d.rest)
                    .map(|v| (v * 1000.0).round() / 1000.0),
                r.train_seconds
            );
        }
    }
}
