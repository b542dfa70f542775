//! Causal mask (decoders, GPT): query `i` attends keys `j <= i` (top-left aligned).

use std::ops::Range;

use super::{AttnMask, TileKind};

/// Query `q` may attend key `k` iff `k <= q`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Causal;

impl AttnMask for Causal {
    fn name(&self) -> &'static str {
        "causal"
    }
    fn allows(&self, _: usize, _: usize, q: usize, k: usize) -> bool {
        k <= q
    }
    fn classify(&self, _: usize, _: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        if k.end - 1 <= q.start {
            TileKind::Full
        } else if k.start > q.end - 1 {
            TileKind::Empty
        } else {
            TileKind::Partial
        }
    }
    fn is_causal(&self) -> bool {
        true
    }
}
