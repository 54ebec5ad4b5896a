//! The training log: one JSON line per logged step, each averaging the steps since the
//! line before, and what a checkpoint keeps of it so that a run resumed from a checkpoint
//! writes the lines of the uninterrupted run (for checkpoints that keep it, written since
//! 2026-12-07).

use std::io::Write as _;
use std::path::Path;

use calmflow_data::write_atomically;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Steps completed.
    pub step: usize,
    /// Mean training loss since the previous record.
    pub loss: f64,
    /// Mean reconstruction (or velocity) term since the previous record.
    pub rec: f64,
    /// Mean KL term since the previous record (absent without one).
    pub kl: Option<f64>,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Global gradient norm of the last step, before clipping.
    pub grad_norm: f64,
    /// Validation loss, on validation steps.
    pub val_loss: Option<f64>,
    /// Training seconds so far.
    pub seconds: f64,
    /// Steps per second since the previous record.
    pub steps_per_second: f64,
}

/// The loss terms summed over the steps since the last log line. A checkpoint keeps it:
/// the next line averages steps on both sides of an interruption, as the uninterrupted
/// run's does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogWindow {
    /// Steps summed.
    pub steps: usize,
    /// Sum of the training losses.
    pub loss: f64,
    /// Sum of the reconstruction (or velocity) terms.
    pub rec: f64,
    /// Sum of the KL terms, once a step has reported one.
    pub kl: Option<f64>,
}

impl LogWindow {
    /// Adds one step's terms.
    pub fn add(&mut self, loss: f64, rec: f64, kl: Option<f64>) {
        self.steps = self.steps.saturating_add(1);
        self.loss += loss;
        self.rec += rec;
        if let Some(kl) = kl {
            self.kl = Some(self.kl.unwrap_or(0.0) + kl);
        }
    }

    /// Whether a checkpoint at `step` can hold this window: no more steps than the run
    /// has taken, finite sums, none without steps.
    pub fn is_consistent_with(&self, step: usize) -> bool {
        let sums = [self.loss, self.rec, self.kl.unwrap_or(0.0)];
        self.steps <= step
            && sums.iter().all(|s| s.is_finite())
            && (self.steps > 0 || sums.iter().all(|&s| s == 0.0))
    }

    /// The means `(loss, rec, kl)` over the window (`NaN` when it is empty).
    pub fn means(&self) -> (f64, f64, Option<f64>) {
        let n = self.steps as f64;
        (self.loss / n, self.rec / n, self.kl.map(|kl| kl / n))
    }
}

/// Opens the log at `path` for a run standing at `step`: emptied for a fresh run (step
/// 0); otherwise the lines of steps after `step` are dropped first (a run stopped past
/// its last checkpoint logged steps the resumed run repeats, and a killed one may have
/// left half a line), and new lines are appended.
pub(crate) fn open_log(path: &Path, step: usize) -> Result<std::fs::File> {
    let io = |e| TrainError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if step == 0 {
        return options.write(true).truncate(true).open(path).map_err(io);
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            // A line that is not UTF-8 is no log line: dropped like any unreadable one.
            let text = String::from_utf8_lossy(&bytes);
            let kept: Vec<&str> = text
                .lines()
                .filter(|line| line_step(line).is_some_and(|s| s <= step))
                .collect();
            if kept.len() != text.lines().count() || !(text.is_empty() || text.ends_with('\n')) {
                write_atomically(path, |w| {
                    kept.iter().try_for_each(|line| writeln!(w, "{line}"))
                })?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    options.append(true).open(path).map_err(io)
}

/// The step of a whole log line (`None` for a line that is not one).
fn line_step(line: &str) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("step")?.as_u64().map(|s| s as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_averages_its_steps_and_sums_kl_only_once_reported() {
        let mut w = LogWindow::default();
        assert!(w.means().0.is_nan());
        w.add(1.0, 0.5, None);
        w.add(3.0, 1.5, Some(2.0));
        assert_eq!(w.means(), (2.0, 1.0, Some(1.0)));
        let text = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<LogWindow>(&text).unwrap(), w);
        assert!(w.is_consistent_with(2) && !w.is_consistent_with(1));
        let mut damaged = w;
        damaged.loss = f64::INFINITY;
        assert!(!damaged.is_consistent_with(5));
        let empty_with_sums = LogWindow {
            loss: 1.0,
            ..LogWindow::default()
        };
        assert!(!empty_with_sums.is_consistent_with(5));
        assert!(LogWindow::default().is_consistent_with(0));
    }

    #[test]
    fn resuming_drops_the_lines_past_the_step_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let line = |s: usize| format!("{{\"step\":{s},\"loss\":1.0}}");
        let text = format!(
            "{}\n{}\n\u{fffd}\n{}\n{{\"step\":7,\"lo",
            line(2),
            line(4),
            line(6)
        );
        let mut bytes = text.into_bytes();
        // Not UTF-8 (a byte of a torn multi-byte character): dropped with its line.
        let at = bytes.iter().position(|&b| b == 0xef).unwrap();
        bytes[at] = 0xff;
        std::fs::write(&path, bytes).unwrap();
        let mut file = open_log(&path, 4).unwrap();
        writeln!(file, "{}", line(5)).unwrap();
        drop(file);
        let expected = format!("{}\n{}\n{}\n", line(2), line(4), line(5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        // A log that is already whole is appended to as it is; step 0 empties it.
        let file = open_log(&path, 5).unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        drop(open_log(&path, 0).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        // A missing log is created.
        let other = dir.path().join("new.jsonl");
        drop(open_log(&other, 3).unwrap());
        assert!(other.exists());
    }
}
