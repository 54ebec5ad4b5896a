//! Conditional flow matching baselines (torchcfm's I-CFM, OT-CFM, SB-CFM; docs/method.md §9).
//!
//! A velocity MLP `[x_t, t] → R^D` (3 hidden layers with SELU, width configurable; for
//! conditional data `[x_t, t, c]` with `c` the one-hot labels, as the paper's baselines) is
//! regressed onto the conditional velocity `u_t` of the path at uniformly drawn times:
//! `L = mean ‖v_θ(x_t, t) − u_t‖²` (mean over batch and dimensions, as torchcfm).
//! The variants differ only in the coupling and the path noise:
//! I-CFM = independent + constant σ; OT-CFM = exact OT + constant σ;
//! SB-CFM = entropic coupling (reg 2σ²) + bridge noise σ√(t(1−t)).

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::selu;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use calmflow_data::Rng;
use ndarray::{Array2, Array3};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::condition::ConditionTable;
use crate::coupling::Coupling;
use crate::error::{TrainError, invalid, shape_error};

// `Result` stays unimported: the `Config` derive expands to code that names it.
type TrainResult<T> = crate::error::Result<T>;
use crate::loss::LossTerms;
use crate::objective::{DrawnBatch, FlowObjective, batch_conditions};
use crate::ode::{OdeSolver, SolveStats, integrate};
use crate::path::{ConditionalPath, NoiseSchedule};

/// Hyper-parameters of a [`VelocityMlp`].
#[derive(Config, Debug, PartialEq)]
pub struct VelocityMlpConfig {
    /// Data dimension `D`.
    pub dim: usize,
    /// Hidden width (torchcfm: 64 in 2-D, up to 1024 in high dimension).
    #[config(default = 64)]
    pub width: usize,
    /// Hidden layers (torchcfm: 3).
    #[config(default = 3)]
    pub hidden_layers: usize,
    /// Length of the condition code concatenated to `[x_t, t]` (0: unconditional).
    #[config(default = 0)]
    pub cond_dim: usize,
}

impl VelocityMlpConfig {
    /// Builds the network after checking the fields.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TrainResult<VelocityMlp<B>> {
        if self.dim == 0 || self.width == 0 || self.hidden_layers == 0 {
            return Err(invalid(format!(
                "velocity MLP needs dim, width and hidden_layers ≥ 1 (got {}, {}, {})",
                self.dim, self.width, self.hidden_layers
            )));
        }
        let mut layers =
            vec![LinearConfig::new(self.dim + 1 + self.cond_dim, self.width).init(device)];
        for _ in 1..self.hidden_layers {
            layers.push(LinearConfig::new(self.width, self.width).init(device));
        }
        layers.push(LinearConfig::new(self.width, self.dim).init(device));
        let model = VelocityMlp {
            layers,
            dim: self.dim,
            cond_dim: self.cond_dim,
        };
        Ok(calmflow_model::materialize(model))
    }
}

/// `v_θ([x, t])`: `Linear → SELU` per hidden layer, then a linear output.
#[derive(Module, Debug)]
pub struct VelocityMlp<B: Backend> {
    layers: Vec<Linear<B>>,
    dim: usize,
    cond_dim: usize,
}

impl<B: Backend> VelocityMlp<B> {
    /// Data dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The velocity at points `x` `(n, D)` and times `t` `(n, 1)`.
    pub fn forward(&self, x: Tensor<B, 2>, t: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_conditional(x, t, None)
    }

    /// Length of the condition code the network reads (0: unconditional).
    pub fn cond_dim(&self) -> usize {
        self.cond_dim
    }

    /// `v(x, t, c)` with condition codes `c` `(n, cond_dim)` concatenated to the input.
    pub fn forward_conditional(
        &self,
        x: Tensor<B, 2>,
        t: Tensor<B, 2>,
        condition: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let mut h = match condition {
            Some(c) => Tensor::cat(vec![x, t, c], 1),
            None => Tensor::cat(vec![x, t], 1),
        };
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = selu(h);
            }
        }
        h
    }

    /// The field at one time `t` for every row of `x`.
    pub fn velocity(&self, x: Tensor<B, 2>, t: f64) -> Tensor<B, 2> {
        self.velocity_given(x, t, None)
    }

    /// The conditional field at time `t`.
    pub fn velocity_given(
        &self,
        x: Tensor<B, 2>,
        t: f64,
        condition: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let times = Tensor::<B, 2>::full([n, 1], t, &x.device());
        self.forward_conditional(x, times, condition)
    }

    /// Saves the weights atomically.
    pub fn save_weights(&self, path: &Path) -> TrainResult<()> {
        Ok(calmflow_model::save_module(self, path)?)
    }

    /// Loads weights saved by [`VelocityMlp::save_weights`] (shapes checked).
    pub fn load_weights(self, path: &Path, device: &B::Device) -> TrainResult<Self> {
        Ok(calmflow_model::load_module(self, path, device)?)
    }
}

/// The CFM training problem: the conditional path (σ and its schedule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CfmSettings {
    /// The conditional path (torchcfm: straight, constant σ = 0.01).
    pub path: ConditionalPath,
}

impl Default for CfmSettings {
    fn default() -> Self {
        Self {
            path: ConditionalPath {
                sigma: 0.01,
                ..ConditionalPath::straight()
            },
        }
    }
}

/// torchcfm's three variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CfmVariant {
    /// Independent coupling, constant σ.
    ICfm,
    /// Exact minibatch OT coupling, constant σ.
    OtCfm,
    /// Entropic coupling with reg 2σ², bridge noise.
    SbCfm,
}

impl CfmVariant {
    /// The variant's settings and coupling at noise scale `sigma`.
    pub fn setup(self, sigma: f64) -> (CfmSettings, Coupling) {
        let path = |noise| ConditionalPath {
            noise,
            sigma,
            ..ConditionalPath::straight()
        };
        match self {
            Self::ICfm => (
                CfmSettings {
                    path: path(NoiseSchedule::Constant),
                },
                Coupling::Independent,
            ),
            Self::OtCfm => (
                CfmSettings {
                    path: path(NoiseSchedule::Constant),
                },
                Coupling::ExactOt,
            ),
            Self::SbCfm => (
                CfmSettings {
                    path: path(NoiseSchedule::Bridge),
                },
                Coupling::Entropic {
                    reg: 2.0 * sigma * sigma,
                },
            ),
        }
    }
}

impl<B: Backend> FlowObjective<B> for VelocityMlp<B> {
    type Settings = CfmSettings;
    const KIND: &'static str = "cfm";

    fn pairs_per_example(_: &CfmSettings) -> usize {
        1
    }

    fn check_settings(&self, settings: &CfmSettings) -> TrainResult<()> {
        settings.path.validate()
    }

    fn check_conditions(&self, table: Option<&ConditionTable>) -> TrainResult<()> {
        let wanted = table.map_or(0, ConditionTable::feature_dim);
        if wanted != self.cond_dim {
            return Err(invalid(format!(
                "the conditions are one-hot codes of length {wanted}, the velocity network \
                 reads codes of length {} (cond_dim)",
                self.cond_dim
            )));
        }
        Ok(())
    }

    fn draw(
        &self,
        x0: &Array2<f32>,
        x1: &Array2<f32>,
        conditions: Option<&[usize]>,
        settings: &CfmSettings,
        rng: &mut Rng,
    ) -> TrainResult<DrawnBatch> {
        let (n, d) = x0.dim();
        if d != self.dim || x1.dim() != (n, d) {
            return Err(shape_error(
                "CFM pairs",
                format!("two (n, {}) arrays", self.dim),
                (x0.dim(), x1.dim()),
            ));
        }
        let (mut xt, mut ut, mut times) =
            (vec![0.0f32; n * d], vec![0.0f32; n * d], vec![0.0f32; n]);
        for i in 0..n {
            let t: f64 = rng.random();
            times[i] = t as f32;
            let (a, b) = (x0.row(i).to_vec(), x1.row(i).to_vec());
            settings.path.point(
                t,
                &a,
                &b,
                rng,
                &mut xt[i * d..(i + 1) * d],
                &mut ut[i * d..(i + 1) * d],
            );
        }
        let field = |v: Vec<f32>, width: usize| {
            Array2::from_shape_vec((n, width), v)
                .map_err(|e| shape_error("CFM draws", format!("({n}, {width})"), e))
        };
        let (xt, ut, times) = (field(xt, d)?, field(ut, d)?, field(times, 1)?);
        DrawnBatch::new(vec![xt, ut, times], 1, conditions.map(<[usize]>::to_vec))
    }

    fn batch_loss(
        &self,
        batch: &DrawnBatch,
        table: Option<&ConditionTable>,
        _settings: &CfmSettings,
        device: &B::Device,
    ) -> TrainResult<LossTerms<B>> {
        let [xt, ut, t] = [0, 1, 2].map(|k| batch.field(k));
        let (Some(xt), Some(ut), Some(t)) = (xt, ut, t) else {
            return Err(invalid("a CFM batch holds x_t, u_t and t"));
        };
        if xt.ncols() != self.dim || ut.ncols() != self.dim || t.ncols() != 1 {
            return Err(shape_error(
                "CFM batch",
                format!("x_t and u_t of width {}, t of width 1", self.dim),
                (xt.dim(), ut.dim(), t.dim()),
            ));
        }
        let condition = batch_conditions(batch, table)?
            .map(|c| code_tensor::<B>(&c.table.features(c.conditions, 1), device));
        let rec = (self.forward_conditional(
            code_tensor::<B>(xt, device),
            code_tensor::<B>(t, device),
            condition,
        ) - code_tensor::<B>(ut, device))
        .powi_scalar(2)
        .mean();
        Ok(LossTerms {
            total: rec.clone(),
            rec,
            kl: None,
        })
    }
}

fn code_tensor<B: Backend>(codes: &Array2<f32>, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(
            codes.iter().copied().collect::<Vec<_>>(),
            [codes.nrows(), codes.ncols()],
        ),
        device,
    )
}

/// Samples pushed through a CFM velocity field, with the solver's statistics.
#[derive(Debug, Clone)]
pub struct CfmSamples {
    /// The `t = 1` states `(n, D)`.
    pub samples: Array2<f32>,
    /// Solver times and states `(n, steps + 1, D)`, when requested.
    pub trajectories: Option<(Vec<f64>, Array3<f32>)>,
    /// Function evaluations and steps.
    pub stats: SolveStats,
}

/// Integrates `dx/dt = v_θ(x, t)` from `t = 0` to `1` for the points `x0` `(n, D)`.
pub fn cfm_sample<B: Backend>(
    model: &VelocityMlp<B>,
    x0: &Array2<f32>,
    condition: Option<&Array2<f32>>,
    solver: &OdeSolver,
    keep_trajectories: bool,
    device: &B::Device,
) -> TrainResult<CfmSamples> {
    let (n, d) = x0.dim();
    if d != model.dim() || n == 0 {
        return Err(shape_error(
            "source points",
            format!("(n ≥ 1, {})", model.dim()),
            x0.dim(),
        ));
    }
    calmflow_data::ensure_finite(x0.view(), "source points")?;
    let condition = match condition {
        None if model.cond_dim() > 0 => {
            return Err(invalid(format!(
                "this velocity network is conditional (cond_dim = {}): give a condition code",
                model.cond_dim()
            )));
        }
        None => None,
        Some(c) => {
            if c.ncols() != model.cond_dim() || !(c.nrows() == 1 || c.nrows() == n) {
                return Err(shape_error(
                    "condition codes",
                    format!("(1 or {n}, {})", model.cond_dim()),
                    c.dim(),
                ));
            }
            let code = code_tensor::<B>(c, device);
            Some(if c.nrows() == 1 {
                code.expand([n, c.ncols()])
            } else {
                code
            })
        }
    };
    let start = Tensor::<B, 2>::from_data(
        TensorData::new(x0.iter().copied().collect::<Vec<_>>(), [n, d]),
        device,
    );
    let solution = integrate(
        solver,
        |x: Tensor<B, 2>, t| model.velocity_given(x, t, condition.clone()),
        start,
        0.0,
        1.0,
        keep_trajectories,
    )?;
    let to_array = |t: Tensor<B, 2>| -> TrainResult<Array2<f32>> {
        let values = t
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| invalid(format!("reading samples back: {e:?}")))?;
        Array2::from_shape_vec((n, d), values).map_err(|e| invalid(e.to_string()))
    };
    let trajectories = if keep_trajectories {
        let steps = solution.path.len();
        let mut all = Array3::<f32>::zeros((n, steps, d));
        for (k, state) in solution.path.into_iter().enumerate() {
            let a = to_array(state)?;
            all.index_axis_mut(ndarray::Axis(1), k).assign(&a);
        }
        Some((solution.times, all))
    } else {
        None
    };
    let samples = to_array(solution.state)?;
    if samples.iter().any(|v| !v.is_finite()) {
        return Err(TrainError::InvalidConfig(
            "the CFM field produced non-finite samples".into(),
        ));
    }
    Ok(CfmSamples {
        samples,
        trajectories,
        stats: solution.stats,
    })
}
