//! The `calmflow` program end to end: outputs, exit codes and one-line errors.

use std::path::Path;
use std::process::{Command, Output};

fn calmflow(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calmflow"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the calmflow binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn data_then_eval_scores_a_set_against_itself_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for out in ["a.npy", "a.csv"] {
        let o = calmflow(
            &[
                "data",
                "--dataset",
                "moons",
                "--n",
                "300",
                "--seed",
                "1",
                "--out",
                out,
            ],
            d,
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = calmflow(
        &[
            "eval",
            "--samples",
            "a.npy",
            "--target",
            "a.csv",
            "--json",
            "r.json",
            "--no-sinkhorn",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("300 samples vs 300 target points, dimension 2"),
        "{out}"
    );
    let w2_line = out
        .lines()
        .find(|l| l.starts_with("| w2 |"))
        .expect("a w2 row");
    let w2: f64 = w2_line
        .trim_matches(|c| c == '|' || c == ' ')
        .rsplit('|')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(w2 < 1e-5, "{w2_line}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert!(report["energy"].as_f64().unwrap().abs() < 1e-6);
    assert!(report["sinkhorn_divergence"].is_null());
    // The same set twice: every dispersion ratio is 1, in the table and in the JSON.
    for row in [
        "| dispersion_trace |",
        "| dispersion_pc1 |",
        "| dispersion_pc2 |",
    ] {
        let line = out.lines().find(|l| l.starts_with(row)).expect(row);
        assert!(line.contains("1.000000"), "{line}");
    }
    assert!(!out.contains("dispersion_rest"), "D = 2 has no rest: {out}");
    let d = &report["dispersion"];
    assert!(
        (d["trace_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{d}"
    );
    assert_eq!(d["leading"].as_array().unwrap().len(), 2);
    assert!(d["rest"].is_null());
}

#[test]
fn eval_detects_different_distributions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        calmflow(
            &["data", "--dataset", "moons", "--n", "200", "--out", "m.npy"],
            d
        )
        .status
        .success()
    );
    assert!(
        calmflow(
            &[
                "data",
                "--dataset",
                "8gaussians",
                "--n",
                "200",
                "--out",
                "g.npy"
            ],
            d
        )
        .status
        .success()
    );
    let o = calmflow(
        &[
            "eval",
            "--samples",
            "g.npy",
            "--target",
            "m.npy",
            "--json",
            "r.json",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert!(report["w2"].as_f64().unwrap() > 1.0, "{report}");
    assert!(report["sinkhorn_divergence"].as_f64().unwrap() > 0.0);
}

#[test]
fn errors_are_one_line_with_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "eval",
                "--samples",
                "missing.npy",
                "--target",
                "missing.npy",
            ],
            "missing.npy",
        ),
        (
            &["data", "--dataset", "mnist", "--out", "x.npy"],
            "unknown data set `mnist`",
        ),
        (
            &["data", "--dataset", "moons", "--out", "x.parquet"],
            "use a .npy or .csv file",
        ),
        (&["devices", "--check", "tpu"], "unknown device"),
    ];
    for (args, needle) in cases {
        let o = calmflow(args, d);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err}");
        if args[0] != "devices" {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        }
    }
    // Mismatched dimensions between the two files.
    assert!(
        calmflow(
            &[
                "data",
                "--dataset",
                "normal",
                "--dim",
                "3",
                "--n",
                "10",
                "--out",
                "n3.npy"
            ],
            d
        )
        .status
        .success()
    );
    assert!(
        calmflow(
            &["data", "--dataset", "moons", "--n", "10", "--out", "m.npy"],
            d
        )
        .status
        .success()
    );
    let o = calmflow(&["eval", "--samples", "n3.npy", "--target", "m.npy"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("dimension mismatch"), "{}", stderr(&o));
}

#[test]
fn devices_lists_backends_and_checks_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let o = calmflow(&["devices", "--check", "cpu", "--size", "64"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("compiled backends: ndarray"), "{out}");
    assert!(out.contains("cpu: 64×64 matmul: first"), "{out}");
    if !cfg!(feature = "cuda") {
        let o = calmflow(&["devices", "--check", "cuda:0"], dir.path());
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("--features cuda"), "{}", stderr(&o));
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const TINY: &str = "[model]\nhidden = 8\nlayers = 1\nheads = 2\n[flow]\nn_times = 4\n\
                    [train]\nsteps = 6\nbatch_size = 8\nlog_every = 2\nvalidate_every = 3\n\
                    checkpoint_every = 3\n[data]\nn_validation = 16\n";

/// train → resume → sample → plot, and the CFM counterpart, on a tiny model.
#[test]
fn train_resume_sample_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "run.toml", TINY);
    let o = calmflow(
        &[
            "train", "--config", "run.toml", "--out", "r", "--steps", "3", "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = calmflow(
        &[
            "train", "--config", "run.toml", "--out", "r", "--resume", "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("for 6 steps"), "{}", stdout(&o));
    let log = std::fs::read_to_string(d.join("r/train_log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![2, 3, 4, 6]);
    let o = calmflow(
        &[
            "sample",
            "--checkpoint",
            "r/checkpoints",
            "--n",
            "50",
            "--out",
            "s.csv",
            "--trajectories",
            "t.npy",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let samples = std::fs::read_to_string(d.join("s.csv")).unwrap();
    assert_eq!(samples.lines().filter(|l| !l.starts_with('#')).count(), 50);
    let o = calmflow(&["plot", "--trajectories", "t.npy", "--out", "t.svg"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = calmflow(
        &[
            "cfm", "train", "--config", "run.toml", "--out", "c", "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = calmflow(
        &[
            "cfm",
            "sample",
            "--checkpoint",
            "c/checkpoints",
            "--source",
            "s.csv",
            "--solver",
            "rk4",
            "--ode-steps",
            "5",
            "--out",
            "c.npy",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("20 function evaluations"),
        "{}",
        stdout(&o)
    );
}

/// `sample --repeat R`: R draws per source point, the draws of one point together
/// (rows `i·R .. (i + 1)·R`), distinct at a positive temperature; `--repeat 0` is refused.
#[test]
fn sample_repeat_draws_several_points_from_each_source_point() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "run.toml", TINY);
    let o = calmflow(
        &["train", "--config", "run.toml", "--out", "r", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (n, repeat) = (5, 4);
    let o = calmflow(
        &[
            "sample",
            "--checkpoint",
            "r/checkpoints",
            "--n",
            "5",
            "--repeat",
            "4",
            "--temperature",
            "1.0",
            "--out",
            "s.csv",
            "--trajectories",
            "t.npy",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wrote 20 samples"), "{}", stdout(&o));
    let rows: Vec<Vec<f32>> = std::fs::read_to_string(d.join("s.csv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), n * repeat);
    // The trajectories start at the source points: equal within a group, not across.
    let t = calmflow::data::npy::read_npy(d.join("t.npy")).unwrap();
    assert_eq!(t.shape()[0], n * repeat);
    let start = |row: usize| t.slice(ndarray::s![row, 0, ..]).to_owned();
    for i in 0..n {
        for r in 1..repeat {
            assert_eq!(
                start(i * repeat + r),
                start(i * repeat),
                "source {i}, draw {r}"
            );
        }
        if i > 0 {
            assert_ne!(
                start(i * repeat),
                start((i - 1) * repeat),
                "sources {i} and {}",
                i - 1
            );
        }
        // Draws from one source point differ at τ = 1.
        let group = &rows[i * repeat..(i + 1) * repeat];
        for a in 0..repeat {
            for b in a + 1..repeat {
                assert_ne!(group[a], group[b], "source {i}: draws {a} and {b} coincide");
            }
        }
    }
    let o = calmflow(
        &[
            "sample",
            "--checkpoint",
            "r/checkpoints",
            "--repeat",
            "0",
            "--out",
            "z.csv",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("--repeat must be ≥ 1"), "{e}");
    assert!(!d.join("z.csv").exists());
}

/// `[data] standardize`: the checkpoint records the training targets' moments, and
/// `sample` writes points (and trajectories) in the data's coordinates, far from the
/// model's standardised ones.
#[test]
fn standardized_runs_sample_in_the_data_coordinates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<String> = (0..300)
        .map(|i| {
            let a = i as f64 * 0.1;
            format!("{},{}", 1000.0 + 50.0 * a.cos(), -200.0 + 10.0 * a.sin())
        })
        .collect();
    write(d, "target.csv", &rows.join("\n"));
    write(
        d,
        "run.toml",
        &format!("{TINY}standardize = true\ntarget = \"target.csv\"\n"),
    );
    let o = calmflow(&["train", "--config", "run.toml", "--out", "r"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("training in standardised coordinates"),
        "{}",
        stderr(&o)
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("r/checkpoints/step-00000006/config.json")).unwrap(),
    )
    .unwrap();
    let map = &config["extra"]["standardization"];
    let (mean, scale) = (&map["mean"], &map["scale"]);
    // 270 training rows of a 300-point arc: moments near the whole arc's.
    assert!((mean[0].as_f64().unwrap() - 1000.0).abs() < 10.0, "{map}");
    assert!((mean[1].as_f64().unwrap() + 200.0).abs() < 2.0, "{map}");
    assert!((scale[0].as_f64().unwrap() - 35.0).abs() < 5.0, "{map}");
    assert!((scale[1].as_f64().unwrap() - 7.0).abs() < 1.5, "{map}");
    assert_eq!(map["source"], serde_json::json!(false), "{map}");
    let o = calmflow(
        &[
            "sample",
            "--checkpoint",
            "r/checkpoints",
            "--n",
            "40",
            "--out",
            "s.npy",
            "--trajectories",
            "t.npy",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = calmflow::data::npy::read_npy(d.join("s.npy")).unwrap();
    let t = calmflow::data::npy::read_npy(d.join("t.npy")).unwrap();
    assert_eq!(s.shape(), &[40, 2]);
    for i in 0..40 {
        // The model's coordinates are O(1); the data's are near (1000, −200).
        assert!(
            s[[i, 0]] > 500.0 && s[[i, 1]] < -100.0,
            "row {i}: {} {}",
            s[[i, 0]],
            s[[i, 1]]
        );
        let last = t.shape()[1] - 1;
        for j in 0..2 {
            assert!((t[[i, last, j]] - s[[i, j]]).abs() < 1e-3);
        }
    }
    // A damaged record of the map is an error, not samples left in standardised
    // coordinates.
    let path = d.join("r/checkpoints/step-00000006/config.json");
    let mut damaged = config.clone();
    damaged["extra"]["standardization"]["scale"] = serde_json::json!("wide");
    std::fs::write(&path, serde_json::to_string(&damaged).unwrap()).unwrap();
    // The manifest notices the edit; without it, the record itself is checked.
    let o = calmflow(
        &["sample", "--checkpoint", "r/checkpoints", "--out", "z.npy"],
        d,
    );
    assert!(
        stderr(&o).contains("config.json has ")
            && stderr(&o).contains("bytes where the checkpoint's manifest records"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(d.join("r/checkpoints/step-00000006/manifest.json")).unwrap();
    // With --source the run's data section is not needed: only the map is.
    write(d, "src.csv", "0.5,0.5\n-1,2\n");
    let o = calmflow(
        &[
            "sample",
            "--checkpoint",
            "r/checkpoints",
            "--source",
            "src.csv",
            "--out",
            "z.npy",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("extra"), "{}", stderr(&o));
    assert!(!d.join("z.npy").exists());
}

/// A missing file, a bad configuration field, a checkpoint of another shape and a
/// truncated one: one line each, exit status 2.
#[test]
fn training_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let check = |o: Output, needle: &str| {
        assert_eq!(o.status.code(), Some(2));
        let e = stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains(needle), "{needle:?} not in {e}");
    };
    check(
        calmflow(&["train", "--config", "absent.toml"], d),
        "absent.toml",
    );
    write(d, "typo.toml", "[train]\nstep = 5\n");
    check(calmflow(&["train", "--config", "typo.toml"], d), "step");
    write(d, "file.toml", "[data]\ntarget = \"nothere.npy\"\n");
    check(
        calmflow(&["train", "--config", "file.toml"], d),
        "nothere.npy",
    );
    write(d, "run.toml", TINY);
    let o = calmflow(
        &["train", "--config", "run.toml", "--out", "r", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    write(d, "wide.toml", &TINY.replace("hidden = 8", "hidden = 12"));
    let o = calmflow(
        &["train", "--config", "wide.toml", "--out", "w", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Swap in weights of the wider model: the shapes are checked.
    let latest = |run: &str| {
        let name = std::fs::read_to_string(d.join(run).join("checkpoints/latest")).unwrap();
        d.join(run).join("checkpoints").join(name.trim())
    };
    std::fs::copy(latest("w").join("model.mpk"), latest("r").join("model.mpk")).unwrap();
    // The manifest refuses a file of another checkpoint by name; without the manifest (a
    // checkpoint from before manifests), the parameters' shapes are checked.
    check(
        calmflow(
            &["sample", "--checkpoint", "r/checkpoints", "--out", "s.npy"],
            d,
        ),
        "model.mpk has",
    );
    std::fs::remove_file(latest("r").join("manifest.json")).unwrap();
    check(
        calmflow(
            &["sample", "--checkpoint", "r/checkpoints", "--out", "s.npy"],
            d,
        ),
        "another configuration",
    );
    // A truncated weight file (an interrupted copy) is called damaged, without burn's
    // advice about an old feature flag.
    let weights = std::fs::read(latest("w").join("model.mpk")).unwrap();
    std::fs::write(latest("r").join("model.mpk"), &weights[..weights.len() / 2]).unwrap();
    let o = calmflow(
        &["sample", "--checkpoint", "r/checkpoints", "--out", "s.npy"],
        d,
    );
    assert!(!stderr(&o).contains("backward-compat"), "{}", stderr(&o));
    check(o, "is damaged");
    check(
        calmflow(&["sample", "--checkpoint", "nowhere", "--out", "s.npy"], d),
        "nowhere",
    );
    check(
        calmflow(
            &[
                "cfm",
                "sample",
                "--checkpoint",
                "w/checkpoints",
                "--out",
                "s.npy",
            ],
            d,
        ),
        "cfm",
    );
}

/// The demo end to end at toy size: metrics table, plots, results and samples on disk.
#[test]
fn demo_writes_its_table_plots_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = calmflow(
        &[
            "demo",
            "--out",
            "demo",
            "--steps",
            "3",
            "--cfm-steps",
            "3",
            "--n",
            "60",
            "--n-validation",
            "40",
            "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("| w2 |") || out.contains("w2"), "{out}");
    assert!(out.contains("CaLMFlow") && out.contains("I-CFM"), "{out}");
    for f in [
        "samples.png",
        "samples.svg",
        "trajectories.png",
        "trajectories.svg",
        "results.json",
        "calmflow_samples.npy",
        "cfm_samples.npy",
        "target.npy",
    ] {
        assert!(d.join("demo").join(f).is_file(), "{f} missing");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("demo/results.json")).unwrap())
            .unwrap();
    let sweep = results["temperature_sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 13);
    let chosen = results["temperature"].as_f64().unwrap();
    let best = sweep
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(chosen, best.0);
}

/// A GPT-NeoX directory written through the library's own export (a 1-layer, width-8
/// backbone with a 40-row embedding table), plus a word-level tokenizer.json.
fn pretrained_dir(dir: &Path) {
    use calmflow::model::neox::save_neox_config;
    let config = calmflow::model::CalmFlowConfig::new(2)
        .with_hidden(8)
        .with_layers(1)
        .with_heads(2)
        .with_vocab_size(40);
    let model = config
        .init::<calmflow::backend::Cpu>(&Default::default())
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    model.save_neox(&dir.join("model.safetensors")).unwrap();
    save_neox_config(&config, &dir.join("config.json")).unwrap();
}

/// `train --init-from`: the backbone shape comes from config.json (the [model] section
/// asks for another width), the weights from the safetensors file; a CFM run refuses it.
#[test]
fn train_initialises_the_backbone_from_a_pretrained_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pretrained_dir(&d.join("neox"));
    write(d, "run.toml", TINY);
    let o = calmflow(
        &[
            "train",
            "--config",
            "run.toml",
            "--out",
            "r",
            "--init-from",
            "neox",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("backbone initialised from"),
        "{}",
        stderr(&o)
    );
    let config = std::fs::read_to_string(d.join("r/checkpoints/latest")).unwrap();
    let step = d.join("r/checkpoints").join(config.trim());
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step.join("config.json")).unwrap()).unwrap();
    assert_eq!(stored["model"]["hidden"], 8);
    assert_eq!(stored["model"]["vocab_size"], 40);
    let o = calmflow(
        &[
            "cfm",
            "train",
            "--config",
            "run.toml",
            "--out",
            "c",
            "--init-from",
            "neox",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--init-from"), "{}", stderr(&o));
    let o = calmflow(
        &[
            "train",
            "--config",
            "run.toml",
            "--out",
            "r2",
            "--init-from",
            "absent",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("absent"), "{}", stderr(&o));
}

/// `heldout` at toy size on the bundled pbmc68k_reduced: a table row per held-out pair
/// and model, the JSON report, and typed errors for unknown labels and columns.
#[test]
fn heldout_runs_at_toy_size_and_rejects_bad_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = calmflow(
        &[
            "heldout",
            "--steps",
            "2",
            "--cfm-steps",
            "2",
            "--pca",
            "4",
            "--n-times",
            "4",
            "--batch",
            "8",
            "--hold-out",
            "CD19+ B/S",
            "--hold-out",
            "CD4+/CD25 T Reg/G1",
            "--out",
            "h",
            "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for row in [
        "| CD19+ B / S | 27 | CaLMFlow (prompt)",
        "| CD4+/CD25 T Reg / G1 | 42 | CFM (one-hot)",
        "| **mean** |  | nearest seen (real cells)",
    ] {
        assert!(out.contains(row), "{row} missing from\n{out}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("h/heldout.json")).unwrap()).unwrap();
    assert_eq!(report["conditions"].as_array().unwrap().len(), 2);
    assert_eq!(report["n_train"], 700 - 27 - 42);
    assert_eq!(
        report["conditions"][0]["prompt"],
        "Generate a CD19+ B cell in phase S: "
    );
    for (args, needle) in [
        (vec!["--hold-out", "CD19+ B/M"], "M"),
        (vec!["--conditions", "cell_type,batch"], "batch"),
        (vec!["--template", "a {tissue} cell"], "tissue"),
    ] {
        let mut all = vec!["heldout", "--steps", "1", "--out", "e", "--quiet"];
        all.extend(args);
        let o = calmflow(&all, d);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        let e = stderr(&o);
        assert!(e.contains(needle) && e.lines().count() == 1, "{e}");
    }
}

/// The logged losses of a run, by step.
fn logged_losses(path: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// `train --devices cpu,cpu` (two replicas, 4 sequences each) logs the losses of the
/// one-device run with batch 8 to f32 rounding (no dropout: its draws come from one
/// process-wide CPU stream that the replicas share); an interrupted two-device run
/// resumes; devices of two backends and an uneven split are one-line errors;
/// `[train] devices` works as the flag does.
#[test]
fn train_on_two_cpu_replicas_matches_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `--steps 3` interrupts the run by shortening `train.steps`, which moves every
    // schedule over the run's length: the tiny run stays in the learning rate's warm-up,
    // and the mixture's annealing (a fraction of `train.steps`) is switched off. The
    // mixture head's loss draws no noise; the default flow head's does, from each
    // replica's share of the stream, so its replicas match one device in law only.
    let config = TINY
        .replace(
            "heads = 2\n",
            "heads = 2\ndropout = 0.0\nhead = \"mixture\"\n",
        )
        .replace("n_times = 4\n", "n_times = 4\nanneal_temperature = 1.0\n");
    write(d, "run.toml", &config);
    let o = calmflow(
        &["train", "--config", "run.toml", "--out", "one", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = calmflow(
        &[
            "train",
            "--config",
            "run.toml",
            "--out",
            "two",
            "--steps",
            "3",
            "--devices",
            "cpu,cpu",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("data-parallel on 2 devices"),
        "{}",
        stderr(&o)
    );
    let o = calmflow(
        &[
            "train",
            "--config",
            "run.toml",
            "--out",
            "two",
            "--resume",
            "--devices",
            "cpu,cpu",
            "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (one, two) = (
        logged_losses(&d.join("one/train_log.jsonl")),
        logged_losses(&d.join("two/train_log.jsonl")),
    );
    assert_eq!(one.len(), two.len(), "{one:?} vs {two:?}");
    for ((s1, l1), (s2, l2)) in one.iter().zip(&two) {
        assert_eq!(s1, s2);
        assert!(
            (l1 - l2).abs() <= 1e-4 * l1.abs(),
            "step {s1}: {l1} vs {l2}"
        );
    }
    let config_json =
        std::fs::read_to_string(d.join("two/checkpoints/step-00000006/config.json")).unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&config_json).unwrap();
    assert_eq!(
        recorded["train"]["devices"],
        serde_json::json!(["cpu", "cpu"])
    );

    let o = calmflow(
        &[
            "train",
            "--config",
            "run.toml",
            "--out",
            "x",
            "--devices",
            "cpu,cuda:0",
        ],
        d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("share one backend"), "{}", stderr(&o));
    write(
        d,
        "three.toml",
        &config.replace(
            "[train]\n",
            "[train]\ndevices = [\"cpu\", \"cpu\", \"cpu\"]\n",
        ),
    );
    let o = calmflow(&["train", "--config", "three.toml", "--out", "x"], d);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("train.batch_size = 8 does not split evenly among the 3 devices"),
        "{}",
        stderr(&o)
    );
    write(
        d,
        "unknown.toml",
        &config.replace("[train]\n", "[train]\ndevices = [\"cpu\", \"tpu:0\"]\n"),
    );
    let o = calmflow(&["train", "--config", "unknown.toml", "--out", "x"], d);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("train.devices: unknown device `tpu:0`"),
        "{}",
        stderr(&o)
    );
}

/// A conditional run from a configuration file on the bundled pbmc68k_reduced: prompted
/// CaLMFlow and one-hot CFM trained from `[data] h5ad`, then cells sampled for a held-out
/// combination by `--condition`, written as AnnData and read back.
#[test]
fn conditional_cells_train_from_a_config_and_sample_by_condition() {
    use calmflow::data::h5ad::{Expression, bundled_pbmc68k_reduced, read_h5ad};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let h5ad = bundled_pbmc68k_reduced();
    let config = format!(
        "[data]\nh5ad = {:?}\ncolumns = [\"cell_type\", \"phase\"]\nhold_out = [\"CD19+ B/S\"]\n\
         pca = 4\n[model]\nhidden = 8\nlayers = 1\nheads = 2\n[flow]\nn_times = 4\n\
         [train]\nsteps = 4\nbatch_size = 8\nvalidate_every = 2\ncheckpoint_every = 4\n",
        h5ad.display().to_string()
    );
    write(d, "cells.toml", &config);
    for (cmd, out) in [(vec!["train"], "calm"), (vec!["cfm", "train"], "cfm")] {
        let mut args = cmd.clone();
        args.extend(["--config", "cells.toml", "--out", out, "--quiet"]);
        let o = calmflow(&args, d);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let condition = ["--condition", "cell_type=CD19+ B", "--condition", "phase=S"];
    let mut args = vec![
        "sample",
        "--checkpoint",
        "calm/checkpoints",
        "--n",
        "30",
        "--out",
        "b.h5ad",
    ];
    args.extend(condition);
    let o = calmflow(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o)
            .contains("wrote 30 samples of \"Generate a cell with cell_type CD19+ B, phase S:\""),
        "{}",
        stdout(&o)
    );
    let cells = read_h5ad(d.join("b.h5ad")).unwrap();
    assert_eq!((cells.n_obs(), cells.n_vars()), (30, 765));
    let source = read_h5ad(&h5ad).unwrap();
    assert_eq!(cells.var.index, source.var.index);
    assert_eq!(cells.obs.labels("cell_type").unwrap(), vec!["CD19+ B"; 30]);
    assert_eq!(cells.obs.labels("phase").unwrap(), vec!["S"; 30]);
    let scores = &cells.obsm["X_pca"];
    assert_eq!(scores.dim(), (30, 4));
    // Gene space is the PCA of the training cells (everything but the 27 held-out ones),
    // re-fitted here, applied backwards to the scores.
    let labels = |c: &str| source.obs.labels(c).unwrap();
    let (types, phases) = (labels("cell_type"), labels("phase"));
    let train: Vec<usize> = (0..source.n_obs())
        .filter(|&i| !(types[i] == "CD19+ B" && phases[i] == "S"))
        .collect();
    assert_eq!(train.len(), 700 - 27);
    let x = source.x.to_dense().select(ndarray::Axis(0), &train);
    let pca = calmflow::data::Pca::fit(x.view(), 4).unwrap();
    let genes = pca.inverse_transform(scores.view()).unwrap();
    let Expression::Dense(written) = &cells.x else {
        panic!("generated X is dense")
    };
    let worst = (&genes - written).fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        worst < 1e-3,
        "gene space differs from the PCA inverse by {worst}"
    );

    // CFM from the same file: PCA scores and gene space as .npy.
    let mut args = vec![
        "cfm",
        "sample",
        "--checkpoint",
        "cfm/checkpoints",
        "--n",
        "20",
        "--out",
        "c.npy",
        "--genes",
        "c_genes.npy",
    ];
    args.extend(condition);
    let o = calmflow(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    let pcs = calmflow::data::npy::read_npy_matrix(d.join("c.npy")).unwrap();
    let g = calmflow::data::npy::read_npy_matrix(d.join("c_genes.npy")).unwrap();
    assert_eq!((pcs.dim(), g.dim()), ((20, 4), (20, 765)));

    // Errors: one line, naming what is known.
    for (extra, needle) in [
        (
            vec!["--condition", "cell_type=CD19+ B", "--condition", "phase=M"],
            "unknown phase `M`; known: G1, G2M, S",
        ),
        (
            vec!["--condition", "cell_type=CD19+ B"],
            "no --condition phase=… given",
        ),
        (
            vec!["--condition", "tissue=lung"],
            "`tissue` is not a condition column",
        ),
    ] {
        let mut args = vec![
            "sample",
            "--checkpoint",
            "calm/checkpoints",
            "--out",
            "e.npy",
        ];
        args.extend(extra);
        let o = calmflow(&args, d);
        assert_eq!(o.status.code(), Some(2));
        let e = stderr(&o);
        assert!(e.contains(needle) && e.lines().count() == 1, "{e}");
    }
    let o = calmflow(
        &[
            "cfm",
            "sample",
            "--checkpoint",
            "cfm/checkpoints",
            "--prompt",
            "a B cell",
            "--out",
            "e.npy",
        ],
        d,
    );
    assert!(
        stderr(&o).contains("--prompt is for CaLMFlow"),
        "{}",
        stderr(&o)
    );
    // A config that mixes the two forms of [data] is refused before anything runs.
    write(
        d,
        "mixed.toml",
        &config.replace("pca = 4\n", "pca = 4\ntarget = \"moons\"\n"),
    );
    let o = calmflow(&["train", "--config", "mixed.toml", "--out", "m"], d);
    assert!(
        stderr(&o).contains("h5ad replaces source and target"),
        "{}",
        stderr(&o)
    );
}

/// The same configuration and seed, trained in two processes, give the same checkpoint
/// bytes (weights, optimizer state, configuration) and the same logged numbers, for every
/// head: burn's random parameter ids are numbered at initialisation, the optimizer's
/// per-parameter state is written in sorted order, and no result depends on where the
/// allocator puts a buffer (the second run, where `setarch` exists, runs with address
/// randomisation off; burn-ndarray's SIMD reciprocal, exact or not by the buffer's
/// alignment, is not built). Wall-clock fields (`elapsed_seconds` in `state.json`,
/// `seconds` and `steps_per_second` in the log) are what may differ. A run interrupted
/// after its step-3 checkpoint and resumed in a third process ends on the same bytes and
/// the same log, its step-4 line averaging steps 1–4 as the uninterrupted run's does.
#[test]
fn two_processes_with_one_seed_write_the_same_checkpoint_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let timing = ["elapsed_seconds", "seconds", "steps_per_second"];
    let without_timing = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for key in timing {
                    v.as_object_mut().unwrap().remove(key);
                }
                v
            })
            .collect()
    };
    let fixed_addresses = Command::new("setarch")
        .args(["-R", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    // Log lines at steps 4, 5 (validation) and 6; checkpoints at 3 and 6.
    let config = TINY
        .replace("log_every = 2", "log_every = 4")
        .replace("validate_every = 3", "validate_every = 5");
    for head in ["flow", "mixture", "variational", "cvae"] {
        let config = config.replace("heads = 2\n", &format!("heads = 2\nhead = \"{head}\"\n"));
        write(d, &format!("{head}.toml"), &config);
        for run in ["a", "b"] {
            let out = format!("{head}-{run}");
            let args = [
                "train",
                "--config",
                &format!("{head}.toml"),
                "--out",
                &out,
                "--quiet",
            ];
            let o = if run == "b" && fixed_addresses {
                Command::new("setarch")
                    .arg("-R")
                    .arg(env!("CARGO_BIN_EXE_calmflow"))
                    .args(args)
                    .current_dir(d)
                    .output()
                    .unwrap()
            } else {
                calmflow(&args, d)
            };
            assert!(o.status.success(), "{head}: {}", stderr(&o));
        }
        let (a, b) = (d.join(format!("{head}-a")), d.join(format!("{head}-b")));
        let state = |r: &Path, step: &str| {
            let text = std::fs::read_to_string(r.join("checkpoints").join(step).join("state.json"))
                .unwrap();
            without_timing(&text.replace('\n', " "))
        };
        let same_files = |r: &Path, step: &str, why: &str| {
            for file in ["model.mpk", "optimizer.mpk", "config.json"] {
                let path = |r: &Path| r.join("checkpoints").join(step).join(file);
                assert!(
                    std::fs::read(path(&a)).unwrap() == std::fs::read(path(r)).unwrap(),
                    "{head}: {step}/{file} differs {why}"
                );
            }
            assert_eq!(
                state(&a, step),
                state(r, step),
                "{head}: {step}/state.json {why}"
            );
        };
        for step in ["step-00000003", "step-00000006"] {
            same_files(&b, step, "between two processes");
        }
        let log =
            |r: &Path| without_timing(&std::fs::read_to_string(r.join("train_log.jsonl")).unwrap());
        let la = log(&a);
        assert_eq!(la.len(), 3, "{head}: {la:?}");
        assert_eq!(la, log(&b), "{head}: the logs differ beyond their timing");
        // Interrupted after step 3 (its step-6 checkpoint gone, `latest` back at step 3,
        // the log still holding the lines of steps 4–6) and resumed in a third process.
        let c = d.join(format!("{head}-c"));
        copy_dir(&b, &c);
        std::fs::remove_dir_all(c.join("checkpoints/step-00000006")).unwrap();
        std::fs::write(c.join("checkpoints/latest"), "step-00000003").unwrap();
        let o = calmflow(
            &[
                "train",
                "--config",
                &format!("{head}.toml"),
                "--out",
                &format!("{head}-c"),
                "--resume",
                "--quiet",
            ],
            d,
        );
        assert!(o.status.success(), "{head}: {}", stderr(&o));
        same_files(&c, "step-00000006", "after a resume in another process");
        assert_eq!(la, log(&c), "{head}: the resumed run's log differs");
    }
}

/// Copies the files of `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A NaN in the expression is reported with the file, the element and the row and column
/// as the file stores them (with the cell's and gene's names), not at a row of the
/// training cells after the held-out ones were taken out.
#[test]
fn a_non_finite_expression_value_is_reported_at_the_files_row() {
    use calmflow::data::h5ad::{Expression, bundled_pbmc68k_reduced, read_h5ad, write_h5ad};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut adata = read_h5ad(bundled_pbmc68k_reduced()).unwrap();
    let mut x = adata.x.to_dense();
    x[[292, 5]] = f32::NAN;
    let (cell, gene) = (adata.obs.index[292].clone(), adata.var.index[5].clone());
    adata.x = Expression::Dense(x);
    write_h5ad(d.join("nan.h5ad"), &adata).unwrap();
    write(
        d,
        "run.toml",
        "[data]\nh5ad = \"nan.h5ad\"\nhold_out = [\"CD19+ B/S\"]\n[train]\nsteps = 1\n",
    );
    let o = calmflow(&["train", "--config", "run.toml", "--out", "r"], d);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("nan.h5ad: /X: non-finite value NaN at row 292")
            && err.contains(&format!("({cell:?}) (cell), column 5 ({gene:?}) (gene)")),
        "{err}"
    );
}

/// A run killed at any moment (SIGKILL, in a step or in the middle of writing a
/// checkpoint) leaves its newest checkpoint whole: it opens with every file checked
/// against its manifest, and `--resume` continues from it.
#[test]
fn a_run_killed_while_writing_checkpoints_resumes_from_a_whole_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A checkpoint after every step: most of the run's time is spent writing them.
    let endless = TINY
        .replace("steps = 6", "steps = 1000000")
        .replace("checkpoint_every = 3", "checkpoint_every = 1")
        .replace("validate_every = 3", "validate_every = 0");
    write(d, "run.toml", &endless);
    let mut resumed = 0;
    for (k, delay_ms) in [250u64, 400, 550, 700, 850, 1000].into_iter().enumerate() {
        let out = format!("r{k}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_calmflow"))
            .args(["train", "--config", "run.toml", "--out", &out, "--quiet"])
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let root = d.join(&out).join("checkpoints");
        if !root.join("latest").exists() {
            // Killed before its first checkpoint: nothing to resume.
            continue;
        }
        let checkpoint = calmflow::train::Checkpoint::open(&root)
            .unwrap_or_else(|e| panic!("{out}, killed after {delay_ms} ms: {e}"));
        let step = checkpoint.state.step;
        let until = (step + 2).to_string();
        let o = calmflow(
            &[
                "train", "--config", "run.toml", "--out", &out, "--resume", "--steps", &until,
                "--quiet",
            ],
            d,
        );
        assert!(o.status.success(), "{out}: {}", stderr(&o));
        let after = calmflow::train::Checkpoint::open(&root).unwrap();
        assert_eq!(after.state.step, step + 2, "{out}");
        // The killed run's staging directory, if it left one, is gone.
        let partial = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".partial-"));
        assert!(!partial, "{out}: a staging directory is left");
        resumed += 1;
    }
    assert!(
        resumed >= 4,
        "only {resumed} of 6 runs had reached a checkpoint"
    );
}
