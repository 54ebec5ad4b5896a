//! Where training pairs come from: a sampler (fresh points every draw) or a finite point set
//! (drawn with replacement), for the source `p0` and the target `p1`, plus a fixed
//! validation set.

use calmflow_data::{Rng, Sampler, Standardizer, ensure_finite, seeded_rng, split_by_fraction};
use ndarray::{Array2, Axis};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::condition::ConditionTable;
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
        Ok(Self::Points(checked_points(points, what)?))
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

/// `points` if it has rows and columns and every value is finite.
fn checked_points(points: Array2<f32>, what: &str) -> Result<Array2<f32>> {
    if points.nrows() == 0 || points.ncols() == 0 {
        return Err(invalid(format!("{what} has no points")));
    }
    ensure_finite(points.view(), what)?;
    Ok(points)
}

/// Checks that source and target share a dimension and that `validation_fraction` lies
/// in (0, 1).
fn check_pairing(source_dim: usize, target_dim: usize, validation_fraction: f64) -> Result<()> {
    if source_dim != target_dim {
        return Err(shape_error(
            "source and target",
            format!("one dimension (source has {source_dim})"),
            target_dim,
        ));
    }
    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(invalid(format!(
            "validation_fraction = {validation_fraction} must lie in (0, 1)"
        )));
    }
    Ok(())
}

/// The positions `i` with `labels[i] == label`, in order.
pub(crate) fn rows_with(labels: &[usize], label: usize) -> Vec<usize> {
    (0..labels.len()).filter(|&i| labels[i] == label).collect()
}

/// The condition of every training and validation target point.
#[derive(Debug, Clone)]
pub struct ConditionData {
    /// Every condition of the study (held-out ones included).
    pub table: ConditionTable,
    /// Condition of each training target row.
    pub train: Vec<usize>,
    /// Condition of each validation pair.
    pub validation: Vec<usize>,
    /// Training rows of each condition.
    groups: Vec<Vec<usize>>,
}

impl ConditionData {
    /// Draws `batch` examples of `per` target rows each: an example's condition is that
    /// of a uniformly drawn training row (so conditions are weighted by their size), and
    /// its `per` rows are drawn from that condition's rows.
    pub fn draw(
        &self,
        target: &Array2<f32>,
        batch: usize,
        per: usize,
        rng: &mut Rng,
    ) -> (Array2<f32>, Vec<usize>) {
        let mut rows = Vec::with_capacity(batch * per);
        let mut conditions = Vec::with_capacity(batch);
        for _ in 0..batch {
            let c = self.train[rng.random_range(0..self.train.len())];
            let group = &self.groups[c];
            rows.extend((0..per).map(|_| group[rng.random_range(0..group.len())]));
            conditions.push(c);
        }
        (target.select(Axis(0), &rows), conditions)
    }

    /// Validation rows grouped into examples of `per` rows of one condition (a
    /// condition's rows past a multiple of `per` are left out), with each example's
    /// condition.
    pub fn validation_examples(&self, per: usize) -> (Vec<usize>, Vec<usize>) {
        let mut rows = Vec::new();
        let mut conditions = Vec::new();
        for c in 0..self.table.len() {
            let mine = rows_with(&self.validation, c);
            for chunk in mine.chunks_exact(per.max(1)) {
                rows.extend_from_slice(chunk);
                conditions.push(c);
            }
        }
        (rows, conditions)
    }
}

/// Points drawn from a target sampler to fit its standardisation.
pub const STANDARDIZE_FIT_DRAWS: usize = 20_000;

/// The per-coordinate affine map `x ↦ (x − mean)/scale` that [`FlowData::standardize`]
/// fitted on the training targets, as a run records it: the model lives in standardised
/// coordinates and generated points go back through the inverse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    /// Training targets' mean of each coordinate.
    pub mean: Vec<f64>,
    /// Training targets' (population) standard deviation of each coordinate (1 where a
    /// coordinate is constant).
    pub scale: Vec<f64>,
    /// Whether the source went through the same map (it does when it is a point set:
    /// source and target are then data in one space; a built-in source distribution is
    /// reference noise and stays as it is).
    pub source: bool,
}

impl Standardization {
    /// The map as a [`Standardizer`] (an error if the record is damaged).
    pub fn standardizer(&self) -> Result<Standardizer> {
        Ok(Standardizer::from_parts(
            self.mean.clone(),
            self.scale.clone(),
        )?)
    }

    /// Data coordinates → the model's.
    pub fn to_model(&self, x: &Array2<f32>) -> Result<Array2<f32>> {
        Ok(self.standardizer()?.transform(x.view())?)
    }

    /// The model's coordinates → data (rows of any 2-D array of width `D`).
    pub fn to_data(&self, z: &Array2<f32>) -> Result<Array2<f32>> {
        Ok(self.standardizer()?.inverse_transform(z.view())?)
    }

    /// Source points of the data's coordinates → the model's (unchanged when the source
    /// was not standardised).
    pub fn source_to_model(&self, x0: Array2<f32>) -> Result<Array2<f32>> {
        if self.source {
            self.to_model(&x0)
        } else {
            Ok(x0)
        }
    }
}

/// A sampler whose draws are standardised.
struct StandardizedSampler {
    inner: Box<dyn Sampler>,
    map: Standardizer,
}

impl Sampler for StandardizedSampler {
    fn name(&self) -> String {
        format!("standardised {}", self.inner.name())
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        self.map
            .transform(self.inner.sample(n, rng).view())
            .expect("the map was fitted on this sampler's draws, so the widths agree")
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
    /// The condition of each target point, for conditional generation (the target is
    /// then a point set).
    pub conditions: Option<ConditionData>,
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
        check_pairing(source.dim(), target.dim(), validation_fraction)?;
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
            conditions: None,
        })
    }

    /// Conditional data: `target` row `i` has condition `conditions[i]` of `table`. A
    /// `validation_fraction` of every condition's rows is held back for validation; each
    /// validation pair gets a fresh source point.
    pub fn conditional(
        source: PointSource,
        target: Array2<f32>,
        conditions: Vec<usize>,
        table: ConditionTable,
        validation_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        if conditions.len() != target.nrows() {
            return Err(shape_error(
                "target conditions",
                format!("one per target row ({})", target.nrows()),
                conditions.len(),
            ));
        }
        if let Some(&c) = conditions.iter().find(|&&c| c >= table.len()) {
            return Err(invalid(format!(
                "condition index {c} is outside the table of {} conditions",
                table.len()
            )));
        }
        let target = checked_points(target, "target")?;
        check_pairing(source.dim(), target.ncols(), validation_fraction)?;
        // Split within each condition so that every training condition keeps rows.
        let (mut train_rows, mut val_rows) = (Vec::new(), Vec::new());
        for c in 0..table.len() {
            let mine = rows_with(&conditions, c);
            if mine.is_empty() {
                continue;
            }
            let s = split_by_fraction(mine.len(), validation_fraction, 0.0, seed ^ (c as u64 + 3))?;
            if s.train.is_empty() {
                return Err(invalid(format!(
                    "condition {:?} has {} rows: too few to keep any for training at \
                     validation_fraction = {validation_fraction}",
                    table.labels(c),
                    mine.len()
                )));
            }
            train_rows.extend(s.train.iter().map(|&k| mine[k]));
            val_rows.extend(s.validation.iter().map(|&k| mine[k]));
        }
        if val_rows.is_empty() {
            return Err(invalid(format!(
                "no validation rows at validation_fraction = {validation_fraction}"
            )));
        }
        let mut rng = seeded_rng(seed ^ 0x005e_ed0f_da7a);
        let v1 = target.select(Axis(0), &val_rows);
        let v0 = source.draw(val_rows.len(), &mut rng);
        let train: Vec<usize> = train_rows.iter().map(|&i| conditions[i]).collect();
        let validation = val_rows.iter().map(|&i| conditions[i]).collect();
        let mut groups = vec![Vec::new(); table.len()];
        for (row, &c) in train.iter().enumerate() {
            groups[c].push(row);
        }
        Ok(Self {
            source,
            target: PointSource::Points(target.select(Axis(0), &train_rows)),
            validation: (v0, v1),
            conditions: Some(ConditionData {
                table,
                train,
                validation,
                groups,
            }),
        })
    }

    /// Dimension `D`.
    pub fn dim(&self) -> usize {
        self.source.dim()
    }

    /// Standardises the data per coordinate with a map fitted on the training targets
    /// (the training rows of a point set, or [`STANDARDIZE_FIT_DRAWS`] draws of a sampler
    /// seeded by `seed`): the target and the validation targets always, the source and
    /// its validation points when the source is a point set. Returns the map, to record
    /// with the run and to invert on generated points.
    pub fn standardize(self, seed: u64) -> Result<(Self, Standardization)> {
        let map = match &self.target {
            PointSource::Points(p) => Standardizer::fit(p.view())?,
            PointSource::Sampler(s) => {
                let fit = s.sample(STANDARDIZE_FIT_DRAWS, &mut seeded_rng(seed ^ 0x0057_a2da));
                Standardizer::fit(checked_points(fit, "target draws")?.view())?
            }
        };
        let record = Standardization {
            mean: map.mean().to_vec(),
            scale: map.scale().to_vec(),
            source: matches!(self.source, PointSource::Points(_)),
        };
        let side = |side: PointSource| -> Result<PointSource> {
            Ok(match side {
                PointSource::Points(p) => PointSource::Points(map.transform(p.view())?),
                PointSource::Sampler(inner) => {
                    PointSource::Sampler(Box::new(StandardizedSampler {
                        inner,
                        map: map.clone(),
                    }))
                }
            })
        };
        let (v0, v1) = self.validation;
        let v0 = if record.source {
            map.transform(v0.view())?
        } else {
            v0
        };
        let source = if record.source {
            side(self.source)?
        } else {
            self.source
        };
        Ok((
            Self {
                source,
                target: side(self.target)?,
                validation: (v0, map.transform(v1.view())?),
                conditions: self.conditions,
            },
            record,
        ))
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

    /// Mean and population variance of a column.
    fn moments(col: ndarray::ArrayView1<'_, f32>) -> (f64, f64) {
        let n = col.len() as f64;
        let mean = col.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = col.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    /// A point-set target and source: both sides and their validation rows go through
    /// the map fitted on the training targets, whose rows then have mean 0 and standard
    /// deviation 1 per coordinate; the record inverts the map.
    #[test]
    fn standardize_maps_point_sets_with_the_training_targets_moments() {
        let mut rng = seeded_rng(3);
        let target = Moons::default()
            .sample(400, &mut rng)
            .mapv(|v| 40.0 * v + 100.0);
        let source = EightGaussians::default().sample(300, &mut rng);
        let data = FlowData::new(
            PointSource::points(source.clone(), "source").unwrap(),
            PointSource::points(target, "target").unwrap(),
            0.25,
            10,
            5,
        )
        .unwrap();
        let (raw_v0, raw_v1) = data.validation.clone();
        let PointSource::Points(raw_train) = &data.target else {
            panic!("target should be a point set")
        };
        let raw_train = raw_train.clone();
        let (data, record) = data.standardize(0).unwrap();
        assert!(record.source);
        let PointSource::Points(train) = &data.target else {
            panic!("target should stay a point set")
        };
        for j in 0..2 {
            let (mean, var) = moments(train.column(j));
            assert!(mean.abs() < 1e-5, "mean {mean}");
            assert!((var - 1.0).abs() < 1e-4, "variance {var}");
            assert!(record.mean[j] > 60.0 && record.scale[j] > 10.0);
        }
        let back = record.to_data(train).unwrap();
        assert!((&back - &raw_train).iter().all(|d| d.abs() < 1e-3));
        let (v0, v1) = &data.validation;
        assert_eq!(v1, &record.to_model(&raw_v1).unwrap());
        assert_eq!(v0, &record.to_model(&raw_v0).unwrap());
        assert_eq!(record.source_to_model(raw_v0.clone()).unwrap(), *v0);
    }

    /// A sampler target is wrapped: fresh draws are standardised (moments within Monte
    /// Carlo error of 0 and 1); a sampler source is reference noise and is left alone.
    #[test]
    fn standardize_wraps_a_sampler_target_and_leaves_a_sampler_source() {
        let data = FlowData::new(
            PointSource::Sampler(Box::new(EightGaussians::default())),
            PointSource::Sampler(Box::new(Moons::default())),
            0.1,
            500,
            7,
        )
        .unwrap();
        let raw_v0 = data.validation.0.clone();
        let (data, record) = data.standardize(1).unwrap();
        assert!(!record.source);
        assert_eq!(data.validation.0, raw_v0);
        assert_eq!(record.source_to_model(raw_v0.clone()).unwrap(), raw_v0);
        let mut rng = seeded_rng(9);
        let raw = Moons::default().sample(20_000, &mut rng);
        let fresh = data.target.draw(20_000, &mut rng);
        for j in 0..2 {
            let (mean, var) = moments(fresh.column(j));
            let sd = var.sqrt();
            // Two independent 20 000-point estimates: standard errors ≈ 0.007 and 0.005.
            assert!(mean.abs() < 0.03, "mean {mean}");
            assert!((sd - 1.0).abs() < 0.03, "sd {sd}");
            let raw_mean = moments(raw.column(j)).0;
            assert!((record.mean[j] - raw_mean).abs() < 0.03 * record.scale[j]);
        }
        let PointSource::Sampler(s) = &data.target else {
            panic!("target should stay a sampler")
        };
        assert!(s.name().starts_with("standardised "), "{}", s.name());
        let damaged = Standardization {
            scale: vec![1.0],
            ..record
        };
        assert!(damaged.to_data(&raw_v0).is_err());
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
