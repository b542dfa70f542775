//! # mask-attn
//!
//! Attention-mask policies and masked self-attention kernels (reference and block-sparse) on
//! burn. The dependency edge to `mask-core` is in place; the kernels come with their own issue.

pub use mask_core;
