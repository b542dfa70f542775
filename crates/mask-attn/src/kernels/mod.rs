//! Masked attention kernels, generic over `B: Backend` (and so over `Autodiff<B>` for training).
//!
//! Legend: B batch, H heads, T query positions, S key positions, D head dim (Dv for values).
//!
//! - [`reference`](mod@reference): plain tensor ops, full score matrix, NaN-free on fully masked rows.
//! - [`block_sparse`]: tiled online softmax (flash-attention style) that skips empty tiles.
//! - [`fused`]: burn's `module::attention` (a fused flash kernel on GPU backends at inference).
//! - [`host`]: the CPU fast path: per-example tile skipping, `gemm` and a vectorised `exp` on
//!   host memory; [`host_train`] makes it trainable on `Autodiff<Flex>` (one autodiff node with
//!   a flash-style backward) and falls back to `block_sparse` on other autodiff backends.
//!
//! All three follow one convention for a query row with no visible key: output exactly 0 and
//! zero gradient (PyTorch SDPA / FlexAttention).

pub mod block_sparse;
pub mod fused;
pub mod host;
pub mod host_train;
pub mod reference;

use crate::dropout::Dropout;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{AttnError, Result};
use crate::mask::AttnMask;
use crate::tiles::mask_tensor;

/// Score assigned to masked pairs before the row maximum is taken. Finite, so that a fully
/// masked row never computes `-inf - (-inf)`; far below any real score, so `exp` underflows to 0.
/// (f32/bf16 range; an f16 backend would need a smaller magnitude.)
pub(crate) const MASKED_SCORE: f32 = -1.0e30;

/// Lower clamp of the softmax denominator. A row with at least one visible key has a
/// denominator >= 1 (its maximum contributes `exp(0)`), so 0.5 only ever touches fully masked
/// rows (denominator 0), whose output becomes `0 / 0.5 = 0` with finite, zero gradients, and it
/// never sits on the clamp's boundary where the gradient would be cut.
pub(crate) const MIN_DENOMINATOR: f32 = 0.5;

/// `x / denom` (broadcast over the last axis) whose gradient does not go through the backend's
/// `recip`: burn's autodiff differentiates `a / b` into `grad * recip(b)`, and burn-ndarray's
/// SIMD `recip` is the CPU's approximate reciprocal (`_mm256_rcp_ps` on AVX2: 12 bits, relative
/// error up to 3.7e-4; `rcp14` on AVX-512), which put the attention gradients up to 1.5% off on
/// an AVX2 machine (dq 0.00824 for 0.00837). Here the inverse is an exact division with an
/// untracked numerator, and the gradient of a product needs no reciprocal. Costs one `[.., 1]`
/// division; forward values may differ from `x / denom` in the last bit.
///
/// # Shapes
/// - `x`: `[B, H, T, C]`, `denom`: `[B, H, T, 1]`; output `[B, H, T, C]`
pub(crate) fn divide_exactly<B: Backend>(x: Tensor<B, 4>, denom: Tensor<B, 4>) -> Tensor<B, 4> {
    let inverse = denom.ones_like().div(denom); // [B, H, T, 1]
    x.mul(inverse)
}

/// Which kernel computes masked attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnKernel {
    /// [`reference::attention`]: materialised mask, full score matrix.
    Reference,
    /// [`block_sparse::attention`]: skips empty tiles. The default.
    #[default]
    BlockSparse,
    /// [`fused::attention`]: burn's fused attention (no dropout support).
    Fused,
    /// [`host_train::attention`]: the CPU fast path on host memory; trains on
    /// `Autodiff<Flex>` (with dropout), block-sparse on other autodiff backends.
    Host,
}

/// Options shared by the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttnOptions {
    /// Score scale; `None` means `1 / sqrt(D)`. Default: None
    pub scale: Option<f64>,
    /// Query tile size of the block-sparse kernel. Default: 128
    pub tile_q: usize,
    /// Key tile size of the block-sparse kernel. Default: 128
    pub tile_k: usize,
}

impl Default for AttnOptions {
    fn default() -> Self {
        Self {
            scale: None,
            tile_q: 128,
            tile_k: 128,
        }
    }
}

impl AttnOptions {
    /// Options with square tiles of `tile` positions.
    pub fn with_tile(mut self, tile: usize) -> Self {
        self.tile_q = tile;
        self.tile_k = tile;
        self
    }

    pub(crate) fn scale_for(&self, head_dim: usize) -> f64 {
        self.scale.unwrap_or(1.0 / (head_dim as f64).sqrt())
    }
}

/// Checks `q [B, H, T, D]`, `k [B, H, S, D]`, `v [B, H, S, Dv]`.
pub(crate) fn check_qkv<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> Result<()> {
    let [b, h, _t, d] = q.dims();
    let [bk, hk, s, dk] = k.dims();
    let [bv, hv, sv, _dv] = v.dims();
    let checks = [
        ("batch of k vs q", b, bk),
        ("batch of v vs q", b, bv),
        ("heads of k vs q", h, hk),
        ("heads of v vs q", h, hv),
        ("head dim of k vs q", d, dk),
        ("key positions of v vs k", s, sv),
    ];
    for (what, expected, got) in checks {
        if expected != got {
            return Err(AttnError::Shape {
                what: what.into(),
                expected,
                got,
            });
        }
    }
    Ok(())
}

/// Masked attention with the chosen kernel.
///
/// # Shapes
/// - `q`: `[B, H, T, D]`, `k`: `[B, H, S, D]`, `v`: `[B, H, S, Dv]`
/// - output: `[B, H, T, Dv]`
pub fn masked_attention<B: Backend>(
    kernel: AttnKernel,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &dyn AttnMask,
    options: &AttnOptions,
    dropout: Option<&Dropout>,
) -> Result<Tensor<B, 4>> {
    match kernel {
        AttnKernel::Reference => {
            check_qkv(&q, &k, &v)?;
            let [b, h, t, _] = q.dims();
            let s = k.dims()[2];
            let masked = if mask.is_allow_all() {
                crate::tiles::check_mask(mask, b, t, s)?;
                None
            } else {
                Some(mask_tensor::<B>(mask, b, h, t, s, &q.device())?)
            };
            Ok(reference::attention(
                q,
                k,
                v,
                masked,
                options.scale,
                dropout,
            ))
        }
        AttnKernel::BlockSparse => block_sparse::attention(q, k, v, mask, options, dropout),
        AttnKernel::Fused => fused::attention(q, k, v, mask, options.scale),
        AttnKernel::Host => host_train::attention(q, k, v, mask, options, dropout),
    }
}
