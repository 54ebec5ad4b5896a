//! `calmflow eval`: an [`EvaluateJob`] scores a sample file against a target file with
//! every metric of `calmflow_metrics::evaluate`, and can keep the report as JSON.

use std::path::PathBuf;

use calmflow_metrics::{EvalOptions, MetricsReport, evaluate};

use crate::error::{AppError, AppResult};
use crate::io::read_points;

/// `calmflow eval`: samples against a target, both point files.
#[derive(Debug, Clone)]
pub struct EvaluateJob {
    /// The generated points (`.npy` or `.csv`).
    pub samples: PathBuf,
    /// The points they are scored against.
    pub target: PathBuf,
    /// Which metrics, and their settings.
    pub options: EvalOptions,
    /// Also write the report here as JSON (atomically).
    pub json: Option<PathBuf>,
}

impl EvaluateJob {
    /// Reads both files, scores the samples and writes the JSON report when asked.
    pub fn run(&self) -> AppResult<MetricsReport> {
        let x = read_points(&self.samples)?;
        let y = read_points(&self.target)?;
        let report = evaluate(x.view(), y.view(), &self.options)
            .map_err(|e| AppError::Other(format!("{}: {e}", self.samples.display())))?;
        if let Some(path) = &self.json {
            let text = report.to_json();
            calmflow_data::write_atomically(path, |w| {
                std::io::Write::write_all(w, text.as_bytes())
            })?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn a_sample_file_scored_against_itself_is_at_distance_zero() {
        let dir = tempfile::tempdir().unwrap();
        let x = Array2::from_shape_fn((40, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.25);
        let path = dir.path().join("x.npy");
        crate::io::write_points(&path, x.view()).unwrap();
        let json = dir.path().join("report.json");
        let job = EvaluateJob {
            samples: path.clone(),
            target: path,
            options: EvalOptions::default(),
            json: Some(json.clone()),
        };
        let report = job.run().unwrap();
        assert_eq!((report.n_samples, report.n_target, report.dim), (40, 40, 2));
        assert!(report.w2.unwrap().abs() < 1e-6, "{:?}", report.w2);
        assert!(report.energy.abs() < 1e-9, "{}", report.energy);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        assert_eq!(written["n_samples"], 40);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let job = EvaluateJob {
            samples: dir.path().join("none.npy"),
            target: dir.path().join("none.npy"),
            options: EvalOptions::default(),
            json: None,
        };
        let message = job.run().unwrap_err().to_string();
        assert!(message.contains("none.npy"), "{message}");
    }
}
