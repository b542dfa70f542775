//! Small strategies the learner composes: early stopping on the task's score, and how often
//! checkpoints are written and how many are kept.

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

/// Stops after `patience` evaluations without a better (lower) score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct EarlyStopping {
    /// Best score so far.
    pub best: Option<f64>,
    /// Evaluations since the best one.
    pub stale: u32,
}

impl EarlyStopping {
    /// Records `score`; returns whether `patience` (if any) is now exhausted.
    pub fn update(&mut self, score: f64, patience: Option<u32>) -> bool {
        if self.best.is_none_or(|b| score < b) {
            self.best = Some(score);
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        patience.is_some_and(|p| self.stale >= p)
    }
}

/// When checkpoints are written and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPolicy {
    /// Write one every this many steps (and at the end of every session). At least 1.
    pub every: u64,
    /// Keep the newest this many. At least 1.
    pub keep_last: usize,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every: 100,
            keep_last: 3,
        }
    }
}

impl CheckpointPolicy {
    /// Checked: zero is refused, never coerced.
    pub fn new(every: u64, keep_last: usize) -> Result<Self> {
        if every == 0 {
            return Err(invalid("checkpoint_every", 0, "at least 1"));
        }
        if keep_last == 0 {
            return Err(invalid("keep_last", 0, "at least 1"));
        }
        Ok(Self { every, keep_last })
    }

    /// Only at the end of each session (every `steps` steps).
    pub fn at_end(steps: u64) -> Self {
        Self {
            every: steps.max(1),
            keep_last: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_counts_evaluations_without_improvement() {
        let mut e = EarlyStopping::default();
        assert!(!e.update(5.0, Some(2)));
        assert!(!e.update(5.0, Some(2)), "equal is not better: stale 1");
        assert!(e.update(6.0, Some(2)), "stale 2 = patience");
        let mut e = EarlyStopping::default();
        for s in [5.0, 6.0, 4.0, 7.0] {
            assert!(!e.update(s, None));
        }
        assert_eq!((e.best, e.stale), (Some(4.0), 1));
    }

    /// Regression (run-state issue, finding 8): `--checkpoint-every 0` and `--keep-last 0` were
    /// silently coerced to 1.
    #[test]
    fn zero_is_refused() {
        assert!(CheckpointPolicy::new(0, 3)
            .unwrap_err()
            .to_string()
            .starts_with("`checkpoint_every` = 0"));
        assert!(CheckpointPolicy::new(5, 0)
            .unwrap_err()
            .to_string()
            .starts_with("`keep_last` = 0"));
    }
}
