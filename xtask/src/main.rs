//! Project automation for calmflow.
//!
//! - `cargo xtask ci`: format check, clippy (`-D warnings`, all targets), docs with broken
//!   intra-doc links denied, then the test command of `README.md`.
//! - `cargo xtask bench [FILTER]`: runs the criterion benches of `benches/` and writes
//!   `docs/benchmarks.json` and `docs/benchmarks.md` (a table per bench group, medians with
//!   their 95% confidence interval and median absolute deviation).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::SystemTime;

use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(args.get(1).map(String::as_str)),
        _ => {
            eprintln!("usage: cargo xtask <ci | bench [FILTER]>");
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

fn ci() -> Result<(), String> {
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

fn bench(filter: Option<&str>) -> Result<(), String> {
    let start = SystemTime::now();
    let mut args = vec!["bench", "-p", "calmflow-benches"];
    if let Some(f) = filter {
        args.extend(["--", f]);
    }
    run("cargo", &args, &[])?;
    let docs = root().join("docs");
    let json_path = docs.join("benchmarks.json");
    let mut results: BTreeMap<String, Value> = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v["results"].as_object().cloned())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    let mut fresh = BTreeMap::new();
    collect(&root().join("target").join("criterion"), start, &mut fresh);
    if fresh.is_empty() {
        return Err("no criterion results were written by this run".into());
    }
    eprintln!("{} benchmark results from this run", fresh.len());
    results.extend(fresh);
    let machine = machine();
    let doc = json!({ "machine": machine, "results": results });
    let json_text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    write_atomic(&json_path, &json_text)?;
    write_atomic(&docs.join("benchmarks.md"), &markdown(&machine, &results))
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
        "# Benchmarks\n\nWritten by `cargo xtask bench` from criterion's estimates: the median time per \
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
        md.push_str(&format!("\n## {group}\n\n| benchmark | parameter | median | 95% CI | MAD |\n| --- | --- | ---: | --- | ---: |\n"));
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
