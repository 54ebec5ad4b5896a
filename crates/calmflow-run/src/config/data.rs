//! `[data]`: where a run's source and target come from (samplers, point files, an
//! AnnData file with its columns, prompts, PCA and held-out combinations).

use std::path::{Path, PathBuf};

use calmflow_data::sampler_by_name;
use calmflow_train::{FlowData, PointSource, Standardization, TrainError};
use serde::{Deserialize, Serialize};

use crate::io::read_points;

use super::ConfigError;

/// `[data]`: where `p0` and `p1` come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// `p0`: a built-in distribution (`8gaussians`, `normal`, …) or a `.npy`/`.csv` file.
    pub source: String,
    /// `p1`: a built-in distribution or a `.npy`/`.csv` file.
    pub target: String,
    /// Dimension of `normal` (ignored otherwise; files and 2-D samplers set it).
    pub dim: usize,
    /// Fraction of the rows of a data file held out for validation.
    pub validation_fraction: f64,
    /// Validation points drawn from built-in distributions.
    pub n_validation: usize,
    /// Train in standardised coordinates: per-coordinate mean and standard deviation fitted
    /// on the training targets; the target always, the source too when it is a data file
    /// (a built-in source is reference noise and stays as it is). The map is recorded in
    /// the checkpoint and `calmflow sample` writes points in the data's coordinates.
    pub standardize: bool,
    /// Conditional cells instead of `source` → `target`: an AnnData `.h5ad` file whose
    /// expression is mapped to `pca` components (fitted on the training cells, each
    /// component standardised); the source is N(0, I). CaLMFlow reads a prompt filled from
    /// the cell's labels, CFM their one-hot codes (`docs/conditioning.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h5ad: Option<String>,
    /// `obs` columns whose labels are the condition (with `h5ad`; default `cell_type`,
    /// `phase`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The prompt template (with `h5ad`): `{column}` fields are filled with the cell's
    /// labels (default: "Generate a cell with" and each column's label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// PCA components (with `h5ad`; default 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pca: Option<usize>,
    /// Label combinations left out of training (with `h5ad`): each the labels joined by
    /// '/' in column order ("CD19+ B/S"; labels containing '/' such as "G2/M" are matched
    /// against the file's labels), or a list of labels (`["CD4+/CD25 T Reg", "G1"]`),
    /// which allows any label.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hold_out: Vec<HeldOutCombination>,
    /// Read this entry of the file's `layers` as the expression instead of `X` (with
    /// `h5ad`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// A Hugging Face `tokenizer.json` for the prompts (with `h5ad`; default: the one of
    /// `--init-from`, else a word-level tokenizer built from the prompts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Train the token-embedding table (with `h5ad`; frozen by default).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub train_embeddings: bool,
}

/// One held-out label combination of `[data] hold_out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeldOutCombination {
    /// The labels joined by '/' in column order.
    Joined(String),
    /// One label per condition column.
    Labels(Vec<String>),
}

impl HeldOutCombination {
    /// The form [`crate::cells::CellSpec::held_out`] takes: one joined string, or the labels.
    pub fn parts(&self) -> Vec<String> {
        match self {
            Self::Joined(s) => vec![s.clone()],
            Self::Labels(v) => v.clone(),
        }
    }
}

/// PCA components of a conditional `[data] h5ad` run when `pca` is not given.
pub const DEFAULT_PCA: usize = 16;

impl Default for DataSection {
    fn default() -> Self {
        Self {
            source: "8gaussians".into(),
            target: "moons".into(),
            dim: 2,
            validation_fraction: 0.1,
            n_validation: 1000,
            standardize: false,
            h5ad: None,
            columns: Vec::new(),
            prompt: None,
            pca: None,
            hold_out: Vec::new(),
            layer: None,
            tokenizer: None,
            train_embeddings: false,
        }
    }
}

impl DataSection {
    /// The source (`what = "source"`) or target (`"target"`) distribution: a built-in
    /// sampler, or a point file resolved against `base`.
    pub fn side(&self, what: &str, base: &Path) -> Result<PointSource, ConfigError> {
        if self.h5ad.is_some() && what == "source" {
            return Ok(PointSource::Sampler(Box::new(
                calmflow_data::StandardNormal {
                    dim: self.pca.unwrap_or(DEFAULT_PCA),
                },
            )));
        }
        let spec = if what == "source" {
            &self.source
        } else {
            &self.target
        };
        let looks_like_file = spec.contains('.') || spec.contains('/');
        if looks_like_file {
            let path = resolve(base, spec);
            let points = read_points(&path).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                message: format!("{e} (data.{what})"),
            })?;
            PointSource::points(points, &path.display().to_string())
                .map_err(|e| ConfigError::Invalid(format!("data.{what}: {e}")))
        } else {
            sampler_by_name(spec, self.dim)
                .map(PointSource::Sampler)
                .map_err(|e| ConfigError::Invalid(format!("data.{what}: {e}")))
        }
    }

    /// Builds the training data (standardised when `standardize` is set, with the map it
    /// used); relative file names are resolved against `base`.
    pub fn load(
        &self,
        base: &Path,
        seed: u64,
    ) -> Result<(FlowData, Option<Standardization>), ConfigError> {
        let source = self.side("source", base)?;
        let target = self.side("target", base)?;
        let invalid = |e: TrainError| ConfigError::Invalid(format!("[data]: {e}"));
        let data = FlowData::new(
            source,
            target,
            self.validation_fraction,
            self.n_validation,
            seed,
        )
        .map_err(invalid)?;
        if self.standardize {
            let (data, map) = data.standardize(seed).map_err(invalid)?;
            Ok((data, Some(map)))
        } else {
            Ok((data, None))
        }
    }
}

impl DataSection {
    /// Checks the conditional fields: they need `h5ad`, and `h5ad` replaces `source` and
    /// `target` (`endpoints_given`: whether the file set either).
    pub fn validate_cells(&self, endpoints_given: bool) -> Result<(), ConfigError> {
        let cell_fields = [
            ("columns", !self.columns.is_empty()),
            ("prompt", self.prompt.is_some()),
            ("pca", self.pca.is_some()),
            ("hold_out", !self.hold_out.is_empty()),
            ("layer", self.layer.is_some()),
            ("tokenizer", self.tokenizer.is_some()),
            ("train_embeddings", self.train_embeddings),
        ];
        if self.h5ad.is_none() {
            if let Some((name, _)) = cell_fields.iter().find(|(_, set)| *set) {
                return Err(ConfigError::Invalid(format!(
                    "[data] {name} belongs to a conditional run and needs [data] h5ad"
                )));
            }
            return Ok(());
        }
        if endpoints_given {
            return Err(ConfigError::Invalid(
                "[data] h5ad replaces source and target (the source is N(0, I) in PCA space, \
                 the target the file's cells): remove them"
                    .into(),
            ));
        }
        if self.standardize {
            return Err(ConfigError::Invalid(
                "[data] standardize does not apply to h5ad runs: their PCA components are \
                 always standardised"
                    .into(),
            ));
        }
        if self.pca == Some(0) {
            return Err(ConfigError::Invalid("[data] pca must be ≥ 1".into()));
        }
        Ok(())
    }

    /// The condition columns of an `h5ad` run (`cell_type`, `phase` unless given).
    pub fn condition_columns(&self) -> Vec<String> {
        if self.columns.is_empty() {
            vec!["cell_type".into(), "phase".into()]
        } else {
            self.columns.clone()
        }
    }
}

/// Resolves a path of the configuration against the directory `base`.
pub(crate) fn resolve(base: &Path, spec: &str) -> PathBuf {
    let p = Path::new(spec);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
