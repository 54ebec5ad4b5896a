//! Work that is generic over the backend, handed to a program's backend dispatch
//! (`calmflow::backend::DeviceSpec::run`), which chooses the concrete backend type from
//! the compiled cargo features and the `--device` flag. The traits live here, below the
//! facade, so that the jobs of `calmflow-run` implement them without naming a backend.

use burn::tensor::backend::AutodiffBackend;

/// Work that is generic over the backend, run on one device once the backend type is
/// chosen (`calmflow::backend::DeviceSpec::run`).
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs the task on `device` of backend `B`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Work run data-parallel on several devices of one backend
/// (`calmflow::backend::DeviceSpec::run_parallel`).
pub trait ParallelBackendTask {
    /// What the task returns.
    type Output;
    /// Runs the task on `devices` (at least one) of backend `B`.
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}
