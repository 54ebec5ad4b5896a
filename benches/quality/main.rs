//! The quality suite (`cargo xtask bench --suite quality [--quick]`): CaLMFlow, I-CFM and
//! OT-CFM trained with the same step budget on the same data, scored on fresh target
//! samples over several seeds, plus CaLMFlow ablations. Writes `docs/quality.{md,json}`
//! and plots under `docs/img/`.
//!
//! Usage: `quality [--quick] [--fresh] [--only TABLE]... [--out DIR]` (default `docs`). The
//! quick suite writes `quality-quick.*`, the full one `quality.*`; an interrupted run
//! resumes from `{prefix}.progress.json` unless `--fresh` is given. `--only` runs the named
//! tables (a task's title, `heads: TASK`, `targets: TASK`, `heads` or `targets` for all of
//! them, or `ablation: NAME`) and only saves them there, so that parts
//! of a run can go in parallel; a run without it then writes the report.
//! `quality [--quick] --probe TASK [OPTIONS]` trains and scores one CaLMFlow configuration
//! on one task instead (`probe.rs`; `quality --help` lists its options).
//!
//! The parts: `tasks` (the problems and their evaluation sets), `runs` (budgets, knobs,
//! training and scoring), `tables` (the comparison, heads and targets tables and the
//! report), `ablations` and `probe`; this file parses the arguments and runs the tables.

mod ablations;
mod probe;
mod runs;
mod tables;
mod tasks;

use std::path::{Path, PathBuf};

use calmflow::data::seeded_rng;
use calmflow_benches::StageProgress;
use clap::Parser;

use crate::ablations::{Ablation, ablation_table, plot_ablation};
use crate::runs::{Budget, CalmKnobs};
use crate::tables::{
    Collected, Output, compare, heads, heads_table, targets_table, task_table, write_report,
};
use crate::tasks::{EVAL_POINTS, TARGET_EVAL_POINTS, Task, digits_task, pair_task, suite_tasks};

// The program's allocator (`calmflow`'s binary), so that training times match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The quality suite: CaLMFlow, I-CFM and OT-CFM at equal steps over seeds, and CaLMFlow
/// ablations.
///
/// Writes DIR/quality.{md,json} (DIR/quality-quick.* with --quick) and plots under
/// DIR/img/; an interrupted run resumes from DIR/{prefix}.progress.json. With --probe,
/// trains and scores one CaLMFlow configuration on one task instead and prints the result.
#[derive(Parser)]
#[command(name = "quality")]
struct Cli {
    /// The quick suite: fewer steps, tasks and ablation settings, 1000 ablation points.
    #[arg(long)]
    quick: bool,
    /// Start over instead of resuming from DIR/{prefix}.progress.json.
    #[arg(long)]
    fresh: bool,
    /// Run just this table and save it for a later full run (repeatable; runs of disjoint
    /// tables can share the output folder in parallel): a task's title, "heads: TASK",
    /// "targets: TASK", "heads" or "targets" for all of them, or "ablation: NAME".
    #[arg(long, value_name = "TABLE")]
    only: Vec<String>,
    /// Output folder [default: the repository's docs/].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Train and score one CaLMFlow configuration (default: the repaired head) on the task
    /// whose title contains TASK, after each seed's two-sample floor; nothing is saved. The
    /// probe's options below keep the suite's values (seeds: 0) unless given.
    #[arg(long, value_name = "TASK")]
    probe: Option<String>,
    #[command(flatten)]
    probe_args: probe::ProbeArgs,
}

fn main() {
    let cli = Cli::parse();
    calmflow::backend::register_cpu_kernels();
    let quick = cli.quick;
    // `--only TABLE` (repeatable): run just those tables and save them for a later full run
    // (runs of disjoint tables can share the output folder in parallel).
    let only = &cli.only;
    let wanted = |key: &str| only.is_empty() || only.iter().any(|o| o == key);
    let dir = cli
        .out
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"));
    if let Err(e) = std::fs::create_dir_all(dir.join("img")) {
        eprintln!("quality: cannot create {}: {e}", dir.join("img").display());
        std::process::exit(1);
    }
    let out = Output {
        dir,
        prefix: if quick { "quality-quick" } else { "quality" },
    };
    let budget = Budget::suite(quick);
    let knobs = CalmKnobs::paper(&budget);
    // The repaired model (the program's defaults): see `docs/quality.md`, "heads".
    let best = knobs.repaired();
    let mut progress = StageProgress::load(
        out.path("progress.json"),
        serde_json::to_value(&budget).unwrap_or_default(),
        cli.fresh,
    );
    if progress.resumed > 0 {
        eprintln!(
            "quality: resuming with {} finished table(s) from {} (--fresh starts over)",
            progress.resumed,
            out.path("progress.json").display()
        );
    }
    let tasks = suite_tasks(quick);
    let pair_task = pair_task(quick);
    // Build every distribution once before hours of training depend on them.
    for t in tasks.iter().chain(std::iter::once(&pair_task)) {
        let mut rng = seeded_rng(0);
        let _ = ((t.source)().sample(1, &mut rng), t.target_points(1, 0));
    }
    let digits = digits_task();
    if let Some(needle) = &cli.probe {
        probe::probe(needle, &cli.probe_args, &tasks, &pair_task, &budget, best);
        return;
    }

    let mut collected = Collected::default();
    for t in tasks.iter().filter(|t| wanted(&t.name)) {
        let saved = if progress.is_done(&t.name) {
            " (saved by an earlier run)"
        } else {
            ""
        };
        eprintln!("quality: {}{saved}", t.name);
        let stage = progress.stage(&t.name, || {
            let r = compare(t, &budget, knobs, &out);
            (task_table(&r), serde_json::to_value(&r).unwrap_or_default())
        });
        collected.add_task(stage);
    }

    // The heads on every task but the two 2-D ones the heads do not separate, against CFM
    // at equal steps and equal training time.
    let heads = heads(best, knobs);
    let heads_tasks: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.name != "N(0, I) → moons" && t.name != "N(0, I) → circles")
        .collect();
    for t in heads_tasks {
        let key = format!("heads: {}", t.name);
        if !wanted(&key) && !wanted("heads") {
            continue;
        }
        eprintln!("quality: {key}");
        let stage = progress.stage(&key, || {
            let r = heads_table(t, &budget, &heads, &out);
            (task_table(&r), serde_json::to_value(&r).unwrap_or_default())
        });
        collected.add_task(stage);
    }

    // The heads tables' comparison with OT-CFM again, on four times the points, where the
    // 2000-point Fréchet distance is within the two-sample noise (D ≥ 50).
    let targets_budget = Budget {
        n_eval: if quick {
            EVAL_POINTS
        } else {
            TARGET_EVAL_POINTS
        },
        ..budget.clone()
    };
    for t in tasks
        .iter()
        .filter(|t| t.name.starts_with("N(0, I) → 8 Gaussians"))
    {
        let key = format!("targets: {}", t.name);
        if !wanted(&key) && !wanted("targets") {
            continue;
        }
        eprintln!("quality: {key}");
        let stage = progress.stage(&key, || {
            let r = targets_table(t, &targets_budget, best);
            (task_table(&r), serde_json::to_value(&r).unwrap_or_default())
        });
        collected.add_task(stage);
    }

    for (name, run) in ablations::suite(quick, &pair_task, &digits, &budget, knobs, best) {
        let key = format!("ablation: {name}");
        if !wanted(&key) {
            continue;
        }
        let saved = if progress.is_done(&key) {
            " (saved by an earlier run)"
        } else {
            ""
        };
        eprintln!("quality: {key}{saved}");
        let stage = progress.stage(&key, || {
            let mut a = run();
            plot_ablation(&mut a, &out);
            (
                ablation_table(&a),
                serde_json::to_value(&a).unwrap_or_default(),
            )
        });
        // A saved ablation is drawn again, so that its image follows the plotting code
        // (and exists in a fresh output folder) without training anything.
        if !saved.is_empty() {
            match serde_json::from_value::<Ablation>(stage.result.clone()) {
                Ok(mut a) => plot_ablation(&mut a, &out),
                Err(e) => eprintln!("quality: {key}: saved result not redrawn: {e}"),
            }
        }
        collected.add_ablation(stage);
    }

    if !only.is_empty() {
        eprintln!(
            "quality: saved {} table(s) to {}; a run without --only writes the report",
            collected.md_parts.len(),
            out.path("progress.json").display()
        );
        return;
    }
    write_report(&out, quick, &budget, &targets_budget, &collected);
    progress.finish();
}
