//! `cargo xtask gpu-check`: the CUDA build carried to a GPU machine, and the Vulkan
//! drivers that `cargo xtask test --backend wgpu` needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{root, run, write_atomic};

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

pub(crate) fn gpu_check(flag: Option<&str>) -> Result<(), String> {
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
pub(crate) fn vulkan_drivers() -> Result<Vec<String>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
