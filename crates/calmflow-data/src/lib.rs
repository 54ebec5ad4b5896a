//! # calmflow-data — data sets for CaLMFlow
//!
//! Everything a generative-modelling study needs besides the model: seeded samplers of
//! the paper's and torchcfm's distributions ([`EightGaussians`], [`Moons`], [`Circles`],
//! [`Checkerboard`], [`SwissRoll`], [`Spiral`], [`StandardNormal`], [`GaussianMixture`],
//! the high-dimensional [`MixturePair`]s, and the laws no few-component diagonal mixture
//! models exactly: [`CurvedSurface`], [`MultiScaleStudent`], [`AnisotropicMixture`]), readers and writers for the files users hold
//! ([`npy`], [`csv`], AnnData [`h5ad`]), the real [`digits()`] set and the bundled
//! pbmc68k_reduced single-cell file ([`h5ad::bundled_pbmc68k_reduced`]), [`Standardizer`],
//! [`Pca`] and [`KMeans`], and splits ([`split_by_fraction`], [`Conditions::hold_out`]).
//!
//! Points are `f32` rows (`n × d` [`ndarray::Array2`]); statistics accumulate in `f64`.
//! One [`Rng`] type is threaded through every sampler: the same seed gives the same points.
//!
//! ```
//! use calmflow_data::{seeded_rng, Pair, EightGaussians, Moons, Sampler};
//! let pair = Pair::new(Box::new(EightGaussians::default()), Box::new(Moons::default())).unwrap();
//! let (x0, x1) = pair.sample(256, &mut seeded_rng(0));
//! assert_eq!((x0.dim(), x1.dim()), ((256, 2), (256, 2)));
//! ```

mod atomic;
pub mod csv;
mod digits;
mod error;
pub mod h5ad;
mod kmeans;
mod laws;
mod mixtures;
pub mod npy;
mod preprocess;
mod rng;
mod split;
mod synthetic;

pub use atomic::write_atomically;
pub use digits::{LabeledData, digits};
pub use error::{DataError, Result, ensure_finite};
pub use kmeans::{KMEANS_MAX_ITERATIONS, KMeans};
pub use laws::{AnisotropicMixture, CurvedSurface, MultiScaleStudent};
pub use mixtures::{GaussianMixture, MixturePair};
pub use preprocess::{Pca, Standardizer};
pub use rng::{Rng, seeded_rng};
pub use split::{Conditions, Split, split_by_fraction};
pub use synthetic::{
    Checkerboard, Circles, EightGaussians, Moons, Pair, SAMPLER_NAMES, Sampler, Spiral,
    StandardNormal, SwissRoll, sampler_by_name,
};
