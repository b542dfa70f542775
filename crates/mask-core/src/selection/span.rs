//! Span masking (SpanBERT, Joshi et al. 2020, section 3.1): repeatedly sample a span length from
//! a geometric distribution truncated to `[min_span, max_span]` (p = 0.2, max 10: mean 3.8) and a
//! uniformly random start, and mask the span, until `mask_prob` of the eligible tokens are masked.
//!
//! - Token anchor: lengths count tokens; a span stops early at a special/padding position, at an
//!   already-masked position, or when the budget is reached, so the budget is met exactly.
//! - Word anchor (SpanBERT proper): lengths count whole words and spans start at word starts; a
//!   word is added while the budget is not yet reached, so the count may overshoot by less than
//!   one word.
//!
//! The budget is `floor(mask_prob * n + u)`, `u ~ U[0, 1)` (fairseq's probabilistic rounding),
//! whose expectation is exactly `mask_prob * n`. Starts are drawn among all eligible positions
//! (words); a start that is already masked is rejected and redrawn, and after `4 * budget + 16`
//! rejections starts are drawn among the free positions only, so the loop always terminates.

use rand_distr::{Distribution, Geometric};
use serde::{Deserialize, Serialize};

use super::{prob_round, words_of, SelectScratch, Selector};
use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;

/// What a span length counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanAnchor {
    /// Lengths in tokens, spans start anywhere.
    #[default]
    Token,
    /// Lengths in whole words, spans start at word starts (needs `word_ids`).
    Word,
}

pub(crate) fn default_geometric_p() -> f64 {
    0.2
}
pub(crate) fn default_min_span() -> u32 {
    1
}
pub(crate) fn default_max_span() -> u32 {
    10
}

/// Contiguous spans with truncated-geometric lengths up to a `mask_prob` budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanSelector {
    geometric_p: f64,
    min_span: u32,
    max_span: u32,
    anchor: SpanAnchor,
    /// `Geometric(p)`: failures before the first success, `P(K = k) = p (1 - p)^k`.
    geometric: Geometric,
}

impl SpanSelector {
    /// `geometric_p` in `(0, 1]`, `1 <= min_span <= max_span`.
    pub fn new(geometric_p: f64, min_span: u32, max_span: u32, anchor: SpanAnchor) -> Result<Self> {
        let bad_p = || MaskError::InvalidValue {
            field: "geometric_p",
            value: geometric_p.to_string(),
            expected: "a probability in (0, 1]",
        };
        if !(geometric_p.is_finite() && geometric_p > 0.0 && geometric_p <= 1.0) {
            return Err(bad_p());
        }
        if min_span == 0 {
            return Err(MaskError::InvalidValue {
                field: "min_span",
                value: "0".into(),
                expected: "an integer >= 1",
            });
        }
        if min_span > max_span {
            return Err(MaskError::SpanRange { min_span, max_span });
        }
        // rand_distr accepts every p the check above lets through; mapped, not unwrapped.
        let geometric = Geometric::new(geometric_p).map_err(|_| bad_p())?;
        Ok(Self {
            geometric_p,
            min_span,
            max_span,
            anchor,
            geometric,
        })
    }

    /// SpanBERT's setting: p = 0.2, lengths 1..=10, word anchored.
    pub fn spanbert() -> Self {
        Self::new(0.2, 1, 10, SpanAnchor::Word).expect("valid constants")
    }

    /// The anchor.
    pub fn anchor(&self) -> SpanAnchor {
        self.anchor
    }

    /// Expected span length under the truncated geometric distribution.
    pub fn mean_length(&self) -> f64 {
        let q = 1.0 - self.geometric_p;
        let mut num = 0.0;
        let mut den = 0.0;
        for k in 0..=(self.max_span - self.min_span) {
            let w = self.geometric_p * q.powi(k as i32);
            num += (self.min_span + k) as f64 * w;
            den += w;
        }
        num / den
    }

    /// Draws one span length from the geometric distribution truncated to
    /// `[min_span, max_span]`: `min_span + (K mod m)` with `K ~ Geometric(p)` (`rand_distr`) and
    /// `m = max_span - min_span + 1`. Exact, with one draw of `K`: by memorylessness
    /// `P(K mod m = j) = sum_i p q^(i m + j) = p q^j / (1 - q^m)`, the truncated pmf.
    #[inline]
    pub fn sample_length(&self, rng: &mut MaskRng) -> u32 {
        if self.geometric_p >= 1.0 || self.min_span == self.max_span {
            return self.min_span;
        }
        let m = u64::from(self.max_span - self.min_span) + 1;
        self.min_span + (self.geometric.sample(rng) % m) as u32
    }
}

impl Selector for SpanSelector {
    fn name(&self) -> &'static str {
        "span"
    }

    fn needs_word_ids(&self) -> bool {
        self.anchor == SpanAnchor::Word
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
        // Units: single eligible tokens (token anchor) or whole words (word anchor).
        let units = &mut scratch.units;
        match self.anchor {
            SpanAnchor::Token => {
                units.clear();
                units.extend(
                    ex.special_mask
                        .iter()
                        .zip(0u32..)
                        .filter(|(&s, _)| !s)
                        .map(|(_, i)| Span { start: i, len: 1 }),
                );
            }
            SpanAnchor::Word => words_of(ex, units),
        }
        let n_tokens: usize = units.iter().map(|u| u.len as usize).sum();
        if n_tokens == 0 || mask_prob <= 0.0 {
            return;
        }
        let budget = prob_round(mask_prob * n_tokens as f64, rng).min(n_tokens);
        let taken = &mut scratch.taken;
        taken.clear();
        taken.resize(ex.len(), false);
        let spans = &mut scratch.spans;
        spans.clear();
        let max_rejections = 4 * budget + 16;
        let mut rejections = 0usize;
        let mut masked = 0usize;
        while masked < budget {
            let len = self.sample_length(rng);
            let first = if rejections < max_rejections {
                let u = rng.below(units.len() as u64) as usize;
                if taken[units[u].start as usize] {
                    rejections += 1;
                    continue;
                }
                u
            } else {
                // Too many rejections: draw among the free units only (always terminates).
                let free = &mut scratch.positions;
                free.clear();
                free.extend(
                    (0..units.len() as u32).filter(|&u| !taken[units[u as usize].start as usize]),
                );
                if free.is_empty() {
                    break;
                }
                free[rng.below(free.len() as u64) as usize] as usize
            };
            let start = units[first].start;
            let mut end = start; // exclusive, in tokens
            let mut u = first;
            let mut added_units = 0;
            while added_units < len && u < units.len() && masked < budget {
                let unit = units[u];
                // Units must be adjacent (no special token between them) and free.
                if unit.start != end || taken[unit.start as usize] {
                    break;
                }
                let take = match self.anchor {
                    SpanAnchor::Token => 1,
                    SpanAnchor::Word => unit.len as usize,
                };
                for p in unit.start as usize..unit.start as usize + take {
                    taken[p] = true;
                }
                end += take as u32;
                masked += take;
                added_units += 1;
                u += 1;
            }
            if end == start {
                rejections += 1;
                continue;
            }
            spans.push(Span {
                start,
                len: end - start,
            });
        }
        spans.sort_unstable_by_key(|s| s.start);
        out.extend_from_slice(spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spanbert_mean_length_is_3_8() {
        let m = SpanSelector::spanbert().mean_length();
        // SpanBERT section 3.1: "mean span length 3.8".
        assert!((m - 3.8).abs() < 0.01, "{m}");
    }

    #[test]
    fn invalid_parameters_are_named() {
        assert_eq!(
            SpanSelector::new(0.2, 5, 3, SpanAnchor::Token),
            Err(MaskError::SpanRange {
                min_span: 5,
                max_span: 3
            })
        );
        let e = SpanSelector::new(0.0, 1, 3, SpanAnchor::Token).unwrap_err();
        assert!(e.to_string().contains("geometric_p"), "{e}");
        assert!(SpanSelector::new(0.2, 0, 3, SpanAnchor::Token).is_err());
    }
}
