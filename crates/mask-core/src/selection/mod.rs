//! Selectors: which positions of one example to hide. One file per policy.
//!
//! A selector receives the current masking rate (`mask_prob`, from a [`crate::RateSchedule`])
//! and the example's random stream, and emits *units*: ascending, non-overlapping [`Span`]s of
//! eligible (non-special, non-padding) positions. A unit is a token, a whole word or a span; the
//! corruption step may decide once per unit (SpanBERT) or once per token (BERT).

mod bernoulli;
mod fixed_count;
mod span;
mod whole_word;

pub use bernoulli::BernoulliSelector;
pub use fixed_count::FixedCountSelector;
pub use span::{SpanAnchor, SpanSelector};
pub use whole_word::WholeWordSelector;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::example::{Example, Span};
use crate::rng::MaskRng;

/// Chooses which positions of one example to hide.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// Short name, used in errors and logs.
    fn name(&self) -> &'static str;

    /// Whether the selector reads `word_ids` (and refuses examples without them).
    fn needs_word_ids(&self) -> bool {
        false
    }

    /// Clears `out` and fills it with the chosen units: ascending, non-overlapping, covering
    /// only positions whose `special_mask` is `false`. `mask_prob` is in `[0, 1]`.
    fn select(
        &self,
        ex: &Example<'_>,
        mask_prob: f64,
        rng: &mut MaskRng,
        scratch: &mut SelectScratch,
        out: &mut Vec<Span>,
    );
}

/// Reusable buffers for selectors, so that masking a batch allocates nothing after warm-up.
#[derive(Debug, Default, Clone)]
pub struct SelectScratch {
    pub(crate) positions: Vec<u32>,
    pub(crate) taken: Vec<bool>,
    pub(crate) units: Vec<Span>,
    pub(crate) spans: Vec<Span>,
}

/// `floor(x + u)` with `u ~ U[0, 1)`: an integer whose expectation is exactly `x` (fairseq's
/// probabilistic rounding of the number of masks).
#[inline]
pub(crate) fn prob_round(x: f64, rng: &mut MaskRng) -> usize {
    (x + rng.next_f64()).floor().max(0.0) as usize
}

/// Selector configuration, tagged by `type`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SelectionConfig {
    /// Each eligible token independently with probability `mask_prob` (HF collator semantics).
    Bernoulli {},
    /// Exactly `clamp(round(n * mask_prob), 1, max_predictions)` tokens (BERT semantics).
    FixedCount {
        /// Cap on the number of predictions per sequence (BERT: 20 at length 128).
        max_predictions: u32,
    },
    /// Each word independently with probability `mask_prob`, expanded to all its sub-tokens.
    WholeWord {},
    /// Contiguous spans with truncated-geometric lengths up to a `mask_prob` budget (SpanBERT).
    Span {
        /// Parameter of the geometric length distribution. Default: 0.2
        #[serde(default = "span::default_geometric_p")]
        geometric_p: f64,
        /// Shortest span. Default: 1
        #[serde(default = "span::default_min_span")]
        min_span: u32,
        /// Longest span. Default: 10
        #[serde(default = "span::default_max_span")]
        max_span: u32,
        /// Whether spans count tokens or whole words. Default: token
        #[serde(default)]
        anchor: SpanAnchor,
    },
}

impl Default for SelectionConfig {
    fn default() -> Self {
        SelectionConfig::Bernoulli {}
    }
}

impl SelectionConfig {
    /// Validates the parameters and builds the selector.
    pub fn build(&self) -> Result<AnySelector> {
        Ok(match *self {
            SelectionConfig::Bernoulli {} => AnySelector::Bernoulli(BernoulliSelector),
            SelectionConfig::FixedCount { max_predictions } => {
                AnySelector::FixedCount(FixedCountSelector::new(max_predictions)?)
            }
            SelectionConfig::WholeWord {} => AnySelector::WholeWord(WholeWordSelector),
            SelectionConfig::Span {
                geometric_p,
                min_span,
                max_span,
                anchor,
            } => AnySelector::Span(SpanSelector::new(geometric_p, min_span, max_span, anchor)?),
        })
    }
}

/// Any built-in selector; static dispatch by `match`.
#[derive(Debug, Clone, PartialEq)]
pub enum AnySelector {
    /// See [`BernoulliSelector`].
    Bernoulli(BernoulliSelector),
    /// See [`FixedCountSelector`].
    FixedCount(FixedCountSelector),
    /// See [`WholeWordSelector`].
    WholeWord(WholeWordSelector),
    /// See [`SpanSelector`].
    Span(SpanSelector),
}

impl Selector for AnySelector {
    fn name(&self) -> &'static str {
        match self {
            AnySelector::Bernoulli(s) => s.name(),
            AnySelector::FixedCount(s) => s.name(),
            AnySelector::WholeWord(s) => s.name(),
            AnySelector::Span(s) => s.name(),
        }
    }

    fn needs_word_ids(&self) -> bool {
        match self {
            AnySelector::Bernoulli(s) => s.needs_word_ids(),
            AnySelector::FixedCount(s) => s.needs_word_ids(),
            AnySelector::WholeWord(s) => s.needs_word_ids(),
            AnySelector::Span(s) => s.needs_word_ids(),
        }
    }

    #[inline]
    fn select(
        &self,
        ex: &Example<'_>,
        mask_prob: f64,
        rng: &mut MaskRng,
        scratch: &mut SelectScratch,
        out: &mut Vec<Span>,
    ) {
        match self {
            AnySelector::Bernoulli(s) => s.select(ex, mask_prob, rng, scratch, out),
            AnySelector::FixedCount(s) => s.select(ex, mask_prob, rng, scratch, out),
            AnySelector::WholeWord(s) => s.select(ex, mask_prob, rng, scratch, out),
            AnySelector::Span(s) => s.select(ex, mask_prob, rng, scratch, out),
        }
    }
}

/// Splits an example into words: maximal runs of eligible tokens sharing a word id; eligible
/// tokens without a word id are words of their own. Used by whole-word and word-anchored spans.
pub(crate) fn words_of(ex: &Example<'_>, out: &mut Vec<Span>) {
    out.clear();
    let words = ex.word_ids.unwrap_or(&[]);
    for i in 0..ex.len() {
        if ex.special_mask[i] {
            continue;
        }
        let w = words.get(i).copied().flatten();
        let continues = i > 0 && !ex.special_mask[i - 1] && w.is_some() && words[i - 1] == w;
        match out.last_mut() {
            Some(last) if continues => last.len += 1,
            _ => out.push(Span {
                start: i as u32,
                len: 1,
            }),
        }
    }
}
