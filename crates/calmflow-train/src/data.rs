//! Where training pairs come from: a sampler (fresh points every draw) or a finite point set
//! (drawn with replacement), for the source `p0` and the target `p1`, plus a fixed
//! validation set.

use calmflow_data::{Rng, Sampler, ensure_finite, seeded_rng, split_by_fraction};
use ndarray::{Array2, Axis};
use rand::Rng as _;

use crate::error::{Result, invalid, shape_error};

/// One side of the transport problem.
pub enum PointSource {
    /// A distribution with a sampler: every draw is fresh.
    Sampler(Box<dyn Sampler>),
    /// A finite point set (`n × D`): draws pick rows uniformly with replacement.
    Points(Array2<f32>),
}

impl std::fmt::Debug for PointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sampler(s) => write!(f, "Sampler({})", s.name()),
            Self::Points(p) => write!(f, "Points({}×{})", p.nrows(), p.ncols()),
        }
    }
}

impl PointSource {
    /// A point set, checked to be non-empty and finite.
    pub fn points(points: Array2<f32>, what: &str) -> Result<Self> {
        if points.nrows() == 0 || points.ncols() == 0 {
            return Err(invalid(format!("{what} has no points")));
        }
        ensure_finite(points.view(), what)?;
        Ok(Self::Points(points))
    }

    /// Dimension `D`.
    pub fn dim(&self) -> usize {
        match self {
            Self::Sampler(s) => s.dim(),
            Self::Points(p) => p.ncols(),
        }
    }

    /// Draws `n` points.
    pub fn draw(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        match self {
            Self::Sampler(s) => s.sample(n, rng),
            Self::Points(p) => {
                let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..p.nrows())).collect();
                p.select(Axis(0), &rows)
            }
        }
    }
}

/// Source, target and a fixed validation set `(x0, x1)`.
#[derive(Debug)]
pub struct FlowData {
    /// `p0`.
    pub source: PointSource,
    /// `p1`.
    pub target: PointSource,
    /// Validation pairs, drawn once (independent of the training draws).
    pub validation: (Array2<f32>, Array2<f32>),
}

impl FlowData {
    /// Pairs `source` and `target`. Point sets give up `validation_fraction` of their rows
    /// to the validation set; samplers contribute fresh draws (`n_validation` points, or as
    /// many as the held-out target rows). `seed` fixes the split and the draws.
    pub fn new(
        source: PointSource,
        target: PointSource,
        validation_fraction: f64,
        n_validation: usize,
        seed: u64,
    ) -> Result<Self> {
        if source.dim() != target.dim() {
            return Err(shape_error(
                "source and target",
                format!("one dimension (source has {})", source.dim()),
                target.dim(),
            ));
        }
        if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
            return Err(invalid(format!(
                "validation_fraction = {validation_fraction} must lie in (0, 1)"
            )));
        }
        if n_validation == 0 {
            return Err(invalid("n_validation must be ≥ 1"));
        }
        let mut rng = seeded_rng(seed ^ 0x005e_ed0f_da7a);
        let split = |side: PointSource, salt: u64| -> Result<(PointSource, Option<Array2<f32>>)> {
            match side {
                PointSource::Points(p) => {
                    let s = split_by_fraction(p.nrows(), validation_fraction, 0.0, seed ^ salt)?;
                    if s.train.is_empty() || s.validation.is_empty() {
                        return Err(invalid(format!(
                            "{} points cannot be split into training and validation rows at \
                             validation_fraction = {validation_fraction}",
                            p.nrows()
                        )));
                    }
                    let held = p.select(Axis(0), &s.validation);
                    Ok((PointSource::Points(p.select(Axis(0), &s.train)), Some(held)))
                }
                sampler => Ok((sampler, None)),
            }
        };
        let (source, held_source) = split(source, 1)?;
        let (target, held_target) = split(target, 2)?;
        let n = held_target.as_ref().map_or(n_validation, |h| h.nrows());
        let fill = |held: Option<Array2<f32>>, side: &PointSource, rng: &mut Rng| match held {
            Some(h) if h.nrows() == n => h,
            Some(h) => PointSource::Points(h).draw(n, rng),
            None => side.draw(n, rng),
        };
        let v0 = fill(held_source, &source, &mut rng);
        let v1 = fill(held_target, &target, &mut rng);
        Ok(Self {
            source,
            target,
            validation: (v0, v1),
        })
    }

    /// Dimension `D`.
    pub fn dim(&self) -> usize {
        self.source.dim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calmflow_data::{EightGaussians, Moons};

    #[test]
    fn point_sets_are_split_and_samplers_draw_fresh_validation_points() {
        let target = Array2::from_shape_fn((100, 2), |(i, j)| (i * 2 + j) as f32);
        let data = FlowData::new(
            PointSource::Sampler(Box::new(EightGaussians::default())),
            PointSource::points(target, "target").unwrap(),
            0.2,
            500,
            7,
        )
        .unwrap();
        let (v0, v1) = &data.validation;
        assert_eq!(v1.nrows(), 20);
        assert_eq!(v0.nrows(), 20);
        let PointSource::Points(train) = &data.target else {
            panic!("target should stay a point set")
        };
        assert_eq!(train.nrows(), 80);
        // No validation row is a training row.
        for v in v1.rows() {
            assert!(train.rows().into_iter().all(|t| t != v));
        }
        let samplers = FlowData::new(
            PointSource::Sampler(Box::new(EightGaussians::default())),
            PointSource::Sampler(Box::new(Moons::default())),
            0.1,
            300,
            7,
        )
        .unwrap();
        assert_eq!(samplers.validation.1.dim(), (300, 2));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let nan = Array2::from_elem((3, 2), f32::NAN);
        assert!(PointSource::points(nan, "x").is_err());
        let three = PointSource::points(Array2::zeros((10, 3)), "x").unwrap();
        let moons = PointSource::Sampler(Box::new(Moons::default()));
        assert!(FlowData::new(three, moons, 0.1, 10, 0).is_err());
    }
}
