//! Prefix-LM masking (UniLM, T5's prefix LM): the first `prefix[b]` positions attend each other
//! bidirectionally; later positions attend the whole prefix and causally to themselves:
//! key `k` is visible from query `q` iff `k < prefix[b]` or `k <= q`.

use std::ops::Range;

use super::{AttnMask, TileKind};

/// Bidirectional prefix, causal continuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixLm {
    prefix: Vec<usize>,
}

impl PrefixLm {
    /// Per-example prefix lengths.
    pub fn new(prefix_lengths: Vec<usize>) -> Self {
        Self {
            prefix: prefix_lengths,
        }
    }
}

impl AttnMask for PrefixLm {
    fn name(&self) -> &'static str {
        "prefix_lm"
    }
    fn allows(&self, b: usize, _: usize, q: usize, k: usize) -> bool {
        k < self.prefix[b] || k <= q
    }
    fn classify(&self, b: usize, _: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        let p = self.prefix[b];
        // Full: every key is in the prefix or at/before the first query.
        if k.end <= p || k.end - 1 <= q.start {
            TileKind::Full
        } else if k.start >= p && k.start > q.end - 1 {
            TileKind::Empty
        } else {
            TileKind::Partial
        }
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.prefix.len())
    }
}
