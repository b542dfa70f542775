//! Sliding-window (local) attention (Longformer, Mistral): query `i` attends keys within
//! `window` positions, either the causal band `0 <= i - j < window` or the symmetric band
//! `|i - j| < window`.

use std::ops::Range;

use super::{AttnMask, TileKind};
use crate::error::{AttnError, Result};

/// Keys within `window` positions of the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    window: usize,
    causal: bool,
}

impl SlidingWindow {
    /// `window >= 1`; `causal` selects the band `0 <= q - k < window`, else `|q - k| < window`.
    pub fn new(window: usize, causal: bool) -> Result<Self> {
        if window == 0 {
            return Err(AttnError::InvalidValue {
                field: "window",
                value: "0".into(),
                expected: "an integer >= 1",
            });
        }
        Ok(Self { window, causal })
    }

    /// Allowed values of `q - k`, inclusive.
    fn band(&self) -> (i64, i64) {
        let w = self.window as i64 - 1;
        (if self.causal { 0 } else { -w }, w)
    }
}

impl AttnMask for SlidingWindow {
    fn name(&self) -> &'static str {
        "sliding_window"
    }
    fn allows(&self, _: usize, _: usize, q: usize, k: usize) -> bool {
        let (lo, hi) = self.band();
        let d = q as i64 - k as i64;
        lo <= d && d <= hi
    }
    fn classify(&self, _: usize, _: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        // Over a rectangle, q - k takes every integer value in [dmin, dmax].
        let dmin = q.start as i64 - (k.end as i64 - 1);
        let dmax = q.end as i64 - 1 - k.start as i64;
        let (lo, hi) = self.band();
        if lo <= dmin && dmax <= hi {
            TileKind::Full
        } else if dmax < lo || dmin > hi {
            TileKind::Empty
        } else {
            TileKind::Partial
        }
    }
}
