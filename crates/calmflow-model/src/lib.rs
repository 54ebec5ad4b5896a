//! # calmflow-model — CaLMFlow's network in burn
//!
//! Generic over `B: Backend` (and `B: AutodiffBackend` for training), exactly as
//! docs/method.md §3–5 and §7 specify:
//!
//! - [`SpatialEncoder`]: `D → K·H`, reshaped row-major into `K` tokens per state.
//! - [`CausalBackbone`]: GPT-NeoX-style pre-LayerNorm blocks, parallel (or sequential)
//!   residual, fused QKV with bias in the `[heads, 3, head_dim]` layout, rotary position
//!   embedding on a fraction of each head ([`RotaryEmbedding`]), GELU MLP, causal mask
//!   combined with a key padding mask, a [`KvCache`], and an optional frozen token-embedding
//!   table for prompts.
//! - Distribution heads behind [`DistributionHead`] ([`head`]): the paper's
//!   [`VariationalDecoder`] (per-token Gaussian latents `σ² = exp(s) + 1e-4`, sampled at
//!   temperature `τ`, the `K` latents of a slot decoded to `R^D`), and [`CvaeHead`],
//!   [`MixtureHead`] and [`FlowHead`], which learn the law of the next state; [`Predict`]
//!   chooses whether they model the next state, the increment or the path's endpoint.
//! - [`CalmFlowModel`] / [`CalmFlowConfig`]: teacher-forced forward, incremental decoding,
//!   roll-out with or without the cache, weights saved and loaded atomically.
//! - [`fused`]: the model's layer norms, GELUs, softmax, affine maps, attention products
//!   and whole-sequence attention go through a registry where a backend may supply
//!   one-pass kernels with their backward pass (the facade registers the CPU backend's);
//!   without one, burn's operations are composed.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use calmflow_model::CalmFlowConfig;
//! let device = Default::default();
//! let model = CalmFlowConfig::new(2).with_hidden(16).with_layers(1).with_heads(2)
//!     .init::<NdArray<f32>>(&device).unwrap();
//! let x0 = Tensor::random([3, 2, 2], Distribution::Normal(0.0, 1.0), &device);
//! let paths = model.rollout(x0, 5, 0.0, true, None).unwrap();
//! assert_eq!(paths.dims(), [3, 5, 2, 2]);
//! ```

mod attention;
mod backbone;
mod encoder;
mod error;
pub mod fused;
pub mod head;
mod model;
mod model_config;
pub mod neox;
mod neox_visit;
mod norm;
mod record_check;
mod record_file;
mod rotary;

pub use attention::{CausalSelfAttention, LayerCache, TimeWindow};
pub use backbone::{BackboneSettings, CausalBackbone, KvCache, TransformerBlock};
pub use encoder::SpatialEncoder;
pub use error::{ModelError, Result};
pub use head::{
    CvaeHead, DecoderOutput, DistributionHead, FLOW_MIN_WIDTH, FlowHead, HeadKind, HeadLoss,
    LatentHead, MixtureHead, OutputHead, Predict, RECOMMENDED_BRIDGE_SIGMA, RECOMMENDED_HEAD,
    RECOMMENDED_N_TIMES, RECOMMENDED_PREDICT, VARIANCE_FLOOR, VariationalDecoder,
};
pub use model::{CalmFlowModel, Prompt};
pub use model_config::CalmFlowConfig;
pub use norm::layer_norm_plain;
pub use record_file::{
    SortedParamRecord, load_module, load_optimizer_record, load_record, materialize, save_module,
    save_record,
};
pub use rotary::RotaryEmbedding;
