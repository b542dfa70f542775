//! Serde configuration of attention masks, tagged by `type` like `mask-core`'s configs.
//!
//! A config describes the *structure* (causal, window 128, documents, ...); the per-batch data
//! (lengths, document ids, exclusion vectors) come from [`MaskInputs`] when the mask is built
//! for a batch.
//!
//! ```toml
//! type = "and"
//! masks = [{ type = "key_padding" }, { type = "sliding_window", window = 128, causal = true }]
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{AttnError, Result};
use crate::mask::{
    AllowAll, And, AttnMask, Causal, Document, KeyPadding, Not, Or, PrefixLm, RandomKeyDrop,
    SlidingWindow, TokenExclusion,
};

fn default_true() -> bool {
    true
}

/// An attention-mask policy description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AttnMaskConfig {
    /// Every pair may attend.
    None {},
    /// Hide padded keys (`lengths` or `pad_mask` input).
    KeyPadding {},
    /// `k <= q`.
    Causal {},
    /// Keys within `window` positions.
    SlidingWindow {
        /// Band width (>= 1).
        window: usize,
        /// Causal band `0 <= q - k < window`, else `|q - k| < window`. Default: true
        #[serde(default = "default_true")]
        causal: bool,
    },
    /// Same document only (`doc_ids` input).
    Document {},
    /// Bidirectional prefix, causal continuation: `prefix_len` for every example, or the
    /// `prefix_lengths` input when absent.
    PrefixLm {
        /// Fixed prefix length. Default: from the inputs (absent from the serialized config:
        /// TOML has no null)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_len: Option<usize>,
    },
    /// The seed's rule: excluded positions hidden as queries and keys (`excluded` input).
    TokenExclusion {},
    /// Each key hidden with probability `drop_prob` (seeded by the inputs' `seed`).
    RandomKeyDrop {
        /// Probability of hiding a key.
        drop_prob: f64,
        /// A different pattern per head. Default: false
        #[serde(default)]
        per_head: bool,
    },
    /// All of `masks`.
    And {
        /// The masks combined.
        masks: Vec<AttnMaskConfig>,
    },
    /// Any of `masks`.
    Or {
        /// The masks combined.
        masks: Vec<AttnMaskConfig>,
    },
    /// The complement of `mask`.
    Not {
        /// The mask negated.
        mask: Box<AttnMaskConfig>,
    },
}

/// Per-batch data that masks are built from. Per-position inputs are row-major
/// `[batch, seq_len]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskInputs<'a> {
    /// Batch size.
    pub batch: usize,
    /// Attention heads.
    pub heads: usize,
    /// Positions per example.
    pub seq_len: usize,
    /// Real tokens per example (right padding).
    pub lengths: Option<&'a [usize]>,
    /// `true` at padded positions.
    pub pad_mask: Option<&'a [bool]>,
    /// Document id per position.
    pub doc_ids: Option<&'a [u32]>,
    /// Prefix length per example.
    pub prefix_lengths: Option<&'a [usize]>,
    /// `true` at excluded positions.
    pub excluded: Option<&'a [bool]>,
    /// Seed of random masks.
    pub seed: u64,
}

impl AttnMaskConfig {
    /// Builds the mask for one batch.
    pub fn build(&self, inputs: &MaskInputs<'_>) -> Result<Box<dyn AttnMask>> {
        let missing = |kind, field| AttnError::MissingInput { kind, field };
        let (b, t) = (inputs.batch, inputs.seq_len);
        Ok(match self {
            AttnMaskConfig::None {} => Box::new(AllowAll),
            AttnMaskConfig::Causal {} => Box::new(Causal),
            AttnMaskConfig::KeyPadding {} => match (inputs.lengths, inputs.pad_mask) {
                (Some(lengths), _) => {
                    if lengths.len() != b {
                        return Err(AttnError::Length {
                            field: "lengths",
                            expected: b,
                            got: lengths.len(),
                        });
                    }
                    Box::new(KeyPadding::from_lengths(lengths, t)?)
                }
                (None, Some(pad)) => Box::new(KeyPadding::from_pad_mask(pad, b, t)?),
                (None, None) => return Err(missing("key_padding", "lengths or pad_mask")),
            },
            AttnMaskConfig::SlidingWindow { window, causal } => {
                Box::new(SlidingWindow::new(*window, *causal)?)
            }
            AttnMaskConfig::Document {} => Box::new(Document::new(
                inputs.doc_ids.ok_or(missing("document", "doc_ids"))?,
                b,
                t,
            )?),
            AttnMaskConfig::PrefixLm { prefix_len } => {
                let prefix = match (prefix_len, inputs.prefix_lengths) {
                    (Some(p), _) => vec![*p; b],
                    (None, Some(p)) if p.len() == b => p.to_vec(),
                    (None, Some(p)) => {
                        return Err(AttnError::Length {
                            field: "prefix_lengths",
                            expected: b,
                            got: p.len(),
                        })
                    }
                    (None, None) => return Err(missing("prefix_lm", "prefix_lengths")),
                };
                Box::new(PrefixLm::new(prefix))
            }
            AttnMaskConfig::TokenExclusion {} => Box::new(TokenExclusion::new(
                inputs
                    .excluded
                    .ok_or(missing("token_exclusion", "excluded"))?,
                b,
                t,
            )?),
            AttnMaskConfig::RandomKeyDrop {
                drop_prob,
                per_head,
            } => Box::new(RandomKeyDrop::new(
                *drop_prob,
                inputs.seed,
                b,
                inputs.heads.max(1),
                t,
                *per_head,
            )?),
            AttnMaskConfig::And { masks } => Box::new(And::new(
                masks
                    .iter()
                    .map(|m| m.build(inputs))
                    .collect::<Result<_>>()?,
            )?),
            AttnMaskConfig::Or { masks } => Box::new(Or::new(
                masks
                    .iter()
                    .map(|m| m.build(inputs))
                    .collect::<Result<_>>()?,
            )?),
            AttnMaskConfig::Not { mask } => Box::new(Not(mask.build(inputs)?)),
        })
    }
}
