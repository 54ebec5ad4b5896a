//! Distribution heads: what the model outputs for each slot, as a *distribution* of the
//! next state given the history, with the loss that trains it and the sampler that draws
//! from it.
//!
//! For slot `j` (time `i`, trajectory `p`) the backbone's `K` output tokens are concatenated
//! into a context `c_j ∈ R^{K·H}`; a head models `p(y | c_j)`, where `y` is the quantity
//! chosen by [`Predict`] (the next state, the scaled increment, or the path's endpoint).
//! Squared error trains only the conditional mean `E[y | c]` (see the repository's
//! `docs/method.md` §5a); every head except the paper's `variational` one learns the
//! whole conditional law.
//!
//! ```
//! use calmflow_model::Predict;
//! // N = 5 time points, slot at time i = 1: z = 1, next state 2, endpoint 4.
//! let y = Predict::Increment.target(1.0, 2.0, 4.0, 5);
//! assert_eq!(y, 4.0); // (2 − 1)·(N − 1)
//! assert_eq!(Predict::Increment.advance(1.0, y, 1, 5), 2.0);
//! let y = Predict::Endpoint.target(1.0, 2.0, 4.0, 5);
//! assert_eq!(Predict::Endpoint.advance(1.0, y, 1, 5), 2.0); // 1 + (4 − 1)·(1/4)/(3/4)
//! ```

mod cvae;
mod flow;
mod mixture;
mod mlp;
pub(crate) mod variational;

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

pub use cvae::CvaeHead;
pub use flow::FlowHead;
pub use mixture::MixtureHead;
pub use variational::{DecoderOutput, LatentHead, VARIANCE_FLOOR, VariationalDecoder};

/// Which distribution head maps a slot's context to the next state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// The paper's head (docs/method.md §5–6): per-token latents from the history only, decoded and
    /// scored by squared error + β·KL to `N(0, I)`. Regresses the conditional mean.
    #[default]
    Variational,
    /// Conditional VAE: posterior `q(ζ | c, y)`, learned prior `p(ζ | c)`, decoder
    /// `Dec(ζ, c)`; squared error + β·KL(q ‖ p). Samples from the prior.
    Cvae,
    /// Diagonal Gaussian mixture `Σ_m π_m N(μ_m, σ_m²)`, trained by negative
    /// log-likelihood.
    Mixture,
    /// A diagonal Gaussian `N(μ(c), σ(c)²)` and a velocity network `v(y, s, c)` trained by
    /// conditional flow matching from its draws to `y`; sampled by integrating the flow
    /// from a draw of the Gaussian. Models the correlations between coordinates.
    Flow,
}

impl HeadKind {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Variational => "variational",
            Self::Cvae => "cvae",
            Self::Mixture => "mixture",
            Self::Flow => "flow",
        }
    }

    /// Every head, in the order of the documentation.
    pub const ALL: [HeadKind; 4] = [Self::Variational, Self::Cvae, Self::Mixture, Self::Flow];

    /// What the head predicts unless told otherwise: the paper's head the next state (as
    /// published), the others [`RECOMMENDED_PREDICT`].
    pub fn default_predict(self) -> Predict {
        match self {
            Self::Variational => Predict::State,
            _ => RECOMMENDED_PREDICT,
        }
    }
}

/// The head that `calmflow train` and `calmflow demo` use unless told otherwise: the best
/// measured one over the whole quality suite (`docs/heads.md`). The flow head draws every
/// coordinate jointly; the diagonal mixture, which was the default before, drew digits
/// whose pixels carry independent noise (k-NN precision 0.18 against the flow head's
/// 0.87 and real digits' 0.96). `CalmFlowConfig::new` keeps the paper's.
pub const RECOMMENDED_HEAD: HeadKind = HeadKind::Flow;

/// The smallest automatic width of the flow head's velocity network
/// (`CalmFlowConfig::head_width`): it models all `D` coordinates jointly, so its width
/// does not shrink with a small transformer.
pub const FLOW_MIN_WIDTH: usize = 256;

/// What the non-paper heads predict unless told otherwise (`docs/heads.md`).
pub const RECOMMENDED_PREDICT: Predict = Predict::Endpoint;

/// The Brownian-bridge path noise `σ` that `calmflow train` gives endpoint predictions
/// unless `[flow.path]` says otherwise (`docs/heads.md`): it spreads the randomness over
/// every step instead of loading it onto the first.
pub const RECOMMENDED_BRIDGE_SIGMA: f64 = 0.3;

/// Time points `N` that `calmflow train` gives endpoint predictions unless `[flow]
/// n_times` says otherwise (`docs/heads.md`): one step, a draw of `x1` from the head's
/// `p(x1 | x0)`. Every later step re-draws the endpoint from a context that the earlier
/// draws built, and on 8 Gaussians, with the mixture's components started on the
/// target's modes, the re-draws added error: Fréchet at D = 10 / 50 / 100 0.12 / 0.88 /
/// 2.80 with `N = 2`, against 0.17 / 1.02 / 2.99 with `N = 4`.
pub const RECOMMENDED_N_TIMES: usize = 2;

impl std::fmt::Display for HeadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HeadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| format!("unknown head `{s}` (known: variational, cvae, mixture, flow)"))
    }
}

/// What a head predicts for the slot at time `t_i` on the grid `t_i = i/(N−1)`.
///
/// With straight paths the next state is a deterministic function of the history after
/// the first step, so a head over the *state* spends its capacity on extrapolation; the
/// increment and the endpoint put the randomness where the head can model it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Predict {
    /// The next state `y = z_{i+1}` (the paper).
    #[default]
    State,
    /// The increment per unit time `y = (z_{i+1} − z_i)·(N − 1)`, a velocity-scale quantity
    /// of the data's own scale; the next state is `z_i + y/(N − 1)`.
    Increment,
    /// The path's endpoint `y = x1` (the trajectory's last state); the next state moves
    /// toward it, `z_{i+1} = z_i + (y − z_i)·(t_{i+1} − t_i)/(1 − t_i)`, plus the
    /// Brownian-bridge noise of scale `bridge_sigma` when the paths are noisy.
    Endpoint,
}

impl Predict {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Increment => "increment",
            Self::Endpoint => "endpoint",
        }
    }

    /// Whether the step moves toward a sampled endpoint, which assumes straight paths
    /// and adds the paths' bridge noise.
    pub fn steps_to_endpoint(self) -> bool {
        self == Self::Endpoint
    }

    /// The head's target for one coordinate: current state `z`, next state `next`, path
    /// endpoint `end`, on an `n_times`-point grid.
    pub fn target(self, z: f64, next: f64, end: f64, n_times: usize) -> f64 {
        match self {
            Self::State => next,
            Self::Increment => (next - z) * (n_times - 1) as f64,
            Self::Endpoint => end,
        }
    }

    /// The next state from the head's output `y` (without bridge noise), for one
    /// coordinate at time index `i < n_times − 1`.
    pub fn advance(self, z: f64, y: f64, i: usize, n_times: usize) -> f64 {
        match self {
            Self::State => y,
            Self::Increment => z + y / (n_times - 1) as f64,
            Self::Endpoint => z + (y - z) / (n_times - 1 - i) as f64,
        }
    }

    /// Tensor form of [`Predict::target`]: every argument of the same shape.
    pub fn target_tensor<B: Backend, const D: usize>(
        self,
        current: Tensor<B, D>,
        next: Tensor<B, D>,
        end: Tensor<B, D>,
        n_times: usize,
    ) -> Tensor<B, D> {
        match self {
            Self::State => next,
            Self::Increment => (next - current) * (n_times - 1) as f64,
            Self::Endpoint => end,
        }
    }

    /// Tensor form of [`Predict::advance`], adding Brownian-bridge noise of scale
    /// `bridge_sigma` to endpoint steps that do not reach `t = 1`.
    pub fn advance_tensor<B: Backend, const D: usize>(
        self,
        current: Tensor<B, D>,
        y: Tensor<B, D>,
        i: usize,
        n_times: usize,
        bridge_sigma: f64,
    ) -> Tensor<B, D> {
        let end = match self {
            Self::State => return y,
            Self::Increment => return current + y / (n_times - 1) as f64,
            Self::Endpoint => y,
        };
        let remaining = (n_times - 1 - i) as f64;
        let next = current.clone() + (end - current) / remaining;
        if bridge_sigma > 0.0 && remaining > 1.0 {
            // z_{t'} | z_t, x1 of a Brownian bridge with σ_t = σ√(t(1−t)):
            // variance σ²(t' − t)(1 − t')/(1 − t).
            let h = 1.0 / (n_times - 1) as f64;
            let var = bridge_sigma.powi(2) * h * (remaining - 1.0) / remaining;
            let noise = Tensor::random_like(&next, burn::tensor::Distribution::Normal(0.0, 1.0));
            next + noise * var.sqrt()
        } else {
            next
        }
    }
}

impl std::fmt::Display for Predict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The loss terms of a head, as scalar tensors (shape `[1]`), averaged over predicted
/// slots.
#[derive(Debug, Clone)]
pub struct HeadLoss<B: Backend> {
    /// Squared error (variational, cvae), negative log-likelihood in nats (mixture) or the
    /// flow-matching regression (flow).
    pub rec: Tensor<B, 1>,
    /// The KL term before weighting by `β` (variational, cvae).
    pub kl: Option<Tensor<B, 1>>,
}

/// A learned conditional law `p(y | c)` over `R^D`, given slot contexts `c ∈ R^{K·H}`:
/// the one interface the model's training forward, roll-out and KV-cached steps use.
pub trait DistributionHead<B: Backend> {
    /// The training loss on contexts `(n, K·H)` and targets `(n, D)` (`τ = 1`).
    fn loss(&self, context: Tensor<B, 2>, target: Tensor<B, 2>) -> HeadLoss<B>;

    /// Draws `(n, D)` at temperature `τ ≥ 0` (`τ = 0`: the head's deterministic mode, e.g.
    /// the latent means or the noise-free flow).
    fn sample(&self, context: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2>;

    /// The training loss with the posterior over the head's components tempered by
    /// `T ≥ 1` (deterministic annealing): the mixture's `−T·log Σ_m exp(ℓ_m/T)`, whose
    /// gradient weights component `m` by `softmax(ℓ/T)_m` instead of its posterior, so
    /// that early in training every component learns from every point and none is left
    /// unused. `T = 1` is [`DistributionHead::loss`]; heads without components ignore `T`.
    fn annealed_loss(
        &self,
        context: Tensor<B, 2>,
        target: Tensor<B, 2>,
        temperature: f64,
    ) -> HeadLoss<B> {
        let _ = temperature;
        self.loss(context, target)
    }
}

/// The model's output head: one of the kinds.
#[derive(Module, Debug)]
pub enum OutputHead<B: Backend> {
    /// The paper's variational decoder.
    Variational(VariationalDecoder<B>),
    /// A conditional VAE per slot.
    Cvae(CvaeHead<B>),
    /// A diagonal Gaussian mixture.
    Mixture(MixtureHead<B>),
    /// A flow-matching head from a learned Gaussian.
    Flow(FlowHead<B>),
}

/// Sizes shared by the heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadShape {
    pub dim: usize,
    pub n_space: usize,
    pub hidden: usize,
    /// Inner width of the head's MLPs.
    pub width: usize,
}

impl<B: Backend> OutputHead<B> {
    pub(crate) fn kind(&self) -> HeadKind {
        match self {
            Self::Variational(_) => HeadKind::Variational,
            Self::Cvae(_) => HeadKind::Cvae,
            Self::Mixture(_) => HeadKind::Mixture,
            Self::Flow(_) => HeadKind::Flow,
        }
    }

    fn active(&self) -> &dyn DistributionHead<B> {
        match self {
            Self::Variational(h) => h,
            Self::Cvae(h) => h,
            Self::Mixture(h) => h,
            Self::Flow(h) => h,
        }
    }
}

impl<B: Backend> DistributionHead<B> for OutputHead<B> {
    fn loss(&self, context: Tensor<B, 2>, target: Tensor<B, 2>) -> HeadLoss<B> {
        self.active().loss(context, target)
    }

    fn sample(&self, context: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
        self.active().sample(context, temperature)
    }

    fn annealed_loss(
        &self,
        context: Tensor<B, 2>,
        target: Tensor<B, 2>,
        temperature: f64,
    ) -> HeadLoss<B> {
        self.active().annealed_loss(context, target, temperature)
    }
}
