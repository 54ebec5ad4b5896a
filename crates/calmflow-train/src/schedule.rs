//! Learning-rate schedules: linear warm-up, then constant, linear or cosine decay.
//!
//! ```
//! use calmflow_train::{LrDecay, LrSchedule};
//! let s = LrSchedule { peak: 1e-3, warmup_steps: 10, total_steps: 110, decay: LrDecay::Linear, final_fraction: 0.0 };
//! assert_eq!(s.at(5), 5e-4);      // half-way through warm-up
//! assert_eq!(s.at(10), 1e-3);     // peak
//! assert!((s.at(60) - 5e-4).abs() < 1e-12); // half-way through the decay
//! ```

use serde::{Deserialize, Serialize};

/// The shape of the decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrDecay {
    /// Stay at the peak.
    Constant,
    /// Linearly to `final_fraction · peak` (the authors' choice).
    #[default]
    Linear,
    /// Half a cosine to `final_fraction · peak`.
    Cosine,
}

/// A learning rate for every (1-based) step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Rate after warm-up.
    pub peak: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Decay shape.
    pub decay: LrDecay,
    /// Final rate as a fraction of the peak.
    pub final_fraction: f64,
}

impl LrSchedule {
    /// The rate at `step` (1-based).
    pub fn at(&self, step: usize) -> f64 {
        if step <= self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).clamp(0.0, 1.0);
        let f = self.final_fraction;
        match self.decay {
            LrDecay::Constant => self.peak,
            LrDecay::Linear => self.peak * (1.0 - (1.0 - f) * progress),
            LrDecay::Cosine => {
                self.peak * (f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_ends_at_the_final_fraction_and_is_monotone() {
        let s = LrSchedule {
            peak: 2.0,
            warmup_steps: 0,
            total_steps: 100,
            decay: LrDecay::Cosine,
            final_fraction: 0.1,
        };
        assert!((s.at(100) - 0.2).abs() < 1e-12);
        assert!((s.at(50) - 1.1).abs() < 1e-12);
        assert!((1..100).all(|k| s.at(k + 1) <= s.at(k)));
        let c = LrSchedule {
            decay: LrDecay::Constant,
            ..s
        };
        assert_eq!(c.at(77), 2.0);
    }
}
