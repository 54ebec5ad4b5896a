//! # calmflow-tokenize — CaLMFlow's space-time token layout, prompts and tokenizers
//!
//! Flow tokens ([`SpaceTimeLayout`], [`pack`], [`unpack`]) and the text that conditions
//! them ([`PromptTemplate`], [`PromptTokenizer`], [`left_pad`]; docs/method.md §8).
//!
//! A sequence holds `P` trajectories of `N` time points, each state encoded as `K` spatial
//! tokens. Time is outermost and space innermost: the token of (time `i`, trajectory `p`,
//! spatial `k`) sits at position `(i·P + p)·K + k` (docs/method.md §3), after any prompt tokens.
//! A *slot* is one (time, trajectory) pair, `K` tokens wide; slot `(i, p)` predicts slot
//! `(i + 1, p)`, so the last time point predicts nothing and is excluded from the loss.
//!
//! ```
//! use calmflow_tokenize::SpaceTimeLayout;
//! let l = SpaceTimeLayout::new(16, 4, 3).unwrap();
//! assert_eq!(l.position(2, 1, 2), (2 * 4 + 1) * 3 + 2);
//! assert_eq!(l.coords(l.position(5, 3, 0)), Some((5, 3, 0)));
//! assert_eq!(l.next_slot(l.slot(2, 1)), Some(l.slot(3, 1)));
//! assert_eq!(l.next_slot(l.slot(15, 1)), None);
//! ```

use burn::tensor::{Tensor, backend::Backend};

mod prompt;
mod tokenizer;

pub use prompt::PromptTemplate;
pub use tokenizer::{
    HfTokenizer, PromptBatch, PromptTokenizer, TokenizerSpec, WordTokenizer, left_pad,
};

/// Shape and index errors of the token layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizeError {
    /// A layout dimension is zero.
    #[error("invalid layout: {0}")]
    InvalidLayout(String),
    /// A tensor does not have the shape the layout needs.
    #[error("shape mismatch in {what}: expected {expected}, got {actual}")]
    Shape {
        /// What was being checked.
        what: &'static str,
        /// Expected shape.
        expected: String,
        /// Actual shape.
        actual: String,
    },
    /// A prompt template does not parse, or cannot be filled with the values given.
    #[error("prompt template {template:?}: {message}")]
    Template {
        /// The template text.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A template field that no condition column provides.
    #[error(
        "the prompt template uses field `{field}`, which is not among the conditions ({available})"
    )]
    MissingField {
        /// The field name.
        field: String,
        /// The names that were given, comma-separated.
        available: String,
    },
    /// A tokenizer cannot be read or cannot encode a prompt.
    #[error("{source_name}: {message}")]
    Tokenizer {
        /// File or object concerned.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TokenizeError>;

/// `N` time points × `P` trajectories × `K` spatial tokens per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceTimeLayout {
    /// Time points `N` (≥ 2: one to read, one to predict).
    pub n_times: usize,
    /// Trajectories per sequence `P` (≥ 1).
    pub n_traj: usize,
    /// Spatial tokens per state `K` (≥ 1).
    pub n_space: usize,
}

impl SpaceTimeLayout {
    /// A validated layout.
    pub fn new(n_times: usize, n_traj: usize, n_space: usize) -> Result<Self> {
        if n_times < 2 {
            return Err(TokenizeError::InvalidLayout(format!(
                "n_times must be ≥ 2, got {n_times}"
            )));
        }
        if n_traj == 0 || n_space == 0 {
            return Err(TokenizeError::InvalidLayout(format!(
                "n_traj and n_space must be ≥ 1, got {n_traj} and {n_space}"
            )));
        }
        Ok(Self {
            n_times,
            n_traj,
            n_space,
        })
    }

    /// Slots per sequence `S = N·P`.
    pub fn n_slots(&self) -> usize {
        self.n_times * self.n_traj
    }

    /// Flow tokens per sequence `L = N·P·K` (prompt tokens not counted).
    pub fn seq_len(&self) -> usize {
        self.n_slots() * self.n_space
    }

    /// Tokens appended per generated time point, `P·K`.
    pub fn tokens_per_time(&self) -> usize {
        self.n_traj * self.n_space
    }

    /// Slot index `i·P + p` of (time `i`, trajectory `p`).
    pub fn slot(&self, time: usize, traj: usize) -> usize {
        time * self.n_traj + traj
    }

    /// Token position `(i·P + p)·K + k`, counted from the first flow token.
    pub fn position(&self, time: usize, traj: usize, space: usize) -> usize {
        self.slot(time, traj) * self.n_space + space
    }

    /// Token position after a prompt of `prompt_len` tokens.
    pub fn position_after_prompt(
        &self,
        prompt_len: usize,
        time: usize,
        traj: usize,
        space: usize,
    ) -> usize {
        prompt_len + self.position(time, traj, space)
    }

    /// `(time, traj, space)` of a flow token position, or `None` past the sequence.
    pub fn coords(&self, position: usize) -> Option<(usize, usize, usize)> {
        if position >= self.seq_len() {
            return None;
        }
        let slot = position / self.n_space;
        Some((
            slot / self.n_traj,
            slot % self.n_traj,
            position % self.n_space,
        ))
    }

    /// The slot that `slot` predicts: same trajectory, next time point.
    pub fn next_slot(&self, slot: usize) -> Option<usize> {
        let next = slot + self.n_traj;
        (slot < self.n_slots() && next < self.n_slots()).then_some(next)
    }

    /// For each slot, whether it enters the reconstruction loss (every time but the last).
    pub fn slot_loss_mask(&self) -> Vec<bool> {
        (0..self.n_slots())
            .map(|s| s < self.n_slots() - self.n_traj)
            .collect()
    }

    /// For each flow token, whether its latent enters the KL term (every time but the last).
    pub fn token_loss_mask(&self) -> Vec<bool> {
        (0..self.seq_len())
            .map(|t| t < self.seq_len() - self.tokens_per_time())
            .collect()
    }
}

fn shape_error(what: &'static str, expected: String, actual: [usize; 3]) -> TokenizeError {
    TokenizeError::Shape {
        what,
        expected,
        actual: format!("{actual:?}"),
    }
}

/// Packs trajectories `(B·P, N, D)` into sequences of slots `(B, N·P, D)`: the `P`
/// trajectories of a sequence are consecutive rows, and slot `i·P + p` holds trajectory
/// `p` at time `i`. Runs on the backend (no host round trip).
pub fn pack<B: Backend>(
    trajectories: Tensor<B, 3>,
    layout: &SpaceTimeLayout,
) -> Result<Tensor<B, 3>> {
    let [bp, n, d] = trajectories.dims();
    let p = layout.n_traj;
    if n != layout.n_times || bp % p != 0 || bp == 0 {
        return Err(shape_error(
            "trajectories",
            format!("(B·{p}, {}, D) with B ≥ 1", layout.n_times),
            [bp, n, d],
        ));
    }
    let b = bp / p;
    Ok(trajectories
        .reshape([b, p, n, d])
        .swap_dims(1, 2)
        .reshape([b, n * p, d]))
}

/// The inverse of [`pack`]: sequences `(B, N·P, D)` back to trajectories `(B·P, N, D)`.
pub fn unpack<B: Backend>(
    sequences: Tensor<B, 3>,
    layout: &SpaceTimeLayout,
) -> Result<Tensor<B, 3>> {
    let [b, s, d] = sequences.dims();
    let (n, p) = (layout.n_times, layout.n_traj);
    if s != n * p || b == 0 {
        return Err(shape_error(
            "sequences",
            format!("(B, {}, D) with B ≥ 1", n * p),
            [b, s, d],
        ));
    }
    Ok(sequences
        .reshape([b, n, p, d])
        .swap_dims(1, 2)
        .reshape([b * p, n, d]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    #[test]
    fn index_formula_and_inverse_for_many_shapes() {
        for (n, p, k) in [(2, 1, 1), (16, 4, 3), (5, 2, 7), (3, 8, 1)] {
            let l = SpaceTimeLayout::new(n, p, k).unwrap();
            let mut seen = vec![false; l.seq_len()];
            for i in 0..n {
                for t in 0..p {
                    for s in 0..k {
                        let pos = l.position(i, t, s);
                        assert_eq!(pos, (i * p + t) * k + s);
                        assert_eq!(l.coords(pos), Some((i, t, s)));
                        assert!(!seen[pos]);
                        seen[pos] = true;
                        assert_eq!(l.position_after_prompt(7, i, t, s), 7 + pos);
                    }
                }
            }
            assert!(seen.iter().all(|&b| b));
            assert_eq!(l.coords(l.seq_len()), None);
            let slot_mask = l.slot_loss_mask();
            assert_eq!(slot_mask.iter().filter(|&&m| m).count(), (n - 1) * p);
            let token_mask = l.token_loss_mask();
            assert_eq!(token_mask.iter().filter(|&&m| m).count(), (n - 1) * p * k);
            for (s, &in_loss) in slot_mask.iter().enumerate() {
                assert_eq!(l.next_slot(s).is_some(), in_loss);
            }
        }
        assert!(SpaceTimeLayout::new(1, 1, 1).is_err());
        assert!(SpaceTimeLayout::new(4, 0, 1).is_err());
    }

    #[test]
    fn pack_places_trajectory_p_time_i_at_slot_ip_plus_p() {
        let l = SpaceTimeLayout::new(3, 2, 1).unwrap();
        let device = Default::default();
        // Two sequences of two trajectories; value = 100·row + 10·time + coordinate.
        let (bp, n, d) = (4, 3, 2);
        let values: Vec<f32> = (0..bp * n * d)
            .map(|x| (100 * (x / (n * d)) + 10 * ((x / d) % n) + x % d) as f32)
            .collect();
        let traj = Tensor::<B, 3>::from_data(TensorData::new(values.clone(), [bp, n, d]), &device);
        let seq = pack(traj, &l).unwrap();
        assert_eq!(seq.dims(), [2, 6, 2]);
        let out: Vec<f32> = seq.clone().into_data().to_vec().unwrap();
        for b in 0..2 {
            for i in 0..n {
                for p in 0..2 {
                    let slot = l.slot(i, p);
                    let row = b * 2 + p;
                    assert_eq!(out[(b * 6 + slot) * d], (100 * row + 10 * i) as f32);
                }
            }
        }
        let back: Vec<f32> = unpack(seq, &l).unwrap().into_data().to_vec().unwrap();
        assert_eq!(back, values);
    }

    #[test]
    fn round_trip_and_shape_errors() {
        let device = Default::default();
        for (b, n, p, d) in [(1, 2, 1, 1), (3, 5, 4, 2), (2, 16, 8, 3)] {
            let l = SpaceTimeLayout::new(n, p, 1).unwrap();
            let x =
                Tensor::<B, 3>::random([b * p, n, d], burn::tensor::Distribution::Default, &device);
            let back = unpack(pack(x.clone(), &l).unwrap(), &l).unwrap();
            x.into_data().assert_eq(&back.into_data(), true);
        }
        let l = SpaceTimeLayout::new(4, 3, 1).unwrap();
        let bad = Tensor::<B, 3>::zeros([4, 4, 2], &device);
        let e = pack(bad, &l).unwrap_err().to_string();
        assert!(e.contains("[4, 4, 2]") && e.contains("(B·3, 4, D)"), "{e}");
        assert!(unpack(Tensor::<B, 3>::zeros([1, 5, 2], &device), &l).is_err());
    }
}
