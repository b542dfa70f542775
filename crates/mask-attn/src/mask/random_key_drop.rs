//! Random key drop: each key is hidden with probability `drop_prob`, drawn once per
//! (seed, batch element, head or not, key) from `mask-core`'s counter-based generator, so the
//! pattern is reproducible. A structured-dropout mask with no empty tiles to skip at typical
//! rates: the worst case for block-sparse kernels (FlexAttention is 2.6x slower than SDPA on it).

use std::ops::Range;

use mask_core::{threshold_u32, MaskRng};

use super::{kind_from_hidden, AttnMask, PrefixCount, TileKind};
use crate::error::{AttnError, Result};

/// Stream id of the key-drop draws (distinct from `mask-core`'s token stream).
const STREAM_KEY_DROP: u64 = 0x006b_6579_6472_6f70;

/// Hides each key with probability `drop_prob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomKeyDrop {
    seq_len: usize,
    heads: usize,
    per_head: bool,
    /// Per (batch, head or 0): prefix counts of dropped keys.
    dropped: Vec<PrefixCount>,
}

impl RandomKeyDrop {
    /// Draws the pattern for `batch x heads x seq_len` (one pattern shared by all heads unless
    /// `per_head`).
    pub fn new(
        drop_prob: f64,
        seed: u64,
        batch: usize,
        heads: usize,
        seq_len: usize,
        per_head: bool,
    ) -> Result<Self> {
        if !(drop_prob.is_finite() && (0.0..=1.0).contains(&drop_prob)) {
            return Err(AttnError::InvalidValue {
                field: "drop_prob",
                value: drop_prob.to_string(),
                expected: "a probability in [0, 1]",
            });
        }
        let t = threshold_u32(drop_prob);
        let hs = if per_head { heads } else { 1 };
        let mut dropped = Vec::with_capacity(batch * hs);
        for b in 0..batch {
            for h in 0..hs {
                let mut rng = MaskRng::for_example(seed, h as u64, b as u64, STREAM_KEY_DROP);
                dropped.push(PrefixCount::new(
                    (0..seq_len).map(|_| (rng.next_u32() as u64) < t),
                ));
            }
        }
        Ok(Self {
            seq_len,
            heads: hs,
            per_head,
            dropped,
        })
    }

    fn row(&self, b: usize, h: usize) -> &PrefixCount {
        &self.dropped[b * self.heads + if self.per_head { h } else { 0 }]
    }
}

impl AttnMask for RandomKeyDrop {
    fn name(&self) -> &'static str {
        "random_key_drop"
    }
    fn allows(&self, b: usize, h: usize, _: usize, k: usize) -> bool {
        !self.row(b, h).get(k)
    }
    fn classify(&self, b: usize, h: usize, _: Range<usize>, k: Range<usize>) -> TileKind {
        let n = k.len();
        kind_from_hidden(self.row(b, h).count(k), n)
    }
    fn head_dependent(&self) -> bool {
        self.per_head
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.dropped.len() / self.heads)
    }
    fn seq_len(&self) -> Option<usize> {
        Some(self.seq_len)
    }
}
