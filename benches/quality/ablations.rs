//! CaLMFlow's ablations: settings swept over seeds on one task, their tables and curves.

use calmflow::metrics::MetricsReport;
use calmflow::plot::{self, SweepMetric, SweepPoint};
use serde::{Deserialize, Serialize};

use crate::runs::{Budget, CalmKnobs, describe, run_calmflow, score_calmflow, train_calmflow};
use crate::tables::{Output, cell, mean_std};
use crate::tasks::{Task, eval_sets};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AblationPoint {
    setting: String,
    w2: Vec<f64>,
    mmd2_median: Vec<f64>,
    energy: Vec<f64>,
    frechet: Vec<f64>,
    trace_ratio: Vec<f64>,
    knn_precision: Vec<f64>,
    knn_recall: Vec<f64>,
    train_seconds: Vec<f64>,
}

impl AblationPoint {
    fn new(setting: String) -> Self {
        Self {
            setting,
            w2: Vec::new(),
            mmd2_median: Vec::new(),
            energy: Vec::new(),
            frechet: Vec::new(),
            trace_ratio: Vec::new(),
            knn_precision: Vec::new(),
            knn_recall: Vec::new(),
            train_seconds: Vec::new(),
        }
    }

    fn push(&mut self, r: &MetricsReport, seconds: f64) {
        self.w2.push(r.w2.unwrap_or(f64::NAN));
        self.mmd2_median.push(r.mmd2_median);
        self.energy.push(r.energy);
        self.frechet.push(r.frechet.unwrap_or(f64::NAN));
        self.trace_ratio
            .push(r.dispersion.as_ref().map_or(f64::NAN, |d| d.trace_ratio));
        self.knn_precision
            .push(r.knn.map_or(f64::NAN, |k| k.precision));
        self.knn_recall.push(r.knn.map_or(f64::NAN, |k| k.recall));
        self.train_seconds.push(seconds);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ablation {
    name: String,
    task: String,
    points: Vec<AblationPoint>,
    /// The curves' image (path relative to the output folder), once drawn.
    plot: Option<String>,
}

/// Draws the Fréchet, energy and W2 curves of `a` under `out/img/`.
pub fn plot_ablation(a: &mut Ablation, out: &Output) {
    let name = out.image(&format!("ablation {}", a.name));
    let series = |values: fn(&AblationPoint) -> &[f64]| -> Vec<SweepPoint<'_>> {
        a.points
            .iter()
            .map(|p| SweepPoint {
                setting: &p.setting,
                values: values(p),
            })
            .collect()
    };
    let (frechet, energy, w2) = (
        series(|p| &p.frechet),
        series(|p| &p.energy),
        series(|p| &p.w2),
    );
    let metrics = [
        SweepMetric {
            name: "Fréchet",
            points: &frechet,
        },
        SweepMetric {
            name: "energy distance",
            points: &energy,
        },
        SweepMetric {
            name: "W2",
            points: &w2,
        },
    ];
    let result = plot::sweep(
        &out.dir.join(&name),
        &format!("{} ({})", a.name, a.task),
        &metrics,
    );
    match result {
        Ok(()) => a.plot = Some(name),
        Err(e) => eprintln!("quality: plot skipped: {e}"),
    }
}

fn ablation(
    name: &str,
    task: &Task,
    budget: &Budget,
    settings: Vec<(String, CalmKnobs)>,
) -> Ablation {
    let mut points = Vec::new();
    for (label, knobs) in settings {
        let mut p = AblationPoint::new(label.clone());
        for &seed in &budget.seeds {
            let (x0, target, _) = eval_sets(task, budget.n_eval_ablation, seed);
            let (r, _) = run_calmflow(task, budget, knobs, seed, &x0, &target);
            p.push(&r.report, r.train_seconds);
        }
        eprintln!("quality: ablation {name}, {label}: W2 {}", cell(&p.w2));
        points.push(p);
    }
    Ablation {
        name: name.into(),
        task: task.name.clone(),
        points,
        plot: None,
    }
}

/// The context control: the same knobs with a one-token anchor prompt and the whole
/// history (Volterra), or the current time point only (Markov).
fn context_pair(knobs: CalmKnobs) -> Vec<(String, CalmKnobs)> {
    vec![
        (
            "Volterra, anchor prompt".into(),
            CalmKnobs {
                anchored: Some(false),
                ..knobs
            },
        ),
        (
            "Markov, anchor prompt".into(),
            CalmKnobs {
                anchored: Some(true),
                ..knobs
            },
        ),
    ]
}

/// The temperature sweep reuses one trained model per seed.
fn temperature_sweep(task: &Task, budget: &Budget, knobs: CalmKnobs, temps: &[f64]) -> Ablation {
    let mut points: Vec<AblationPoint> = temps
        .iter()
        .map(|t| AblationPoint::new(format!("τ = {t}")))
        .collect();
    for &seed in &budget.seeds {
        let (model, secs, _) = train_calmflow(task, budget, knobs, seed);
        let (x0, target, _) = eval_sets(task, budget.n_eval_ablation, seed);
        for (p, &t) in points.iter_mut().zip(temps) {
            let knobs = CalmKnobs {
                temperature: t,
                ..knobs
            };
            let (r, _) = score_calmflow(&model, knobs, seed, &x0, &target);
            p.push(&r, secs);
        }
    }
    Ablation {
        name: "temperature".into(),
        task: task.name.clone(),
        points,
        plot: None,
    }
}

pub fn ablation_table(a: &Ablation) -> String {
    let mut md = format!(
        "\n### Ablation: {} ({})\n\n| setting | W2 | MMD² (median) | energy | Fréchet | trace ratio | k-NN precision | k-NN recall | train s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        a.name, a.task
    );
    for p in &a.points {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            p.setting,
            cell(&p.w2),
            cell(&p.mmd2_median),
            cell(&p.energy),
            cell(&p.frechet),
            cell(&p.trace_ratio),
            cell(&p.knn_precision),
            cell(&p.knn_recall),
            mean_std(&p.train_seconds).0
        ));
    }
    if let Some(p) = &a.plot {
        md.push_str(&format!("\n![{}]({p})\n", a.name));
    }
    md
}

/// An ablation, run when called.
pub type AblationRun<'a> = Box<dyn FnOnce() -> Ablation + 'a>;

/// The suite's ablations in their order, each under the name of its key
/// (`--only "ablation: NAME"`): on `pair_task`, the paper's trajectories P, time points N,
/// variational decoder, context and temperature, and the context with the repaired head;
/// on the digits, the default head's time points, context noise and context, and the
/// paper's spatial tokens K. The quick suite sweeps fewer P and N.
pub fn suite<'a>(
    quick: bool,
    pair_task: &'a Task,
    digits: &'a Task,
    budget: &'a Budget,
    knobs: CalmKnobs,
    best: CalmKnobs,
) -> Vec<(&'static str, AblationRun<'a>)> {
    let p_values: Vec<usize> = if quick {
        vec![1, 2, 4]
    } else {
        vec![1, 2, 4, 8]
    };
    let n_values: Vec<usize> = if quick {
        vec![4, 8, 16]
    } else {
        vec![4, 8, 16, 32]
    };
    vec![
        (
            "trajectories per sequence P",
            Box::new(move || {
                ablation(
                    "trajectories per sequence P",
                    pair_task,
                    budget,
                    p_values
                        .iter()
                        .map(|&p| (format!("P = {p}"), CalmKnobs { n_traj: p, ..knobs }))
                        .collect(),
                )
            }),
        ),
        (
            "time points N",
            Box::new(move || {
                ablation(
                    "time points N",
                    pair_task,
                    budget,
                    n_values
                        .iter()
                        .map(|&n| {
                            (
                                format!("N = {n}"),
                                CalmKnobs {
                                    n_times: n,
                                    ..knobs
                                },
                            )
                        })
                        .collect(),
                )
            }),
        ),
        (
            "variational decoder",
            Box::new(move || {
                ablation(
                    "variational decoder",
                    pair_task,
                    budget,
                    vec![
                        ("on (τ = 1)".into(), knobs),
                        (
                            "off (deterministic)".into(),
                            CalmKnobs {
                                variational: false,
                                temperature: 0.0,
                                ..knobs
                            },
                        ),
                    ],
                )
            }),
        ),
        (
            "context",
            Box::new(move || {
                ablation(
                    "context: Volterra (whole history) vs Markov (current time point)",
                    pair_task,
                    budget,
                    context_pair(knobs),
                )
            }),
        ),
        (
            "context, repaired head",
            Box::new(move || {
                let noisy = CalmKnobs {
                    sigma: if best.sigma > 0.0 { best.sigma } else { 0.1 },
                    ..best
                };
                ablation(
                    &format!(
                        "context with the repaired head ({}): Volterra vs Markov",
                        describe(&noisy)
                    ),
                    pair_task,
                    budget,
                    context_pair(noisy),
                )
            }),
        ),
        (
            "time points N, default head, digits",
            Box::new(move || {
                ablation(
                    "time points N with the default head",
                    digits,
                    budget,
                    [2, 4, 8]
                        .iter()
                        .map(|&n| (format!("N = {n}"), CalmKnobs { n_times: n, ..best }))
                        .collect(),
                )
            }),
        ),
        (
            "context noise, default head, digits",
            Box::new(move || {
                let eight = CalmKnobs { n_times: 8, ..best };
                ablation(
                    "remedies for the roll-out with the default head",
                    digits,
                    budget,
                    vec![
                        ("N = 2".into(), best),
                        ("N = 8".into(), eight),
                        (
                            "N = 8, context noise 1".into(),
                            CalmKnobs {
                                context_noise: 1.0,
                                ..eight
                            },
                        ),
                        (
                            "N = 8, context noise 2".into(),
                            CalmKnobs {
                                context_noise: 2.0,
                                ..eight
                            },
                        ),
                        (
                            "N = 8, bridge σ 1, context noise 1".into(),
                            CalmKnobs {
                                sigma: 1.0,
                                context_noise: 1.0,
                                ..eight
                            },
                        ),
                    ],
                )
            }),
        ),
        (
            "context, default head, digits",
            Box::new(move || {
                let four = CalmKnobs { n_times: 4, ..best };
                ablation(
                    &format!(
                        "context with the default head ({}): Volterra vs Markov",
                        describe(&four)
                    ),
                    digits,
                    budget,
                    context_pair(four),
                )
            }),
        ),
        (
            "temperature",
            Box::new(move || {
                temperature_sweep(pair_task, budget, knobs, &[0.0, 0.25, 0.5, 1.0, 1.5])
            }),
        ),
        (
            "spatial tokens K",
            Box::new(move || {
                ablation(
                    "spatial tokens K",
                    digits,
                    budget,
                    [1, 2, 4, 8]
                        .iter()
                        .map(|&k| {
                            (
                                format!("K = {k}"),
                                CalmKnobs {
                                    n_space: k,
                                    ..knobs
                                },
                            )
                        })
                        .collect(),
                )
            }),
        ),
    ]
}
