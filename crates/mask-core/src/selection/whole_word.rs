//! Whole-word masking (BERT's `do_whole_word_mask`; HF `DataCollatorForWholeWordMask`): the
//! decision is made once per word, with probability `mask_prob`, and expanded to all of the
//! word's sub-tokens. A word is a maximal run of eligible tokens with the same word id.

use super::{SelectScratch, Selector};
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
        // One pass, fused with the word split of `words_of` (same definition of a word): a
        // draw at each word start, extension of the last unit while inside a chosen word.
        let _ = scratch;
        let words = ex.word_ids.unwrap_or(&[]);
        let mut in_chosen = false;
        let mut prev_special = true;
        let mut prev_word = None;
        for (i, &special) in ex.special_mask.iter().enumerate() {
            if special {
                prev_special = true;
                continue;
            }
            let w = words.get(i).copied().flatten();
            let continues = !prev_special && w.is_some() && w == prev_word;
            prev_special = false;
            prev_word = w;
            if continues {
                if in_chosen {
                    if let Some(last) = out.last_mut() {
                        last.len += 1;
                    }
                }
            } else {
                in_chosen = (rng.next_u32() as u64) < t;
                if in_chosen {
                    out.push(Span {
                        start: i as u32,
                        len: 1,
                    });
                }
            }
        }
    }
}
