//! # dynmask
//!
//! Training Transformers with *dynamic* masking on burn. This facade re-exports the layers:
//!
//! - [`core`] (`mask-core`): masking policies, pure Rust;
//! - [`attn`] (`mask-attn`): attention-mask policies and masked attention kernels;
//! - [`model`] (`mask-model`): Transformer encoder/decoder and heads;
//! - [`train`] (`mask-train`): data, learner loop, metrics, checkpoints.

pub use mask_attn as attn;
pub use mask_core as core;
pub use mask_model as model;
pub use mask_train as train;
