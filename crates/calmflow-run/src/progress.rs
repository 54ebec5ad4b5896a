//! The trainer's progress on standard error: a bar redrawn in place on a terminal, one
//! line per logging step otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use calmflow_train::{LogRecord, TrainObserver};

/// Draws `[#####     ] step 1200/5000 loss 0.512 · 3.1 it/s · ETA 20m 10s`.
pub struct ProgressBar {
    label: String,
    terminal: bool,
    started: Instant,
    first_step: Option<usize>,
    last_draw: Instant,
    last: Option<LogRecord>,
    quiet: bool,
}

impl ProgressBar {
    /// A bar titled `label`; `quiet` prints nothing.
    pub fn new(label: &str, quiet: bool) -> Self {
        Self {
            label: label.to_string(),
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            first_step: None,
            last_draw: Instant::now(),
            last: None,
            quiet,
        }
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl TrainObserver for ProgressBar {
    fn on_step(&mut self, step: usize, total: usize, loss: f64) {
        let first = *self.first_step.get_or_insert(step - 1);
        if self.quiet || !self.terminal {
            return;
        }
        if self.last_draw.elapsed().as_millis() < 200 && step != total {
            return;
        }
        self.last_draw = Instant::now();
        let done = (step - first) as f64;
        let rate = done / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta = (total - step) as f64 / rate.max(1e-9);
        let width = 24;
        let filled = (width * step / total.max(1)).min(width);
        let val = self
            .last
            .as_ref()
            .and_then(|r| r.val_loss)
            .map(|v| format!(" val {v:.4}"))
            .unwrap_or_default();
        eprint!(
            "\r{} [{}{}] {step}/{total} loss {loss:.4}{val} · {rate:.1} it/s · ETA {}   ",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
            duration(eta)
        );
        if step == total {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }

    fn on_log(&mut self, record: &LogRecord) {
        if record.val_loss.is_some() {
            self.last = Some(record.clone());
        }
        if self.quiet || self.terminal {
            return;
        }
        let kl = record.kl.map(|k| format!(" kl {k:.4}")).unwrap_or_default();
        let val = record
            .val_loss
            .map(|v| format!(" val {v:.4}"))
            .unwrap_or_default();
        eprintln!(
            "{} step {} loss {:.4} rec {:.4}{kl}{val} lr {:.2e} |g| {:.3} {:.1} it/s",
            self.label,
            record.step,
            record.loss,
            record.rec,
            record.lr,
            record.grad_norm,
            record.steps_per_second
        );
    }

    fn on_checkpoint(&mut self, dir: &Path) {
        if !self.quiet && !self.terminal {
            eprintln!("{} checkpoint {}", self.label, dir.display());
        }
    }
}
