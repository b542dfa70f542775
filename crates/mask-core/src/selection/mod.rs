//! Selectors: which positions of one example to hide. One file per policy.
//!
//! A selector receives the current masking rate (`mask_prob`, from a [`crate::RateSchedule`])
//! and the example's random stream, and emits *units*: ascending, non-overlapping [`Span`]s of
//! eligible (non-special, non-padding) positions. A unit is a token, a whole word or a span; the
//! corruption step may decide once per unit (SpanBERT) or once per token (BERT).

mod bernoulli;
mod fixed_count;
mod idf;
mod learned;
mod loss_aware;
mod pmi_span;
mod resources;
mod span;
mod stats;
mod tag_weighted;
pub mod weighted;
mod whole_word;

pub use bernoulli::BernoulliSelector;
pub use fixed_count::FixedCountSelector;
pub use idf::IdfSelector;
pub use learned::LearnedSelector;
pub use loss_aware::LossAwareSelector;
pub use pmi_span::{PmiEntry, PmiSpanSelector, PmiTable, PmiTableConfig};
pub use resources::SelectorResources;
pub use span::{SpanAnchor, SpanSelector};
pub use stats::TokenStats;
pub use tag_weighted::{TagWeightedSelector, TagWeights};
pub use whole_word::WholeWordSelector;

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;

/// Chooses which positions of one example to hide.
///
/// A selector only chooses; [`crate::Corruption`] decides what the chosen positions become and
/// [`crate::TokenMasker`] composes both. A custom selector, masking every other eligible token:
///
/// ```
/// use mask_core::selection::{SelectScratch, Selector};
/// use mask_core::{Example, MaskRng, Span};
///
/// #[derive(Debug)]
/// struct EveryOther;
///
/// impl Selector for EveryOther {
///     fn name(&self) -> &'static str {
///         "every_other"
///     }
///     fn select(
///         &self,
///         ex: &Example<'_>,
///         _mask_prob: f64,
///         _rng: &mut MaskRng,
///         _scratch: &mut SelectScratch,
///         out: &mut Vec<Span>,
///     ) {
///         out.clear();
///         let eligible = (0..ex.len() as u32).filter(|&i| !ex.special_mask[i as usize]);
///         out.extend(eligible.step_by(2).map(|start| Span { start, len: 1 }));
///     }
/// }
///
/// let ids = [101, 7, 8, 9, 10, 102];
/// let special = [true, false, false, false, false, true];
/// let mut out = Vec::new();
/// let mut rng = MaskRng::for_example(0, 0, 0, MaskRng::STREAM_TOKENS);
/// EveryOther.select(&Example::new(&ids, &special), 0.5, &mut rng, &mut SelectScratch::default(), &mut out);
/// assert_eq!(out, [Span { start: 1, len: 1 }, Span { start: 3, len: 1 }]);
///
/// // A built-in: SpanBERT's spans, drawn from the example's counter-based stream.
/// let spans = mask_core::SpanSelector::new(0.2, 1, 10, mask_core::SpanAnchor::Token).unwrap();
/// spans.select(&Example::new(&ids, &special), 0.5, &mut rng, &mut SelectScratch::default(), &mut out);
/// assert!(out.iter().all(|s| s.start >= 1 && s.start + s.len <= 5));
/// ```
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// Short name, used in errors and logs.
    fn name(&self) -> &'static str;

    /// Whether the selector reads `word_ids` (and refuses examples without them).
    fn needs_word_ids(&self) -> bool {
        false
    }

    /// Checks per-example inputs the selector needs beyond ids, special mask and word ids
    /// (e.g. POS tags and their range), before [`Selector::select`] is called; errors are
    /// typed ([`MaskError::MissingInput`], ...). Default: nothing to check.
    fn check_example(&self, _ex: &Example<'_>) -> Result<()> {
        Ok(())
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

    /// Whether this is [`BernoulliSelector`]: one independent draw per position, two positions
    /// per 64-bit draw. [`crate::TokenMasker`] then runs selection and corruption fused (with
    /// AVX-512 where the CPU has it), which gives the same masks. Only [`BernoulliSelector`]
    /// (and [`AnySelector`] holding one) may return `true`. Default: `false`.
    fn is_bernoulli(&self) -> bool {
        false
    }

    /// Whether masks depend on state learned from feedback (then batches must be made in step
    /// order). Default: `false`.
    fn is_adaptive(&self) -> bool {
        false
    }

    /// Learner feedback for one example: its original (uncorrupted) ids, the masked positions
    /// (ascending, indices into `ids`) and the per-token loss at each (same length as
    /// `positions`). Default: ignored.
    fn observe(&mut self, _ids: &[u32], _positions: &[u32], _losses: &[f32]) {}

    /// Learned state as exact bytes (`None` for stateless selectors). Bit-exact: floats as
    /// `to_bits` little-endian.
    fn state_bytes(&self) -> Option<Vec<u8>> {
        None
    }

    /// Restores [`Selector::state_bytes`] output. [`MaskError::State`] when corrupt or
    /// mismatched (wrong length, wrong vocab size, wrong magic/version). Default: accepts only
    /// empty bytes (the selector is stateless).
    fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(MaskError::State {
                policy: self.name(),
                reason: format!("stateless, but {} bytes of state were given", bytes.len()),
            })
        }
    }
}

/// Reusable buffers for selectors, so that masking a batch allocates nothing after warm-up.
#[derive(Debug, Default, Clone)]
pub struct SelectScratch {
    pub(crate) positions: Vec<u32>,
    pub(crate) taken: Vec<bool>,
    pub(crate) units: Vec<Span>,
    pub(crate) spans: Vec<Span>,
    /// Per-position weights of the proportional sampler.
    pub(crate) weights: Vec<f64>,
    /// Inclusion probabilities of the proportional sampler.
    pub(crate) probs: Vec<f64>,
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
    /// Inclusion probability proportional to `idf(id)^exponent`, capped at 1, expected count
    /// `mask_prob * n` (needs `token_stats`).
    Idf {
        /// Exponent applied to the IDF (0 = uniform). Default: 1.0
        #[serde(default = "idf::default_exponent")]
        exponent: f64,
    },
    /// Inclusion probability proportional to the weight of each token's tag (needs
    /// `tag_weights` and per-example `tags`).
    TagWeighted {},
    /// Whole high-PMI n-grams (greedy longest match) or single tokens, drawn uniformly up to
    /// the `mask_prob * n` budget (needs `pmi`; Levine et al. 2021).
    PmiSpan {
        /// Longest n-gram masked as one unit. Default: 4
        #[serde(default = "pmi_span::default_max_ngram")]
        max_ngram: u32,
    },
    /// Masks tokens with a high running loss (fed back by the learner) more often, at the same
    /// overall rate (needs `vocab_size`; adaptive, state in checkpoints).
    LossAware {
        /// Decay of the per-token-id loss moving average. Default: 0.99
        #[serde(default = "loss_aware::default_ema_decay")]
        ema_decay: f64,
        /// Softmax temperature, in standard deviations of the loss. Default: 1.0
        #[serde(default = "loss_aware::default_temperature")]
        temperature: f64,
        /// Share of uniform weight mixed in (keeps every token maskable). Default: 0.2
        #[serde(default = "loss_aware::default_uniform_mix")]
        uniform_mix: f64,
    },
    /// A small scorer network, trained alongside the model to predict each token's loss, masks
    /// high-predicted-loss tokens more often at the same overall rate (needs `vocab_size`;
    /// adaptive, state in checkpoints).
    Learned {
        /// Token embedding width of the scorer. Default: 8
        #[serde(default = "learned::default_embed_dim")]
        embed_dim: u32,
        /// Hidden units of the scorer. Default: 16
        #[serde(default = "learned::default_hidden")]
        hidden: u32,
        /// SGD learning rate of the scorer. Default: 0.05
        #[serde(default = "learned::default_learning_rate")]
        learning_rate: f64,
        /// Softmax temperature, in nats of predicted loss. Default: 1.0
        #[serde(default = "loss_aware::default_temperature")]
        temperature: f64,
        /// Share of uniform weight mixed in (keeps every token maskable). Default: 0.2
        #[serde(default = "loss_aware::default_uniform_mix")]
        uniform_mix: f64,
        /// Seed of the scorer's initialisation. Default: 0
        #[serde(default = "learned::default_init_seed")]
        init_seed: u64,
    },
}

impl Default for SelectionConfig {
    fn default() -> Self {
        SelectionConfig::Bernoulli {}
    }
}

impl SelectionConfig {
    /// Validates the parameters and builds a selector that needs neither the vocabulary size
    /// nor external resources; the others are refused with [`MaskError::MissingResource`]
    /// (use [`SelectionConfig::build_with`]).
    pub fn build(&self) -> Result<AnySelector> {
        self.build_with(0, &SelectorResources::default())
    }

    /// Validates the parameters and builds the selector for a vocabulary of `vocab_size` ids,
    /// taking what it needs (corpus statistics, PMI table, tag weights) from `res`.
    pub fn build_with(&self, vocab_size: u32, res: &SelectorResources) -> Result<AnySelector> {
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
            SelectionConfig::Idf { exponent } => {
                let stats = res
                    .token_stats
                    .as_deref()
                    .ok_or(MaskError::MissingResource {
                        policy: "idf",
                        resource: "token_stats",
                    })?;
                if stats.vocab_size() != vocab_size {
                    return Err(MaskError::InvalidValue {
                        field: "token_stats.vocab_size",
                        value: stats.vocab_size().to_string(),
                        expected: "the vocabulary size of the masking config",
                    });
                }
                AnySelector::Idf(IdfSelector::new(stats, exponent)?)
            }
            SelectionConfig::TagWeighted {} => {
                let weights = res.tag_weights.clone().ok_or(MaskError::MissingResource {
                    policy: "tag_weighted",
                    resource: "tag_weights",
                })?;
                AnySelector::TagWeighted(TagWeightedSelector::new(weights))
            }
            SelectionConfig::PmiSpan { max_ngram } => {
                let table = res.pmi.clone().ok_or(MaskError::MissingResource {
                    policy: "pmi_span",
                    resource: "pmi",
                })?;
                AnySelector::PmiSpan(PmiSpanSelector::new(table, max_ngram)?)
            }
            SelectionConfig::LossAware {
                ema_decay,
                temperature,
                uniform_mix,
            } => AnySelector::LossAware(LossAwareSelector::new(
                vocab_size,
                ema_decay,
                temperature,
                uniform_mix,
            )?),
            SelectionConfig::Learned {
                embed_dim,
                hidden,
                learning_rate,
                temperature,
                uniform_mix,
                init_seed,
            } => AnySelector::Learned(LearnedSelector::new(
                vocab_size,
                embed_dim,
                hidden,
                learning_rate,
                temperature,
                uniform_mix,
                init_seed,
            )?),
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
    /// See [`IdfSelector`].
    Idf(IdfSelector),
    /// See [`TagWeightedSelector`].
    TagWeighted(TagWeightedSelector),
    /// See [`PmiSpanSelector`].
    PmiSpan(PmiSpanSelector),
    /// See [`LossAwareSelector`].
    LossAware(LossAwareSelector),
    /// See [`LearnedSelector`].
    Learned(LearnedSelector),
}

impl AnySelector {
    /// The selector inside, as a trait object (every method but `select` forwards through it).
    pub fn as_dyn(&self) -> &dyn Selector {
        match self {
            AnySelector::Bernoulli(s) => s,
            AnySelector::FixedCount(s) => s,
            AnySelector::WholeWord(s) => s,
            AnySelector::Span(s) => s,
            AnySelector::Idf(s) => s,
            AnySelector::TagWeighted(s) => s,
            AnySelector::PmiSpan(s) => s,
            AnySelector::LossAware(s) => s,
            AnySelector::Learned(s) => s,
        }
    }

    /// The selector inside, as a mutable trait object.
    pub fn as_dyn_mut(&mut self) -> &mut dyn Selector {
        match self {
            AnySelector::Bernoulli(s) => s,
            AnySelector::FixedCount(s) => s,
            AnySelector::WholeWord(s) => s,
            AnySelector::Span(s) => s,
            AnySelector::Idf(s) => s,
            AnySelector::TagWeighted(s) => s,
            AnySelector::PmiSpan(s) => s,
            AnySelector::LossAware(s) => s,
            AnySelector::Learned(s) => s,
        }
    }
}

impl Selector for AnySelector {
    fn name(&self) -> &'static str {
        self.as_dyn().name()
    }

    fn needs_word_ids(&self) -> bool {
        self.as_dyn().needs_word_ids()
    }

    fn check_example(&self, ex: &Example<'_>) -> Result<()> {
        self.as_dyn().check_example(ex)
    }

    fn is_adaptive(&self) -> bool {
        self.as_dyn().is_adaptive()
    }

    fn is_bernoulli(&self) -> bool {
        self.as_dyn().is_bernoulli()
    }

    fn observe(&mut self, ids: &[u32], positions: &[u32], losses: &[f32]) {
        self.as_dyn_mut().observe(ids, positions, losses)
    }

    fn state_bytes(&self) -> Option<Vec<u8>> {
        self.as_dyn().state_bytes()
    }

    fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.as_dyn_mut().load_state_bytes(bytes)
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
            AnySelector::Idf(s) => s.select(ex, mask_prob, rng, scratch, out),
            AnySelector::TagWeighted(s) => s.select(ex, mask_prob, rng, scratch, out),
            AnySelector::PmiSpan(s) => s.select(ex, mask_prob, rng, scratch, out),
            AnySelector::LossAware(s) => s.select(ex, mask_prob, rng, scratch, out),
            AnySelector::Learned(s) => s.select(ex, mask_prob, rng, scratch, out),
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
