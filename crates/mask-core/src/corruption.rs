//! How a chosen position is corrupted: replaced by the mask token, by a random token, or kept
//! (BERT's 80/10/10, Devlin et al. 2019, section 3.1 and appendix C.2; configurable).

use serde::{Deserialize, Serialize};

use crate::error::{check_prob, MaskError, Result};
use crate::example::{Span, IGNORE_INDEX};
use crate::rng::{threshold_u32, MaskRng};
use crate::vocab::{RandomIds, VocabSpec};

/// Corruption split, as given in a config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptionConfig {
    /// Probability that a chosen token becomes the mask token. Default: 0.8
    #[serde(default = "default_mask_replace_prob")]
    pub mask_replace_prob: f64,
    /// Probability that a chosen token becomes a random non-special token. Default: 0.1
    #[serde(default = "default_random_replace_prob")]
    pub random_replace_prob: f64,
    /// Decide once per chosen unit (word or span, SpanBERT) instead of once per token (BERT, HF).
    /// Default: false
    #[serde(default)]
    pub per_unit: bool,
    /// Probability that a chosen (corrupted) position is also predicted, i.e. gets a label;
    /// the others are corrupted as usual but carry no loss. Below 1 it separates the corruption
    /// rate from the prediction rate (Wettig et al. 2023: corrupt 40%, predict 15% is
    /// `predict_prob = 0.375` at rate 0.4). Decided per position, after its corruption, from the
    /// same stream; at 1 nothing is drawn, so the stream is the one without it. Serialized only
    /// when below 1, so configs (and the settings recorded in checkpoints) written before the
    /// field existed still compare equal. Default: 1
    #[serde(default = "default_predict_prob", skip_serializing_if = "is_one")]
    pub predict_prob: f64,
}

fn default_mask_replace_prob() -> f64 {
    0.8
}
fn default_random_replace_prob() -> f64 {
    0.1
}
fn default_predict_prob() -> f64 {
    1.0
}
fn is_one(p: &f64) -> bool {
    *p == 1.0
}

impl Default for CorruptionConfig {
    fn default() -> Self {
        Self {
            mask_replace_prob: default_mask_replace_prob(),
            random_replace_prob: default_random_replace_prob(),
            per_unit: false,
            predict_prob: default_predict_prob(),
        }
    }
}

impl CorruptionConfig {
    /// Only the mask token, never random or kept (BERT4Rec, MAE-style).
    pub fn mask_only() -> Self {
        Self {
            mask_replace_prob: 1.0,
            random_replace_prob: 0.0,
            per_unit: false,
            predict_prob: 1.0,
        }
    }

    /// Validates the split against the vocabulary and builds the corruption step.
    pub fn build(&self, vocab: &VocabSpec) -> Result<Corruption> {
        check_prob("mask_replace_prob", self.mask_replace_prob)?;
        check_prob("random_replace_prob", self.random_replace_prob)?;
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-12 {
            return Err(MaskError::SplitSumExceedsOne {
                mask_replace_prob: self.mask_replace_prob,
                random_replace_prob: self.random_replace_prob,
            });
        }
        if !(self.predict_prob.is_finite() && self.predict_prob > 0.0 && self.predict_prob <= 1.0) {
            return Err(MaskError::InvalidValue {
                field: "predict_prob",
                value: self.predict_prob.to_string(),
                expected: "a probability in (0, 1]: a chosen position is predicted with it",
            });
        }
        let random_ids = vocab.build()?;
        if self.random_replace_prob > 0.0 && random_ids.num_allowed() == 0 {
            return Err(MaskError::EmptyRandomVocab {
                random_replace_prob: self.random_replace_prob,
                vocab_size: vocab.vocab_size,
                num_excluded: random_ids.excluded().len() as u32,
            });
        }
        let t_mask = threshold_u32(self.mask_replace_prob);
        let t_random = threshold_u32((self.mask_replace_prob + self.random_replace_prob).min(1.0));
        Ok(Corruption {
            config: *self,
            mask_token_id: vocab.mask_token_id,
            random_ids,
            t_mask,
            t_random,
            t_predict: (self.predict_prob < 1.0).then(|| threshold_u32(self.predict_prob)),
        })
    }
}

/// The corruption step, validated. Applies a [`CorruptionConfig`] to chosen spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Corruption {
    config: CorruptionConfig,
    mask_token_id: u32,
    random_ids: RandomIds,
    /// `u < t_mask` -> mask token.
    t_mask: u64,
    /// `t_mask <= u < t_random` -> random token; else keep.
    t_random: u64,
    /// `u < t_predict` -> the position gets a label; `None`: always, nothing drawn.
    t_predict: Option<u64>,
}

/// What happens to one chosen position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace by the mask token.
    Mask,
    /// Replace by a random non-special token.
    Random,
    /// Keep the original token (it still carries a label).
    Keep,
}

impl Corruption {
    /// The config this was built from.
    pub fn config(&self) -> &CorruptionConfig {
        &self.config
    }

    /// The vocabulary sampler for random replacements.
    pub fn random_ids(&self) -> &RandomIds {
        &self.random_ids
    }

    /// Mask token id.
    pub fn mask_token_id(&self) -> u32 {
        self.mask_token_id
    }

    /// `(t_mask, t_random)`: a draw's high half `u` means the mask token if `u < t_mask`, a
    /// random token if `t_mask <= u < t_random`, keep otherwise.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn action_thresholds(&self) -> (u64, u64) {
        (self.t_mask, self.t_random)
    }

    /// The prediction threshold; `None` when every chosen position is predicted (no draw).
    pub(crate) fn t_predict(&self) -> Option<u64> {
        self.t_predict
    }

    #[inline(always)]
    fn action(&self, rng: &mut MaskRng) -> Action {
        let u = rng.next_u32() as u64;
        if u < self.t_mask {
            Action::Mask
        } else if u < self.t_random {
            Action::Random
        } else {
            Action::Keep
        }
    }

    #[inline(always)]
    fn apply_one(&self, action: Action, pos: usize, out_ids: &mut [u32], rng: &mut MaskRng) {
        match action {
            Action::Mask => out_ids[pos] = self.mask_token_id,
            Action::Random => out_ids[pos] = self.random_ids.sample(rng),
            Action::Keep => {}
        }
    }

    /// Corrupts `spans` of `ids` into `out_ids` / `out_labels`.
    ///
    /// `out_ids` must already hold a copy of `ids` and `out_labels` be filled with
    /// [`IGNORE_INDEX`]; only chosen positions are written. Returns the number of labels set
    /// (every chosen position at `predict_prob = 1`).
    #[inline]
    pub fn apply(
        &self,
        ids: &[u32],
        spans: &[Span],
        rng: &mut MaskRng,
        out_ids: &mut [u32],
        out_labels: &mut [i32],
    ) -> usize {
        debug_assert_eq!(IGNORE_INDEX, -100);
        let mut n = 0;
        for span in spans {
            let unit_action = self.config.per_unit.then(|| self.action(rng));
            for pos in span.range() {
                let action = match unit_action {
                    Some(a) => a,
                    None => self.action(rng),
                };
                self.apply_one(action, pos, out_ids, rng);
                if self.t_predict.is_none_or(|t| (rng.next_u32() as u64) < t) {
                    out_labels[pos] = ids[pos] as i32;
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> VocabSpec {
        VocabSpec::new(100, 3, vec![0, 1, 2])
    }

    #[test]
    fn split_is_validated() {
        let bad = CorruptionConfig {
            mask_replace_prob: 0.8,
            random_replace_prob: 0.3,
            ..Default::default()
        };
        assert!(matches!(
            bad.build(&vocab()),
            Err(MaskError::SplitSumExceedsOne { .. })
        ));
        let neg = CorruptionConfig {
            mask_replace_prob: -0.1,
            ..Default::default()
        };
        assert_eq!(
            neg.build(&vocab()),
            Err(MaskError::InvalidProbability {
                field: "mask_replace_prob",
                value: -0.1
            })
        );
        let all_special = VocabSpec::new(3, 0, vec![1, 2]);
        assert!(matches!(
            CorruptionConfig::default().build(&all_special),
            Err(MaskError::EmptyRandomVocab { vocab_size: 3, .. })
        ));
        // Without random replacement an all-special vocabulary is fine.
        assert!(CorruptionConfig::mask_only().build(&all_special).is_ok());
    }

    /// A checkpoint written before `predict_prob` existed records the masking config without
    /// it; the default must serialize the same way, or such runs could not be resumed.
    #[test]
    fn the_default_predict_prob_is_not_serialized() {
        let json = serde_json::to_value(CorruptionConfig::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"mask_replace_prob": 0.8, "random_replace_prob": 0.1, "per_unit": false})
        );
        let some = CorruptionConfig {
            predict_prob: 0.375,
            ..CorruptionConfig::default()
        };
        let back: CorruptionConfig =
            serde_json::from_value(serde_json::to_value(some).unwrap()).unwrap();
        assert_eq!(back, some);
    }

    #[test]
    fn per_unit_decides_once_per_span() {
        let c = CorruptionConfig {
            mask_replace_prob: 0.5,
            random_replace_prob: 0.0,
            per_unit: true,
            predict_prob: 1.0,
        }
        .build(&vocab())
        .unwrap();
        let ids: Vec<u32> = (10..40).collect();
        let spans = [Span { start: 0, len: 10 }, Span { start: 15, len: 10 }];
        for seed in 0..50 {
            let mut out = ids.clone();
            let mut labels = vec![IGNORE_INDEX; ids.len()];
            let mut rng = MaskRng::for_example(seed, 0, 0, 0);
            assert_eq!(c.apply(&ids, &spans, &mut rng, &mut out, &mut labels), 20);
            for s in &spans {
                let masked = s.range().filter(|&p| out[p] == 3).count();
                assert!(masked == 0 || masked == s.len as usize);
            }
        }
    }
}
