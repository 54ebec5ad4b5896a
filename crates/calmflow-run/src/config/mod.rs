//! The run configuration of `calmflow train` and `calmflow cfm train`: a TOML file whose
//! every field is optional and whose unknown fields are errors. `docs/config.md` documents
//! each field and its default.

use std::path::{Path, PathBuf};

use calmflow_model::{
    CalmFlowConfig, HeadKind, Predict, RECOMMENDED_BRIDGE_SIGMA, RECOMMENDED_HEAD,
    RECOMMENDED_N_TIMES,
};
use calmflow_train::{
    CalmFlowSettings, ConditionalPath, Coupling, NoiseSchedule, RECOMMENDED_ANNEAL_TEMPERATURE,
    RECOMMENDED_MIXTURE_INIT, TrainConfig,
};
use serde::{Deserialize, Serialize};

mod data;
mod model;

pub(crate) use data::resolve;
pub use data::{DEFAULT_PCA, DataSection, HeldOutCombination};
pub use model::{CfmSection, ModelSection, TemperatureSection};

/// What went wrong with a configuration, for one line of output.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The TOML is malformed or has a bad field.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the field and line).
        message: String,
    },
    /// A value is out of range or the parts do not fit together.
    #[error("{0}")]
    Invalid(String),
}

/// A whole run: `calmflow train --config run.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Output directory: checkpoints, `train_log.jsonl` (default `runs/calmflow`).
    pub out: Option<PathBuf>,
    /// Where the points come from.
    pub data: DataSection,
    /// CaLMFlow's network.
    pub model: ModelSection,
    /// CaLMFlow's paths, grid and loss.
    pub flow: CalmFlowSettings,
    /// The CFM baseline (used by `calmflow cfm train`).
    pub cfm: CfmSection,
    /// Optimisation.
    pub train: TrainConfig,
    /// The temperature sweep after training (CaLMFlow).
    pub temperature: TemperatureSection,
}

/// Which of the fields whose defaults depend on other fields a configuration sets itself
/// ([`RunConfig::fill_dependent_defaults`] leaves those alone).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SetExplicitly {
    /// `[flow.path]`.
    pub path: bool,
    /// `[flow] n_times`.
    pub n_times: bool,
    /// `[train] coupling`.
    pub coupling: bool,
    /// `[flow] anneal_temperature`.
    pub anneal: bool,
    /// `[flow] mixture_init`.
    pub mixture_init: bool,
}

impl RunConfig {
    /// Parses TOML text; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        };
        // One parse: the typed configuration, and which tables the file sets.
        let document: toml::Table = toml::from_str(text).map_err(parse_error)?;
        let given =
            |section: &str, field: &str| document.get(section).and_then(|s| s.get(field)).is_some();
        let (path_given, coupling_given) = (given("flow", "path"), given("train", "coupling"));
        let n_times_given = given("flow", "n_times");
        let anneal_given = given("flow", "anneal_temperature");
        let mixture_init_given = given("flow", "mixture_init");
        let endpoints_given = given("data", "source") || given("data", "target");
        let config: Self = document.try_into().map_err(parse_error)?;
        config
            .data
            .validate_cells(endpoints_given)
            .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
        config
            .train
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
        config
            .temperature
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
        let mut config = config;
        if config.data.h5ad.is_some() && config.model.predict.is_none() {
            // Conditional cells keep the head of the held-out study, which the flow head has
            // not been through: the mixture over increments generated unseen conditions
            // best; over endpoints it memorises the training cells (docs/heads.md).
            let head = *config.model.head.get_or_insert(HeadKind::Mixture);
            if head == HeadKind::Mixture {
                config.model.predict = Some(Predict::Increment);
            }
        }
        config.fill_dependent_defaults(SetExplicitly {
            path: path_given,
            n_times: n_times_given,
            coupling: coupling_given,
            anneal: anneal_given,
            mixture_init: mixture_init_given,
        });
        Ok(config)
    }

    /// The defaults that depend on other fields, for those the file did not set: the
    /// paths, the grid and the mixture's annealing and start follow the head
    /// ([`RunConfig::recommended_path`], [`RECOMMENDED_N_TIMES`],
    /// [`RECOMMENDED_ANNEAL_TEMPERATURE`], [`RECOMMENDED_MIXTURE_INIT`]), and CaLMFlow's
    /// heads were measured with exact minibatch-OT pairs (docs/heads.md; `calmflow cfm train` sets the coupling from its
    /// variant anyway).
    pub(crate) fn fill_dependent_defaults(&mut self, set: SetExplicitly) {
        if !set.path {
            self.flow.path = self.recommended_path();
        }
        if self.steps_to_endpoints() {
            if !set.n_times {
                self.flow.n_times = RECOMMENDED_N_TIMES;
            }
            // Only the mixture has components to anneal and place.
            if self.model.head.unwrap_or(RECOMMENDED_HEAD) == HeadKind::Mixture {
                if !set.anneal {
                    self.flow.anneal_temperature = RECOMMENDED_ANNEAL_TEMPERATURE;
                }
                if !set.mixture_init {
                    self.flow.mixture_init = RECOMMENDED_MIXTURE_INIT;
                }
            }
        }
        if !set.coupling {
            self.train.coupling = Coupling::ExactOt;
        }
    }

    /// The paths `calmflow train` uses when `[flow.path]` is not given: Brownian-bridge noise
    /// of [`RECOMMENDED_BRIDGE_SIGMA`] for a head that steps toward sampled endpoints
    /// (`docs/heads.md`), the paper's straight paths otherwise.
    pub fn recommended_path(&self) -> ConditionalPath {
        if self.steps_to_endpoints() {
            ConditionalPath {
                noise: NoiseSchedule::Bridge,
                sigma: RECOMMENDED_BRIDGE_SIGMA,
                ..ConditionalPath::straight()
            }
        } else {
            ConditionalPath::straight()
        }
    }

    /// Whether the model is a repaired head stepping toward sampled endpoints, the form
    /// whose paths ([`RECOMMENDED_BRIDGE_SIGMA`]), grid ([`RECOMMENDED_N_TIMES`]) and, for
    /// the mixture, annealing ([`RECOMMENDED_ANNEAL_TEMPERATURE`]) and start
    /// ([`RECOMMENDED_MIXTURE_INIT`]) differ from the paper's
    /// when the file does not set them.
    pub fn steps_to_endpoints(&self) -> bool {
        let head = self.model.head.unwrap_or(RECOMMENDED_HEAD);
        let predict = self.model.predict.unwrap_or(head.default_predict());
        head != HeadKind::Variational && predict.steps_to_endpoint()
    }

    /// CaLMFlow's model configuration for data of dimension `dim`: the `[model]` section
    /// ([`ModelSection::build`]), with `bridge_sigma` taken from `[flow.path]` (its `σ` with
    /// bridge noise, else 0) unless `[model]` sets it, so that `predict = "endpoint"`
    /// adds the noise the paths were trained with.
    pub fn calmflow_model(&self, dim: usize) -> Result<CalmFlowConfig, ConfigError> {
        let mut c = self.model.build(dim)?;
        if self.model.bridge_sigma.is_none() {
            c.bridge_sigma = match self.flow.path.noise {
                NoiseSchedule::Bridge => self.flow.path.sigma,
                NoiseSchedule::Constant => 0.0,
            };
        }
        Ok(c)
    }

    /// Reads and parses a TOML file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The defaults with every model field written out.
    pub fn documented_defaults() -> Self {
        let mut c = Self {
            model: ModelSection::defaults(),
            ..Self::default()
        };
        c.fill_dependent_defaults(SetExplicitly::default());
        c
    }

    /// The configuration as TOML (every field that has a value, defaults included).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// [`Self::to_toml`] with every field it leaves out (those without a default value)
    /// written as a commented-out example under its section, so that `calmflow config`
    /// shows every field there is.
    pub fn documented_toml(&self) -> String {
        let text = self.to_toml();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for &(section, example) in OPTIONAL_FIELDS {
            let key = example
                .trim_start_matches("# ")
                .split(" =")
                .next()
                .unwrap_or_default();
            let (start, end) = section_span(&lines, section);
            let set = lines[start..end]
                .iter()
                .any(|l| l.starts_with(&format!("{key} =")));
            if !set {
                lines.insert(end, example.to_string());
            }
        }
        // Top-level keys stand apart from the first table, as the other sections do.
        if let Some(i) = lines.iter().position(|l| l.starts_with('['))
            && i > 0
            && !lines[i - 1].trim().is_empty()
        {
            lines.insert(i, String::new());
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

/// The fields that [`RunConfig::to_toml`] leaves out when they have no value, as
/// `(section header, commented-out example)`; `""` is the top level.
const OPTIONAL_FIELDS: &[(&str, &str)] = &[
    (
        "",
        "# out = \"runs/calmflow\"  # output directory (default runs/calmflow)",
    ),
    (
        "[data]",
        "# h5ad = \"cells.h5ad\"  # conditional cells from an AnnData file (docs/conditioning.md); the fields below need it",
    ),
    ("[data]", "# columns = [\"cell_type\", \"phase\"]"),
    (
        "[data]",
        "# prompt = \"Generate a {cell_type} cell in phase {phase}: \"",
    ),
    ("[data]", "# pca = 16"),
    (
        "[data]",
        "# hold_out = [\"CD19+ B/S\", [\"CD4+/CD25 T Reg\", \"G1\"]]",
    ),
    ("[data]", "# layer = \"counts\""),
    ("[data]", "# tokenizer = \"tokenizer.json\""),
    ("[data]", "# train_embeddings = true"),
    (
        "[model]",
        "# bridge_sigma = 0.3  # default: [flow.path] sigma when noise = \"bridge\", else 0",
    ),
];

/// The lines `[start, end)` of `section`'s keys in `lines` (`""`: the top level, before
/// the first header); `end` is where a new key of the section goes.
fn section_span(lines: &[String], section: &str) -> (usize, usize) {
    let start = if section.is_empty() {
        0
    } else {
        match lines.iter().position(|l| l == section) {
            Some(i) => i + 1,
            None => return (lines.len(), lines.len()),
        }
    };
    let end = lines[start..]
        .iter()
        .position(|l| l.trim().is_empty() || l.starts_with('['))
        .map_or(lines.len(), |i| start + i);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calmflow_train::CfmVariant;

    #[test]
    fn the_documented_toml_shows_every_field_and_its_examples_are_fields() {
        let printed = RunConfig::documented_defaults().documented_toml();
        // As printed, it is the documented defaults.
        let parsed: RunConfig = toml::from_str(&printed).unwrap();
        assert_eq!(parsed, RunConfig::documented_defaults());
        // Uncommented, every example is a field of its section with a value of its type.
        let uncommented = printed
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let all: RunConfig = toml::from_str(&uncommented).unwrap();
        assert_eq!(all.out, Some(PathBuf::from("runs/calmflow")));
        assert_eq!(all.data.h5ad.as_deref(), Some("cells.h5ad"));
        assert_eq!(all.data.columns, ["cell_type", "phase"]);
        assert_eq!(all.data.pca, Some(16));
        assert_eq!(all.data.hold_out.len(), 2);
        assert_eq!(all.data.layer.as_deref(), Some("counts"));
        assert_eq!(all.data.tokenizer.as_deref(), Some("tokenizer.json"));
        assert!(all.data.train_embeddings);
        assert!(all.data.prompt.is_some());
        assert_eq!(all.model.bridge_sigma, Some(0.3));
        // With them all set, to_toml writes every one, so nothing is left to comment out.
        let again = all.documented_toml();
        assert!(!again.lines().any(|l| l.starts_with("# ")), "{again}");
        assert_eq!(again, all.to_toml());
    }

    #[test]
    fn cells_fields_need_h5ad_and_replace_source_and_target() {
        let c = RunConfig::parse(
            "[data]\nh5ad = \"cells.h5ad\"\nhold_out = [\"B/S\", [\"CD4+/CD25 T Reg\", \"G1\"]]\n\
             pca = 8\n",
            "run.toml",
        )
        .unwrap();
        assert_eq!(c.data.condition_columns(), ["cell_type", "phase"]);
        assert_eq!(c.data.pca, Some(8));
        let parts: Vec<Vec<String>> = c.data.hold_out.iter().map(|h| h.parts()).collect();
        assert_eq!(parts, [vec!["B/S"], vec!["CD4+/CD25 T Reg", "G1"]]);
        // Cells default to the mixture over increments on straight paths, not to the
        // flow head of the other runs; a head that is set keeps its own target.
        assert_eq!(c.model.head, Some(HeadKind::Mixture));
        assert_eq!(c.model.predict, Some(Predict::Increment));
        let flow = RunConfig::parse(
            "[data]\nh5ad = \"cells.h5ad\"\n[model]\nhead = \"flow\"\n",
            "run.toml",
        )
        .unwrap();
        assert_eq!(flow.model.predict, None);
        assert!(flow.steps_to_endpoints());
        assert_eq!(c.flow.path, ConditionalPath::straight());
        // A file without h5ad prints as before: the conditional fields are left out.
        assert!(!RunConfig::default().to_toml().contains("hold_out"));
        for (text, needle) in [
            (
                "[data]\ncolumns = [\"x\"]\n",
                "[data] columns belongs to a conditional run",
            ),
            (
                "[data]\nh5ad = \"a.h5ad\"\ntarget = \"moons\"\n",
                "h5ad replaces source and target",
            ),
            (
                "[data]\nh5ad = \"a.h5ad\"\nstandardize = true\n",
                "always standardised",
            ),
            ("[data]\nh5ad = \"a.h5ad\"\npca = 0\n", "pca must be ≥ 1"),
        ] {
            let e = RunConfig::parse(text, "run.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn empty_file_gives_the_method_defaults() {
        let c = RunConfig::parse("", "run.toml").unwrap();
        // The recommended head steps toward endpoints on a coarser grid than the paper's.
        assert_eq!(c.flow.n_times, RECOMMENDED_N_TIMES);
        assert_eq!(
            RunConfig::parse("[flow]\nn_times = 16\n", "run.toml")
                .unwrap()
                .flow
                .n_times,
            16
        );
        assert_eq!(
            RunConfig::parse("[model]\nhead = \"variational\"\n", "run.toml")
                .unwrap()
                .flow
                .n_times,
            16
        );
        assert_eq!(
            RunConfig::parse("[model]\npredict = \"increment\"\n", "run.toml")
                .unwrap()
                .flow
                .n_times,
            16
        );
        // The default flow head has no components to place; the mixture over endpoints
        // starts from k-means centres and is not annealed; the paper's model, the
        // increment form and a file that sets the field keep the settings' defaults (or
        // what is set).
        assert_eq!(c.flow.anneal_temperature, RECOMMENDED_ANNEAL_TEMPERATURE);
        use calmflow_train::MixtureInit;
        assert_eq!(c.flow.mixture_init, MixtureInit::Random);
        // A [flow.path] table may give some fields: the others keep the straight path's.
        let partial = RunConfig::parse("[flow.path]\nnoise = \"bridge\"\nsigma = 0.5\n", "r")
            .unwrap()
            .flow
            .path;
        assert_eq!(
            partial,
            calmflow_train::ConditionalPath {
                noise: calmflow_train::NoiseSchedule::Bridge,
                sigma: 0.5,
                ..calmflow_train::ConditionalPath::straight()
            }
        );
        for (text, want) in [
            ("[model]\nhead = \"variational\"\n", MixtureInit::Random),
            ("[model]\npredict = \"increment\"\n", MixtureInit::Random),
            ("[flow]\nmixture_init = \"random\"\n", MixtureInit::Random),
            ("[model]\nhead = \"mixture\"\n", MixtureInit::Kmeans),
        ] {
            let got = RunConfig::parse(text, "run.toml")
                .unwrap()
                .flow
                .mixture_init;
            assert_eq!(got, want, "{text}");
        }
        for (text, want) in [
            ("[model]\nhead = \"variational\"\n", 1.0),
            ("[model]\npredict = \"increment\"\n", 1.0),
            ("[model]\nhead = \"flow\"\n", 1.0),
            ("[flow]\nanneal_temperature = 1.0\n", 1.0),
            ("[flow]\nanneal_temperature = 20.0\n", 20.0),
        ] {
            let got = RunConfig::parse(text, "run.toml")
                .unwrap()
                .flow
                .anneal_temperature;
            assert_eq!(got, want, "{text}");
        }
        assert_eq!(c.flow.beta, 0.3);
        assert_eq!(c.train.learning_rate, 1e-3);
        assert_eq!(c.train.weight_decay, 0.01);
        assert_eq!(c.train.coupling, Coupling::ExactOt);
        assert_eq!(c.train.grad_clip, 1.0);
        let model = c.model.build(2).unwrap();
        assert_eq!(
            model,
            CalmFlowConfig::new(2)
                .with_head(RECOMMENDED_HEAD)
                .with_predict(RECOMMENDED_HEAD.default_predict())
        );
        // The recommended head trains on bridge paths; the paper's model is one field away,
        // and keeps the paper's straight paths.
        assert_eq!(c.flow.path.noise, NoiseSchedule::Bridge);
        assert_eq!(c.flow.path.sigma, RECOMMENDED_BRIDGE_SIGMA);
        assert_eq!(
            c.calmflow_model(2).unwrap().bridge_sigma,
            RECOMMENDED_BRIDGE_SIGMA
        );
        let paper = RunConfig::parse("[model]\nhead = \"variational\"\n", "run.toml").unwrap();
        assert_eq!(paper.model.build(2).unwrap(), CalmFlowConfig::new(2));
        assert_eq!(paper.flow.path, ConditionalPath::straight());
        // A path given explicitly is kept.
        let straight = RunConfig::parse(
            "[flow.path]\ninterpolant = \"straight\"\nnoise = \"constant\"\nsigma = 0.0\n",
            "run.toml",
        )
        .unwrap();
        assert_eq!(straight.flow.path, ConditionalPath::straight());
        let shown = RunConfig::parse(&RunConfig::documented_defaults().to_toml(), "x").unwrap();
        assert_eq!(shown.model.build(2).unwrap(), model);
        // `calmflow config` shows what an empty file resolves to.
        assert_eq!(shown.flow, c.flow);
        assert_eq!(shown.train.coupling, c.train.coupling);
    }

    #[test]
    fn fields_parse_and_round_trip() {
        let text = r#"
            out = "runs/x"
            [data]
            source = "normal"
            target = "moons"
            [model]
            hidden = 32
            layers = 1
            [flow]
            n_traj = 4
            [flow.path]
            interpolant = "variance-preserving"
            noise = "bridge"
            sigma = 0.1
            [train]
            steps = 10
            coupling = { kind = "entropic", reg = 0.5 }
            decay = "cosine"
            [cfm]
            variant = "ot-cfm"
        "#;
        let c = RunConfig::parse(text, "run.toml").unwrap();
        assert_eq!(c.model.build(2).unwrap().hidden, 32);
        assert_eq!(c.flow.n_traj, 4);
        assert_eq!(c.flow.path.sigma, 0.1);
        assert_eq!(c.cfm.variant, CfmVariant::OtCfm);
        let again = RunConfig::parse(&c.to_toml(), "again").unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let e = RunConfig::parse("[train]\nlearning_rat = 1.0\n", "run.toml").unwrap_err();
        assert!(e.to_string().contains("learning_rat"), "{e}");
        let e = RunConfig::parse("[train]\nlearning_rate = -1.0\n", "run.toml").unwrap_err();
        assert!(e.to_string().contains("learning_rate"), "{e}");
        let e = RunConfig::parse("[model]\nheads = 3\n", "run.toml")
            .unwrap()
            .model
            .build(2)
            .unwrap_err();
        assert!(e.to_string().contains("heads"), "{e}");
        let e = RunConfig::parse("[data]\nsource = \"nothere\"\n", "r")
            .unwrap()
            .data
            .load(Path::new("."), 0)
            .unwrap_err();
        assert!(e.to_string().contains("nothere"), "{e}");
    }
}
