//! The one random-number generator type of calmflow's data code.
//!
//! Every sampler takes `&mut Rng` explicitly: there is no global state, and the same
//! seed gives the same points on every platform (ChaCha8 is portable and its stream is
//! fixed by the seed).
//!
//! ```
//! use calmflow_data::{seeded_rng, Sampler, EightGaussians};
//! let a = EightGaussians::default().sample(5, &mut seeded_rng(7));
//! let b = EightGaussians::default().sample(5, &mut seeded_rng(7));
//! assert_eq!(a, b);
//! ```

use rand::SeedableRng;

/// calmflow's seeded random-number generator.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator seeded with `seed`.
pub fn seeded_rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// A standard normal draw.
pub(crate) fn normal(rng: &mut Rng) -> f64 {
    use rand_distr::Distribution;
    rand_distr::StandardNormal.sample(rng)
}

/// A uniform draw in `[0, 1)`.
pub(crate) fn uniform(rng: &mut Rng) -> f64 {
    use rand::Rng as _;
    rng.random::<f64>()
}

/// A uniform index in `0..n` (`n > 0`).
pub(crate) fn index(rng: &mut Rng, n: usize) -> usize {
    use rand::Rng as _;
    rng.random_range(0..n)
}
