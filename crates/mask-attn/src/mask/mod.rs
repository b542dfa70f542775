//! Attention-mask policies: which (query, key) pairs may interact.
//!
//! A policy answers `allows(b, h, q, k)` (FlexAttention's `mask_mod`) and classifies a
//! `(query tile, key tile)` rectangle as [`TileKind::Empty`], [`TileKind::Full`] or
//! [`TileKind::Partial`], exactly, so kernels can skip empty tiles and skip the per-element mask
//! on full ones. Built-ins answer the classification in O(1) or O(runs) from prefix counts;
//! combinators answer from their children when that is exact, and scan the tile otherwise.
//!
//! Convention: `allows == true` means *may attend*. burn's tensors use the opposite (`true` =
//! masked); [`crate::mask_tensor`] converts.

mod all;
mod all_partial;
mod causal;
mod combinators;
mod document;
mod key_padding;
mod prefix_lm;
mod random_key_drop;
mod sliding_window;
mod token_exclusion;

pub use all::AllowAll;
pub use all_partial::AllPartial;
pub use causal::Causal;
pub use combinators::{And, Not, Or};
pub use document::Document;
pub use key_padding::KeyPadding;
pub use prefix_lm::PrefixLm;
pub use random_key_drop::RandomKeyDrop;
pub use sliding_window::SlidingWindow;
pub use token_exclusion::TokenExclusion;

use std::ops::Range;

use crate::error::{AttnError, Result};

/// How a tile of the (query, key) grid relates to the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// No pair in the tile may attend: the kernel skips the tile.
    Empty,
    /// Every pair may attend: the kernel applies no mask.
    Full,
    /// Some pairs may attend: the kernel applies the element mask.
    Partial,
}

/// Which (batch, head, query, key) pairs may interact.
///
/// `allows` is the definition; kernels also ask [`classify`](AttnMask::classify) which tiles
/// are empty, full or partial, so a mask that can answer for a whole tile cheaply should
/// override it. A custom mask (dilated attention: every other key), materialised and used:
///
/// ```
/// use burn::backend::NdArray;
/// use mask_attn::{mask_tensor, AttnMask, Causal};
///
/// #[derive(Debug)]
/// struct EveryOtherKey;
///
/// impl AttnMask for EveryOtherKey {
///     fn name(&self) -> &'static str {
///         "every_other_key"
///     }
///     fn allows(&self, _b: usize, _h: usize, _q: usize, k: usize) -> bool {
///         k % 2 == 0
///     }
/// }
///
/// assert!(Causal.allows(0, 0, 3, 2) && !Causal.allows(0, 0, 2, 3));
/// // burn's convention: `true` = masked. Shape [B, H, T, S] = [1, 1, 4, 4].
/// let masked = mask_tensor::<NdArray>(&EveryOtherKey, 1, 1, 4, 4, &Default::default())?;
/// let row: Vec<bool> = masked.into_data().to_vec().unwrap();
/// assert_eq!(&row[..4], &[false, true, false, true]);
/// # Ok::<(), mask_attn::AttnError>(())
/// ```
pub trait AttnMask: Send + Sync + std::fmt::Debug {
    /// Short name, for errors and logs.
    fn name(&self) -> &'static str;

    /// Whether query `q` may attend key `k` in batch element `b`, head `h`.
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool;

    /// Classifies the tile `q x k` (non-empty ranges) exactly. The default scans the tile.
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        scan_tile(self, b, h, q, k)
    }

    /// Whether the answer depends on the head (then masks are materialised per head).
    fn head_dependent(&self) -> bool {
        false
    }

    /// Batch size of per-batch data the mask carries, if any.
    fn batch_size(&self) -> Option<usize> {
        None
    }

    /// Number of positions of per-position data the mask carries, if any.
    fn seq_len(&self) -> Option<usize> {
        None
    }

    /// Whether this is exactly the causal mask (lets fused kernels use their causal mode).
    fn is_causal(&self) -> bool {
        false
    }

    /// Whether every pair may attend (lets kernels drop the mask altogether).
    fn is_allow_all(&self) -> bool {
        false
    }
}

impl<M: AttnMask + ?Sized> AttnMask for Box<M> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn allows(&self, b: usize, h: usize, q: usize, k: usize) -> bool {
        (**self).allows(b, h, q, k)
    }
    fn classify(&self, b: usize, h: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        (**self).classify(b, h, q, k)
    }
    fn head_dependent(&self) -> bool {
        (**self).head_dependent()
    }
    fn batch_size(&self) -> Option<usize> {
        (**self).batch_size()
    }
    fn seq_len(&self) -> Option<usize> {
        (**self).seq_len()
    }
    fn is_causal(&self) -> bool {
        (**self).is_causal()
    }
    fn is_allow_all(&self) -> bool {
        (**self).is_allow_all()
    }
}

/// Exact classification by scanning the tile, stopping as soon as both an allowed and a
/// disallowed pair have been seen. The reference for every `classify` override.
pub fn scan_tile<M: AttnMask + ?Sized>(
    mask: &M,
    b: usize,
    h: usize,
    q: Range<usize>,
    k: Range<usize>,
) -> TileKind {
    let (mut any_allowed, mut any_masked) = (false, false);
    for qi in q {
        for ki in k.clone() {
            if mask.allows(b, h, qi, ki) {
                any_allowed = true;
            } else {
                any_masked = true;
            }
            if any_allowed && any_masked {
                return TileKind::Partial;
            }
        }
    }
    match (any_allowed, any_masked) {
        (true, false) => TileKind::Full,
        (false, _) => TileKind::Empty,
        (true, true) => TileKind::Partial,
    }
}

/// Prefix counts of `true` values, for O(1) counting over ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrefixCount {
    counts: Vec<u32>,
}

impl PrefixCount {
    pub(crate) fn new(flags: impl IntoIterator<Item = bool>) -> Self {
        let mut counts = vec![0u32];
        let mut c = 0u32;
        for f in flags {
            c += f as u32;
            counts.push(c);
        }
        Self { counts }
    }

    /// One prefix count per row of a row-major `[batch, seq_len]` flag buffer, refusing a
    /// buffer of the wrong length (named `field` in the error).
    pub(crate) fn rows(
        flags: &[bool],
        batch: usize,
        seq_len: usize,
        field: &'static str,
    ) -> Result<Vec<Self>> {
        check_rows_len(field, flags.len(), batch, seq_len)?;
        Ok((0..batch)
            .map(|b| Self::new(flags[b * seq_len..(b + 1) * seq_len].iter().copied()))
            .collect())
    }

    /// Number of positions covered.
    pub(crate) fn len(&self) -> usize {
        self.counts.len() - 1
    }

    /// Number of `true` in `r` (positions past the end count as `false`).
    pub(crate) fn count(&self, r: Range<usize>) -> usize {
        let end = r.end.min(self.len());
        let start = r.start.min(end);
        (self.counts[end] - self.counts[start]) as usize
    }

    /// Whether position `i` is `true` (positions past the end count as `false`).
    pub(crate) fn get(&self, i: usize) -> bool {
        i < self.len() && self.counts[i + 1] != self.counts[i]
    }
}

/// Checks that a row-major per-position input has `batch * seq_len` elements.
pub(crate) fn check_rows_len(
    field: &'static str,
    len: usize,
    batch: usize,
    seq_len: usize,
) -> Result<()> {
    if len == batch * seq_len {
        Ok(())
    } else {
        Err(AttnError::Length {
            field,
            expected: batch * seq_len,
            got: len,
        })
    }
}

/// Tile kind from counts of hidden positions: all hidden -> empty, none -> full.
pub(crate) fn kind_from_hidden(hidden: usize, total: usize) -> TileKind {
    if hidden == 0 {
        TileKind::Full
    } else if hidden >= total {
        TileKind::Empty
    } else {
        TileKind::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixCount;
    use crate::error::AttnError;
    use crate::mask::{Document, KeyPadding, TokenExclusion};

    /// Per-position inputs of the wrong length (short or long) are refused, naming the field
    /// (a mutation run found the length check untested: without it a short buffer panicked
    /// and a long one was silently cut).
    #[test]
    fn per_position_inputs_of_the_wrong_length_are_refused() {
        let (batch, seq_len) = (2, 3);
        for got in [5, 7] {
            let err = |field| AttnError::Length {
                field,
                expected: 6,
                got,
            };
            assert_eq!(
                Document::new(&vec![0; got], batch, seq_len).err(),
                Some(err("doc_ids"))
            );
            assert_eq!(
                KeyPadding::from_pad_mask(&vec![false; got], batch, seq_len).err(),
                Some(err("pad_mask"))
            );
            assert_eq!(
                TokenExclusion::new(&vec![false; got], batch, seq_len).err(),
                Some(err("excluded"))
            );
        }
        assert!(Document::new(&[0; 6], batch, seq_len).is_ok());
    }

    /// By hand, on `[true, false, true]`; past the end everything is `false` (a mutation run
    /// found `get(len)` untested: `<` to `<=` read past the counts).
    #[test]
    fn prefix_counts_by_hand_and_past_the_end() {
        let p = PrefixCount::new([true, false, true]);
        assert_eq!(p.len(), 3);
        let flags: Vec<bool> = (0..6).map(|i| p.get(i)).collect();
        assert_eq!(flags, [true, false, true, false, false, false]);
        assert_eq!(
            (p.count(0..3), p.count(1..2), p.count(1..9), p.count(5..9)),
            (2, 0, 1, 0)
        );
    }
}
