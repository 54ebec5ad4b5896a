//! The dependency rules of `docs/architecture.md`, checked on `cargo metadata`: a crate
//! depends only on crates of lower layers, and the program and the benches reach the
//! library through the facade alone.

use std::process::Command;

use serde_json::Value;

/// Every library crate of the workspace and its layer (doubled, so that the facade can sit
/// just above the CPU kernels it registers while both stay in the table's layer 5).
const LAYERS: &[(&str, u32)] = &[
    ("calmflow-vie", 0),
    ("calmflow-linalg", 0),
    ("calmflow-data", 2),
    ("calmflow-metrics", 2),
    ("calmflow-plot", 3),
    ("calmflow-tokenize", 4),
    ("calmflow-model", 6),
    ("calmflow-train", 8),
    ("calmflow-run", 9),
    ("calmflow-ndarray-kernels", 10),
    ("calmflow", 11),
    ("calmflow-cli", 12),
];

/// The crates that must reach the library through the facade, and the workspace crates
/// each may name besides it.
const THROUGH_THE_FACADE: &[(&str, &[&str])] = &[
    ("calmflow-cli", &["calmflow"]),
    ("calmflow-benches", &["calmflow"]),
    ("calmflow-fuzz", &["calmflow"]),
];

/// Packages outside the layers, with no rule beyond [`THROUGH_THE_FACADE`].
const OUTSIDE: &[&str] = &["calmflow-benches", "calmflow-fuzz", "xtask"];

/// Each workspace package and the workspace packages it depends on (normal and build
/// dependencies; a test may use what its crate's users use).
pub type Graph = Vec<(String, Vec<String>)>;

/// The violations of the rules in `graph`, one line each; empty when it keeps them.
pub fn violations(graph: &Graph) -> Vec<String> {
    let layer = |name: &str| LAYERS.iter().find(|(n, _)| *n == name).map(|&(_, l)| l);
    let mut found = Vec::new();
    for (package, deps) in graph {
        if let Some((_, allowed)) = THROUGH_THE_FACADE.iter().find(|(p, _)| p == package) {
            for dep in deps.iter().filter(|d| !allowed.contains(&d.as_str())) {
                found.push(format!(
                    "{package} depends on {dep}: it must reach the library through the \
                     `calmflow` facade (`calmflow::{}`)",
                    dep.trim_start_matches("calmflow-").replace('-', "_")
                ));
            }
        }
        if OUTSIDE.contains(&package.as_str()) {
            continue;
        }
        let Some(own) = layer(package) else {
            found.push(format!(
                "{package} is not in xtask's layer table: add it to LAYERS in \
                 xtask/src/layers.rs and to docs/architecture.md"
            ));
            continue;
        };
        for dep in deps {
            match layer(dep) {
                Some(l) if l < own => {}
                Some(_) => found.push(format!(
                    "{package} depends on {dep}, which is not in a lower layer \
                     (docs/architecture.md)"
                )),
                None if OUTSIDE.contains(&dep.as_str()) => {
                    found.push(format!("{package} depends on {dep}, a tool crate"))
                }
                None => {}
            }
        }
    }
    found
}

/// The workspace's dependency graph from `cargo metadata --no-deps`.
pub fn workspace_graph(root: &std::path::Path) -> Result<Graph, String> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let doc: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let packages = doc["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages")?;
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    Ok(packages
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            let deps = p["dependencies"]
                .as_array()?
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|d| members.contains(d))
                .map(str::to_string)
                .collect();
            Some((name.to_string(), deps))
        })
        .collect())
}

/// Fails with every violation of the rules, one per line.
pub fn check(root: &std::path::Path) -> Result<(), String> {
    eprintln!("$ (layers) cargo metadata: dependencies point downward, one door");
    let found = violations(&workspace_graph(root)?);
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the crates break the dependency rules:\n  {}",
            found.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(p, d)| (p.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn the_rules_accept_the_documented_layers() {
        let g = graph(&[
            ("calmflow-data", &["calmflow-linalg"]),
            ("calmflow-train", &["calmflow-model", "calmflow-data"]),
            ("calmflow-run", &["calmflow-train", "calmflow-plot"]),
            ("calmflow", &["calmflow-ndarray-kernels", "calmflow-run"]),
            ("calmflow-cli", &["calmflow"]),
            ("calmflow-benches", &["calmflow"]),
            ("xtask", &[]),
        ]);
        assert!(violations(&g).is_empty(), "{:?}", violations(&g));
    }

    #[test]
    fn an_upward_import_a_bypass_and_an_unknown_crate_are_named() {
        let g = graph(&[
            ("calmflow-model", &["calmflow-train"]),
            ("calmflow-data", &["calmflow-metrics"]),
            ("calmflow-cli", &["calmflow", "calmflow-model"]),
            ("calmflow-benches", &["calmflow-cli"]),
            ("calmflow-new", &[]),
        ]);
        let v = violations(&g);
        assert_eq!(v.len(), 5, "{v:#?}");
        assert!(v[0].starts_with("calmflow-model depends on calmflow-train"));
        assert!(v[1].starts_with("calmflow-data depends on calmflow-metrics"));
        assert!(
            v[2].contains("calmflow-cli depends on calmflow-model")
                && v[2].contains("calmflow::model")
        );
        assert!(v[3].contains("calmflow-benches depends on calmflow-cli"));
        assert!(v[4].contains("calmflow-new is not in xtask's layer table"));
    }
}
