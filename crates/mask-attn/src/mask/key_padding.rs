//! Key padding: padded key positions are hidden from every query (BERT's `attention_mask`).
//! Built from per-example lengths (right padding) or from an arbitrary pad mask.

use std::ops::Range;

use super::{kind_from_hidden, AttnMask, PrefixCount, TileKind};
use crate::error::{AttnError, Result};

/// Hides padded keys; queries at padded positions still attend the real keys (their outputs
/// are ignored downstream). Combine with [`super::TokenExclusion`] to hide padded queries too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPadding {
    seq_len: usize,
    /// Per batch element: prefix counts of padded key positions.
    hidden: Vec<PrefixCount>,
}

impl KeyPadding {
    /// Right padding: example `b` has `lengths[b]` real tokens out of `seq_len`.
    pub fn from_lengths(lengths: &[usize], seq_len: usize) -> Result<Self> {
        if let Some(&bad) = lengths.iter().find(|&&l| l > seq_len) {
            return Err(AttnError::InvalidValue {
                field: "lengths",
                value: bad.to_string(),
                expected: "each length <= seq_len",
            });
        }
        Ok(Self {
            seq_len,
            hidden: lengths
                .iter()
                .map(|&len| PrefixCount::new((0..seq_len).map(|k| k >= len)))
                .collect(),
        })
    }

    /// Any padding pattern: `pad_mask[b * seq_len + k]` is `true` where key `k` is padding.
    pub fn from_pad_mask(pad_mask: &[bool], batch: usize, seq_len: usize) -> Result<Self> {
        Ok(Self {
            seq_len,
            hidden: PrefixCount::rows(pad_mask, batch, seq_len, "pad_mask")?,
        })
    }
}

impl AttnMask for KeyPadding {
    fn name(&self) -> &'static str {
        "key_padding"
    }
    fn allows(&self, b: usize, _: usize, _: usize, k: usize) -> bool {
        !self.hidden[b].get(k)
    }
    fn classify(&self, b: usize, _: usize, _: Range<usize>, k: Range<usize>) -> TileKind {
        let n = k.len();
        kind_from_hidden(self.hidden[b].count(k), n)
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.hidden.len())
    }
    fn seq_len(&self) -> Option<usize> {
        Some(self.seq_len)
    }
}
