//! # mask-attn
//!
//! Composable attention masks and masked self-attention on burn, generic over `B: Backend`.
//!
//! - [`mask`]: the [`AttnMask`] policy trait (`allows(b, h, q, k)` plus exact tile
//!   classification) and built-ins: key padding, causal, sliding window, documents, prefix-LM,
//!   token exclusion (the seed's rule), random key drop, and `and` / `or` / `not`.
//! - [`tiles`]: materialisation to `Tensor<B, 4, Bool>` (burn's convention: `true` = masked) and
//!   to a [`TileMap`] of empty / full / partial tiles.
//! - [`kernels`]: `reference`, `block_sparse` (skips empty tiles, online softmax) and `fused`
//!   (burn's `module::attention`).
//! - [`MaskedSelfAttention`]: the burn module used by `mask-model`.
//! - [`affine`]: `x W + b` (burn's `Linear`, a tied decoder) as one `gemm` call and one
//!   autodiff node on burn-flex, burn's ops elsewhere; [`flex`]: the `TypeId` specialisation
//!   to burn-flex it and the host kernels use.
//!
//! Legend used in every kernel: B batch, H heads, T query positions, S key positions,
//! D head dim.

pub mod affine;
pub mod config;
pub mod dropout;
pub mod error;
pub mod flex;
pub mod kernels;
pub mod mask;
pub mod module;
pub mod tiles;

pub use config::{AttnMaskConfig, MaskInputs};
pub use dropout::{dropout_scope, Dropout, DropoutScope};
pub use error::{AttnError, Result};
pub use kernels::{masked_attention, AttnKernel, AttnOptions};
pub use mask::{
    AllPartial, AllowAll, And, AttnMask, Causal, Document, KeyPadding, Not, Or, PrefixLm,
    RandomKeyDrop, SlidingWindow, TileKind, TokenExclusion,
};
pub use module::{MaskedSelfAttention, MaskedSelfAttentionConfig};
pub use tiles::{mask_tensor, TileMap};

pub use mask_core;

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
