//! Conditions of a conditional generation problem (docs/method.md §8): each distinct combination
//! of labels (for example `(cell_type, phase)`) is one condition, presented to CaLMFlow as
//! a tokenized prompt and to the CFM baseline as concatenated one-hot label vectors.
//!
//! The table holds *every* condition of a study — held-out ones included — so that a
//! combination never seen in training still has a prompt and a one-hot code built from
//! labels that were seen.
//!
//! ```
//! use calmflow_train::ConditionTable;
//! let labels = vec![vec!["B".to_string(), "G1".to_string()], vec!["T".into(), "S".into()]];
//! let table = ConditionTable::new(
//!     vec!["cell_type".into(), "phase".into()],
//!     labels,
//!     vec![vec![5, 6], vec![7]],
//!     0,
//! ).unwrap();
//! // One-hot per column: cell_type ∈ {B, T}, phase ∈ {G1, S}.
//! assert_eq!(table.feature_dim(), 4);
//! assert_eq!(table.features(&[1], 1).row(0).to_vec(), [0.0, 1.0, 0.0, 1.0]);
//! assert_eq!(table.index_of(&["T", "S"]), Some(1));
//! // A combination never listed, from labels that were: B in phase S.
//! assert_eq!(table.features_of(&["B", "S"], 1).unwrap().row(0).to_vec(), [1.0, 0.0, 0.0, 1.0]);
//! assert!(table.features_of(&["NK", "S"], 1).unwrap_err().to_string().contains("known: B, T"));
//! ```

use burn::tensor::backend::Backend;
use calmflow_model::{CalmFlowModel, Prompt};
use calmflow_tokenize::{PromptBatch, left_pad};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};

/// Every condition of a study with its prompt tokens and one-hot code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionTable {
    columns: Vec<String>,
    labels: Vec<Vec<String>>,
    prompts: Vec<Vec<u32>>,
    pad_id: u32,
    /// Per column, the sorted distinct labels (the one-hot positions).
    vocab: Vec<Vec<String>>,
}

impl ConditionTable {
    /// `labels[c]` is condition `c`'s label in each of `columns`; `prompts[c]` its prompt
    /// token ids (empty lists are allowed only when no model reads prompts, i.e. all are
    /// empty); `pad_id` pads prompts on the left.
    pub fn new(
        columns: Vec<String>,
        labels: Vec<Vec<String>>,
        prompts: Vec<Vec<u32>>,
        pad_id: u32,
    ) -> Result<Self> {
        if columns.is_empty() || labels.is_empty() {
            return Err(invalid(
                "a condition table needs ≥ 1 column and ≥ 1 condition",
            ));
        }
        if let Some(c) = labels.iter().position(|l| l.len() != columns.len()) {
            return Err(invalid(format!(
                "condition {c} has {} labels for {} columns ({})",
                labels[c].len(),
                columns.len(),
                columns.join(", ")
            )));
        }
        if prompts.len() != labels.len() {
            return Err(invalid(format!(
                "{} prompts for {} conditions",
                prompts.len(),
                labels.len()
            )));
        }
        let all_empty = prompts.iter().all(Vec::is_empty);
        if !all_empty && let Some(c) = prompts.iter().position(Vec::is_empty) {
            return Err(invalid(format!(
                "condition {c} ({:?}) has an empty prompt",
                labels[c]
            )));
        }
        for (i, a) in labels.iter().enumerate() {
            if labels[..i].contains(a) {
                return Err(invalid(format!("condition {a:?} is listed twice")));
            }
        }
        let vocab = (0..columns.len())
            .map(|k| {
                let mut v: Vec<String> = labels.iter().map(|l| l[k].clone()).collect();
                v.sort();
                v.dedup();
                v
            })
            .collect();
        Ok(Self {
            columns,
            labels,
            prompts,
            pad_id,
            vocab,
        })
    }

    /// Number of conditions.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false: a table has at least one condition.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The condition columns.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Condition `c`'s labels, one per column.
    pub fn labels(&self, c: usize) -> &[String] {
        &self.labels[c]
    }

    /// Condition `c`'s prompt token ids.
    pub fn prompt_ids(&self, c: usize) -> &[u32] {
        &self.prompts[c]
    }

    /// Whether the conditions carry prompts.
    pub fn has_prompts(&self) -> bool {
        self.prompts.iter().all(|p| !p.is_empty())
    }

    /// The largest prompt token id, if any.
    pub fn max_token_id(&self) -> Option<u32> {
        self.prompts.iter().flatten().copied().max()
    }

    /// The condition with these labels.
    pub fn index_of<S: AsRef<str>>(&self, labels: &[S]) -> Option<usize> {
        self.labels.iter().position(|l| {
            l.len() == labels.len() && l.iter().zip(labels).all(|(a, b)| a == b.as_ref())
        })
    }

    /// Length of the one-hot code (sum over columns of their label counts).
    pub fn feature_dim(&self) -> usize {
        self.vocab.iter().map(Vec::len).sum()
    }

    /// One-hot codes of `conditions`, each row repeated `repeat` times.
    pub fn features(&self, conditions: &[usize], repeat: usize) -> Array2<f32> {
        let mut out = Array2::zeros((conditions.len() * repeat, self.feature_dim()));
        for (i, &c) in conditions.iter().enumerate() {
            let mut offset = 0;
            for (k, vocab) in self.vocab.iter().enumerate() {
                let pos = vocab.binary_search(&self.labels[c][k]).unwrap_or(0);
                for r in 0..repeat {
                    out[[i * repeat + r, offset + pos]] = 1.0;
                }
                offset += vocab.len();
            }
        }
        out
    }

    /// The distinct labels of column `k` (sorted: the order of its one-hot positions).
    pub fn values(&self, k: usize) -> &[String] {
        self.vocab.get(k).map_or(&[], Vec::as_slice)
    }

    /// The one-hot code of a label combination, `repeat` identical rows: one label per
    /// column, each seen in some condition of the table (the combination itself need not
    /// be one). An unknown label is an error that lists the column's labels.
    pub fn features_of<S: AsRef<str>>(&self, labels: &[S], repeat: usize) -> Result<Array2<f32>> {
        if labels.len() != self.columns.len() {
            return Err(invalid(format!(
                "{} labels for the {} condition columns ({})",
                labels.len(),
                self.columns.len(),
                self.columns.join(", ")
            )));
        }
        let mut out = Array2::zeros((repeat, self.feature_dim()));
        let mut offset = 0;
        for ((vocab, column), label) in self.vocab.iter().zip(&self.columns).zip(labels) {
            let pos = vocab
                .binary_search_by(|v| v.as_str().cmp(label.as_ref()))
                .map_err(|_| {
                    invalid(format!(
                        "unknown {column} `{}`; known: {}",
                        label.as_ref(),
                        vocab.join(", ")
                    ))
                })?;
            out.column_mut(offset + pos).fill(1.0);
            offset += vocab.len();
        }
        Ok(out)
    }

    /// The prompts of `conditions`, left-padded to one length.
    pub fn prompt_batch(&self, conditions: &[usize]) -> PromptBatch {
        let prompts: Vec<Vec<u32>> = conditions
            .iter()
            .map(|&c| self.prompts[c].clone())
            .collect();
        left_pad(&prompts, self.pad_id)
    }

    /// Embeds the prompts of `conditions` with `model`'s token-embedding table.
    pub fn embed<B: Backend>(
        &self,
        model: &CalmFlowModel<B>,
        conditions: &[usize],
        device: &B::Device,
    ) -> Result<Prompt<B>> {
        if !self.has_prompts() {
            return Err(invalid("the conditions have no prompts to embed"));
        }
        let (ids, padding) = self.prompt_batch(conditions).tensors::<B>(device);
        Ok(model.embed_prompt(ids, padding)?)
    }

    /// Checks that a model with a token-embedding table of `vocab_size` rows can embed
    /// every prompt.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        let Some(max_id) = self.max_token_id().filter(|_| self.has_prompts()) else {
            return Ok(());
        };
        if vocab_size == 0 {
            return Err(invalid(
                "the conditions are prompts but the model has no token-embedding table \
                 (model.vocab_size = 0)",
            ));
        }
        if max_id as usize >= vocab_size {
            return Err(invalid(format!(
                "prompt token id {max_id} is outside the model's token-embedding table of \
                 {vocab_size} rows (model.vocab_size must be ≥ {})",
                max_id + 1
            )));
        }
        Ok(())
    }
}

/// The conditions of one training batch: condition index per example (a CaLMFlow
/// sequence of `P` trajectories, or one CFM pair).
#[derive(Debug, Clone, Copy)]
pub struct ConditionBatch<'a> {
    /// The table the indices refer to.
    pub table: &'a ConditionTable,
    /// Condition of each example.
    pub conditions: &'a [usize],
}
