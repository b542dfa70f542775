//! Whole-word masking (BERT's `do_whole_word_mask`; HF `DataCollatorForWholeWordMask`): the
//! decision is made once per word, with probability `mask_prob`, and expanded to all of the
//! word's sub-tokens. A word is a maximal run of eligible tokens with the same word id.

use super::{words_of, SelectScratch, Selector};
use crate::example::{Example, Span};
use crate::rng::{threshold_u32, MaskRng};

/// Each word independently with probability `mask_prob`, expanded to its sub-tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WholeWordSelector;

impl Selector for WholeWordSelector {
    fn name(&self) -> &'static str {
        "whole_word"
    }

    fn needs_word_ids(&self) -> bool {
        true
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
        let t = threshold_u32(mask_prob);
        if t == 0 {
            return;
        }
        words_of(ex, &mut scratch.units);
        out.extend(
            scratch
                .units
                .iter()
                .filter(|_| (rng.next_u32() as u64) < t)
                .copied(),
        );
    }
}
