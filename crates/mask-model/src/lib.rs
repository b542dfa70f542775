//! # mask-model
//!
//! Transformer encoder/decoder with MLM, classification, causal-LM, patch and item front ends on
//! burn, built on `mask-attn`. The dependency edge is in place; the model comes with its own issue.

pub use mask_attn;
