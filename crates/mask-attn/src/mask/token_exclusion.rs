//! Token exclusion, the seed article's rule (section 4.2): for an exclusion vector `m`
//! (`true` = excluded), the weight of `(i, j)` is 0 when `m_i` or `m_j` is set. Excluded keys get
//! weight 0 and the remaining weights renormalise (softmax over visible keys); an excluded query
//! row has no visible key, so every kernel outputs exactly 0 for it, with zero gradient — the
//! convention of PyTorch SDPA and FlexAttention.

use std::ops::Range;

use super::{AttnMask, PrefixCount, TileKind};
use crate::error::Result;

/// Hides excluded positions both as queries and as keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExclusion {
    seq_len: usize,
    excluded: Vec<PrefixCount>,
}

impl TokenExclusion {
    /// `excluded[b * seq_len + i]` is `true` where position `i` of example `b` is excluded.
    pub fn new(excluded: &[bool], batch: usize, seq_len: usize) -> Result<Self> {
        Ok(Self {
            seq_len,
            excluded: PrefixCount::rows(excluded, batch, seq_len, "excluded")?,
        })
    }
}

impl AttnMask for TokenExclusion {
    fn name(&self) -> &'static str {
        "token_exclusion"
    }
    fn allows(&self, b: usize, _: usize, q: usize, k: usize) -> bool {
        !self.excluded[b].get(q) && !self.excluded[b].get(k)
    }
    fn classify(&self, b: usize, _: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        let ex = &self.excluded[b];
        let (cq, ck) = (ex.count(q.clone()), ex.count(k.clone()));
        if cq == 0 && ck == 0 {
            TileKind::Full
        } else if cq >= q.len() || ck >= k.len() {
            TileKind::Empty
        } else {
            TileKind::Partial
        }
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.excluded.len())
    }
    fn seq_len(&self) -> Option<usize> {
        Some(self.seq_len)
    }
}
