//! Project automation for calmflow.
//!
//! - `cargo xtask ci`: format check, clippy (`-D warnings`, all targets), docs with broken
//!   intra-doc links denied, then the test command of `README.md`.
//! - `cargo xtask test [--backend cpu|wgpu]`: the workspace tests (`cpu`, the default), or
//!   the model and trainer tests on burn-wgpu plus their parity tests against the CPU
//!   backend (`wgpu`). Without a GPU, wgpu runs on Mesa's software Vulkan driver (lavapipe):
//!   `apt-get install mesa-vulkan-drivers libvulkan1` on Debian/Ubuntu.
//! - `cargo xtask gpu-check [--prepare]`: builds the `calmflow` program with the CUDA
//!   backend (offline) into `target/gpu-check/`, with the model and trainer tests and the
//!   speed suite's model benches built for burn-cuda, and a script that checks an NVIDIA
//!   GPU: those tests (including their parity tests against the CPU backend), the matmul
//!   parity and rate of `calmflow devices --check`, the model benches (criterion output
//!   under `$OUT/criterion`), the PyTorch twin on the same GPU where the machine's python3
//!   has torch with CUDA, the demo, a training run on `cuda:0` and the same run
//!   data-parallel on every GPU (`docs/scaling.md`), and the held-out experiment on
//!   `cuda:0` at reduced size, each timed. The binaries are stripped and packed with xz
//!   (`payload.tar.xz`, unpacked by the script). With `--prepare` it only
//!   builds (to carry the folder to a GPU machine); otherwise it runs the script when
//!   `nvidia-smi` finds a GPU.
//! - `cargo xtask fuzz [--seconds S] [--target NAME]...`: mutation fuzzing of every
//!   parser of user files (`fuzz/`), `S` seconds per target (default 60); not part of
//!   `ci`. Each failing input is saved under `fuzz/regressions/`, which the default test
//!   run replays.
//! - `cargo xtask bench --suite quality [--quick] [--fresh]`: the quality suite
//!   (`benches/quality/`): CaLMFlow against I-CFM and OT-CFM over seeds, and CaLMFlow
//!   ablations, written to `docs/quality.{md,json}` (`docs/quality-quick.{md,json}` with
//!   `--quick`) and folded into `docs/benchmarks.md`. A stopped run resumes at its first
//!   unfinished table; `--fresh` starts over.
//! - `cargo xtask bench [--suite speed] [--python PATH] [FILTER]`: runs the criterion
//!   benches of `benches/` (the speed suite) and writes `docs/benchmarks.json` and
//!   `docs/benchmarks.md` (a table per bench group, medians with their 95% confidence
//!   interval and median absolute deviation, then training throughput in tokens/s and
//!   GFLOP/s next to the measured f32 matrix-product rate of the same run). Given a Python
//!   that has torch (`--python PATH` or `CALMFLOW_TORCH_PYTHON`), it then runs the PyTorch
//!   twin (`benches/torch_twin.py`) on the shapes of the training-step benches it mirrors
//!   and writes calmflow's time over the twin's, measured in the same run; without one it
//!   says so and leaves the twin out.

mod bench;
mod gpu_check;
mod layers;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("gpu-check") => gpu_check::gpu_check(args.get(1).map(String::as_str)),
        Some("bench") => bench::bench_command(&args[1..]),
        Some("test") => test_command(&args[1..]),
        Some("fuzz") => fuzz_command(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | test [--backend cpu|wgpu] | bench [--suite speed] [--python PATH] [FILTER] | bench --suite quality [--quick] [--fresh] | fuzz [--seconds S] [--target NAME]... | gpu-check [--prepare]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `cargo xtask fuzz [--seconds S] [--target NAME]...`: every parser of user files on
/// mutated inputs for `S` seconds each (default 60), in release mode; failing inputs are
/// saved under `fuzz/regressions/`, which the fuzz crate's tests replay.
fn fuzz_command(args: &[String]) -> Result<(), String> {
    let mut command = vec!["run", "--release", "-p", "calmflow-fuzz", "--"];
    command.extend(args.iter().map(String::as_str));
    run("cargo", &command, &[])
}

fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn test_command(args: &[String]) -> Result<(), String> {
    let backend = match args {
        [] => "cpu",
        [flag, name] if flag == "--backend" => name.as_str(),
        _ => return Err("usage: cargo xtask test [--backend cpu|wgpu]".into()),
    };
    match backend {
        "cpu" => run("cargo", &["test", "--workspace"], &[]),
        "wgpu" => {
            if cfg!(target_os = "linux") {
                let drivers = gpu_check::vulkan_drivers()?;
                eprintln!("xtask: Vulkan drivers: {}", drivers.join(", "));
            }
            // Vulkan's loader warns on every device creation without a runtime folder.
            let runtime = std::env::var("XDG_RUNTIME_DIR")
                .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
            run(
                "cargo",
                &[
                    "test",
                    "-p",
                    "calmflow-model",
                    "-p",
                    "calmflow-train",
                    "--features",
                    "calmflow-model/wgpu,calmflow-train/wgpu",
                ],
                &[("XDG_RUNTIME_DIR", &runtime)],
            )
        }
        other => Err(format!(
            "unknown backend `{other}` for the tests: cpu or wgpu (CUDA: `cargo xtask gpu-check`)"
        )),
    }
}

fn ci() -> Result<(), String> {
    layers::check(&root())?;
    run("cargo", &["fmt", "--all", "--", "--check"], &[])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    run(
        "cargo",
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    run("cargo", &["test", "--workspace"], &[])
}

fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
