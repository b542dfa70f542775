//! Reference masked attention: `softmax(Q K^T * scale, masked) V` with plain tensor ops and the
//! full `[B, H, T, S]` score matrix (Vaswani et al. 2017, eq. 1). Readable, and the yardstick for
//! every other kernel.
//!
//! Legend: B batch, H heads, T query positions, S key positions, D head dim, Dv value dim.
//!
//! Fully masked rows: masked scores are set to a large finite negative value before the row
//! maximum (no `-inf - -inf`), their `exp` is zeroed by the mask, and the denominator is clamped
//! (the kernels' `MIN_DENOMINATOR`), so such a row outputs exactly 0 with zero gradient.

use crate::dropout::Dropout;
use burn::prelude::*;
use burn::tensor::Bool;

use super::{divide_exactly, MASKED_SCORE, MIN_DENOMINATOR};

/// Masked scaled dot-product attention.
///
/// `masked` follows burn's convention, `true` = masked, and broadcasts over batch and heads
/// (`[B or 1, H or 1, T, S]`). `dropout`, when given, acts on the attention weights.
///
/// # Shapes
/// - `q`: `[B, H, T, D]`, `k`: `[B, H, S, D]`, `v`: `[B, H, S, Dv]`
/// - output: `[B, H, T, Dv]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    masked: Option<Tensor<B, 4, Bool>>,
    scale: Option<f64>,
    dropout: Option<&Dropout>,
) -> Tensor<B, 4> {
    let [batch, heads, seq_q, head_dim] = q.dims();
    let seq_k = k.dims()[2];
    let scale = scale.unwrap_or(1.0 / (head_dim as f64).sqrt());
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [B, H, T, S]
    let masked = masked.map(|m| m.expand([batch, heads, seq_q, seq_k]));
    let scores = match &masked {
        Some(masked) => scores.mask_fill(masked.clone(), MASKED_SCORE),
        None => scores,
    };
    let row_max = scores.clone().max_dim(3); // [B, H, T, 1]
    let p = (scores - row_max).exp(); // [B, H, T, S]
    let p = match masked {
        Some(masked) => p.mask_fill(masked, 0.0),
        None => p,
    };
    let denom = p.clone().sum_dim(3).clamp_min(MIN_DENOMINATOR); // [B, H, T, 1]
                                                                 // Not `p / denom`: see `divide_exactly` (the backend's approximate reciprocal).
    let weights = divide_exactly(p, denom);
    let weights = match dropout {
        Some(d) => d.forward(weights),
        None => weights,
    };
    weights.matmul(v) // [B, H, T, Dv]
}
