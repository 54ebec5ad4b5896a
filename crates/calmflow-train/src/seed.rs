//! The seeds of a run's random streams, derived from `(seed, step, stream)`: the trainer
//! (pairs, path noise, validation) and the data-parallel replicas (each one's backend
//! stream) draw from the same function.

/// A seed for step `step` of a run seeded `seed` (SplitMix64 of the pair), so that the
/// draws of different steps and runs are unrelated.
pub(crate) fn step_seed(seed: u64, step: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
