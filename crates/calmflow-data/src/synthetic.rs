//! Seeded samplers of the 2-D toy distributions used by CaLMFlow, torchcfm and FFJORD,
//! and the standard normal in any dimension.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use ndarray::Array2;

use crate::error::{DataError, Result};
use crate::rng::{Rng, index, normal, uniform};

/// A distribution that produces seeded samples: `n × dim` arrays of `f32`, one point a row.
pub trait Sampler: Send + Sync {
    /// Short name, e.g. `"8gaussians"`.
    fn name(&self) -> String;
    /// Dimension of a point.
    fn dim(&self) -> usize;
    /// Draws `n` points.
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32>;
}

/// Fills an `n × d` array row by row from `point`, which writes one point in `f64`.
pub(crate) fn fill(n: usize, d: usize, mut point: impl FnMut(&mut [f64])) -> Array2<f32> {
    let mut buf = vec![0.0; d];
    let mut out = Array2::zeros((n, d));
    for mut row in out.rows_mut() {
        point(&mut buf);
        for (o, v) in row.iter_mut().zip(&buf) {
            *o = *v as f32;
        }
    }
    out
}

/// Eight isotropic Gaussians with centres `scale · u_k`, `u_k` the 8 unit vectors at
/// multiples of 45°, equal weights.
///
/// The noise has per-coordinate *variance* `√0.1 ≈ 0.316` (standard deviation ≈ 0.562):
/// torchcfm's `sample_8gaussians` and the CaLMFlow authors pass `var = 0.1` and build the
/// covariance as `√var · I`, and calmflow follows that convention so that metrics compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EightGaussians {
    /// Radius of the centres (default 5).
    pub scale: f64,
    /// Per-coordinate variance of each component (default √0.1).
    pub variance: f64,
}

impl Default for EightGaussians {
    fn default() -> Self {
        Self {
            scale: 5.0,
            variance: 0.1f64.sqrt(),
        }
    }
}

impl EightGaussians {
    /// The 8 centres, in torchcfm's order: (1,0), (−1,0), (0,1), (0,−1), then the diagonals.
    pub fn centres(&self) -> [[f64; 2]; 8] {
        let r = FRAC_1_SQRT_2;
        let unit = [
            [1.0, 0.0],
            [-1.0, 0.0],
            [0.0, 1.0],
            [0.0, -1.0],
            [r, r],
            [r, -r],
            [-r, r],
            [-r, -r],
        ];
        unit.map(|[a, b]| [self.scale * a, self.scale * b])
    }
}

impl Sampler for EightGaussians {
    fn name(&self) -> String {
        "8gaussians".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        let centres = self.centres();
        let std = self.variance.sqrt();
        fill(n, 2, |p| {
            let c = centres[index(rng, 8)];
            p[0] = c[0] + std * normal(rng);
            p[1] = c[1] + std * normal(rng);
        })
    }
}

/// Two interleaving half circles (scikit-learn's `make_moons`), with isotropic Gaussian
/// noise of standard deviation `noise` (default 0.2), then mapped by `x ↦ 3x − 1`
/// (torchcfm's `sample_moons`). Each point picks a moon with probability ½ and its
/// arc angle uniformly in `[0, π]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moons {
    /// Standard deviation of the added noise, before the `3x − 1` map.
    pub noise: f64,
}

impl Default for Moons {
    fn default() -> Self {
        Self { noise: 0.2 }
    }
}

impl Sampler for Moons {
    fn name(&self) -> String {
        "moons".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        fill(n, 2, |p| {
            let theta = PI * uniform(rng);
            let (x, y) = if uniform(rng) < 0.5 {
                (theta.cos(), theta.sin())
            } else {
                (1.0 - theta.cos(), 1.0 - theta.sin() - 0.5)
            };
            p[0] = 3.0 * (x + self.noise * normal(rng)) - 1.0;
            p[1] = 3.0 * (y + self.noise * normal(rng)) - 1.0;
        })
    }
}

/// Two concentric circles (FFJORD's `circles`: `make_circles(factor = 0.5, noise = 0.08)`
/// scaled by 3): radius 3 or 1.5 with probability ½ each, uniform angle, Gaussian noise
/// of standard deviation `0.08 · 3` per coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Circles;

impl Sampler for Circles {
    fn name(&self) -> String {
        "circles".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        fill(n, 2, |p| {
            let r = if uniform(rng) < 0.5 { 1.0 } else { 0.5 };
            let a = 2.0 * PI * uniform(rng);
            p[0] = 3.0 * (r * a.cos() + 0.08 * normal(rng));
            p[1] = 3.0 * (r * a.sin() + 0.08 * normal(rng));
        })
    }
}

/// FFJORD's checkerboard: `x₁ ~ U[−2, 2)`, `x₂ = U[0, 1) − 2·B + (⌊x₁⌋ mod 2)` with
/// `B ~ Bernoulli(½)`, both scaled by 2: uniform on 8 squares of side 2 in `[−4, 4]²`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Checkerboard;

impl Sampler for Checkerboard {
    fn name(&self) -> String {
        "checkerboard".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        fill(n, 2, |p| {
            let x1 = 4.0 * uniform(rng) - 2.0;
            let b = index(rng, 2) as f64;
            let x2 = uniform(rng) - 2.0 * b + x1.floor().rem_euclid(2.0);
            p[0] = 2.0 * x1;
            p[1] = 2.0 * x2;
        })
    }
}

/// FFJORD's swiss roll: `t = 1.5π (1 + 2u)`, point `(t cos t, t sin t) + N(0, 1)` noise,
/// divided by 5.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SwissRoll;

impl Sampler for SwissRoll {
    fn name(&self) -> String {
        "swissroll".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        fill(n, 2, |p| {
            let t = 1.5 * PI * (1.0 + 2.0 * uniform(rng));
            p[0] = (t * t.cos() + normal(rng)) / 5.0;
            p[1] = (t * t.sin() + normal(rng)) / 5.0;
        })
    }
}

/// FFJORD's two spirals: `r = √u · 540° (in radians)`, arm point
/// `(−r cos r + U[0, ½), r sin r + U[0, ½))`, the second arm its negative, divided by 3,
/// plus `N(0, 0.1²)` noise.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spiral;

impl Sampler for Spiral {
    fn name(&self) -> String {
        "spiral".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        fill(n, 2, |p| {
            let r = uniform(rng).sqrt() * 540.0 * 2.0 * PI / 360.0;
            let x = -r.cos() * r + 0.5 * uniform(rng);
            let y = r.sin() * r + 0.5 * uniform(rng);
            let sign = if uniform(rng) < 0.5 { 1.0 } else { -1.0 };
            p[0] = sign * x / 3.0 + 0.1 * normal(rng);
            p[1] = sign * y / 3.0 + 0.1 * normal(rng);
        })
    }
}

/// The standard normal `N(0, I_D)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StandardNormal {
    /// Dimension `D`.
    pub dim: usize,
}

impl Sampler for StandardNormal {
    fn name(&self) -> String {
        format!("normal{}", self.dim)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f32> {
        fill(n, self.dim, |p| p.iter_mut().for_each(|v| *v = normal(rng)))
    }
}

/// Names accepted by [`sampler_by_name`].
pub const SAMPLER_NAMES: &[&str] = &[
    "8gaussians",
    "moons",
    "circles",
    "checkerboard",
    "swissroll",
    "spiral",
    "normal",
];

/// A sampler by name: one of [`SAMPLER_NAMES`]; `"normal"` uses dimension `dim`
/// (the 2-D sets ignore it).
pub fn sampler_by_name(name: &str, dim: usize) -> Result<Box<dyn Sampler>> {
    Ok(match name {
        "8gaussians" => Box::new(EightGaussians::default()),
        "moons" => Box::new(Moons::default()),
        "circles" => Box::new(Circles),
        "checkerboard" => Box::new(Checkerboard),
        "swissroll" => Box::new(SwissRoll),
        "spiral" => Box::new(Spiral),
        "normal" => {
            if dim == 0 {
                return Err(DataError::invalid(
                    "dim",
                    "the standard normal needs dim ≥ 1",
                ));
            }
            Box::new(StandardNormal { dim })
        }
        other => {
            return Err(DataError::UnknownDataset {
                name: other.to_string(),
                known: SAMPLER_NAMES.join(", "),
            });
        }
    })
}

/// A source and a target distribution, as flow matching consumes them.
pub struct Pair {
    /// `p0`, the distribution at `t = 0`.
    pub source: Box<dyn Sampler>,
    /// `p1`, the distribution at `t = 1`.
    pub target: Box<dyn Sampler>,
}

impl Pair {
    /// Pairs two samplers of the same dimension.
    pub fn new(source: Box<dyn Sampler>, target: Box<dyn Sampler>) -> Result<Self> {
        if source.dim() != target.dim() {
            return Err(DataError::Shape {
                what: format!("pair {} → {}", source.name(), target.name()),
                expected: format!("dimension {}", source.dim()),
                actual: format!("dimension {}", target.dim()),
            });
        }
        Ok(Self { source, target })
    }

    /// Dimension of both distributions.
    pub fn dim(&self) -> usize {
        self.source.dim()
    }

    /// Draws `n` independent source points and `n` target points.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> (Array2<f32>, Array2<f32>) {
        let x0 = self.source.sample(n, rng);
        let x1 = self.target.sample(n, rng);
        (x0, x1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;
    use calmflow_linalg::{column_means, covariance};

    #[test]
    fn eight_gaussians_match_their_definition() {
        let s = EightGaussians::default();
        let x = s.sample(40_000, &mut seeded_rng(1));
        // Assign each point to its nearest centre; within-component variance ≈ √0.1.
        let centres = s.centres();
        let mut counts = [0usize; 8];
        let mut sq = 0.0;
        for p in x.rows() {
            let (k, d2) = centres
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    (
                        k,
                        (p[0] as f64 - c[0]).powi(2) + (p[1] as f64 - c[1]).powi(2),
                    )
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            counts[k] += 1;
            sq += d2;
        }
        let var = sq / (2.0 * x.nrows() as f64);
        assert!(
            (var - 0.1f64.sqrt()).abs() < 0.01,
            "per-coordinate variance {var}"
        );
        for c in counts {
            assert!((c as f64 / 5000.0 - 1.0).abs() < 0.06, "{counts:?}");
        }
    }

    #[test]
    fn moons_have_torchcfm_moments() {
        let x = Moons::default().sample(100_000, &mut seeded_rng(2));
        let m = column_means(x.view());
        // Before the map: x̄ = (E cos θ + E(1 − cos θ))/2 = 0.5 and
        // ȳ = (E sin θ + E(0.5 − sin θ))/2 = 0.25; after x ↦ 3x − 1: (0.5, −0.25).
        assert!((m[0] - 0.5).abs() < 0.02, "{m}");
        assert!((m[1] - (-0.25)).abs() < 0.02, "{m}");
    }

    #[test]
    fn standard_normal_has_identity_covariance() {
        let x = StandardNormal { dim: 3 }.sample(50_000, &mut seeded_rng(3));
        let c = covariance(x.view());
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c[[i, j]] - want).abs() < 0.03, "{c}");
            }
        }
    }

    #[test]
    fn checkerboard_occupies_alternate_squares() {
        let x = Checkerboard.sample(20_000, &mut seeded_rng(4));
        for p in x.rows() {
            let (a, b) = ((p[0] / 2.0).floor() as i64, (p[1] / 2.0).floor() as i64);
            assert!((-2..2).contains(&a) && (-2..2).contains(&b), "{p}");
            assert_eq!((a + b).rem_euclid(2), 0, "point {p} in a dark square");
        }
    }

    #[test]
    fn circles_have_two_radii() {
        let x = Circles.sample(10_000, &mut seeded_rng(5));
        let radii: Vec<f64> = x
            .rows()
            .into_iter()
            .map(|p| ((p[0] as f64).powi(2) + (p[1] as f64).powi(2)).sqrt())
            .collect();
        let inner = radii.iter().filter(|&&r| r < 2.25).count() as f64 / radii.len() as f64;
        assert!((inner - 0.5).abs() < 0.03);
        let outer_mean = radii.iter().filter(|&&r| r >= 2.25).sum::<f64>()
            / (radii.len() as f64 * (1.0 - inner));
        assert!((outer_mean - 3.0).abs() < 0.05, "{outer_mean}");
    }

    #[test]
    fn every_named_sampler_is_seeded_and_finite() {
        for name in SAMPLER_NAMES {
            let s = sampler_by_name(name, 4).unwrap();
            let a = s.sample(100, &mut seeded_rng(9));
            let b = s.sample(100, &mut seeded_rng(9));
            let c = s.sample(100, &mut seeded_rng(10));
            assert_eq!(a, b, "{name}");
            assert_ne!(a, c, "{name}");
            assert_eq!(a.ncols(), s.dim());
            assert!(a.iter().all(|v| v.is_finite()));
        }
        assert!(matches!(
            sampler_by_name("mnist", 2),
            Err(DataError::UnknownDataset { .. })
        ));
        assert!(sampler_by_name("normal", 0).is_err());
    }

    #[test]
    fn pair_checks_dimensions() {
        let ok = Pair::new(
            Box::new(EightGaussians::default()),
            Box::new(Moons::default()),
        )
        .unwrap();
        let (x0, x1) = ok.sample(10, &mut seeded_rng(0));
        assert_eq!((x0.dim(), x1.dim()), ((10, 2), (10, 2)));
        assert!(
            Pair::new(
                Box::new(StandardNormal { dim: 3 }),
                Box::new(Moons::default())
            )
            .is_err()
        );
    }
}
