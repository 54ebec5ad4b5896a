//! `cargo xtask bench`: the speed suite (criterion benches and the PyTorch twin) and the
//! quality suite, and the reports they write into `docs/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::{root, run, write_atomic};

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

pub(crate) fn bench_command(args: &[String]) -> Result<(), String> {
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
}
