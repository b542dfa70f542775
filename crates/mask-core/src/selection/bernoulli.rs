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

    fn is_bernoulli(&self) -> bool {
        true
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
        // n slots suffice: before position i is written, k <= i (at most one hit per position
        // so far), so every unconditional write lands at an index <= i <= n - 1.
        if buf.len() < n {
            buf.resize(n, 0);
        }
        // Branch-free compaction: always write, advance only on a hit. Each 64-bit draw serves
        // two positions (low and high halves), special or not, so the stream layout does not
        // depend on the special mask.
        let mut k = 0usize;
        let mut pairs = ex.special_mask.chunks_exact(2);
        let mut i = 0u32;
        for pair in &mut pairs {
            let r = rng.next_u64();
            let hit0 = (((r & 0xffff_ffff) < t) & !pair[0]) as usize;
            let hit1 = (((r >> 32) < t) & !pair[1]) as usize;
            buf[k] = i;
            k += hit0;
            buf[k] = i + 1;
            k += hit1;
            i += 2;
        }
        if let [special] = pairs.remainder() {
            let hit = ((rng.next_u32() as u64) < t) & !special;
            buf[k] = i;
            k += hit as usize;
        }
        out.extend(buf[..k].iter().map(|&p| Span { start: p, len: 1 }));
    }
}
