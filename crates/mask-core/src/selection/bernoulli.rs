//! Uniform Bernoulli selection: each eligible token is chosen independently with probability
//! `mask_prob`, so the count varies per sequence (HuggingFace `DataCollatorForLanguageModeling`).

use super::{SelectScratch, Selector};
use crate::example::{Example, Span};
use crate::rng::{threshold_u32, MaskRng};

/// Each eligible token independently with probability `mask_prob`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BernoulliSelector;

impl Selector for BernoulliSelector {
    fn name(&self) -> &'static str {
        "bernoulli"
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
        out.clear();
        let t = threshold_u32(mask_prob);
        if t == 0 {
            return;
        }
        let n = ex.len();
        let buf = &mut scratch.positions;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        let buf = &mut buf[..n];
        // Branch-free compaction: always write, advance only on a hit. One 32-bit draw per
        // position (special or not) keeps the stream layout independent of the special mask.
        let mut k = 0usize;
        for (i, (&special, slot)) in ex.special_mask.iter().zip(0u32..).enumerate() {
            let hit = ((rng.next_u32() as u64) < t) & !special;
            buf[k.min(i)] = slot;
            k += hit as usize;
        }
        out.extend(buf[..k].iter().map(|&p| Span { start: p, len: 1 }));
    }
}
