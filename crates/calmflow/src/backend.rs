//! Backend selection: the one place in calmflow that names a burn backend.
//!
//! Every model and training routine below the facade is generic over
//! `B: Backend` / `B: AutodiffBackend`. A program picks the backend at run time from a
//! [`DeviceSpec`] (parsed from `--device cpu|wgpu[:i]|cuda[:i]`) and hands a
//! [`BackendTask`] to [`DeviceSpec::run`], which instantiates the task with the concrete
//! backend type compiled in by the cargo features `ndarray` (default), `wgpu` and `cuda`.
//!
//! ```
//! use calmflow::backend::DeviceSpec;
//! let spec: DeviceSpec = "cuda:1".parse().unwrap();
//! assert_eq!(spec, DeviceSpec::Cuda { index: 1 });
//! assert_eq!(spec.to_string(), "cuda:1");
//! assert!("tpu".parse::<DeviceSpec>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;
pub use calmflow_train::{BackendTask, ParallelBackendTask};

/// The CPU backend (burn-ndarray, f32).
#[cfg(feature = "ndarray")]
pub type Cpu = burn::backend::NdArray<f32>;
/// The CPU backend with automatic differentiation, for training.
#[cfg(feature = "ndarray")]
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;
/// The environment variable that, set to `off` (or `0`), keeps the CPU backend on burn's
/// composed operations instead of the fused kernels (to compare, or to reproduce runs made
/// before the kernels).
pub const FUSED_KERNELS_ENV: &str = "CALMFLOW_FUSED_KERNELS";

/// Registers the fused CPU kernels (layer norm, exact GELU, softmax, affine maps, matrix
/// products and attention, forward and backward; `calmflow_ndarray_kernels`) for [`Cpu`]
/// and [`CpuAutodiff`], unless [`FUSED_KERNELS_ENV`] turns them off, in which case any
/// registered are removed.
/// [`DeviceSpec::run`] calls it for the CPU; programs that name [`Cpu`] themselves call it
/// once. Returns whether the kernels are on.
#[cfg(feature = "ndarray")]
pub fn register_cpu_kernels() -> bool {
    let off = fused_kernels_turned_off();
    if off {
        calmflow_ndarray_kernels::unregister();
    } else {
        calmflow_ndarray_kernels::register();
    }
    !off
}

/// Whether [`FUSED_KERNELS_ENV`] is `off`, `0` or `false` (any case, spaces ignored).
pub fn fused_kernels_turned_off() -> bool {
    std::env::var(FUSED_KERNELS_ENV).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false"
        )
    })
}

/// Removes the fused CPU kernels: the model composes burn's operations (benchmarks time
/// both in one run).
#[cfg(feature = "ndarray")]
pub fn unregister_cpu_kernels() {
    calmflow_ndarray_kernels::unregister();
}

/// The WebGPU/Vulkan/Metal backend (burn-wgpu, f32).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
/// The wgpu backend with automatic differentiation, for training.
#[cfg(feature = "wgpu")]
pub type WgpuAutodiff = burn::backend::Autodiff<Wgpu>;
/// The NVIDIA CUDA backend (burn-cuda, f32).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
/// The CUDA backend with automatic differentiation, for training.
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<Cuda>;

/// A device named on the command line: `cpu`, `wgpu`, `wgpu:i`, `cuda` or `cuda:i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (burn-ndarray).
    #[default]
    Cpu,
    /// A wgpu adapter: the default one, or the `index`-th discrete GPU.
    Wgpu {
        /// Discrete GPU index; `None` lets wgpu choose its default adapter.
        index: Option<usize>,
    },
    /// The `index`-th CUDA device.
    Cuda {
        /// CUDA device ordinal.
        index: usize,
    },
}

/// Why a device could not be parsed or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The text is not a device name that calmflow knows.
    #[error(
        "unknown device `{0}`: expected `cpu`, `wgpu`, `wgpu:<index>`, `cuda` or `cuda:<index>`"
    )]
    UnknownDevice(String),
    /// The backend failed while running on the device (no driver, no such device, ...).
    #[error("device `{device}` failed: {message}")]
    DeviceFailed {
        /// The device asked for.
        device: DeviceSpec,
        /// What the backend reported.
        message: String,
    },
    /// The devices of a data-parallel run belong to different backends.
    #[error(
        "the devices of a data-parallel run must share one backend (all `cpu`, all \
         `wgpu[:i]` or all `cuda[:i]`); got {0}"
    )]
    MixedBackends(String),
    /// A data-parallel run was given no device.
    #[error("no device given")]
    NoDevices,
    /// The device is known, but its backend was not compiled into this build.
    #[error(
        "device `{device}` needs calmflow built with the `{feature}` cargo feature \
         (e.g. `cargo build --release --features {feature}`); this build has: {compiled}"
    )]
    NotCompiled {
        /// The device asked for.
        device: DeviceSpec,
        /// The cargo feature that would compile its backend in.
        feature: &'static str,
        /// The backends this build has, comma-separated.
        compiled: String,
    },
}

impl DeviceSpec {
    /// The cargo feature whose backend runs this device.
    pub fn feature(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "ndarray",
            DeviceSpec::Wgpu { .. } => "wgpu",
            DeviceSpec::Cuda { .. } => "cuda",
        }
    }

    /// Runs `task` on this device with the matching autodiff backend, or says which
    /// cargo feature is missing. A backend that panics while running (burn-cuda does when
    /// `libcuda` is missing, wgpu when no adapter exists) is reported as
    /// [`BackendError::DeviceFailed`] instead of aborting the program.
    pub fn run<T: BackendTask>(self, task: T) -> Result<T::Output, BackendError> {
        catch_backend_panic(self, || self.dispatch(task))
    }

    /// The error for a device whose backend this build lacks.
    fn not_compiled(self) -> BackendError {
        BackendError::NotCompiled {
            device: self,
            feature: self.feature(),
            compiled: compiled_backends().join(", "),
        }
    }

    /// Runs `task` data-parallel on `devices` (one model replica each; the same device
    /// may repeat), which must all belong to one backend. A panic of the backend is
    /// reported as for [`DeviceSpec::run`].
    pub fn run_parallel<T: ParallelBackendTask>(
        devices: &[DeviceSpec],
        task: T,
    ) -> Result<T::Output, BackendError> {
        let first = *devices.first().ok_or(BackendError::NoDevices)?;
        if devices.iter().any(|d| d.feature() != first.feature()) {
            return Err(BackendError::MixedBackends(
                devices
                    .iter()
                    .map(DeviceSpec::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        catch_backend_panic(first, || dispatch_parallel(devices, task))
    }

    fn dispatch<T: BackendTask>(self, task: T) -> Result<T::Output, BackendError> {
        match self {
            #[cfg(feature = "ndarray")]
            DeviceSpec::Cpu => {
                register_cpu_kernels();
                Ok(task.run::<CpuAutodiff>(burn::backend::ndarray::NdArrayDevice::Cpu))
            }
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu { index } => {
                use burn::backend::wgpu::WgpuDevice;
                let device = match index {
                    None => WgpuDevice::DefaultDevice,
                    Some(i) => WgpuDevice::DiscreteGpu(i),
                };
                Ok(task.run::<WgpuAutodiff>(device))
            }
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda { index } => {
                Ok(task.run::<CudaAutodiff>(burn::backend::cuda::CudaDevice::new(index)))
            }
            #[allow(unreachable_patterns)]
            other => {
                // Built without that backend (or with none at all): the task is not run.
                drop(task);
                Err(other.not_compiled())
            }
        }
    }
}

/// Runs `work`, turning a backend panic on `device` into [`BackendError::DeviceFailed`].
fn catch_backend_panic<O>(
    device: DeviceSpec,
    work: impl FnOnce() -> Result<O, BackendError>,
) -> Result<O, BackendError> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    outcome.unwrap_or_else(|payload| {
        let message = calmflow_train::panic_message(payload.as_ref())
            .unwrap_or_else(|| "the backend panicked".into());
        Err(BackendError::DeviceFailed {
            device,
            message: format!(
                "{message} (is the {} driver installed and the device index valid?)",
                match device {
                    DeviceSpec::Cuda { .. } => "NVIDIA",
                    DeviceSpec::Wgpu { .. } => "Vulkan/Metal",
                    DeviceSpec::Cpu => "CPU",
                }
            ),
        })
    })
}

/// [`DeviceSpec::run_parallel`] once the devices are known to share a backend.
fn dispatch_parallel<T: ParallelBackendTask>(
    devices: &[DeviceSpec],
    task: T,
) -> Result<T::Output, BackendError> {
    match devices[0] {
        #[cfg(feature = "ndarray")]
        DeviceSpec::Cpu => {
            register_cpu_kernels();
            Ok(task.run::<CpuAutodiff>(vec![
                burn::backend::ndarray::NdArrayDevice::Cpu;
                devices.len()
            ]))
        }
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu { .. } => {
            use burn::backend::wgpu::WgpuDevice;
            let devices = devices
                .iter()
                .map(|d| match d {
                    DeviceSpec::Wgpu { index: Some(i) } => WgpuDevice::DiscreteGpu(*i),
                    _ => WgpuDevice::DefaultDevice,
                })
                .collect();
            Ok(task.run::<WgpuAutodiff>(devices))
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda { .. } => {
            let devices = devices
                .iter()
                .map(|d| match d {
                    DeviceSpec::Cuda { index } => burn::backend::cuda::CudaDevice::new(*index),
                    _ => burn::backend::cuda::CudaDevice::new(0),
                })
                .collect();
            Ok(task.run::<CudaAutodiff>(devices))
        }
        #[allow(unreachable_patterns)]
        other => {
            drop(task);
            Err(other.not_compiled())
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Wgpu { index: None } => write!(f, "wgpu"),
            DeviceSpec::Wgpu { index: Some(i) } => write!(f, "wgpu:{i}"),
            DeviceSpec::Cuda { index } => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((name, idx)) => {
                let idx: usize = idx
                    .parse()
                    .map_err(|_| BackendError::UnknownDevice(s.to_string()))?;
                (name, Some(idx))
            }
            None => (lower.as_str(), None),
        };
        match (name, index) {
            ("cpu" | "ndarray", None) => Ok(DeviceSpec::Cpu),
            ("wgpu", index) => Ok(DeviceSpec::Wgpu { index }),
            ("cuda", index) => Ok(DeviceSpec::Cuda {
                index: index.unwrap_or(0),
            }),
            _ => Err(BackendError::UnknownDevice(s.to_string())),
        }
    }
}

/// The backends compiled into this build, by cargo feature name.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// Multiplies two deterministic `n × n` matrices on the device and compares the result
/// with an f64 computation on the host: the smoke test behind `calmflow devices --check`.
/// The first product includes kernel compilation on GPU backends; the second is timed
/// warm. The host reference covers up to 16 evenly spaced rows (all columns).
#[derive(Debug, Clone, Copy)]
pub struct MatmulCheck {
    /// Matrix size.
    pub n: usize,
}

/// What [`MatmulCheck`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatmulCheckReport {
    /// Largest absolute difference from the host reference over the checked rows.
    pub max_abs_error: f64,
    /// `max_abs_error` divided by the largest reference magnitude.
    pub relative_error: f64,
    /// Wall time of the first product (kernel compilation included), with the copy back.
    pub first_seconds: f64,
    /// Wall time of the second product, with the copy back.
    pub seconds: f64,
    /// `2n³ / seconds`, in GFLOP/s.
    pub gflops: f64,
}

impl BackendTask for MatmulCheck {
    type Output = MatmulCheckReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> MatmulCheckReport {
        use burn::tensor::{Tensor, TensorData};
        let n = self.n.max(1);
        // A deterministic, well-conditioned pattern: no RNG, same on every backend.
        let a: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 13.0)
            .collect();
        let b: Vec<f32> = (0..n * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 11.0)
            .collect();
        let ta = Tensor::<B, 2>::from_data(TensorData::new(a.clone(), [n, n]), &device);
        let tb = Tensor::<B, 2>::from_data(TensorData::new(b.clone(), [n, n]), &device);
        let timed = || {
            let start = std::time::Instant::now();
            let c = ta.clone().matmul(tb.clone()).into_data();
            (c, start.elapsed().as_secs_f64())
        };
        let (_, first_seconds) = timed();
        let (c, seconds) = timed();
        let c: Vec<f32> = c.convert::<f32>().to_vec().unwrap_or_default();
        let rows: Vec<usize> = (0..n.min(16)).map(|r| r * n / n.min(16)).collect();
        let (mut max_abs_error, mut max_ref): (f64, f64) = (0.0, 0.0);
        for &i in &rows {
            for j in 0..n {
                let reference: f64 = (0..n)
                    .map(|k| a[i * n + k] as f64 * b[k * n + j] as f64)
                    .sum();
                max_ref = max_ref.max(reference.abs());
                let got = c.get(i * n + j).map_or(f64::NAN, |v| *v as f64);
                let err = (got - reference).abs();
                max_abs_error = if err.is_nan() {
                    f64::INFINITY
                } else {
                    max_abs_error.max(err)
                };
            }
        }
        MatmulCheckReport {
            max_abs_error,
            relative_error: max_abs_error / max_ref.max(f64::MIN_POSITIVE),
            first_seconds,
            seconds,
            gflops: 2.0 * (n as f64).powi(3) / seconds / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the model finds fused kernels for the backend a task runs on.
    struct KernelsProbe;

    impl BackendTask for KernelsProbe {
        type Output = (bool, bool);
        fn run<B: AutodiffBackend>(self, _: B::Device) -> (bool, bool) {
            (
                calmflow_model::fused::kernels::<B>().is_some(),
                calmflow_model::fused::kernels::<B::InnerBackend>().is_some(),
            )
        }
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn the_cpu_runs_with_the_fused_kernels_unless_turned_off() {
        let off = fused_kernels_turned_off();
        // Training (autodiff) and generation (its inner backend) both find them.
        assert_eq!(DeviceSpec::Cpu.run(KernelsProbe), Ok((!off, !off)));
    }

    #[test]
    fn parses_every_device_form() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!(" CPU ".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("wgpu".parse(), Ok(DeviceSpec::Wgpu { index: None }));
        assert_eq!("wgpu:2".parse(), Ok(DeviceSpec::Wgpu { index: Some(2) }));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda { index: 0 }));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda { index: 3 }));
        for bad in ["", "gpu", "cuda:", "cuda:x", "cpu:0", "cuda:-1"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            DeviceSpec::Cpu,
            DeviceSpec::Wgpu { index: None },
            DeviceSpec::Wgpu { index: Some(1) },
            DeviceSpec::Cuda { index: 4 },
        ] {
            assert_eq!(spec.to_string().parse(), Ok(spec));
        }
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn cpu_matmul_matches_host_reference() {
        let report = DeviceSpec::Cpu.run(MatmulCheck { n: 33 }).unwrap();
        assert!(report.max_abs_error < 1e-4, "{report:?}");
        assert!(
            report.relative_error < 1e-5 && report.gflops > 0.0,
            "{report:?}"
        );
    }

    #[test]
    fn parallel_devices_must_share_a_backend() {
        struct Count;
        impl ParallelBackendTask for Count {
            type Output = usize;
            fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> usize {
                devices.len()
            }
        }
        let mixed = [DeviceSpec::Cpu, DeviceSpec::Cuda { index: 0 }];
        let err = DeviceSpec::run_parallel(&mixed, Count).unwrap_err();
        assert_eq!(err, BackendError::MixedBackends("cpu, cuda:0".into()));
        assert!(err.to_string().contains("share one backend"), "{err}");
        assert_eq!(
            DeviceSpec::run_parallel(&[], Count).unwrap_err(),
            BackendError::NoDevices
        );
        #[cfg(feature = "ndarray")]
        assert_eq!(
            DeviceSpec::run_parallel(&[DeviceSpec::Cpu; 3], Count),
            Ok(3)
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_names_its_feature() {
        let err = DeviceSpec::Cuda { index: 0 }
            .run(MatmulCheck { n: 2 })
            .unwrap_err();
        assert!(matches!(
            err,
            BackendError::NotCompiled {
                feature: "cuda",
                ..
            }
        ));
        assert!(err.to_string().contains("--features cuda"));
    }
}
