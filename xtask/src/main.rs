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

mod layers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::SystemTime;

use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("gpu-check") => gpu_check(args.get(1).map(String::as_str)),
        Some("bench") => bench_command(&args[1..]),
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

/// The GPU check script; `$BIN` is the CUDA-enabled `calmflow` program beside it.
const GPU_CHECK_SCRIPT: &str = include_str!("gpu_check.sh");

/// Runs `cargo ARGS --message-format=json` and returns the test and bench executables it
/// built, each named `PACKAGE-TARGET`.
fn built_executables(
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut full: Vec<&str> = args.to_vec();
    full.push("--message-format=json-render-diagnostics");
    eprintln!("$ cargo {}", full.join(" "));
    let output = Command::new("cargo")
        .args(&full)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo {}` failed ({})",
            full.join(" "),
            output.status
        ));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(exe), Some(target), Some(package)) = (
            message["executable"].as_str(),
            message["target"]["name"].as_str(),
            message["package_id"].as_str(),
        ) else {
            continue;
        };
        found.push((
            format!("{}-{target}", package_name(package)),
            PathBuf::from(exe),
        ));
    }
    Ok(found)
}

/// The package name in a cargo package id: `path+file:///…/calmflow-model#0.1.0`, or
/// `path+file:///…/benches#calmflow-benches@0.1.0` when the folder is named otherwise.
fn package_name(id: &str) -> &str {
    match id.rsplit_once('#') {
        Some((_, fragment)) if fragment.contains('@') => fragment.split('@').next().unwrap_or(id),
        Some((path, _)) => path.rsplit('/').next().unwrap_or(path),
        None => id.split_whitespace().next().unwrap_or(id),
    }
}

fn gpu_check(flag: Option<&str>) -> Result<(), String> {
    let prepare_only = match flag {
        None => false,
        Some("--prepare") => true,
        Some(other) => return Err(format!("unexpected argument `{other}` (only --prepare)")),
    };
    // Symbols stripped and everything packed with xz: the device tool carries 64 MiB.
    let strip = [
        ("CARGO_PROFILE_RELEASE_STRIP", "symbols"),
        ("CARGO_PROFILE_TEST_STRIP", "symbols"),
        ("CARGO_PROFILE_TEST_DEBUG", "false"),
        ("CARGO_PROFILE_BENCH_STRIP", "symbols"),
    ];
    run(
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "calmflow-cli",
            "--features",
            "cuda",
        ],
        &strip,
    )?;
    let dir = root().join("target").join("gpu-check");
    let _ = std::fs::remove_dir_all(&dir);
    let payload = dir.join("payload");
    let tests_dir = payload.join("tests");
    std::fs::create_dir_all(&tests_dir).map_err(|e| format!("{}: {e}", tests_dir.display()))?;
    let copy = |from: &Path, to: PathBuf| -> Result<(), String> {
        std::fs::copy(from, &to)
            .map(|_| ())
            .map_err(|e| format!("{} → {}: {e}", from.display(), to.display()))
    };
    copy(
        &root().join("target/release/calmflow"),
        payload.join("calmflow"),
    )?;
    // The model and trainer tests (with their CPU-parity tests) on burn-cuda.
    for (name, exe) in built_executables(
        &[
            "test",
            "--no-run",
            "-p",
            "calmflow-model",
            "-p",
            "calmflow-train",
            "--features",
            "calmflow-model/cuda,calmflow-train/cuda",
        ],
        &strip,
    )? {
        copy(&exe, tests_dir.join(&name))?;
    }
    // The speed suite's model benches on burn-cuda.
    let benches = built_executables(
        &[
            "bench",
            "--no-run",
            "-p",
            "calmflow-benches",
            "--bench",
            "model",
            "--features",
            "cuda",
        ],
        &strip,
    )?;
    let (_, exe) = benches
        .into_iter()
        .find(|(name, _)| name.starts_with("calmflow-benches-model"))
        .ok_or("cargo built no `model` bench")?;
    copy(&exe, payload.join("bench-model"))?;
    copy(
        &root().join("benches/torch_twin.py"),
        payload.join("torch_twin.py"),
    )?;
    run(
        "tar",
        &[
            "-C",
            &dir.display().to_string(),
            "-cJf",
            &dir.join("payload.tar.xz").display().to_string(),
            "payload",
        ],
        &[("XZ_OPT", "-6 -T0")],
    )?;
    std::fs::remove_dir_all(&payload).map_err(|e| format!("{}: {e}", payload.display()))?;
    let script = dir.join("run.sh");
    write_atomic(&script, GPU_CHECK_SCRIPT)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", script.display()))?;
    }
    let packed = std::fs::metadata(dir.join("payload.tar.xz")).map_or(0, |m| m.len());
    eprintln!(
        "gpu-check: prepared {} ({:.1} MiB packed; carry the folder to a GPU machine)",
        dir.display(),
        packed as f64 / (1024.0 * 1024.0)
    );
    let has_gpu = Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success());
    if prepare_only {
        return Ok(());
    }
    if !has_gpu {
        return Err(
            "no NVIDIA GPU here (nvidia-smi found none); the check is prepared in \
                    target/gpu-check/ for a machine that has one"
                .into(),
        );
    }
    run("bash", &[&script.display().to_string()], &[])
}

/// Where Vulkan loaders look for installable client drivers (ICDs).
const VULKAN_ICD_DIRS: [&str; 3] = [
    "/usr/share/vulkan/icd.d",
    "/etc/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
];

/// The Vulkan drivers installed (ICD manifest names), or why none was found.
fn vulkan_drivers() -> Result<Vec<String>, String> {
    if let Ok(file) =
        std::env::var("VK_ICD_FILENAMES").or_else(|_| std::env::var("VK_DRIVER_FILES"))
    {
        return Ok(vec![file]);
    }
    let found: Vec<String> = VULKAN_ICD_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    if found.is_empty() {
        return Err(
            "no Vulkan driver found: wgpu needs one (on a machine without a GPU, Mesa's \
             software driver: `sudo apt-get install mesa-vulkan-drivers libvulkan1`)"
                .into(),
        );
    }
    Ok(found)
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
                let drivers = vulkan_drivers()?;
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

/// One criterion result: ids and the median with its spread, in nanoseconds.
fn read_result(dir: &Path) -> Option<(String, Value)> {
    let bench: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json")).ok()?).ok()?;
    let est: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("estimates.json")).ok()?).ok()?;
    let full_id = bench["full_id"].as_str()?.to_string();
    Some((
        full_id,
        json!({
            "group": bench["group_id"],
            "function": bench["function_id"],
            "parameter": bench["value_str"],
            "median_ns": est["median"]["point_estimate"],
            "median_ci_low_ns": est["median"]["confidence_interval"]["lower_bound"],
            "median_ci_high_ns": est["median"]["confidence_interval"]["upper_bound"],
            "mad_ns": est["median_abs_dev"]["point_estimate"],
        }),
    ))
}

fn collect(dir: &Path, since: SystemTime, out: &mut BTreeMap<String, Value>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let fresh = std::fs::metadata(path.join("estimates.json"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if fresh && let Some((id, v)) = read_result(&path) {
                out.insert(id, v);
            }
        } else {
            collect(&path, since, out);
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores; {rustc}")
}

fn bench_command(args: &[String]) -> Result<(), String> {
    let mut filter = None;
    let mut suite = "speed".to_string();
    let mut quick = false;
    let mut fresh = false;
    let mut python = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--suite" => {
                suite = it
                    .next()
                    .ok_or("--suite needs a name: speed or quality")?
                    .clone()
            }
            "--python" => {
                python = Some(
                    it.next()
                        .ok_or("--python needs the path of a Python that has torch")?
                        .clone(),
                )
            }
            "--quick" => quick = true,
            "--fresh" => fresh = true,
            f if filter.is_none() && !f.starts_with("--") => filter = Some(f.to_string()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    let python = python.or_else(|| {
        std::env::var("CALMFLOW_TORCH_PYTHON")
            .ok()
            .filter(|p| !p.is_empty())
    });
    match suite.as_str() {
        "speed" if quick || fresh => Err("--quick and --fresh belong to the quality suite".into()),
        "speed" => bench(filter.as_deref(), python.as_deref()),
        "quality" if python.is_some() => Err("--python belongs to the speed suite".into()),
        "quality" if filter.is_some() => Err("the quality suite takes no filter".into()),
        "quality" => quality(quick, fresh),
        other => Err(format!(
            "unknown suite `{other}`; available: speed, quality"
        )),
    }
}

/// Runs the quality suite (training runs, minutes with --quick, hours without) and
/// rewrites `docs/benchmarks.md` with its tables.
fn quality(quick: bool, fresh: bool) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--release",
        "-p",
        "calmflow-benches",
        "--bin",
        "quality",
        "--",
    ];
    if quick {
        args.push("--quick");
    }
    if fresh {
        args.push("--fresh");
    }
    run("cargo", &args, &[])?;
    write_benchmarks_md()
}

/// The PyTorch twin's shapes (`H LAYERS HEADS N P K D BATCH THREADS STEPS`) and the
/// criterion bench of the same model and batch.
const TWIN_SHAPES: &[(&str, &str)] = &[
    (
        "model/train_step/h64_l2_t16_b128",
        "64 2 4 16 1 1 2 128 2 40",
    ),
    (
        "model/train_step/h128_l4_t64_b64",
        "128 4 4 16 2 2 2 64 2 15",
    ),
];

/// Runs `benches/torch_twin.py` with `python` on every shape whose criterion bench is in
/// `fresh`: `{bench id: {median_ns, torch, parameters, args}}`.
fn run_twin(
    python: &str,
    fresh: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, String> {
    let probe = Command::new(python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .map_err(|e| format!("--python {python}: cannot run it: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "--python {python}: `import torch` fails ({}); install torch in that environment \
             (see benches/torch_twin.py) or leave --python out to skip the twin",
            String::from_utf8_lossy(&probe.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let script = root().join("benches").join("torch_twin.py");
    let mut out = BTreeMap::new();
    for (id, shape) in TWIN_SHAPES {
        if !fresh.contains_key(*id) {
            continue;
        }
        eprintln!("$ {python} {} {shape}", script.display());
        let o = Command::new(python)
            .arg(&script)
            .args(shape.split(' '))
            .current_dir(root())
            .output()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if !o.status.success() {
            return Err(format!(
                "the PyTorch twin failed on {shape}: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let line = text.lines().last().unwrap_or("");
        eprintln!("{line}");
        out.insert(id.to_string(), parse_twin_line(line, shape)?);
    }
    Ok(out)
}

/// `torch 2.15.0 threads=2 … params=129538 median_ms=23.50` → the record of one shape.
fn parse_twin_line(line: &str, shape: &str) -> Result<Value, String> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    let median_ms: f64 = field("median_ms=")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the PyTorch twin printed no median_ms: {line:?}"))?;
    Ok(json!({
        "median_ns": median_ms * 1e6,
        "torch": line.split_whitespace().nth(1).unwrap_or("?"),
        "parameters": field("params=").and_then(|v| v.parse::<u64>().ok()),
        "args": shape,
    }))
}

fn bench(filter: Option<&str>, python: Option<&str>) -> Result<(), String> {
    let start = SystemTime::now();
    let mut args = vec!["bench", "-p", "calmflow-benches"];
    if let Some(f) = filter {
        args.extend(["--", f]);
    }
    run("cargo", &args, &[])?;
    let docs = root().join("docs");
    let json_path = docs.join("benchmarks.json");
    let previous: Value = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let mut results = object_map(&previous["results"]);
    let mut fresh = BTreeMap::new();
    collect(&root().join("target").join("criterion"), start, &mut fresh);
    if fresh.is_empty() {
        return Err("no criterion results were written by this run".into());
    }
    eprintln!("{} benchmark results from this run", fresh.len());
    let mut twin = object_map(&previous["twin"]);
    // A twin time is only compared with a calmflow time of the same run.
    twin.retain(|id, _| !fresh.contains_key(id));
    match python {
        Some(python) => twin.extend(run_twin(python, &fresh)?),
        None => eprintln!(
            "the PyTorch twin is skipped: no Python with torch was given (--python PATH or \
             CALMFLOW_TORCH_PYTHON)"
        ),
    }
    results.extend(fresh);
    let machine = machine();
    let doc = json!({ "machine": machine, "results": results, "twin": twin });
    let json_text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    write_atomic(&json_path, &json_text)?;
    write_benchmarks_md()
}

/// A JSON object's members in key order (empty for anything else).
fn object_map(v: &Value) -> BTreeMap<String, Value> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// `docs/benchmarks.md` from `docs/benchmarks.json` (the speed suite), the work records
/// of the benches (throughput), `docs/quality.md` (the full quality suite) and
/// `docs/quality-quick.md` (its quick version), whichever exist.
fn write_benchmarks_md() -> Result<(), String> {
    let docs = root().join("docs");
    let speed: Value = std::fs::read_to_string(docs.join("benchmarks.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let results = object_map(&speed["results"]);
    let machine = speed["machine"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(machine);
    let work: BTreeMap<String, Value> =
        std::fs::read_to_string(root().join("target/criterion/calmflow-work.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v.as_object().cloned())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
    let twin = object_map(&speed["twin"]);
    let mut md = markdown(&machine, &results);
    md.push_str(&twin_table(&results, &twin));
    md.push_str(&throughput(&results, &work));
    for name in ["quality.md", "quality-quick.md"] {
        if let Ok(quality) = std::fs::read_to_string(docs.join(name)) {
            md.push('\n');
            md.push_str(&quality);
        }
    }
    write_atomic(&docs.join("benchmarks.md"), &md)
}

fn markdown(machine: &str, results: &BTreeMap<String, Value>) -> String {
    let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for v in results.values() {
        groups
            .entry(v["group"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(v);
    }
    let mut md = String::from(
        "# Benchmarks\n\n## Speed suite\n\nWritten by `cargo xtask bench --suite speed` from criterion's estimates: the median time per \
         iteration, its 95% bootstrap confidence interval, and the median absolute deviation (MAD) \
         of the samples. Compare figures as ratios within one run on one machine.\n\n",
    );
    md.push_str(&format!("Machine: {machine}.\n"));
    for (group, mut rows) in groups {
        rows.sort_by_key(|v| {
            (
                v["function"].as_str().unwrap_or("").to_string(),
                natural_key(v["parameter"].as_str().unwrap_or("")),
            )
        });
        md.push_str(&format!("\n### {group}\n\n| benchmark | parameter | median | 95% CI | MAD |\n| --- | --- | ---: | --- | ---: |\n"));
        for v in rows {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            md.push_str(&format!(
                "| {} | {} | {} | {} – {} | {} |\n",
                v["function"].as_str().unwrap_or(""),
                v["parameter"].as_str().unwrap_or(""),
                fmt_ns(f("median_ns")),
                fmt_ns(f("median_ci_low_ns")),
                fmt_ns(f("median_ci_high_ns")),
                fmt_ns(f("mad_ns")),
            ));
        }
    }
    md
}

/// calmflow's training step against the PyTorch twin's on the same shapes, as a ratio.
fn twin_table(results: &BTreeMap<String, Value>, twin: &BTreeMap<String, Value>) -> String {
    let rows: Vec<String> = twin
        .iter()
        .filter_map(|(id, t)| {
            let ours = results.get(id)?["median_ns"].as_f64()?;
            let theirs = t["median_ns"].as_f64()?;
            Some(format!(
                "| {id} | `{}` | {} | {} | {:.2}× |\n",
                t["args"].as_str().unwrap_or(""),
                fmt_ns(ours),
                fmt_ns(theirs),
                ours / theirs
            ))
        })
        .collect();
    if rows.is_empty() {
        return "\n### PyTorch twin\n\nNot measured in the run that wrote these tables: \
                `cargo xtask bench --python PATH` (a Python with torch) runs it.\n"
            .into();
    }
    let version = twin
        .values()
        .find_map(|t| t["torch"].as_str())
        .unwrap_or("?");
    let mut md = format!(
        "\n### PyTorch twin\n\nThe same training step in PyTorch {version} \
         (`benches/torch_twin.py`, same layers and parameter count; arguments `H LAYERS HEADS \
         N P K D BATCH THREADS STEPS`), run right after the criterion benches; the ratio is \
         calmflow's median time over the twin's (1.00× = par, lower is faster).\n\n\
         | bench | twin arguments | calmflow | PyTorch | ratio |\n| --- | --- | ---: | ---: | ---: |\n"
    );
    for r in rows {
        md.push_str(&r);
    }
    md
}

/// Tokens/s and GFLOP/s of every benchmark whose work the benches recorded, against the
/// fastest matrix product of the same results.
fn throughput(results: &BTreeMap<String, Value>, work: &BTreeMap<String, Value>) -> String {
    let rate = |id: &str| -> Option<(f64, f64)> {
        let median = results.get(id)?["median_ns"].as_f64()? * 1e-9;
        let w = work.get(id)?;
        Some((
            w["tokens"].as_f64().unwrap_or(0.0) / median,
            w["flops"].as_f64().unwrap_or(0.0) / median / 1e9,
        ))
    };
    let peak = results
        .keys()
        .filter(|id| id.starts_with("matmul/"))
        .filter_map(|id| rate(id).map(|r| (id.clone(), r.1)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((peak_id, peak)) = peak else {
        return String::new();
    };
    let mut md = format!(
        "\n### Throughput\n\nTraining-step FLOPs count the transformer's matrix products \
         (`calmflow_benches::transformer_train_flops`: per block the QKV, output and MLP \
         projections and both attention products, backward = 2 × forward). Reference: \
         `{peak_id}` at {peak:.1} GFLOP/s, the fastest f32 matrix product of this run.\n\n\
         | benchmark | tokens/s | GFLOP/s | of the matmul rate |\n| --- | ---: | ---: | ---: |\n"
    );
    for id in results.keys() {
        if let Some((tokens, gflops)) = rate(id) {
            md.push_str(&format!(
                "| {id} | {} | {gflops:.2} | {:.0}% |\n",
                if tokens > 0.0 {
                    format!("{tokens:.0}")
                } else {
                    "—".into()
                },
                100.0 * gflops / peak
            ));
        }
    }
    md
}

/// Orders "n500_d2" before "n1000_d2": runs of digits compare as numbers.
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).saturating_mul(10).saturating_add(d as u64));
        } else {
            if let Some(n) = num.take() {
                key.push((n, std::mem::take(&mut text)));
            }
            text.push(c);
        }
    }
    key.push((num.unwrap_or(0), text));
    key
}

fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twin_lines_are_parsed_and_compared_as_ratios() {
        let v = parse_twin_line(
            "torch 2.15.0+cu132 threads=2 H=64 L=2 heads=4 N=16 P=1 K=1 D=2 B=128 params=129538 median_ms=25.00",
            "64 2 4 16 1 1 2 128 2 40",
        )
        .unwrap();
        assert_eq!(v["median_ns"].as_f64(), Some(25e6));
        assert_eq!(v["torch"], "2.15.0+cu132");
        assert_eq!(v["parameters"].as_u64(), Some(129_538));
        assert!(parse_twin_line("torch 2 threads=2", "x").is_err());
        let id = "model/train_step/h64_l2_t16_b128".to_string();
        let results = BTreeMap::from([(id.clone(), json!({ "median_ns": 50e6 }))]);
        let twin = BTreeMap::from([(id, v)]);
        let md = twin_table(&results, &twin);
        assert!(md.contains("| 2.00× |"), "{md}");
        assert!(twin_table(&results, &BTreeMap::new()).contains("Not measured"));
    }

    #[test]
    fn package_names_come_from_either_form_of_package_id() {
        assert_eq!(
            package_name("path+file:///work/crates/calmflow-model#0.1.0"),
            "calmflow-model"
        );
        assert_eq!(
            package_name("path+file:///work/benches#calmflow-benches@0.1.0"),
            "calmflow-benches"
        );
        assert_eq!(
            package_name("calmflow-train 0.1.0 (path+file:///work/crates/calmflow-train)"),
            "calmflow-train"
        );
    }
}
