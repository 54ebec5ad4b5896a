//! Time grids on which Volterra equations are discretised.

use crate::error::{Result, VieError};

/// A strictly increasing, finite sequence of at least two time points.
///
/// CaLMFlow's model grid is the uniform inclusive grid `t_i = i/(N-1)` on `[0, 1]`.
///
/// ```
/// use calmflow_vie::TimeGrid;
/// let g = TimeGrid::uniform(5, 1.0).unwrap();
/// assert_eq!(g.points(), &[0.0, 0.25, 0.5, 0.75, 1.0]);
/// assert!(g.is_uniform());
/// assert!(TimeGrid::new(vec![0.0, 0.0]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TimeGrid {
    points: Vec<f64>,
}

impl TimeGrid {
    /// Uniform inclusive grid of `n` points on `[0, t_end]`: `t_i = t_end · i/(n-1)`.
    pub fn uniform(n: usize, t_end: f64) -> Result<Self> {
        Self::uniform_on(n, 0.0, t_end)
    }

    /// Uniform inclusive grid of `n` points on `[t_start, t_end]`.
    pub fn uniform_on(n: usize, t_start: f64, t_end: f64) -> Result<Self> {
        if n < 2 {
            return Err(VieError::InvalidGrid(format!(
                "need at least 2 points, got {n}"
            )));
        }
        if !(t_start.is_finite() && t_end.is_finite()) || t_end <= t_start {
            return Err(VieError::InvalidGrid(format!(
                "interval [{t_start}, {t_end}] must be finite with end > start"
            )));
        }
        let span = t_end - t_start;
        let last = (n - 1) as f64;
        // Computed as start + span·i/last (not by accumulating h) so the end point is exact.
        let points = (0..n)
            .map(|i| {
                if i == n - 1 {
                    t_end
                } else {
                    t_start + span * i as f64 / last
                }
            })
            .collect();
        Self::new(points)
    }

    /// CaLMFlow's model grid: `n` points `t_i = i/(n-1)` on `[0, 1]`.
    pub fn model(n: usize) -> Result<Self> {
        Self::uniform(n, 1.0)
    }

    /// An arbitrary grid; validated to be finite, strictly increasing, ≥ 2 points.
    pub fn new(points: Vec<f64>) -> Result<Self> {
        if points.len() < 2 {
            return Err(VieError::InvalidGrid(format!(
                "need at least 2 points, got {}",
                points.len()
            )));
        }
        if let Some(i) = points.iter().position(|t| !t.is_finite()) {
            return Err(VieError::InvalidGrid(format!("point {i} is {}", points[i])));
        }
        if let Some(i) = points.windows(2).position(|w| w[1] <= w[0]) {
            return Err(VieError::InvalidGrid(format!(
                "not strictly increasing at index {}: {} then {}",
                i + 1,
                points[i],
                points[i + 1]
            )));
        }
        Ok(Self { points })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Always false: a grid has at least two points.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The time points.
    pub fn points(&self) -> &[f64] {
        &self.points
    }

    /// Time point `i`.
    pub fn t(&self, i: usize) -> f64 {
        self.points[i]
    }

    /// First time point.
    pub fn start(&self) -> f64 {
        self.points[0]
    }

    /// Last time point.
    pub fn end(&self) -> f64 {
        self.points[self.points.len() - 1]
    }

    /// Step `t_{i+1} - t_i`.
    pub fn step(&self, i: usize) -> f64 {
        self.points[i + 1] - self.points[i]
    }

    /// Largest step.
    pub fn max_step(&self) -> f64 {
        self.points
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0, f64::max)
    }

    /// True when all steps agree to a relative 1e-9.
    pub fn is_uniform(&self) -> bool {
        let h = self.step(0);
        self.points
            .windows(2)
            .all(|w| ((w[1] - w[0]) - h).abs() <= 1e-9 * h.abs().max(f64::MIN_POSITIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_grids() {
        assert!(TimeGrid::uniform(1, 1.0).is_err());
        assert!(TimeGrid::uniform(3, 0.0).is_err());
        assert!(TimeGrid::uniform(3, f64::NAN).is_err());
        assert!(TimeGrid::new(vec![0.0, 1.0, 0.5]).is_err());
        assert!(TimeGrid::new(vec![0.0, f64::INFINITY]).is_err());
        assert!(TimeGrid::new(vec![]).is_err());
    }

    #[test]
    fn model_grid_is_inclusive() {
        let g = TimeGrid::model(16).unwrap();
        assert_eq!(g.len(), 16);
        assert_eq!(g.start(), 0.0);
        assert_eq!(g.end(), 1.0);
        assert!((g.t(3) - 3.0 / 15.0).abs() < 1e-15);
        assert!(g.is_uniform());
        let nu = TimeGrid::new(vec![0.0, 0.1, 0.5, 1.0]).unwrap();
        assert!(!nu.is_uniform());
        assert!((nu.max_step() - 0.5).abs() < 1e-15);
    }
}
