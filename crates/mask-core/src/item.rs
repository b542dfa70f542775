//! Item masking for sequential recommendation: the Cloze task of BERT4Rec (Sun et al. 2019,
//! "BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from
//! Transformer", section 3.6).
//!
//! A user's interaction history is a sequence of item ids `1..=n_items` (padding `pad_id`,
//! default 0). Two modes:
//!
//! - **Cloze** (training): each item is replaced by the mask item `mask_id` with probability
//!   `mask_prob`. Unlike BERT there is no random or keep branch: a chosen item is *always*
//!   replaced by the mask item (BERT4Rec's setting). The label is the original item. A
//!   non-empty sequence gets at least one masked item: when no item was drawn, one uniformly
//!   random item is masked instead. This biases the rate up slightly: the expected number of
//!   masked items in a sequence of `n` items is `n p + (1 - p)^n` instead of `n p` (for
//!   `p = 0.2`: +0.33 items at `n = 5`, +0.01 at `n = 20`). With `mask_prob = 0` exactly one
//!   random item per sequence is masked.
//! - **MaskLast** (evaluation, and BERT4Rec's extra training samples): only the last item of the
//!   sequence is masked, so the model predicts the next item from the whole history.
//!
//! Positions that are padding (`special_mask[i]` or `ids[i] == pad_id`) are never chosen or
//! changed. Randomness is the counter-based stream
//! `MaskRng::for_example(seed, regime.effective_epoch(epoch), index, MaskRng::STREAM_ITEMS)`, one
//! 32-bit uniform per position (padding included, so the layout does not depend on padding),
//! then one draw for the fallback position if needed. Static masking with `dupe_factor = k`
//! (BERT4Rec used 10) and dynamic masking are the same function of the effective epoch.
//!
//! ```
//! use mask_core::{Example, ItemMaskingConfig, MaskContext, MaskPolicy};
//!
//! let policy = ItemMaskingConfig::new(100).build()?; // items 1..=100, pad 0, mask 101
//! let items = [5, 17, 42, 8, 0, 0];
//! let pad = [false, false, false, false, true, true];
//! let out = policy.mask(&Example::new(&items, &pad), &MaskContext::new(7, 0, 3, 0))?;
//! assert!(out.input_ids.iter().any(|&i| i == 101));
//! # Ok::<(), mask_core::MaskError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{check_prob, MaskError, Result};
use crate::example::{Example, IGNORE_INDEX};
use crate::policy::{MaskContext, MaskPolicy, Scratch};
use crate::regime::Regime;
use crate::rng::{threshold_u32, MaskRng};

/// Which items of a sequence are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ItemMaskMode {
    /// Each item with probability `mask_prob`, at least one per non-empty sequence (training).
    Cloze {},
    /// Only the last non-padding item (leave-one-out evaluation).
    MaskLast {},
}

impl Default for ItemMaskMode {
    fn default() -> Self {
        ItemMaskMode::Cloze {}
    }
}

fn default_mask_prob() -> f64 {
    0.2
}

/// Configuration of an [`ItemMasker`].
///
/// ```toml
/// n_items = 1682
/// mask_id = 1683
/// mask_prob = 0.2
/// mode = { type = "cloze" }
/// regime = { type = "static", dupe_factor = 10 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemMaskingConfig {
    /// Probability that an item is masked in Cloze mode (BERT4Rec: 0.2 on MovieLens). Default: 0.2
    #[serde(default = "default_mask_prob")]
    pub mask_prob: f64,
    /// Cloze or mask-last. Default: cloze
    #[serde(default)]
    pub mode: ItemMaskMode,
    /// Static (with `dupe_factor`) or dynamic. Default: dynamic
    #[serde(default)]
    pub regime: Regime,
    /// Padding id: 0 or an id above `n_items`, different from `mask_id`. Default: 0
    #[serde(default)]
    pub pad_id: u32,
    /// The mask item: an id above `n_items` (usually `n_items + 1`).
    pub mask_id: u32,
    /// Number of items; items are the ids `1..=n_items`.
    pub n_items: u32,
}

impl ItemMaskingConfig {
    /// Cloze at 0.2, dynamic, pad 0, mask `n_items + 1` (BERT4Rec's vocabulary layout).
    pub fn new(n_items: u32) -> Self {
        Self {
            mask_prob: default_mask_prob(),
            mode: ItemMaskMode::default(),
            regime: Regime::default(),
            pad_id: 0,
            mask_id: n_items.saturating_add(1),
            n_items,
        }
    }

    /// Sets the Cloze probability.
    pub fn with_mask_prob(mut self, mask_prob: f64) -> Self {
        self.mask_prob = mask_prob;
        self
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: ItemMaskMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the regime.
    pub fn with_regime(mut self, regime: Regime) -> Self {
        self.regime = regime;
        self
    }

    /// Validates every field and builds the policy.
    pub fn build(&self) -> Result<ItemMasker> {
        check_prob("mask_prob", self.mask_prob)?;
        self.regime.validate()?;
        if self.n_items == 0 {
            return Err(MaskError::InvalidValue {
                field: "n_items",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        if self.mask_id <= self.n_items || self.mask_id == u32::MAX {
            return Err(MaskError::InvalidValue {
                field: "mask_id",
                value: self.mask_id.to_string(),
                expected: "an id above `n_items` (items are 1..=n_items) and below u32::MAX",
            });
        }
        if (self.pad_id != 0 && self.pad_id <= self.n_items) || self.pad_id == u32::MAX {
            return Err(MaskError::InvalidValue {
                field: "pad_id",
                value: self.pad_id.to_string(),
                expected: "0 or an id above `n_items` (items are 1..=n_items), below u32::MAX",
            });
        }
        if self.pad_id == self.mask_id {
            return Err(MaskError::InvalidValue {
                field: "pad_id",
                value: self.pad_id.to_string(),
                expected: "an id different from `mask_id`",
            });
        }
        Ok(ItemMasker {
            threshold: threshold_u32(self.mask_prob),
            config: self.clone(),
        })
    }
}

/// The item-masking policy (Cloze or mask-last), built from an [`ItemMaskingConfig`].
///
/// Implements [`MaskPolicy`], so it works with [`crate::BatchMasker`]; its vocabulary is
/// `max(n_items, pad_id, mask_id) + 1` ids.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMasker {
    config: ItemMaskingConfig,
    threshold: u64,
}

impl ItemMasker {
    /// The validated config.
    pub fn config(&self) -> &ItemMaskingConfig {
        &self.config
    }

    /// The mask item.
    pub fn mask_id(&self) -> u32 {
        self.config.mask_id
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.config.pad_id
    }

    /// The mode.
    pub fn mode(&self) -> ItemMaskMode {
        self.config.mode
    }

    /// The regime.
    pub fn regime(&self) -> Regime {
        self.config.regime
    }

    /// The random stream used for `ctx` (after applying the regime).
    #[inline]
    pub fn rng_for(&self, ctx: &MaskContext) -> MaskRng {
        MaskRng::for_example(
            ctx.seed,
            self.config.regime.effective_epoch(ctx.epoch),
            ctx.index,
            MaskRng::STREAM_ITEMS,
        )
    }

    /// Expected number of masked items in a Cloze sequence of `n` items, the at-least-one rule
    /// included: `n p + (1 - p)^n` (0 for `n = 0`).
    pub fn expected_cloze_count(&self, n: usize) -> f64 {
        if n == 0 {
            return 0.0;
        }
        let p = self.config.mask_prob;
        n as f64 * p + (1.0 - p).powi(n as i32)
    }

    fn mask_at(&self, i: usize, ids: &[u32], out_ids: &mut [u32], out_labels: &mut [i32]) {
        out_labels[i] = ids[i] as i32;
        out_ids[i] = self.config.mask_id;
    }
}

impl MaskPolicy for ItemMasker {
    fn vocab_size(&self) -> u32 {
        // build() refuses u32::MAX for both ids, so this does not overflow.
        self.config
            .n_items
            .max(self.config.pad_id)
            .max(self.config.mask_id)
            + 1
    }

    fn mask_into(
        &self,
        ex: &Example<'_>,
        ctx: &MaskContext,
        _scratch: &mut Scratch,
        out_ids: &mut [u32],
        out_labels: &mut [i32],
    ) -> Result<usize> {
        ex.validate(self.vocab_size())?;
        for (field, got) in [("out_ids", out_ids.len()), ("out_labels", out_labels.len())] {
            if got != ex.len() {
                return Err(MaskError::LengthMismatch {
                    field,
                    expected: ex.len(),
                    got,
                });
            }
        }
        let pad = self.config.pad_id;
        let eligible = |i: usize| !ex.special_mask[i] && ex.ids[i] != pad;
        // Every non-padding id must be an item (the mask item, in particular, is refused).
        if let Some(i) = (0..ex.len()).find(|&i| eligible(i) && ex.ids[i] > self.config.n_items) {
            return Err(MaskError::InvalidValue {
                field: "ids",
                value: format!("{} at position {i}", ex.ids[i]),
                expected: "an item id in 1..=n_items or the padding id",
            });
        }
        out_ids.copy_from_slice(ex.ids);
        out_labels.fill(IGNORE_INDEX);
        match self.config.mode {
            ItemMaskMode::MaskLast {} => match (0..ex.len()).rev().find(|&i| eligible(i)) {
                Some(i) => {
                    self.mask_at(i, ex.ids, out_ids, out_labels);
                    Ok(1)
                }
                None => Ok(0),
            },
            ItemMaskMode::Cloze {} => {
                let mut rng = self.rng_for(ctx);
                let (mut n_eligible, mut masked) = (0usize, 0usize);
                for i in 0..ex.len() {
                    let u = rng.next_u32() as u64;
                    if eligible(i) {
                        n_eligible += 1;
                        if u < self.threshold {
                            self.mask_at(i, ex.ids, out_ids, out_labels);
                            masked += 1;
                        }
                    }
                }
                if masked == 0 && n_eligible > 0 {
                    let k = rng.below(n_eligible as u64) as usize;
                    if let Some(i) = (0..ex.len()).filter(|&i| eligible(i)).nth(k) {
                        self.mask_at(i, ex.ids, out_ids, out_labels);
                        masked = 1;
                    }
                }
                Ok(masked)
            }
        }
    }
}
