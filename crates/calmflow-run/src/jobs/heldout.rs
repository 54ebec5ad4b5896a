//! `calmflow heldout`: text-conditioned generation of cells for condition combinations
//! never seen in training (docs/method.md §8), against conditional CFM with one-hot labels.
//!
//! The cells of an AnnData file are grouped by the label combination of chosen `obs`
//! columns (by default `cell_type` × `phase` of the bundled pbmc68k_reduced). Some
//! combinations are held out whole; each of their labels still occurs in training. PCA
//! (fitted on the training cells only) maps expression to `d` dimensions, standardised per
//! component; both models learn N(0, I) → cells given the condition — CaLMFlow through a
//! prompt filled from the labels, CFM through concatenated one-hot label vectors. For each
//! held-out combination both generate as many cells as it has, compared with its real
//! cells by MMD² (median bandwidth), energy distance and R² of the mean expression, in PCA
//! space and, back-projected, in gene space. A third row per combination uses real
//! training cells of the same first label (e.g. the same cell type in other phases): the
//! score of simply copying the nearest seen condition.

use std::path::PathBuf;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use calmflow_data::{Sampler, StandardNormal, seeded_rng};
use calmflow_metrics::{energy_distance, mmd2_unbiased_median, r2_means};
use calmflow_model::{CalmFlowConfig, HeadKind, Predict};
use calmflow_train::{
    CalmFlowSettings, CfmVariant, ConditionalPath, Coupling, GenerationOptions, NoiseSchedule,
    OdeSolver, TrainConfig, TrainError, VelocityMlpConfig, cfm_sample, generate,
};
use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use serde::Serialize;

use super::train::{
    FitRun, TrainOutcome, bridge_note, create_out_dir, fit, load_pretrained, pretrained_shape,
};
use crate::cells::{CellSpec, CellStudy};
use crate::error::{AppError, AppResult};
use calmflow_train::BackendTask;

/// The (cell_type, phase) pairs held out by default: each has ≥ 20 cells in
/// pbmc68k_reduced, and its cell type and phase both occur in other pairs.
pub const DEFAULT_HELD_OUT: [[&str; 2]; 4] = [
    ["CD14+ Monocyte", "S"],
    ["CD19+ B", "S"],
    ["CD8+ Cytotoxic T", "G1"],
    ["Dendritic", "S"],
];

/// The default prompt for `cell_type` × `phase`.
pub const DEFAULT_TEMPLATE: &str = "Generate a {cell_type} cell in phase {phase}: ";

/// The held-out experiment's settings.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOutJob {
    /// The cells: file, condition columns, held-out combinations (labels joined by '/'
    /// are split against the file's labels, [`calmflow_data::Conditions::split_joined`]:
    /// "CD19+ B/G2/M" works), prompt template, PCA, layer and tokenizer.
    #[serde(flatten)]
    pub cells: CellSpec,
    /// CaLMFlow training steps.
    pub steps: usize,
    /// CFM training steps.
    pub cfm_steps: usize,
    /// Sequences (CaLMFlow) or pairs (CFM) per step.
    pub batch_size: usize,
    /// Transformer width (ignored with `init_from`).
    pub hidden: usize,
    /// Transformer blocks (ignored with `init_from`).
    pub layers: usize,
    /// Time points per trajectory `N`.
    pub n_times: usize,
    /// KL weight β (variational and cvae heads).
    pub beta: f64,
    /// CaLMFlow's distribution head (default: the mixture over increments, the best
    /// measured on this study: `docs/conditioning.md`).
    pub head: HeadKind,
    /// What the head predicts.
    pub predict: Predict,
    /// Brownian-bridge noise `σ` of CaLMFlow's training paths (0: straight paths); the
    /// endpoint form samples with the same `σ`.
    pub path_sigma: f64,
    /// Generation temperature τ.
    pub temperature: f64,
    /// CFM hidden width.
    pub cfm_width: usize,
    /// Train the token-embedding table (frozen by default).
    pub train_embeddings: bool,
    /// Seed of every random draw.
    pub seed: u64,
    /// Output directory.
    pub out: PathBuf,
    /// No progress output.
    #[serde(skip)]
    pub quiet: bool,
}

impl HeldOutJob {
    /// The defaults of `calmflow heldout` for `h5ad`.
    pub fn new(h5ad: PathBuf) -> Self {
        Self {
            cells: CellSpec {
                h5ad,
                columns: vec!["cell_type".into(), "phase".into()],
                held_out: DEFAULT_HELD_OUT
                    .iter()
                    .map(|p| p.iter().map(|s| s.to_string()).collect())
                    .collect(),
                template: DEFAULT_TEMPLATE.into(),
                pca: 16,
                layer: None,
                tokenizer: None,
                init_from: None,
            },
            steps: 2000,
            cfm_steps: 5000,
            batch_size: 64,
            hidden: 64,
            layers: 2,
            n_times: 16,
            beta: 0.01,
            head: HeadKind::Mixture,
            predict: Predict::Increment,
            path_sigma: 0.0,
            temperature: 1.0,
            cfm_width: 128,
            train_embeddings: false,
            seed: 0,
            out: PathBuf::from("runs/heldout"),
            quiet: false,
        }
    }
}

/// Scores of one model on one held-out combination.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Unbiased MMD² (RBF, median bandwidth) in PCA space.
    pub mmd_pca: f64,
    /// Energy distance in PCA space.
    pub energy_pca: f64,
    /// R² of the mean PCA coordinates.
    pub r2_pca: f64,
    /// Unbiased MMD² in gene space.
    pub mmd_genes: f64,
    /// Energy distance in gene space.
    pub energy_genes: f64,
    /// R² of the mean expression over genes.
    pub r2_genes: f64,
}

/// One held-out combination's results.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionResult {
    /// Its labels.
    pub labels: Vec<String>,
    /// Real (test) cells, and cells generated per model.
    pub n: usize,
    /// The prompt CaLMFlow read.
    pub prompt: String,
    /// CaLMFlow's scores.
    pub calmflow: Scores,
    /// Conditional CFM's scores.
    pub cfm: Scores,
    /// Real training cells of the same first label.
    pub nearest_seen: Scores,
}

/// What `calmflow heldout` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOutOutcome {
    /// The settings.
    pub job: HeldOutJob,
    /// Cells used for training (all conditions except the held-out ones).
    pub n_train: usize,
    /// Training conditions.
    pub n_train_conditions: usize,
    /// Fraction of expression variance the PCA keeps.
    pub explained_variance: f64,
    /// Which tokenizer made the prompts and its vocabulary size.
    pub tokenizer: String,
    /// CaLMFlow's training.
    pub calmflow_training: TrainOutcome,
    /// CFM's training.
    pub cfm_training: TrainOutcome,
    /// Per held-out combination.
    pub conditions: Vec<ConditionResult>,
    /// Markdown table of the results.
    pub table: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn scores(
    generated_pca: ArrayView2<'_, f32>,
    real_pca: ArrayView2<'_, f32>,
    generated_genes: ArrayView2<'_, f32>,
    real_genes: ArrayView2<'_, f32>,
) -> AppResult<Scores> {
    Ok(Scores {
        mmd_pca: mmd2_unbiased_median(generated_pca, real_pca)?.0,
        energy_pca: energy_distance(generated_pca, real_pca)?,
        r2_pca: r2_means(generated_pca, real_pca)?,
        mmd_genes: mmd2_unbiased_median(generated_genes, real_genes)?.0,
        energy_genes: energy_distance(generated_genes, real_genes)?,
        r2_genes: r2_means(generated_genes, real_genes)?,
    })
}

/// Picks one model's scores out of a condition's results.
type ScoreOf = fn(&ConditionResult) -> &Scores;

/// The results as a markdown table (one row per combination and model, then means).
pub fn results_table(conditions: &[ConditionResult]) -> String {
    let mut t = String::from(
        "| held-out condition | cells | model | MMD² (PCA) | energy (PCA) | R² mean (PCA) | \
         MMD² (genes) | energy (genes) | R² mean (genes) |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let row = |t: &mut String, name: &str, n: &str, model: &str, s: &Scores| {
        t.push_str(&format!(
            "| {name} | {n} | {model} | {:.4} | {:.3} | {:.3} | {:.4} | {:.3} | {:.3} |\n",
            s.mmd_pca, s.energy_pca, s.r2_pca, s.mmd_genes, s.energy_genes, s.r2_genes
        ));
    };
    let models: [(&str, ScoreOf); 3] = [
        ("CaLMFlow (prompt)", |c| &c.calmflow),
        ("CFM (one-hot)", |c| &c.cfm),
        ("nearest seen (real cells)", |c| &c.nearest_seen),
    ];
    for c in conditions {
        for (model, get) in models {
            row(
                &mut t,
                &c.labels.join(" / "),
                &c.n.to_string(),
                model,
                get(c),
            );
        }
    }
    for (model, get) in models {
        let k = conditions.len().max(1) as f64;
        let mean = |f: fn(&Scores) -> f64| conditions.iter().map(|c| f(get(c))).sum::<f64>() / k;
        let avg = Scores {
            mmd_pca: mean(|s| s.mmd_pca),
            energy_pca: mean(|s| s.energy_pca),
            r2_pca: mean(|s| s.r2_pca),
            mmd_genes: mean(|s| s.mmd_genes),
            energy_genes: mean(|s| s.energy_genes),
            r2_genes: mean(|s| s.r2_genes),
        };
        row(&mut t, "**mean**", "", model, &avg);
    }
    t
}

impl BackendTask for HeldOutJob {
    type Output = AppResult<HeldOutOutcome>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let say = |m: String| {
            if !self.quiet {
                eprintln!("{m}");
            }
        };
        let job = &self;
        create_out_dir(&job.out)?;
        // Data: expression, conditions, the held-out split, PCA, prompts.
        let study = CellStudy::load(job.cells.clone())?;
        say(format!("heldout: {}", study.summary()));
        let CellStudy {
            x,
            z,
            pca,
            scaler,
            conditions,
            held_out,
            train_rows,
            groups,
            texts,
            tokenizer,
            tokenizer_name,
            table,
            ..
        } = &study;
        let make_data = || study.flow_data(0.1, job.seed);
        let extra = serde_json::json!({
            "heldout": job,
            "conditions": table,
            "tokenizer": tokenizer.spec().map_err(|e| AppError::Other(e.to_string()))?,
        });
        let train = |steps: usize, coupling: Coupling| TrainConfig {
            steps,
            batch_size: job.batch_size,
            warmup_steps: (steps / 20).min(100),
            coupling,
            seed: job.seed,
            validate_every: (steps / 4).max(1),
            checkpoint_every: steps,
            log_every: (steps / 40).max(1),
            ..TrainConfig::default()
        };

        // CaLMFlow, prompted.
        let bridge = if job.predict.steps_to_endpoint() {
            job.path_sigma
        } else {
            0.0
        };
        let mut config = CalmFlowConfig::new(job.cells.pca)
            .with_hidden(job.hidden)
            .with_layers(job.layers)
            .with_heads(4)
            .with_dropout(0.0)
            .with_head(job.head)
            .with_predict(job.predict)
            .with_bridge_sigma(bridge)
            .with_vocab_size(tokenizer.vocab_size())
            .with_freeze_embeddings(!job.train_embeddings);
        let pretrained = pretrained_shape(job.cells.init_from.as_deref(), &mut config)?;
        B::seed(&device, job.seed);
        let mut model = config.init::<B>(&device).map_err(TrainError::from)?;
        if let Some(dir) = &pretrained {
            model = load_pretrained(model, dir, &device, job.quiet)?;
        }
        let settings = CalmFlowSettings {
            n_times: job.n_times,
            beta: job.beta,
            path: if job.path_sigma > 0.0 {
                ConditionalPath {
                    sigma: job.path_sigma,
                    noise: NoiseSchedule::Bridge,
                    ..ConditionalPath::straight()
                }
            } else {
                ConditionalPath::straight()
            },
            ..CalmFlowSettings::default()
        };
        say(format!(
            "heldout: CaLMFlow ({} parameters, H = {}, {} layers, {} head over the {}{}), \
             prompts by {tokenizer_name}; {} steps",
            model.num_params(),
            config.hidden,
            config.layers,
            job.head,
            job.predict,
            bridge_note(job.path_sigma),
            job.steps
        ));
        let run = |label: &str, steps: usize, coupling: Coupling| FitRun {
            train: train(steps, coupling),
            out: Some(job.out.join(label)),
            extra: extra.clone(),
            resume: false,
            quiet: job.quiet,
            label: label.to_string(),
        };
        let json = serde_json::to_value(&config).unwrap_or_default();
        let (model, calm_training) = fit(
            model,
            json,
            settings,
            make_data()?,
            std::slice::from_ref(&device),
            &run("calmflow", job.steps, Coupling::ExactOt),
            None,
        )?;
        let model = model.valid();

        // Conditional CFM, one-hot labels.
        let net = VelocityMlpConfig::new(job.cells.pca)
            .with_width(job.cfm_width)
            .with_cond_dim(table.feature_dim());
        B::seed(&device, job.seed);
        let cfm = net.init::<B>(&device)?;
        let (cfm_settings, cfm_coupling) = CfmVariant::ICfm.setup(0.01);
        say(format!(
            "heldout: I-CFM with one-hot labels ({} parameters), {} steps",
            cfm.num_params(),
            job.cfm_steps
        ));
        let json = serde_json::to_value(&net).unwrap_or_default();
        let (cfm, cfm_training) = fit(
            cfm,
            json,
            cfm_settings,
            make_data()?,
            std::slice::from_ref(&device),
            &run("cfm", job.cfm_steps, cfm_coupling),
            None,
        )?;
        let cfm = cfm.valid();

        // Evaluation on every held-out combination.
        let mut rng = seeded_rng(job.seed ^ 0xE7A1_0000_0000_0002);
        let mut results = Vec::new();
        let mut files = Vec::new();
        let first_label_rows = |label: &str| -> Vec<usize> {
            train_rows
                .iter()
                .copied()
                .filter(|&r| conditions.combination(r)[0] == label)
                .collect()
        };
        for held in held_out {
            let c = table
                .index_of(held)
                .ok_or_else(|| AppError::Other(format!("no condition {held:?}")))?;
            let rows = &groups[held];
            let n = rows.len();
            let x0 = StandardNormal { dim: job.cells.pca }.sample(n, &mut rng);
            let prompt = table.embed(&model, &[c], &device)?;
            let options = GenerationOptions {
                n_times: job.n_times,
                temperature: job.temperature,
                seed: job.seed ^ c as u64,
                ..GenerationOptions::default()
            };
            let calm = generate(&model, &x0, &options, Some(&prompt), false, &device)?.samples;
            let code = table.features(&[c], 1);
            let flow = cfm_sample(
                &cfm,
                &x0,
                Some(&code),
                &OdeSolver::default(),
                false,
                &device,
            )?
            .samples;
            let real_pca = z.select(Axis(0), rows);
            let real_genes = x.select(Axis(0), rows);
            let to_spaces = |s: &Array2<f32>| -> AppResult<(Array2<f32>, Array2<f32>)> {
                let zp = scaler.inverse_transform(s.view())?;
                let genes = pca.inverse_transform(zp.view())?;
                Ok((zp, genes))
            };
            let (calm_pca, calm_genes) = to_spaces(&calm)?;
            let (cfm_pca, cfm_genes) = to_spaces(&flow)?;
            let mut seen = first_label_rows(&held[0]);
            seen.shuffle(&mut rng);
            seen.truncate(n);
            let label = held
                .join("_")
                .replace(|ch: char| !ch.is_ascii_alphanumeric(), "-");
            for (name, points) in [
                ("calmflow", &calm_pca),
                ("cfm", &cfm_pca),
                ("real", &real_pca),
            ] {
                let path = job.out.join(format!("{label}.{name}.pca.npy"));
                crate::io::write_points(&path, points.view())?;
                files.push(path);
            }
            results.push(ConditionResult {
                labels: held.clone(),
                n,
                prompt: texts[c].clone(),
                calmflow: scores(
                    calm_pca.view(),
                    real_pca.view(),
                    calm_genes.view(),
                    real_genes.view(),
                )?,
                cfm: scores(
                    cfm_pca.view(),
                    real_pca.view(),
                    cfm_genes.view(),
                    real_genes.view(),
                )?,
                nearest_seen: scores(
                    z.select(Axis(0), &seen).view(),
                    real_pca.view(),
                    x.select(Axis(0), &seen).view(),
                    real_genes.view(),
                )?,
            });
        }
        let table_md = results_table(&results);
        let outcome = HeldOutOutcome {
            job: self.clone(),
            n_train: train_rows.len(),
            n_train_conditions: table.len() - held_out.len(),
            explained_variance: study.explained_variance(),
            tokenizer: tokenizer_name.clone(),
            calmflow_training: calm_training,
            cfm_training,
            conditions: results,
            table: table_md.clone(),
            files: files.clone(),
        };
        let md = job.out.join("heldout.md");
        calmflow_data::write_atomically(&md, |w| {
            std::io::Write::write_all(w, table_md.as_bytes())
        })?;
        let json = serde_json::to_string_pretty(&outcome).unwrap_or_default();
        let path = job.out.join("heldout.json");
        calmflow_data::write_atomically(&path, |w| std::io::Write::write_all(w, json.as_bytes()))?;
        let mut outcome = outcome;
        outcome.files.push(md);
        outcome.files.push(path);
        Ok(outcome)
    }
}
