//! A wrapper that reports every tile as partial: the same pairs as its inner mask, but the kernel
//! skips nothing and masks every element. The "dense mask" baseline of the benchmarks, and a way to
//! test the partial-tile path everywhere.

use std::ops::Range;

use super::{AttnMask, TileKind};

/// Same pairs as `M`, every tile classified [`TileKind::Partial`].
#[derive(Debug, Clone)]
pub struct AllPartial<M>(pub M);

impl<M: AttnMask> AttnMask for AllPartial<M> {
    fn name(&self) -> &'static str {
        "all_partial"
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        self.0.allows(b, h, q, k)
    }
    fn classify(&self, _: usize, _: usize, _: Range<usize>, _: Range<usize>) -> TileKind {
        TileKind::Partial
    }
    fn head_dependent(&self) -> bool {
        self.0.head_dependent()
    }
    fn batch_size(&self) -> Option<usize> {
        self.0.batch_size()
    }
    fn seq_len(&self) -> Option<usize> {
        self.0.seq_len()
    }
}
