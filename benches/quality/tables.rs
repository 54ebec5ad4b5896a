//! The comparison tables (CaLMFlow against I-CFM and OT-CFM, the heads, the targets), their
//! plots, and the report that collects them.

use std::path::PathBuf;

use calmflow::metrics::MetricsReport;
use calmflow::model::{HeadKind, Predict};
use calmflow::plot::{self, Series};
use calmflow::train::CfmVariant;
use ndarray::Array2;
use serde::Serialize;

use calmflow_benches::Stage;

use crate::runs::{Budget, CalmKnobs, RunResult, describe, run_calmflow, run_cfm};
use crate::tasks::{Task, seed_sets};

/// Where a run writes: `DIR/{prefix}.md`, `DIR/{prefix}.json`, plots `DIR/img/{prefix}-*.png`
/// and, while it runs, `DIR/{prefix}.progress.json`. The quick and the full suite have
/// their own prefixes, so that one never overwrites the other's tables.
pub struct Output {
    pub dir: PathBuf,
    pub prefix: &'static str,
}

impl Output {
    /// The path, relative to `dir`, of the plot named `title`.
    pub fn image(&self, title: &str) -> String {
        format!("img/{}-{}.png", self.prefix, slug(title))
    }

    pub fn path(&self, extension: &str) -> PathBuf {
        self.dir.join(format!("{}.{extension}", self.prefix))
    }
}

/// `mean ± std` over seeds (sample std; 0 for one seed), of the finite values.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    plot::mean_std(v).unwrap_or((f64::NAN, f64::NAN))
}

pub fn cell(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    if m.abs() >= 100.0 {
        format!("{m:.1} ± {s:.1}")
    } else if m != 0.0 && m.abs() < 0.01 {
        // MMD² lives at 1e-5 … 1e-3: three decimals would print it as 0.
        format!("{m:.2e} ± {s:.1e}")
    } else {
        format!("{m:.3} ± {s:.3}")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    task: String,
    dim: usize,
    runs: Vec<RunResult>,
    floor: Vec<MetricsReport>,
    plot: Option<String>,
    /// The image grid (real and generated images), for image data.
    images: Option<String>,
}

fn metric_columns(runs: &[&RunResult]) -> [String; 7] {
    let get = |f: &dyn Fn(&MetricsReport) -> Option<f64>| -> String {
        let v: Vec<f64> = runs.iter().filter_map(|r| f(&r.report)).collect();
        if v.is_empty() { "—".into() } else { cell(&v) }
    };
    [
        get(&|r| r.w2),
        get(&|r| Some(r.mmd2_median)),
        get(&|r| Some(r.energy)),
        get(&|r| r.frechet),
        get(&|r| r.dispersion.as_ref().map(|d| d.trace_ratio)),
        get(&|r| r.knn.map(|k| k.precision)),
        get(&|r| r.knn.map(|k| k.recall)),
    ]
}

pub fn task_table(t: &TaskResult) -> String {
    let mut md = format!(
        "\n### {}\n\n| method | W2 | MMD² (median) | energy | Fréchet | trace ratio | k-NN precision | k-NN recall | train s | steps | parameters | NFE |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        if t.task.contains("D =") {
            t.task.clone()
        } else {
            format!("{} (D = {})", t.task, t.dim)
        }
    );
    let mut methods: Vec<&str> = Vec::new();
    for r in &t.runs {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    for m in methods {
        let runs: Vec<&RunResult> = t.runs.iter().filter(|r| r.method == m).collect();
        let failed = runs.iter().filter(|r| r.report.n_samples == 0).count();
        let m = if failed > 0 {
            format!("{m} ({failed} of {} seeds diverged, left out)", runs.len())
        } else {
            m.to_string()
        };
        let [w2, mmd, energy, frechet, trace, precision, recall] = metric_columns(&runs);
        let secs: Vec<f64> = runs.iter().map(|r| r.train_seconds).collect();
        let steps: Vec<f64> = runs.iter().map(|r| r.steps as f64).collect();
        md.push_str(&format!(
            "| {m} | {w2} | {mmd} | {energy} | {frechet} | {trace} | {precision} | {recall} | {:.1} | {:.0} | {} | {} |\n",
            mean_std(&secs).0,
            mean_std(&steps).0,
            // A diverged seed reports no function evaluations.
            runs.iter().map(|r| r.parameters).max().unwrap_or(0),
            runs.iter().map(|r| r.nfe).max().unwrap_or(0)
        ));
    }
    let floor: Vec<RunResult> = t
        .floor
        .iter()
        .map(|r| RunResult {
            method: String::new(),
            seed: 0,
            report: r.clone(),
            train_seconds: 0.0,
            steps: 0,
            parameters: 0,
            nfe: 0,
        })
        .collect();
    let [w2, mmd, energy, frechet, trace, precision, recall] =
        metric_columns(&floor.iter().collect::<Vec<_>>());
    md.push_str(&format!(
        "| noise floor (second target sample) | {w2} | {mmd} | {energy} | {frechet} | {trace} | {precision} | {recall} | | | | |\n"
    ));
    if let Some(p) = &t.plot {
        md.push_str(&format!("\n![{}]({p})\n", t.task));
    }
    if let Some(p) = &t.images {
        md.push_str(&format!("\n![{} as images]({p})\n", t.task));
    }
    md
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

pub fn compare(task: &Task, budget: &Budget, knobs: CalmKnobs, out: &Output) -> TaskResult {
    let mut runs = Vec::new();
    let mut floor = Vec::new();
    let mut plot_path = None;
    let mut images = None;
    for &seed in &budget.seeds {
        let (x0, target, noise_floor) = seed_sets(task, budget, seed);
        floor.push(noise_floor);
        let (calm, calm_samples) = run_calmflow(task, budget, knobs, seed, &x0, &target);
        let (icfm, icfm_samples) =
            run_cfm(task, budget, CfmVariant::ICfm, seed, &x0, &target, None);
        let (otcfm, ot_samples) =
            run_cfm(task, budget, CfmVariant::OtCfm, seed, &x0, &target, None);
        eprintln!(
            "quality: {} seed {seed}: W2 CaLMFlow {:.3}, I-CFM {:.3}, OT-CFM {:.3} ({:.0} s CaLMFlow)",
            task.name,
            calm.report.w2.unwrap_or(f64::NAN),
            icfm.report.w2.unwrap_or(f64::NAN),
            otcfm.report.w2.unwrap_or(f64::NAN),
            calm.train_seconds
        );
        if task.plot && plot_path.is_none() {
            let name = out.image(&task.name);
            let series = [
                Series {
                    label: "target",
                    points: &target,
                    color: plot::TARGET,
                },
                Series {
                    label: "CaLMFlow",
                    points: &calm_samples,
                    color: plot::CALMFLOW,
                },
                Series {
                    label: "I-CFM",
                    points: &icfm_samples,
                    color: plot::BASELINE,
                },
                Series {
                    label: "OT-CFM",
                    points: &ot_samples,
                    color: plot::SOURCE,
                },
            ];
            match plot::scatter(
                &out.dir.join(&name),
                &format!("{} (seed {seed})", task.name),
                &series,
            ) {
                Ok(()) => plot_path = Some(name),
                Err(e) => eprintln!("quality: plot skipped: {e}"),
            }
        }
        if images.is_none() {
            images = image_grid(
                task,
                seed,
                out,
                &format!("images {}", task.name),
                &target,
                &[
                    ("CaLMFlow (paper)".into(), calm_samples),
                    ("I-CFM".into(), icfm_samples),
                    ("OT-CFM".into(), ot_samples),
                ],
            );
        }
        runs.extend([calm, icfm, otcfm]);
    }
    TaskResult {
        task: task.name.clone(),
        dim: task.dim,
        runs,
        floor,
        plot: plot_path,
        images,
    }
}

/// The heads table of one task: every CaLMFlow head in `heads` (the first is the default
/// whose training time sets the equal-wall-clock budget), I-CFM and OT-CFM at equal steps,
/// and both again trained for as long as the default head took.
pub fn heads_table(
    task: &Task,
    budget: &Budget,
    heads: &[(String, CalmKnobs)],
    out: &Output,
) -> TaskResult {
    let mut runs: Vec<RunResult> = Vec::new();
    let mut floor = Vec::new();
    let mut plot_path = None;
    let mut images = None;
    for &seed in &budget.seeds {
        let (x0, target, noise_floor) = seed_sets(task, budget, seed);
        floor.push(noise_floor);
        let mut samples: Vec<(String, Array2<f32>)> = Vec::new();
        let mut default_seconds = None;
        for (label, knobs) in heads {
            let (mut r, x) = run_calmflow(task, budget, *knobs, seed, &x0, &target);
            r.method = label.clone();
            default_seconds.get_or_insert(r.train_seconds);
            eprintln!(
                "quality: heads, {} seed {seed}, {label}: Fréchet {:.3}, MMD² {:.4}, trace ratio {:.3} ({:.0} s)",
                task.name,
                r.report.frechet.unwrap_or(f64::NAN),
                r.report.mmd2_median,
                r.report
                    .dispersion
                    .as_ref()
                    .map_or(f64::NAN, |d| d.trace_ratio),
                r.train_seconds
            );
            runs.push(r);
            samples.push((label.clone(), x));
        }
        for variant in [CfmVariant::ICfm, CfmVariant::OtCfm] {
            let (r, x) = run_cfm(task, budget, variant, seed, &x0, &target, None);
            let per_step = r.train_seconds / budget.steps as f64;
            samples.push((r.method.clone(), x));
            runs.push(r);
            // As many steps as fit in the default head's training time.
            let equal = default_seconds.map_or(budget.steps, |t| {
                ((t / per_step.max(1e-9)).round() as usize).clamp(budget.steps, 100 * budget.steps)
            });
            let (r, _) = run_cfm(task, budget, variant, seed, &x0, &target, Some(equal));
            runs.push(r);
        }
        if plot_path.is_none() {
            plot_path = plot_heads(task, seed, &target, &samples, &runs, out);
        }
        if images.is_none() {
            images = image_grid(
                task,
                seed,
                out,
                &format!("heads images {}", task.name),
                &target,
                &samples,
            );
        }
    }
    TaskResult {
        task: format!("heads: {}", task.name),
        dim: task.dim,
        runs,
        floor,
        plot: plot_path,
        images,
    }
}

/// The targets table of one task: the default head against OT-CFM at equal steps, scored
/// on `budget.n_eval` points ([`TARGET_EVAL_POINTS`](crate::tasks::TARGET_EVAL_POINTS) in the full suite), the comparison
/// that the distribution-heads work set its targets in.
pub fn targets_table(task: &Task, budget: &Budget, best: CalmKnobs) -> TaskResult {
    let mut runs = Vec::new();
    let mut floor = Vec::new();
    for &seed in &budget.seeds {
        let (x0, target, noise_floor) = seed_sets(task, budget, seed);
        let (mut r, _) = run_calmflow(task, budget, best, seed, &x0, &target);
        r.method = format!("CaLMFlow {}", describe(&best));
        let (cfm, _) = run_cfm(task, budget, CfmVariant::OtCfm, seed, &x0, &target, None);
        eprintln!(
            "quality: targets, {} seed {seed}: Fréchet {:.3} vs OT-CFM {:.3} (floor {:.3}), MMD² {:.2e} vs {:.2e}",
            task.name,
            r.report.frechet.unwrap_or(f64::NAN),
            cfm.report.frechet.unwrap_or(f64::NAN),
            noise_floor.frechet.unwrap_or(f64::NAN),
            r.report.mmd2_median,
            cfm.report.mmd2_median,
        );
        floor.push(noise_floor);
        runs.push(r);
        runs.push(cfm);
    }
    TaskResult {
        task: format!("targets ({} points): {}", budget.n_eval, task.name),
        dim: task.dim,
        runs,
        floor,
        plot: None,
        images: None,
    }
}

/// The first images of the target and of each method's samples, one row each, for a task
/// drawn as images (the digits); `None` for other tasks or when the plot fails (said on
/// stderr).
fn image_grid(
    task: &Task,
    seed: u64,
    out: &Output,
    name: &str,
    target: &Array2<f32>,
    samples: &[(String, Array2<f32>)],
) -> Option<String> {
    let shape = task.image?;
    let name = out.image(name);
    let mut rows: Vec<(&str, &Array2<f32>)> = vec![("real (held out)", target)];
    rows.extend(
        samples
            .iter()
            .map(|(label, x)| (label.strip_prefix("CaLMFlow ").unwrap_or(label.as_str()), x)),
    );
    match plot::image_grid(
        &out.dir.join(&name),
        &format!("{} (seed {seed})", task.name),
        &rows,
        shape,
    ) {
        Ok(()) => Some(name),
        Err(e) => {
            eprintln!("quality: image grid skipped: {e}");
            None
        }
    }
}

/// One panel per method (2-D tasks) or the variance ratios along the target's principal
/// directions (higher dimensions), for the first seed.
fn plot_heads(
    task: &Task,
    seed: u64,
    target: &Array2<f32>,
    samples: &[(String, Array2<f32>)],
    runs: &[RunResult],
    out: &Output,
) -> Option<String> {
    let name = out.image(&format!("heads {}", task.name));
    let title = format!("{} (seed {seed})", task.name);
    let result = if task.dim == 2 {
        let series: Vec<Series<'_>> = samples
            .iter()
            .map(|(label, points)| Series {
                label,
                points,
                color: if label.starts_with("CaLMFlow") {
                    plot::CALMFLOW
                } else {
                    plot::BASELINE
                },
            })
            .collect();
        plot::panels(&out.dir.join(&name), &title, target, &series)
    } else {
        let groups: Vec<(&str, Vec<(&str, f64)>)> = runs
            .iter()
            .filter(|r| r.seed == seed)
            .filter_map(|r| {
                let d = r.report.dispersion.as_ref()?;
                let mut bars = vec![("trace", d.trace_ratio)];
                for (k, v) in d.leading.iter().enumerate() {
                    bars.push((["PC1", "PC2", "PC3"][k.min(2)], *v));
                }
                if let Some(rest) = d.rest {
                    bars.push(("rest", rest));
                }
                Some((r.method.as_str(), bars))
            })
            .collect();
        plot::dispersion_bars(
            &out.dir.join(&name),
            &format!("variance ratios to the target, {title}"),
            &groups,
        )
    };
    match result {
        Ok(()) => Some(name),
        Err(e) => {
            eprintln!("quality: plot skipped: {e}");
            None
        }
    }
}

/// The heads of the heads tables: the default first (its training time sets the
/// equal-time CFM budget), the mixture over endpoints (the default before it), the
/// mixture over increments (the held-out study's form) and the paper's head; the probes
/// in docs/heads.md cover cvae.
pub fn heads(best: CalmKnobs, knobs: CalmKnobs) -> Vec<(String, CalmKnobs)> {
    let mut heads: Vec<(String, CalmKnobs)> = vec![(format!("CaLMFlow {}", describe(&best)), best)];
    // The default until 2026-12-07: the mixture over endpoints in one step, k-means start.
    let mixture = CalmKnobs {
        head: HeadKind::Mixture,
        ..best
    };
    heads.push((format!("CaLMFlow {}", describe(&mixture)), mixture));
    let increments = CalmKnobs {
        head: HeadKind::Mixture,
        predict: Predict::Increment,
        sigma: 0.0,
        n_times: knobs.n_times,
        anneal: knobs.anneal,
        ..best
    };
    heads.push((format!("CaLMFlow {}", describe(&increments)), increments));
    heads.push((format!("CaLMFlow {} (paper)", describe(&knobs)), knobs));
    heads
}

/// The finished tables of a run, in their order, and the seconds they took.
#[derive(Default)]
pub struct Collected {
    /// The tables' markdown.
    pub md_parts: Vec<String>,
    /// The comparison, heads and targets tables' results.
    pub task_results: Vec<serde_json::Value>,
    /// The ablations' results.
    pub ablation_results: Vec<serde_json::Value>,
    /// Summed over the tables (their own runs' times for saved ones).
    pub seconds: f64,
}

impl Collected {
    /// Adds a comparison, heads or targets table.
    pub fn add_task(&mut self, stage: Stage) {
        self.md_parts.push(stage.markdown);
        self.task_results.push(stage.result);
        self.seconds += stage.seconds;
    }

    /// Adds an ablation.
    pub fn add_ablation(&mut self, stage: Stage) {
        self.md_parts.push(stage.markdown);
        self.ablation_results.push(stage.result);
        self.seconds += stage.seconds;
    }
}

/// Writes the report, `{prefix}.md` and `{prefix}.json`: the suite's description, then
/// the tables in their order, and the results as JSON. An error writing ends the program
/// (status 1).
pub fn write_report(
    out: &Output,
    quick: bool,
    budget: &Budget,
    targets_budget: &Budget,
    collected: &Collected,
) {
    let Collected {
        md_parts,
        task_results,
        ablation_results,
        seconds,
    } = collected;
    let mut md = format!(
        "## Quality suite{}\n\nWritten by `cargo xtask bench --suite quality{}` in {:.0} min on this machine (summed over its tables). \
         Every method trains for the same {} steps of batch {} on the same data; CaLMFlow: H = {}, {} layers, \
         N = {}, β = 0.01, exact-OT coupling, τ = 1, no dropout; CFM: velocity MLP width {}, σ = 0.01, \
         dopri5. Metrics on {} generated points against a fresh target sample, mean ± std over seeds {:?}; \
         the noise floor scores a second independent target sample. NFE: dopri5 function evaluations \
         (CFM) or CaLMFlow's decoding steps with the KV cache times its head's evaluations per step \
         (16 for the flow head's 8 midpoint steps, 1 for the others). Ablations score {} points (the digits: \
         600 held-out digits, against as many generated; 1197 digits train; the cells: 200 held-out cells, 500 train). At D ≥ 50 a W2 below the \
         noise floor marks under-dispersed samples (2000 points in high dimension reward shrinkage), \
         not a better fit: read W2 there with MMD, energy and Fréchet. The targets tables score the \
         default head and OT-CFM again on {} points (no W2), where the heads tables' 2000-point \
         Fréchet distance at D = 100 is within the two-sample noise.\n",
        if quick { " (quick)" } else { "" },
        if quick { " --quick" } else { "" },
        seconds / 60.0,
        budget.steps,
        budget.batch,
        budget.hidden,
        budget.layers,
        budget.n_times,
        budget.cfm_width,
        budget.n_eval,
        budget.seeds,
        budget.n_eval_ablation,
        targets_budget.n_eval
    );
    for part in md_parts {
        md.push_str(part);
    }
    let json = serde_json::json!({
        "quick": quick,
        "budget": budget,
        "seconds": seconds,
        "tasks": task_results,
        "ablations": ablation_results,
    });
    let write = |path: PathBuf, text: &str| match calmflow::data::write_atomically(&path, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    }) {
        Ok(()) => eprintln!("quality: wrote {}", path.display()),
        Err(e) => {
            eprintln!("quality: {}: {e}", path.display());
            std::process::exit(1);
        }
    };
    write(out.path("md"), &md);
    write(
        out.path("json"),
        &serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
}
