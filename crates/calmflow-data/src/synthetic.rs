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

/// `n` evenly spaced values from 0 to `end`, as NumPy's `linspace(0, end, n, endpoint)`.
fn linspace(end: f64, n: usize, endpoint: bool) -> impl Iterator<Item = f64> {
    let intervals = if endpoint { n.saturating_sub(1) } else { n };
    let step = if intervals == 0 {
        0.0
    } else {
        end / intervals as f64
    };
    (0..n).map(move |k| k as f64 * step)
}

/// The points, in a uniformly random order (Fisher–Yates), as an `n × 2` array. The
/// references place their points in a fixed order (by component, then angle); shuffling
/// keeps the set and makes consecutive rows unrelated, so that a batch split into
/// sequences does not hand one sequence neighbouring points.
fn shuffled(mut points: Vec<[f64; 2]>, rng: &mut Rng) -> Array2<f32> {
    for i in (1..points.len()).rev() {
        points.swap(i, index(rng, i + 1));
    }
    let mut out = Array2::zeros((points.len(), 2));
    for (mut row, p) in out.rows_mut().into_iter().zip(&points) {
        row[0] = p[0] as f32;
        row[1] = p[1] as f32;
    }
    out
}

/// torchcfm's `sample_moons(n)`: torchdyn's `generate_moons(n, noise = 0.2)`, then
/// `x ↦ 3x − 1`.
///
/// `generate_moons` places `n // 2` points on the upper half circle `(cos θ, sin θ)` and
/// `n − n // 2` on the lower one `(1 − cos θ, 1 − sin θ − 0.5)`, each at the evenly spaced
/// angles `θ = linspace(0, π, ·)` (both ends included), and adds *one* uniform number
/// `u ~ U[0, noise)` per point to both of its coordinates (`X += rand(n, 1) · noise`).
/// The rows come shuffled (the set is torchcfm's; consecutive rows are not neighbours).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moons {
    /// Width of the uniform offset added to both coordinates, before the `3x − 1` map.
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
        let (outer, inner) = (n / 2, n - n / 2);
        let points = linspace(PI, outer, true)
            .map(|t| [t.cos(), t.sin()])
            .chain(linspace(PI, inner, true).map(|t| [1.0 - t.cos(), 1.0 - t.sin() - 0.5]))
            .map(|[x, y]| {
                let u = self.noise * uniform(rng);
                [3.0 * (x + u) - 1.0, 3.0 * (y + u) - 1.0]
            })
            .collect();
        shuffled(points, rng)
    }
}

/// FFJORD's `circles`: scikit-learn's `make_circles(n, factor = 0.5, noise = 0.08)`, times
/// 3. `n // 2` points on the unit circle and `n − n // 2` on the circle of radius ½, at
/// the evenly spaced angles `linspace(0, 2π, ·, endpoint = False)`, shuffled, plus
/// Gaussian noise of standard deviation 0.08 per coordinate; then everything times 3.
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
        let (outer, inner) = (n / 2, n - n / 2);
        let points = linspace(2.0 * PI, outer, false)
            .map(|a| [a.cos(), a.sin()])
            .chain(linspace(2.0 * PI, inner, false).map(|a| [0.5 * a.cos(), 0.5 * a.sin()]))
            .collect();
        let mut x = shuffled(points, rng);
        x.mapv_inplace(|v| 3.0 * (v as f64 + 0.08 * normal(rng)) as f32);
        x
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

/// FFJORD's two spirals (`2spirals`): for each arm, `r = √u · 540° (in radians)` with
/// `u ~ U[0, 1)`, point `(−r cos r + U[0, ½), r sin r + U[0, ½))`; the second arm is the
/// first's negative; all divided by 3, plus `N(0, 0.1²)` noise per coordinate. FFJORD
/// draws `n // 2` points per arm; for an odd `n` the second arm gets the extra point.
/// The rows come shuffled.
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
        let points = (0..n)
            .map(|k| {
                let sign = if k < n / 2 { 1.0 } else { -1.0 };
                let r = uniform(rng).sqrt() * 540.0 * 2.0 * PI / 360.0;
                let x = -r.cos() * r + 0.5 * uniform(rng);
                let y = r.sin() * r + 0.5 * uniform(rng);
                [
                    sign * x / 3.0 + 0.1 * normal(rng),
                    sign * y / 3.0 + 0.1 * normal(rng),
                ]
            })
            .collect();
        shuffled(points, rng)
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

    /// Without noise the set is torchdyn's exactly: for n = 7, three points on the upper
    /// circle at 0, π/2, π and four on the lower one at 0, π/3, 2π/3, π, through 3x − 1.
    #[test]
    fn moons_are_torchdyns_points() {
        let x = Moons { noise: 0.0 }.sample(7, &mut seeded_rng(1));
        let mut got: Vec<(f64, f64)> = x
            .rows()
            .into_iter()
            .map(|p| (p[0] as f64, p[1] as f64))
            .collect();
        let mut want: Vec<(f64, f64)> = [0.0, PI / 2.0, PI]
            .iter()
            .map(|t| (t.cos(), t.sin()))
            .chain(
                [0.0, PI / 3.0, 2.0 * PI / 3.0, PI]
                    .iter()
                    .map(|t| (1.0 - t.cos(), 0.5 - t.sin())),
            )
            .map(|(a, b)| (3.0 * a - 1.0, 3.0 * b - 1.0))
            .collect();
        let order = |a: &(f64, f64), b: &(f64, f64)| a.partial_cmp(b).unwrap();
        got.sort_by(order);
        want.sort_by(order);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.0 - w.0).abs() < 1e-6 && (g.1 - w.1).abs() < 1e-6,
                "{got:?} vs {want:?}"
            );
        }
        assert_eq!(Moons::default().sample(0, &mut seeded_rng(1)).dim(), (0, 2));
        assert_eq!(Moons::default().sample(1, &mut seeded_rng(1)).dim(), (1, 2));
    }

    /// The noise is one U[0, 0.2) number per point on both coordinates: every point sits on
    /// the noise-free curve shifted along (1, 1) by 3u ∈ [0, 0.6), and the mean is the
    /// noise-free mean plus 3 · 0.1 in both coordinates.
    #[test]
    fn moons_have_torchdyns_uniform_offset() {
        let n = 20_000;
        let x = Moons::default().sample(n, &mut seeded_rng(2));
        let m = column_means(x.view());
        let (outer, inner) = (n / 2, n - n / 2);
        let angles = |k: usize| (0..k).map(move |i| PI * i as f64 / (k - 1) as f64);
        let clean_x: f64 = angles(outer).map(f64::cos).sum::<f64>()
            + angles(inner).map(|t| 1.0 - t.cos()).sum::<f64>();
        let clean_y: f64 = angles(outer).map(f64::sin).sum::<f64>()
            + angles(inner).map(|t| 0.5 - t.sin()).sum::<f64>();
        let want = [
            3.0 * (clean_x / n as f64 + 0.1) - 1.0,
            3.0 * (clean_y / n as f64 + 0.1) - 1.0,
        ];
        // Standard error of 3·ū: 3 · 0.2/√12/√20000 ≈ 0.0012.
        for j in 0..2 {
            assert!((m[j] - want[j]).abs() < 0.005, "{m} vs {want:?}");
        }
        for p in x.rows() {
            let (a, b) = ((p[0] as f64 + 1.0) / 3.0, (p[1] as f64 + 1.0) / 3.0);
            // Undo the offset u = (a − x) = (b − y): on the upper circle,
            // (a − u)² + (b − u)² = 1 for some u in [0, 0.2); on the lower one
            // (a − u − 1)² + (b − u − 0.5)² = 1. Solve for u and check the range.
            let on = |cx: f64, cy: f64| {
                // (a − cx − u)² + (b − cy − u)² = 1: 2u² − 2(p + q)u + p² + q² − 1 = 0.
                let (p, q) = (a - cx, b - cy);
                let disc = (p + q).powi(2) - 2.0 * (p * p + q * q - 1.0);
                disc >= -1e-5
                    && [-1.0, 1.0].iter().any(|s| {
                        let u = ((p + q) + s * disc.max(0.0).sqrt()) / 2.0;
                        (-1e-5..0.2 + 1e-5).contains(&u)
                            && if cx == 0.0 {
                                b - u >= -1e-4
                            } else {
                                b - u <= 0.5 + 1e-4
                            }
                    })
            };
            assert!(on(0.0, 0.0) || on(1.0, 0.5), "{p} is on neither moon");
        }
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
        // make_circles puts exactly n // 2 points on the outer circle; noise of 0.24
        // moves a few across r = 2.25 (0.75 = 3.1 standard deviations away).
        assert!((inner - 0.5).abs() < 0.005, "{inner}");
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
