//! No mask: every pair may attend.

use std::ops::Range;

use super::{AttnMask, TileKind};

/// Every query may attend every key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowAll;

impl AttnMask for AllowAll {
    fn name(&self) -> &'static str {
        "none"
    }
    fn allows(&self, _: usize, _: usize, _: usize, _: usize) -> bool {
        true
    }
    fn classify(&self, _: usize, _: usize, _: Range<usize>, _: Range<usize>) -> TileKind {
        TileKind::Full
    }
    fn is_allow_all(&self) -> bool {
        true
    }
}
