//! Block-sparse masked attention with online softmax.
//!
//! The idea of FlexAttention's block masks (He et al. 2024) on the flash-attention recurrence
//! (Dao et al. 2022; Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"),
//! written with burn tensor ops so it runs on every backend and differentiates under `Autodiff`:
//!
//! ```text
//! for each query tile i:                       q_i [B, H, Tq, D]
//!   m = -inf, l = 0, acc = 0                   m, l [B, H, Tq, 1], acc [B, H, Tq, Dv]
//!   for each run j of non-empty key tiles:     k_j [B, H, W, D], v_j [B, H, W, Dv]
//!     s = q_i k_j^T * scale                    [B, H, Tq, W]
//!     if partial: s[masked] = -big             (full tiles: no mask at all)
//!     m' = max(m, rowmax(s)); p = exp(s - m'); if partial: p[masked] = 0
//!     l = l * exp(m - m') + rowsum(p); acc = acc * exp(m - m') + p v_j; m = m'
//!   out_i = acc / max(l, 0.5)                  (l >= 1 unless the row saw no visible key)
//! ```
//!
//! Legend: B batch, H heads, T query positions, S key positions, D head dim, Dv value dim,
//! Tq query-tile rows, W width of a run of key tiles.
//!
//! Trade-offs, honestly:
//! - The tile map is the union over batch and heads (a tile is skipped only if it is empty for
//!   every example and head), because the tensor ops are batched over B and H. Per-example
//!   patterns (padding, documents) therefore skip less than a per-example kernel would.
//! - Consecutive key tiles of the same kind are merged into one run (one wider matmul), which
//!   keeps the op count low on CPU backends; empty tiles split runs.
//! - The element mask of partial tiles is built on the host from `AttnMask::allows` and uploaded;
//!   for structured masks only the diagonal/boundary tiles are partial, so this stays small.
//! - Under `Autodiff` the backward pass is burn's derivative of these ops: correct, and it
//!   stores each run's probabilities (memory grows with the non-empty area, not T x S).

use crate::dropout::Dropout;
use burn::prelude::*;
use burn::tensor::{Bool, TensorData};

use super::{check_qkv, divide_exactly, AttnOptions, MASKED_SCORE, MIN_DENOMINATOR};
use crate::error::Result;
use crate::mask::{AttnMask, TileKind};
use crate::tiles::{allowed_block, TileMap};

/// Block-sparse masked attention.
///
/// # Shapes
/// - `q`: `[B, H, T, D]`, `k`: `[B, H, S, D]`, `v`: `[B, H, S, Dv]`
/// - output: `[B, H, T, Dv]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &dyn AttnMask,
    options: &AttnOptions,
    dropout: Option<&Dropout>,
) -> Result<Tensor<B, 4>> {
    check_qkv(&q, &k, &v)?;
    let [batch, heads, seq_q, head_dim] = q.dims();
    let [_, _, seq_k, v_dim] = v.dims();
    let map = TileMap::build(
        mask,
        batch,
        heads,
        seq_q,
        seq_k,
        options.tile_q,
        options.tile_k,
    )?;
    Ok(attention_with_map(
        q,
        k,
        v,
        mask,
        &map,
        options.scale_for(head_dim),
        dropout,
        [batch, heads, seq_q, seq_k, head_dim, v_dim],
    ))
}

/// The kernel proper, given a prebuilt tile map (benchmarks time the map separately).
#[allow(clippy::too_many_arguments)]
pub fn attention_with_map<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &dyn AttnMask,
    map: &TileMap,
    scale: f64,
    dropout: Option<&Dropout>,
    [batch, heads, _seq_q, _seq_k, head_dim, v_dim]: [usize; 6],
) -> Tensor<B, 4> {
    let device = q.device();
    let hm = map.heads();
    let mut outputs = Vec::with_capacity(map.n_q_tiles());
    for qt in 0..map.n_q_tiles() {
        let qr = map.q_range(qt);
        let tq = qr.len();
        let runs = map.key_runs(|kt| map.union_kind(qt, kt), usize::MAX);
        if runs.is_empty() {
            // No visible key for any row of this tile: output 0, no gradient path.
            outputs.push(Tensor::zeros([batch, heads, tq, v_dim], &device));
            continue;
        }
        // Pre-scaling q costs Tq x D multiplies instead of Tq x W per run.
        let q_i = q
            .clone()
            .slice([0..batch, 0..heads, qr.clone(), 0..head_dim])
            .mul_scalar(scale); // [B, H, Tq, D]
        let mut state: Option<(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> = None; // m, l, acc
        for (kr, kind) in runs {
            let w = kr.len();
            let k_j = k
                .clone()
                .slice([0..batch, 0..heads, kr.clone(), 0..head_dim]); // [B, H, W, D]
            let v_j = v.clone().slice([0..batch, 0..heads, kr.clone(), 0..v_dim]); // [B, H, W, Dv]
            let mut s = q_i.clone().matmul(k_j.swap_dims(2, 3)); // [B, H, Tq, W]
            let masked = (kind == TileKind::Partial).then(|| {
                let data: Vec<bool> = allowed_block(mask, batch, hm, qr.clone(), kr.clone())
                    .into_iter()
                    .map(|a| !a)
                    .collect();
                Tensor::<B, 4, Bool>::from_data(TensorData::new(data, [batch, hm, tq, w]), &device)
                    .expand([batch, heads, tq, w]) // [B, H, Tq, W]
            });
            if let Some(m) = &masked {
                s = s.mask_fill(m.clone(), MASKED_SCORE);
            }
            let row_max = s.clone().max_dim(3); // [B, H, Tq, 1]
            let m_new = match &state {
                Some((m, _, _)) => m.clone().max_pair(row_max),
                None => row_max,
            };
            let mut p = (s - m_new.clone()).exp(); // [B, H, Tq, W]
            if let Some(m) = masked {
                p = p.mask_fill(m, 0.0);
            }
            let row_sum = p.clone().sum_dim(3); // [B, H, Tq, 1]
                                                // Dropout acts on the weights that multiply V, not on the normaliser.
            let p = match dropout {
                Some(d) => d.forward(p),
                None => p,
            };
            let pv = p.matmul(v_j); // [B, H, Tq, Dv]
            state = Some(match state {
                None => (m_new, row_sum, pv),
                Some((m, l, acc)) => {
                    let alpha = (m - m_new.clone()).exp(); // [B, H, Tq, 1]
                    (m_new, l * alpha.clone() + row_sum, acc * alpha + pv)
                }
            });
        }
        let (_, l, acc) = state.expect("runs is non-empty");
        outputs.push(divide_exactly(acc, l.clamp_min(MIN_DENOMINATOR))); // [B, H, Tq, Dv]
    }
    Tensor::cat(outputs, 2) // [B, H, T, Dv]
}
