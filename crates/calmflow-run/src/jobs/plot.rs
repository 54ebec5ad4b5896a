//! `calmflow plot`: a [`PlotJob`] draws point files as a scatter plot over an optional
//! target, or a trajectory file `(n, steps, D)` as paths, to PNG or SVG.

use std::path::PathBuf;

use calmflow_plot::{self as plot, Series};
use ndarray::{Array2, Ix3};

use crate::error::{AppError, AppResult};
use crate::io::read_points;

/// Colours of the sample files, in order (repeating after the fifth).
const PALETTE: [(u8, u8, u8); 5] = [
    plot::CALMFLOW,
    plot::BASELINE,
    plot::SOURCE,
    (148, 103, 189),
    (255, 127, 14),
];

/// `calmflow plot`.
#[derive(Debug, Clone)]
pub struct PlotJob {
    /// Target points drawn beneath everything else.
    pub target: Option<PathBuf>,
    /// Sample files, one series each, labelled by file stem.
    pub samples: Vec<PathBuf>,
    /// A `.npy` of trajectories `(n, steps, D)`; drawn instead of the samples.
    pub trajectories: Option<PathBuf>,
    /// The image (`.png` or `.svg`).
    pub out: PathBuf,
    /// Its title.
    pub title: String,
}

impl PlotJob {
    /// Reads the files and writes the plot to `out`.
    pub fn run(&self) -> AppResult<()> {
        let target = self.target.as_deref().map(read_points).transpose()?;
        if let Some(path) = &self.trajectories {
            let paths = calmflow_data::npy::read_npy(path)?
                .into_dimensionality::<Ix3>()
                .map_err(|_| {
                    AppError::Other(format!(
                        "{}: trajectories must be a 3-D array (n, steps, D)",
                        path.display()
                    ))
                })?;
            plot::trajectories(&self.out, &self.title, &paths, target.as_ref(), 300)?;
            return Ok(());
        }
        let sets: Vec<(String, Array2<f32>)> = self
            .samples
            .iter()
            .map(|p| {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                read_points(p).map(|x| (name, x))
            })
            .collect::<Result<_, _>>()?;
        if sets.is_empty() && target.is_none() {
            return Err(AppError::Other(
                "nothing to plot: give --samples, --target or --trajectories".into(),
            ));
        }
        let mut series = Vec::new();
        if let Some(t) = &target {
            series.push(Series {
                label: "target",
                points: t,
                color: plot::TARGET,
            });
        }
        for (i, (name, x)) in sets.iter().enumerate() {
            series.push(Series {
                label: name,
                points: x,
                color: PALETTE[i % PALETTE.len()],
            });
        }
        plot::scatter(&self.out, &self.title, &series)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &std::path::Path) -> PlotJob {
        PlotJob {
            target: None,
            samples: Vec::new(),
            trajectories: None,
            out: dir.join("plot.svg"),
            title: "t".into(),
        }
    }

    #[test]
    fn sample_files_become_labelled_series() {
        let dir = tempfile::tempdir().unwrap();
        let x = Array2::from_shape_fn((30, 2), |(i, j)| (i + 3 * j) as f32 * 0.1);
        let path = dir.path().join("calm_samples.npy");
        crate::io::write_points(&path, x.view()).unwrap();
        let plot = PlotJob {
            samples: vec![path.clone()],
            target: Some(path),
            ..job(dir.path())
        };
        plot.run().unwrap();
        let svg = std::fs::read_to_string(&plot.out).unwrap();
        assert!(
            svg.contains("calm_samples") && svg.contains("target"),
            "{svg}"
        );
    }

    #[test]
    fn nothing_to_plot_and_flat_trajectories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let message = job(dir.path()).run().unwrap_err().to_string();
        assert!(message.starts_with("nothing to plot"), "{message}");
        let flat = dir.path().join("flat.npy");
        crate::io::write_points(&flat, Array2::<f32>::zeros((4, 2)).view()).unwrap();
        let plot = PlotJob {
            trajectories: Some(flat),
            ..job(dir.path())
        };
        let message = plot.run().unwrap_err().to_string();
        assert!(message.contains("must be a 3-D array"), "{message}");
        assert!(!plot.out.exists());
    }
}
