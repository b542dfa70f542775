//! burn's fused attention, `burn::tensor::module::attention`: a CubeCL flash-attention kernel on
//! GPU backends (wgpu, CUDA) at inference; the unfused decomposition (full score matrix) on
//! NdArray and under `Autodiff`. The mask is materialised to burn's boolean tensor (`true` =
//! masked); the causal mask uses the backend's causal mode instead, and "no mask" passes none.
//! Dropout is not supported by burn's op. This is the inference path: under `Autodiff` burn
//! decomposes the op (no speed gain), and on wgpu its backward gives NaN gradients for query rows
//! with no visible key (seen with burn 0.21 on lavapipe; NdArray is fine), so
//! [`crate::MaskedSelfAttention`] trains through the block-sparse kernel instead.
//!
//! Legend: B batch, H heads, T query positions, S key positions, D head dim, Dv value dim.

use burn::prelude::*;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::check_qkv;
use crate::error::Result;
use crate::mask::AttnMask;
use crate::tiles::{check_mask, mask_tensor};

/// Masked attention through burn's fused op.
///
/// # Shapes
/// - `q`: `[B, H, T, D]`, `k`: `[B, H, S, D]`, `v`: `[B, H, S, Dv]`
/// - output: `[B, H, T, Dv]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &dyn AttnMask,
    scale: Option<f64>,
) -> Result<Tensor<B, 4>> {
    check_qkv(&q, &k, &v)?;
    let [batch, heads, seq_q, _] = q.dims();
    let seq_k = k.dims()[2];
    check_mask(mask, batch, seq_q, seq_k)?;
    let is_causal = mask.is_causal();
    let masked = if is_causal || mask.is_allow_all() {
        None
    } else {
        Some(mask_tensor::<B>(
            mask,
            batch,
            heads,
            seq_q,
            seq_k,
            &q.device(),
        )?)
    };
    let options = AttentionModuleOptions {
        scale,
        softcap: None,
        is_causal,
    };
    Ok(burn_attention(q, k, v, masked, None, options))
}
