//! Materialisation of a mask: to a burn boolean tensor (burn's convention, `true` = masked) and
//! to a compact tile map that the block-sparse kernel consumes.
//!
//! Legend: B batch, H heads, T query positions, S key positions; `Hm` is H for head-dependent
//! masks and 1 otherwise (the tensor is broadcast over heads).

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::{Bool, TensorData};

use crate::error::{AttnError, Result};
use crate::mask::{AttnMask, TileKind};

/// Checks that `mask` can be applied to a `[batch, heads, seq_q, seq_k]` score grid.
pub fn check_mask(mask: &dyn AttnMask, batch: usize, seq_q: usize, seq_k: usize) -> Result<()> {
    if let Some(n) = mask.batch_size() {
        if n != batch {
            return Err(AttnError::Shape {
                what: format!("batch size of attention mask `{}`", mask.name()),
                expected: batch,
                got: n,
            });
        }
    }
    if let Some(n) = mask.seq_len() {
        for (what, len) in [("queries", seq_q), ("keys", seq_k)] {
            if n != len {
                return Err(AttnError::Shape {
                    what: format!(
                        "positions covered by attention mask `{}` vs {what}",
                        mask.name()
                    ),
                    expected: len,
                    got: n,
                });
            }
        }
    }
    Ok(())
}

/// Heads the mask must be materialised for: `heads` if head-dependent, else 1.
pub fn mask_heads(mask: &dyn AttnMask, heads: usize) -> usize {
    if mask.head_dependent() {
        heads
    } else {
        1
    }
}

/// `allows` over `[batch, hm, q, k]`, row-major, `true` = may attend.
pub fn allowed_block(
    mask: &dyn AttnMask,
    batch: usize,
    hm: usize,
    q: Range<usize>,
    k: Range<usize>,
) -> Vec<bool> {
    let mut out = Vec::with_capacity(batch * hm * q.len() * k.len());
    for b in 0..batch {
        for h in 0..hm {
            for qi in q.clone() {
                out.extend(k.clone().map(|ki| mask.allows(b, h, qi, ki)));
            }
        }
    }
    out
}

/// The mask as a burn boolean tensor `[B, H, T, S]`, `true` where attention is **masked**
/// (burn's `module::attention` convention; the opposite of [`AttnMask::allows`]).
pub fn mask_tensor<B: Backend>(
    mask: &dyn AttnMask,
    batch: usize,
    heads: usize,
    seq_q: usize,
    seq_k: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4, Bool>> {
    check_mask(mask, batch, seq_q, seq_k)?;
    let hm = mask_heads(mask, heads);
    let masked: Vec<bool> = allowed_block(mask, batch, hm, 0..seq_q, 0..seq_k)
        .into_iter()
        .map(|a| !a)
        .collect();
    let t =
        Tensor::<B, 4, Bool>::from_data(TensorData::new(masked, [batch, hm, seq_q, seq_k]), device);
    Ok(t.expand([batch, heads, seq_q, seq_k]))
}

/// Tile classification of a `[B, H, T, S]` grid in `tile_q x tile_k` tiles (the last tile of
/// each axis may be shorter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileMap {
    batch: usize,
    hm: usize,
    seq_q: usize,
    seq_k: usize,
    tile_q: usize,
    tile_k: usize,
    n_qt: usize,
    n_kt: usize,
    /// `[batch, hm, n_qt, n_kt]`.
    kinds: Vec<TileKind>,
}

impl TileMap {
    /// Classifies every tile of every (batch element, head) of `mask`.
    pub fn build(
        mask: &dyn AttnMask,
        batch: usize,
        heads: usize,
        seq_q: usize,
        seq_k: usize,
        tile_q: usize,
        tile_k: usize,
    ) -> Result<Self> {
        for (field, v) in [("tile_q", tile_q), ("tile_k", tile_k)] {
            if v == 0 {
                return Err(AttnError::InvalidValue {
                    field,
                    value: "0".into(),
                    expected: "a tile size >= 1",
                });
            }
        }
        check_mask(mask, batch, seq_q, seq_k)?;
        let hm = mask_heads(mask, heads);
        let n_qt = seq_q.div_ceil(tile_q);
        let n_kt = seq_k.div_ceil(tile_k);
        let mut kinds = Vec::with_capacity(batch * hm * n_qt * n_kt);
        for b in 0..batch {
            for h in 0..hm {
                for qt in 0..n_qt {
                    let q = qt * tile_q..((qt + 1) * tile_q).min(seq_q);
                    for kt in 0..n_kt {
                        let k = kt * tile_k..((kt + 1) * tile_k).min(seq_k);
                        kinds.push(mask.classify(b, h, q.clone(), k));
                    }
                }
            }
        }
        Ok(Self {
            batch,
            hm,
            seq_q,
            seq_k,
            tile_q,
            tile_k,
            n_qt,
            n_kt,
            kinds,
        })
    }

    /// Number of query tiles.
    pub fn n_q_tiles(&self) -> usize {
        self.n_qt
    }

    /// Number of key tiles.
    pub fn n_k_tiles(&self) -> usize {
        self.n_kt
    }

    /// `(batch, seq_q, seq_k)` the map was built for.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.batch, self.seq_q, self.seq_k)
    }

    /// Heads the map was built for (1 for head-independent masks).
    pub fn heads(&self) -> usize {
        self.hm
    }

    /// Query positions of query tile `qt`.
    pub fn q_range(&self, qt: usize) -> Range<usize> {
        qt * self.tile_q..((qt + 1) * self.tile_q).min(self.seq_q)
    }

    /// Key positions of key tile `kt`.
    pub fn k_range(&self, kt: usize) -> Range<usize> {
        kt * self.tile_k..((kt + 1) * self.tile_k).min(self.seq_k)
    }

    /// Kind of tile `(qt, kt)` for batch element `b` and head `h` (`h < heads()`).
    pub fn kind(&self, b: usize, h: usize, qt: usize, kt: usize) -> TileKind {
        self.kinds[((b * self.hm + h) * self.n_qt + qt) * self.n_kt + kt]
    }

    /// Kind of tile `(qt, kt)` over the whole batch and all heads: empty if empty everywhere,
    /// full if full everywhere, partial otherwise. This is what a kernel batched over B and H
    /// can exploit.
    pub fn union_kind(&self, qt: usize, kt: usize) -> TileKind {
        let (mut all_empty, mut all_full) = (true, true);
        for b in 0..self.batch {
            for h in 0..self.hm {
                match self.kind(b, h, qt, kt) {
                    TileKind::Empty => all_full = false,
                    TileKind::Full => all_empty = false,
                    TileKind::Partial => return TileKind::Partial,
                }
            }
        }
        match (all_empty, all_full) {
            (true, _) => TileKind::Empty,
            (_, true) => TileKind::Full,
            _ => TileKind::Partial,
        }
    }

    /// Runs of consecutive non-empty key tiles of one kind for query tile `qt`, each at most
    /// `max_width` keys wide (a wider run is split at a tile boundary), given each key tile's
    /// kind: [`Self::union_kind`] for kernels batched over B and H, [`Self::kind`] for
    /// per-example ones. One run is one product in the kernels.
    pub fn key_runs(
        &self,
        kind_of: impl Fn(usize) -> TileKind,
        max_width: usize,
    ) -> Vec<(Range<usize>, TileKind)> {
        let mut runs: Vec<(Range<usize>, TileKind)> = vec![];
        for kt in 0..self.n_kt {
            let kind = kind_of(kt);
            if kind == TileKind::Empty {
                continue;
            }
            let r = self.k_range(kt);
            match runs.last_mut() {
                Some((last, last_kind))
                    if *last_kind == kind
                        && last.end == r.start
                        && r.end - last.start <= max_width =>
                {
                    last.end = r.end
                }
                _ => runs.push((r, kind)),
            }
        }
        runs
    }

    /// Counts of (empty, full, partial) tiles over the union map.
    pub fn union_counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for qt in 0..self.n_qt {
            for kt in 0..self.n_kt {
                match self.union_kind(qt, kt) {
                    TileKind::Empty => c.0 += 1,
                    TileKind::Full => c.1 += 1,
                    TileKind::Partial => c.2 += 1,
                }
            }
        }
        c
    }
}
