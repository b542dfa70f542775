//! A live progress line on stderr: bar, step, loss, tokens/s and ETA. Redrawn in place on a
//! terminal; on a pipe (CI logs) printed at every 10%.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Progress of one run.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    start: Instant,
    tokens: u64,
    tty: bool,
    last_decile: u64,
    done_from: u64,
}

impl Progress {
    /// Starts timing `total` steps (of which `done` are already done, when resuming).
    pub fn new(label: &str, total: u64, done: u64) -> Self {
        Self {
            label: label.to_string(),
            total: total.max(1),
            start: Instant::now(),
            tokens: 0,
            tty: std::io::stderr().is_terminal(),
            last_decile: done * 10 / total.max(1),
            done_from: done,
        }
    }

    /// Records a finished step.
    pub fn step(&mut self, step_done: u64, tokens: usize, loss: f64) {
        self.tokens += tokens as u64;
        let elapsed = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = self.tokens as f64 / elapsed;
        let per_step = elapsed / (step_done - self.done_from).max(1) as f64;
        let eta = per_step * self.total.saturating_sub(step_done) as f64;
        let frac = step_done as f64 / self.total as f64;
        let filled = (frac * 24.0).round() as usize;
        let line = format!(
            "{} [{}{}] {:>3.0}% {}/{} loss {:.3} | {:.0} tok/s | ETA {}",
            self.label,
            "#".repeat(filled),
            "-".repeat(24 - filled.min(24)),
            frac * 100.0,
            step_done,
            self.total,
            loss,
            rate,
            format_secs(eta)
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            if step_done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let decile = step_done * 10 / self.total;
            if decile > self.last_decile || step_done >= self.total {
                self.last_decile = decile;
                let _ = writeln!(err, "{line}");
            }
        }
    }
}

/// `73s` -> `1m13s`.
pub fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
