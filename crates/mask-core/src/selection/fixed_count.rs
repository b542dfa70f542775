//! Fixed-count selection (google-research/bert `create_pretraining_data.py`): exactly
//! `clamp(round(n * mask_prob), 1, max_predictions)` eligible tokens, where `n` is the number of
//! eligible tokens (BERT counted `[CLS]`/`[SEP]` too; we count what can actually be masked).
//! A rate of exactly 0 selects nothing.

use super::{SelectScratch, Selector};
use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;

/// Exactly `clamp(round(n * mask_prob), 1, max_predictions)` tokens, uniformly without replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedCountSelector {
    max_predictions: u32,
}

impl FixedCountSelector {
    /// `max_predictions` must be >= 1 (BERT: 20 for length 128, 80 for 512).
    pub fn new(max_predictions: u32) -> Result<Self> {
        if max_predictions == 0 {
            return Err(MaskError::InvalidValue {
                field: "max_predictions",
                value: "0".into(),
                expected: "an integer >= 1",
            });
        }
        Ok(Self { max_predictions })
    }

    /// The cap on predictions per sequence.
    pub fn max_predictions(&self) -> u32 {
        self.max_predictions
    }

    /// Number of tokens chosen among `n_eligible` at rate `mask_prob`.
    pub fn count(&self, n_eligible: usize, mask_prob: f64) -> usize {
        if n_eligible == 0 || mask_prob <= 0.0 {
            return 0;
        }
        let k = (n_eligible as f64 * mask_prob).round() as usize;
        k.clamp(1, self.max_predictions as usize).min(n_eligible)
    }
}

impl Selector for FixedCountSelector {
    fn name(&self) -> &'static str {
        "fixed_count"
    }

    fn select(
        &self,
        ex: &Example<'_>,
        mask_prob: f64,
        rng: &mut MaskRng,
        scratch: &mut SelectScratch,
        out: &mut Vec<Span>,
    ) {
        out.clear();
        let elig = &mut scratch.positions;
        elig.clear();
        elig.extend(
            ex.special_mask
                .iter()
                .zip(0u32..)
                .filter(|(&s, _)| !s)
                .map(|(_, i)| i),
        );
        let n = elig.len();
        let k = self.count(n, mask_prob);
        // Partial Fisher-Yates: the first k entries become a uniform k-subset.
        for j in 0..k {
            let r = j + rng.below((n - j) as u64) as usize;
            elig.swap(j, r);
        }
        let chosen = &mut elig[..k];
        chosen.sort_unstable();
        out.extend(chosen.iter().map(|&p| Span { start: p, len: 1 }));
    }
}
