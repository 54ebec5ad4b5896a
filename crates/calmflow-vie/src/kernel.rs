//! Kernels `K(t, s, z)` of second-kind Volterra equations
//! `z(t) = f(t) + ∫_0^t K(t, s, z(s)) ds`, with `z ∈ R^d`.

use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1, ArrayViewMut2};

/// A (possibly nonlinear) Volterra kernel evaluated at one `(t, s, z)`.
///
/// Implementations write `K(t, s, z)` into `out` (length [`Kernel::dim`]). A kernel that
/// knows its Jacobian `∂K/∂z` can say so through [`Kernel::jacobian`]; Newton's method
/// falls back to finite differences otherwise.
pub trait Kernel {
    /// Dimension `d` of `z`.
    fn dim(&self) -> usize;

    /// Writes `K(t, s, z)` into `out`.
    fn eval(&self, t: f64, s: f64, z: ArrayView1<'_, f64>, out: ArrayViewMut1<'_, f64>);

    /// Writes `∂K/∂z (t, s, z)` (a `d × d` matrix) into `jac` and returns `true`, or
    /// returns `false` when the kernel has no analytic Jacobian.
    fn jacobian(
        &self,
        _t: f64,
        _s: f64,
        _z: ArrayView1<'_, f64>,
        _jac: ArrayViewMut2<'_, f64>,
    ) -> bool {
        false
    }
}

/// The linear kernel `K(t, s, z) = A(t, s) · z` with a matrix-valued `A`.
///
/// Separable kernels `a(t)·b(s)` are the special case `A(t, s) = a(t) b(s) I`.
pub struct LinearKernel<A> {
    dim: usize,
    matrix: A,
}

impl<A: Fn(f64, f64) -> Array2<f64>> LinearKernel<A> {
    /// `K(t, s, z) = matrix(t, s) · z`; `matrix` must return a `dim × dim` array.
    pub fn new(dim: usize, matrix: A) -> Self {
        Self { dim, matrix }
    }
}

/// Builds the scalar linear kernel `K(t, s, z) = k(t, s) · z` in dimension `dim`.
pub fn scalar_kernel(
    dim: usize,
    k: impl Fn(f64, f64) -> f64,
) -> LinearKernel<impl Fn(f64, f64) -> Array2<f64>> {
    LinearKernel::new(dim, move |t, s| Array2::eye(dim) * k(t, s))
}

impl<A: Fn(f64, f64) -> Array2<f64>> Kernel for LinearKernel<A> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn eval(&self, t: f64, s: f64, z: ArrayView1<'_, f64>, mut out: ArrayViewMut1<'_, f64>) {
        let a = (self.matrix)(t, s);
        if a.dim() == (self.dim, self.dim) {
            out.assign(&a.dot(&z));
        } else {
            // A mis-shaped matrix is reported by the solver's finiteness check.
            out.fill(f64::NAN);
        }
    }

    fn jacobian(
        &self,
        t: f64,
        s: f64,
        _z: ArrayView1<'_, f64>,
        mut jac: ArrayViewMut2<'_, f64>,
    ) -> bool {
        let a = (self.matrix)(t, s);
        if a.dim() != (self.dim, self.dim) {
            return false;
        }
        jac.assign(&a);
        true
    }
}

/// The convolution kernel `K(t, s, z) = k(t - s) · z`.
pub struct ConvolutionKernel<F> {
    dim: usize,
    k: F,
}

impl<F: Fn(f64) -> f64> ConvolutionKernel<F> {
    /// `K(t, s, z) = k(t - s) · z` in dimension `dim`.
    pub fn new(dim: usize, k: F) -> Self {
        Self { dim, k }
    }
}

impl<F: Fn(f64) -> f64> Kernel for ConvolutionKernel<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn eval(&self, t: f64, s: f64, z: ArrayView1<'_, f64>, mut out: ArrayViewMut1<'_, f64>) {
        let k = (self.k)(t - s);
        out.zip_mut_with(&z, |o, &zi| *o = k * zi);
    }

    fn jacobian(
        &self,
        t: f64,
        s: f64,
        _z: ArrayView1<'_, f64>,
        mut jac: ArrayViewMut2<'_, f64>,
    ) -> bool {
        jac.fill(0.0);
        jac.diag_mut().fill((self.k)(t - s));
        true
    }
}

/// A general nonlinear kernel given as a closure `(t, s, z) ↦ K(t, s, z)`.
pub struct FnKernel<F> {
    dim: usize,
    f: F,
}

impl<F: Fn(f64, f64, ArrayView1<'_, f64>) -> Array1<f64>> FnKernel<F> {
    /// Wraps `f`, which must return a vector of length `dim`.
    pub fn new(dim: usize, f: F) -> Self {
        Self { dim, f }
    }
}

impl<F: Fn(f64, f64, ArrayView1<'_, f64>) -> Array1<f64>> Kernel for FnKernel<F> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn eval(&self, t: f64, s: f64, z: ArrayView1<'_, f64>, mut out: ArrayViewMut1<'_, f64>) {
        assign_checked(&mut out, (self.f)(t, s, z));
    }
}

/// The ODE kernel `K(t, s, z) = v(z, s)`: with `f(t) = z(0)` the Volterra equation is
/// the integral form of `dz/dt = v(z, t)`, so every ODE is a special case.
pub struct OdeKernel<V> {
    dim: usize,
    velocity: V,
}

impl<V: Fn(ArrayView1<'_, f64>, f64) -> Array1<f64>> OdeKernel<V> {
    /// Wraps the velocity field `v(z, s)`, which must return a vector of length `dim`.
    pub fn new(dim: usize, velocity: V) -> Self {
        Self { dim, velocity }
    }
}

impl<V: Fn(ArrayView1<'_, f64>, f64) -> Array1<f64>> Kernel for OdeKernel<V> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn eval(&self, _t: f64, s: f64, z: ArrayView1<'_, f64>, mut out: ArrayViewMut1<'_, f64>) {
        assign_checked(&mut out, (self.velocity)(z, s));
    }
}

/// The weakly singular kernel `K(t, s, z) = (t - s)^(-α) · g(t, s, z)`, `0 < α < 1`.
///
/// Its singular factor is integrated exactly by product integration
/// ([`crate::solver::ProductIntegration`]), which only ever evaluates the regular part `g`.
pub struct WeaklySingularKernel<G> {
    dim: usize,
    alpha: f64,
    g: G,
}

impl<G: Fn(f64, f64, ArrayView1<'_, f64>) -> Array1<f64>> WeaklySingularKernel<G> {
    /// `(t - s)^(-alpha) · g(t, s, z)`; `alpha` must lie in `[0, 1)`.
    pub fn new(dim: usize, alpha: f64, g: G) -> crate::Result<Self> {
        if !(0.0..1.0).contains(&alpha) {
            return Err(crate::VieError::InvalidParameter {
                name: "alpha",
                value: alpha,
                reason: "the singularity exponent must lie in [0, 1)",
            });
        }
        Ok(Self { dim, alpha, g })
    }

    /// The exponent `α`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Writes the regular part `g(t, s, z)` into `out`.
    pub fn eval_regular(
        &self,
        t: f64,
        s: f64,
        z: ArrayView1<'_, f64>,
        mut out: ArrayViewMut1<'_, f64>,
    ) {
        assign_checked(&mut out, (self.g)(t, s, z));
    }
}

impl<G: Fn(f64, f64, ArrayView1<'_, f64>) -> Array1<f64>> Kernel for WeaklySingularKernel<G> {
    fn dim(&self) -> usize {
        self.dim
    }

    /// `(t - s)^(-α) g(t, s, z)`; infinite at `s = t` when `α > 0`.
    fn eval(&self, t: f64, s: f64, z: ArrayView1<'_, f64>, mut out: ArrayViewMut1<'_, f64>) {
        self.eval_regular(t, s, z, out.view_mut());
        let factor = (t - s).powf(-self.alpha);
        out.mapv_inplace(|v| v * factor);
    }
}

/// Copies `value` into `out`, or fills `out` with NaN when the lengths disagree so that
/// the solver's finiteness check reports the faulty closure instead of panicking.
fn assign_checked(out: &mut ArrayViewMut1<'_, f64>, value: Array1<f64>) {
    if value.len() == out.len() {
        out.assign(&value);
    } else {
        out.fill(f64::NAN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn kernels_evaluate_their_formulas() {
        let z = array![1.0, -2.0];
        let mut out = Array1::zeros(2);

        scalar_kernel(2, |t, s| t * s).eval(2.0, 3.0, z.view(), out.view_mut());
        assert_eq!(out, array![6.0, -12.0]);

        ConvolutionKernel::new(2, |u: f64| (-u).exp()).eval(1.0, 1.0, z.view(), out.view_mut());
        assert_eq!(out, array![1.0, -2.0]);

        let rot = LinearKernel::new(2, |_, _| array![[0.0, -1.0], [1.0, 0.0]]);
        rot.eval(0.0, 0.0, z.view(), out.view_mut());
        assert_eq!(out, array![2.0, 1.0]);
        let mut jac = Array2::zeros((2, 2));
        assert!(rot.jacobian(0.0, 0.0, z.view(), jac.view_mut()));
        assert_eq!(jac, array![[0.0, -1.0], [1.0, 0.0]]);

        OdeKernel::new(2, |z: ArrayView1<'_, f64>, s| z.mapv(|v| v * s)).eval(
            9.0,
            0.5,
            z.view(),
            out.view_mut(),
        );
        assert_eq!(out, array![0.5, -1.0]);

        let ws =
            WeaklySingularKernel::new(2, 0.5, |_, _, z: ArrayView1<'_, f64>| z.to_owned()).unwrap();
        ws.eval(1.0, 0.75, z.view(), out.view_mut());
        assert_eq!(out, array![2.0, -4.0]);
        assert!(
            WeaklySingularKernel::new(1, 1.0, |_, _, z: ArrayView1<'_, f64>| z.to_owned()).is_err()
        );
    }

    #[test]
    fn wrong_length_closure_gives_nan_not_panic() {
        let k = FnKernel::new(2, |_, _, _| array![1.0]);
        let mut out = Array1::zeros(2);
        k.eval(0.0, 0.0, array![0.0, 0.0].view(), out.view_mut());
        assert!(out.iter().all(|v| v.is_nan()));
    }
}
