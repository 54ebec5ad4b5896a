//! Conditional runs on cells (`[data] h5ad`): an AnnData file, the `obs` columns whose
//! labels are the condition, a prompt template, PCA.
//!
//! [`CellStudy::load`] reads the file, holds out whole label combinations, fits PCA on the
//! training cells (each component then standardised), fills one prompt per combination and
//! tokenizes it, and builds the [`ConditionTable`] of every combination in the file,
//! held-out ones included. `calmflow train` / `calmflow cfm train` train on it, the
//! checkpoint keeps a [`CellsRecord`] (the table, the tokenizer, the PCA map, the gene
//! names), and `calmflow sample --condition column=label` resolves labels against it and
//! maps generated cells back to gene space. `calmflow heldout` drives the same pieces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use calmflow_data::h5ad::{
    AnnData, Column, DataFrame, Expression, ReadOptions, read_h5ad_with, write_h5ad,
};
use calmflow_data::{Conditions, DataError, Pca, StandardNormal, Standardizer};
use calmflow_model::neox::NeoxDir;
use calmflow_tokenize::{
    HfTokenizer, PromptTemplate, PromptTokenizer, TokenizerSpec, WordTokenizer, left_pad,
};
use calmflow_train::{ConditionTable, FlowData, PointSource, Standardization, TrainError};
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};

/// What a cell study is made of.
#[derive(Debug, Clone, Serialize)]
pub struct CellSpec {
    /// The `.h5ad` file.
    pub h5ad: PathBuf,
    /// `obs` columns whose label combination is the condition.
    pub columns: Vec<String>,
    /// Combinations held out of training: one label per column, or one string of the
    /// labels joined by '/' in column order.
    pub held_out: Vec<Vec<String>>,
    /// Prompt template; its fields name condition columns.
    pub template: String,
    /// PCA components.
    pub pca: usize,
    /// Read this layer as the expression instead of `X`.
    pub layer: Option<String>,
    /// A Hugging Face `tokenizer.json`; default: the one in `init_from`, else a word-level
    /// tokenizer built from the prompts.
    pub tokenizer: Option<PathBuf>,
    /// A local GPT-NeoX / Pythia directory whose `tokenizer.json` is the default.
    pub init_from: Option<PathBuf>,
}

/// The default prompt for `columns`: "Generate a cell with" and `column {column}` for
/// each, e.g. "Generate a cell with cell_type {cell_type}, phase {phase}: ".
pub fn default_template(columns: &[String]) -> String {
    let fields: Vec<String> = columns.iter().map(|c| format!("{c} {{{c}}}")).collect();
    format!("Generate a cell with {}: ", fields.join(", "))
}

/// A loaded study: expression, PCA, the split, prompts and the condition table.
#[derive(Debug, Clone)]
pub struct CellStudy {
    /// The spec it was loaded from.
    pub spec: CellSpec,
    /// Expression `(cells, genes)`.
    pub x: Array2<f32>,
    /// PCA scores of every cell.
    pub z: Array2<f32>,
    /// The scores standardised per component (what the models learn).
    pub scaled: Array2<f32>,
    /// PCA fitted on the training cells.
    pub pca: Pca,
    /// Per-component standardisation fitted on the training cells' scores.
    pub scaler: Standardizer,
    /// Each cell's labels.
    pub conditions: Conditions,
    /// The held-out combinations, one label per column.
    pub held_out: Vec<Vec<String>>,
    /// Cells used for training.
    pub train_rows: Vec<usize>,
    /// Cells of each combination.
    pub groups: BTreeMap<Vec<String>, Vec<usize>>,
    /// Each cell's combination (an index into `table`).
    pub condition_of: Vec<usize>,
    /// Each combination's prompt text.
    pub texts: Vec<String>,
    /// The prompts' tokenizer.
    pub tokenizer: PromptTokenizer,
    /// Which tokenizer, in words.
    pub tokenizer_name: String,
    /// Every combination with its prompt tokens and one-hot code.
    pub table: ConditionTable,
    /// Gene names (`var` index).
    pub genes: Vec<String>,
}

fn tokenize_error(e: calmflow_tokenize::TokenizeError) -> AppError {
    AppError::Other(e.to_string())
}

fn prompt_tokenizer(spec: &CellSpec, texts: &[String]) -> AppResult<(PromptTokenizer, String)> {
    let from_dir = match &spec.init_from {
        Some(dir) => NeoxDir::open(dir).map_err(TrainError::from)?.tokenizer,
        None => None,
    };
    match spec.tokenizer.clone().or(from_dir) {
        Some(path) => {
            let tok = HfTokenizer::from_file(&path).map_err(tokenize_error)?;
            let tok = PromptTokenizer::HuggingFace(Box::new(tok));
            let name = format!("{} ({} tokens)", path.display(), tok.vocab_size());
            Ok((tok, name))
        }
        None => {
            let tok = PromptTokenizer::Word(WordTokenizer::from_texts(texts));
            let name = format!("built-in word-level ({} words)", tok.vocab_size());
            Ok((tok, name))
        }
    }
}

impl CellStudy {
    /// Reads and prepares the study of `spec`.
    pub fn load(spec: CellSpec) -> AppResult<Self> {
        if spec.columns.is_empty() {
            return Err(AppError::Other(
                "a cell study needs at least one condition column".into(),
            ));
        }
        // Only what the study uses: an exotic column elsewhere never stops it.
        let adata = read_h5ad_with(
            &spec.h5ad,
            &ReadOptions::conditions(&spec.columns, spec.layer.clone()),
        )?;
        let x = adata.x.to_dense();
        // Checked here, where the file's own rows and names are known: later stages see
        // the training cells only, renumbered.
        if let Some(((row, col), v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            let name = |names: &[String], i: usize| {
                names.get(i).map_or(String::new(), |n| format!(" ({n:?})"))
            };
            return Err(DataError::H5ad {
                path: spec.h5ad.clone(),
                element: spec
                    .layer
                    .as_ref()
                    .map_or("/X".to_string(), |l| format!("/layers/{l}")),
                message: format!(
                    "non-finite value {v} at row {row}{} (cell), column {col}{} (gene), \
                     counted from 0 as the file stores them",
                    name(&adata.obs.index, row),
                    name(&adata.var.index, col)
                ),
            }
            .into());
        }
        let columns = spec
            .columns
            .iter()
            .map(|c| Ok((c.clone(), adata.obs.labels(c)?)))
            .collect::<AppResult<Vec<_>>>()?;
        let conditions = Conditions::new(columns)?;
        let held_out: Vec<Vec<String>> = spec
            .held_out
            .iter()
            .map(|combo| match combo.as_slice() {
                [joined] if spec.columns.len() > 1 => conditions.split_joined(joined, '/'),
                _ => Ok(combo.clone()),
            })
            .collect::<Result<_, _>>()?;
        let (train_rows, _) = conditions.hold_out(&held_out)?;
        let groups = conditions.groups();
        let mut condition_of = vec![0usize; x.nrows()];
        for (c, rows) in groups.values().enumerate() {
            for &r in rows {
                condition_of[r] = c;
            }
        }
        let x_train = x.select(Axis(0), &train_rows);
        if spec.pca == 0 || spec.pca > x.ncols() {
            return Err(AppError::Other(format!(
                "PCA to {} components: the file has {} genes",
                spec.pca,
                x.ncols()
            )));
        }
        let pca = Pca::fit(x_train.view(), spec.pca)?;
        let z = pca.transform(x.view())?;
        let scaler = Standardizer::fit(z.select(Axis(0), &train_rows).view())?;
        let scaled = scaler.transform(z.view())?;
        let template = PromptTemplate::parse(&spec.template).map_err(tokenize_error)?;
        let texts = groups
            .keys()
            .map(|labels| template.fill(&spec.columns, labels))
            .collect::<Result<Vec<_>, _>>()
            .map_err(tokenize_error)?;
        let (tokenizer, tokenizer_name) = prompt_tokenizer(&spec, &texts)?;
        let prompts = texts
            .iter()
            .map(|t| tokenizer.encode(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(tokenize_error)?;
        let table = ConditionTable::new(
            spec.columns.clone(),
            groups.keys().cloned().collect(),
            prompts,
            tokenizer.pad_id(),
        )?;
        Ok(Self {
            genes: adata.var.index,
            spec,
            x,
            z,
            scaled,
            pca,
            scaler,
            conditions,
            held_out,
            train_rows,
            groups,
            condition_of,
            texts,
            tokenizer,
            tokenizer_name,
            table,
        })
    }

    /// Fraction of the expression variance the PCA keeps.
    pub fn explained_variance(&self) -> f64 {
        self.pca.explained_variance_ratio().sum()
    }

    /// One line on what was loaded.
    pub fn summary(&self) -> String {
        format!(
            "{} cells × {} genes; {} conditions ({}), {} held out ({} training cells); PCA {} \
             keeps {:.1}% of the variance; prompts by {}",
            self.x.nrows(),
            self.x.ncols(),
            self.table.len(),
            self.spec.columns.join(" × "),
            self.held_out.len(),
            self.train_rows.len(),
            self.spec.pca,
            100.0 * self.explained_variance(),
            self.tokenizer_name
        )
    }

    /// The training data: N(0, I) → the training cells' standardised scores, each with
    /// its condition; `validation_fraction` of them held back for validation losses.
    pub fn flow_data(&self, validation_fraction: f64, seed: u64) -> AppResult<FlowData> {
        Ok(FlowData::conditional(
            PointSource::Sampler(Box::new(StandardNormal { dim: self.spec.pca })),
            self.scaled.select(Axis(0), &self.train_rows),
            self.train_rows
                .iter()
                .map(|&r| self.condition_of[r])
                .collect(),
            self.table.clone(),
            validation_fraction,
            seed,
        )?)
    }

    /// The per-component standardisation as the checkpoint's map (the source, N(0, I),
    /// stays as it is).
    pub fn standardization(&self) -> Standardization {
        Standardization {
            mean: self.scaler.mean().to_vec(),
            scale: self.scaler.scale().to_vec(),
            source: false,
        }
    }

    /// What a checkpoint keeps to sample conditioned cells later.
    pub fn record(&self) -> AppResult<CellsRecord> {
        Ok(CellsRecord {
            h5ad: self.spec.h5ad.clone(),
            columns: self.spec.columns.clone(),
            template: self.spec.template.clone(),
            held_out: self.held_out.clone(),
            table: self.table.clone(),
            tokenizer: self.tokenizer.spec().map_err(tokenize_error)?,
            pca: PcaRecord::of(&self.pca),
            genes: self.genes.clone(),
        })
    }
}

/// A fitted PCA as plain numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaRecord {
    /// Data mean per gene.
    pub mean: Vec<f64>,
    /// Components, one row per gene (`genes × k`).
    pub components: Vec<Vec<f64>>,
    /// Variance along each component.
    pub explained_variance: Vec<f64>,
    /// Total variance of the data.
    pub total_variance: f64,
}

impl PcaRecord {
    fn of(pca: &Pca) -> Self {
        Self {
            mean: pca.mean().to_vec(),
            components: pca
                .components()
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect(),
            explained_variance: pca.explained_variance().to_vec(),
            total_variance: pca.total_variance(),
        }
    }

    /// The PCA map again (an error if the record is damaged).
    pub fn pca(&self) -> AppResult<Pca> {
        let k = self.explained_variance.len();
        let flat: Vec<f64> = self.components.iter().flatten().copied().collect();
        let components = Array2::from_shape_vec((self.components.len(), k), flat)
            .map_err(|e| AppError::Other(format!("the checkpoint's PCA record: {e}")))?;
        Ok(Pca::from_parts(
            self.mean.clone(),
            components,
            self.explained_variance.clone(),
            self.total_variance,
        )?)
    }
}

/// What a conditional checkpoint records about its cells (`extra.cells`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellsRecord {
    /// The file trained on.
    pub h5ad: PathBuf,
    /// The condition columns.
    pub columns: Vec<String>,
    /// The prompt template.
    pub template: String,
    /// Combinations held out of training.
    pub held_out: Vec<Vec<String>>,
    /// Every combination of the file with its prompt tokens and one-hot code.
    pub table: ConditionTable,
    /// The prompts' tokenizer.
    pub tokenizer: TokenizerSpec,
    /// Expression → PCA scores.
    pub pca: PcaRecord,
    /// Gene names.
    pub genes: Vec<String>,
}

/// A condition asked for at sampling time, resolved against a [`CellsRecord`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedCondition {
    /// One label per condition column (empty for a free-text prompt).
    pub labels: Vec<String>,
    /// The prompt text.
    pub text: String,
    /// Its token ids.
    pub ids: Vec<u32>,
}

impl CellsRecord {
    /// Labels in column order from `column=label` pairs: every column exactly once, each
    /// label one the training file has in that column (the errors list the known ones).
    pub fn labels(&self, given: &[(String, String)]) -> AppResult<Vec<String>> {
        let columns = self.table.columns();
        if let Some((c, _)) = given.iter().find(|(c, _)| !columns.contains(c)) {
            return Err(AppError::Other(format!(
                "--condition {c}=…: `{c}` is not a condition column of this model; its \
                 columns: {}",
                columns.join(", ")
            )));
        }
        columns
            .iter()
            .enumerate()
            .map(|(k, column)| {
                let values: Vec<&String> = given
                    .iter()
                    .filter(|(c, _)| c == column)
                    .map(|(_, v)| v)
                    .collect();
                let known = self.table.values(k);
                match values.as_slice() {
                    [v] if known.contains(v) => Ok((*v).clone()),
                    [v] => Err(AppError::Other(format!(
                        "unknown {column} `{v}`; known: {}",
                        known.join(", ")
                    ))),
                    [] => Err(AppError::Other(format!(
                        "no --condition {column}=… given; this model is conditioned on {} \
                         (known {column}: {})",
                        columns.join(", "),
                        known.join(", ")
                    ))),
                    _ => Err(AppError::Other(format!(
                        "--condition {column}=… given {} times",
                        values.len()
                    ))),
                }
            })
            .collect()
    }

    fn tokenizer(&self) -> AppResult<PromptTokenizer> {
        PromptTokenizer::from_spec(&self.tokenizer).map_err(tokenize_error)
    }

    /// The prompt of a label combination: the table's when the file had it, else the
    /// template filled with the labels.
    pub fn prompt_for(&self, labels: &[String]) -> AppResult<ResolvedCondition> {
        if let Some(c) = self.table.index_of(labels) {
            let text = PromptTemplate::parse(&self.template)
                .and_then(|t| t.fill(&self.columns, labels))
                .map_err(tokenize_error)?;
            return Ok(ResolvedCondition {
                labels: labels.to_vec(),
                text,
                ids: self.table.prompt_ids(c).to_vec(),
            });
        }
        let text = PromptTemplate::parse(&self.template)
            .and_then(|t| t.fill(&self.columns, labels))
            .map_err(tokenize_error)?;
        let ids = self.tokenizer()?.encode(&text).map_err(tokenize_error)?;
        Ok(ResolvedCondition {
            labels: labels.to_vec(),
            text,
            ids,
        })
    }

    /// A free-text prompt, tokenized as the training prompts were.
    pub fn free_prompt(&self, text: &str) -> AppResult<ResolvedCondition> {
        let ids = self.tokenizer()?.encode(text).map_err(tokenize_error)?;
        if ids.is_empty() {
            return Err(AppError::Other("--prompt is empty".into()));
        }
        Ok(ResolvedCondition {
            labels: Vec::new(),
            text: text.to_string(),
            ids,
        })
    }

    /// The prompt's ids as model input `(1, L)` (one prompt: nothing to pad).
    pub fn prompt_tensors<B: burn::tensor::backend::Backend>(
        &self,
        condition: &ResolvedCondition,
        device: &B::Device,
    ) -> (
        burn::tensor::Tensor<B, 2, burn::tensor::Int>,
        Option<burn::tensor::Tensor<B, 2, burn::tensor::Bool>>,
    ) {
        left_pad(std::slice::from_ref(&condition.ids), 0).tensors::<B>(device)
    }
}

/// Generated cells as an AnnData file: X in gene space, the condition columns in `obs`
/// (one category each), the PCA scores in `obsm/X_pca`.
pub fn write_cells(
    path: &Path,
    record: &CellsRecord,
    condition: &ResolvedCondition,
    pca_scores: &Array2<f32>,
    genes: &Array2<f32>,
) -> AppResult<()> {
    let n = genes.nrows();
    let mut columns: Vec<(String, Column)> = record
        .columns
        .iter()
        .zip(&condition.labels)
        .map(|(c, label)| {
            (
                c.clone(),
                Column::Categorical {
                    codes: vec![0; n],
                    categories: vec![label.clone()],
                    ordered: false,
                },
            )
        })
        .collect();
    columns.push((
        "prompt".into(),
        Column::Categorical {
            codes: vec![0; n],
            categories: vec![condition.text.clone()],
            ordered: false,
        },
    ));
    let adata = AnnData {
        x: Expression::Dense(genes.clone()),
        obs: DataFrame {
            index: (0..n).map(|i| format!("generated-{i}")).collect(),
            columns,
            name: "obs".into(),
            file: path.to_path_buf(),
        },
        var: DataFrame {
            index: record.genes.clone(),
            columns: Vec::new(),
            name: "var".into(),
            file: path.to_path_buf(),
        },
        obsm: [("X_pca".to_string(), pca_scores.clone())].into(),
        unreadable_obsm: BTreeMap::new(),
    };
    Ok(write_h5ad(path, &adata)?)
}
