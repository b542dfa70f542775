//! Serde configuration of a token-masking policy, as written in TOML or JSON.
//!
//! ```toml
//! vocab = { vocab_size = 30522, mask_token_id = 103, special_ids = [0, 100, 101, 102] }
//! selection = { type = "span", geometric_p = 0.2, max_span = 10, anchor = "word" }
//! rate = { type = "linear", start = 0.3, end = 0.15, decay_steps = 10000 }
//! corruption = { mask_replace_prob = 0.8, random_replace_prob = 0.1, per_unit = true }
//! regime = { type = "static", dupe_factor = 10 }
//! ```

use serde::{Deserialize, Serialize};

use crate::corruption::CorruptionConfig;
use crate::error::Result;
use crate::policy::TokenMasker;
use crate::regime::Regime;
use crate::schedule::RateSchedule;
use crate::selection::{SelectionConfig, SelectorResources};
use crate::vocab::VocabSpec;

/// A complete token-masking policy description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Vocabulary size, mask token and special ids.
    pub vocab: VocabSpec,
    /// Which positions to choose. Default: bernoulli
    #[serde(default)]
    pub selection: SelectionConfig,
    /// Masking rate by step. Default: constant 0.15
    #[serde(default)]
    pub rate: RateSchedule,
    /// How chosen positions are corrupted. Default: 0.8 / 0.1 / 0.1 per token
    #[serde(default)]
    pub corruption: CorruptionConfig,
    /// Static (with `dupe_factor`) or dynamic. Default: dynamic
    #[serde(default)]
    pub regime: Regime,
}

impl MaskingConfig {
    /// BERT/HF defaults (Bernoulli 15%, 80/10/10, dynamic) for a vocabulary.
    pub fn new(vocab: VocabSpec) -> Self {
        Self {
            vocab,
            selection: SelectionConfig::default(),
            rate: RateSchedule::default(),
            corruption: CorruptionConfig::default(),
            regime: Regime::default(),
        }
    }

    /// Sets the selection.
    pub fn with_selection(mut self, selection: SelectionConfig) -> Self {
        self.selection = selection;
        self
    }

    /// Sets the rate schedule.
    pub fn with_rate(mut self, rate: RateSchedule) -> Self {
        self.rate = rate;
        self
    }

    /// Sets the corruption split.
    pub fn with_corruption(mut self, corruption: CorruptionConfig) -> Self {
        self.corruption = corruption;
        self
    }

    /// Sets the regime.
    pub fn with_regime(mut self, regime: Regime) -> Self {
        self.regime = regime;
        self
    }

    /// Validates every field and builds the policy; selectors that need resources are refused
    /// with [`crate::MaskError::MissingResource`] (use [`MaskingConfig::build_with`]).
    pub fn build(&self) -> Result<TokenMasker> {
        self.build_with(&SelectorResources::default())
    }

    /// Validates every field and builds the policy, giving the selector the resources it needs
    /// (corpus statistics, PMI table, tag weights).
    pub fn build_with(&self, res: &SelectorResources) -> Result<TokenMasker> {
        let selector = self.selection.build_with(self.vocab.vocab_size, res)?;
        let corruption = self.corruption.build(&self.vocab)?;
        TokenMasker::new(selector, self.rate, corruption, self.regime)
    }
}
