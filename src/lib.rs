//! # dynmask
//!
//! Training Transformers with *dynamic* masking on burn. This facade re-exports the layers and
//! holds the applications built on them:
//!
//! - [`core`] (`mask-core`): masking policies, pure Rust;
//! - [`data`] (`mask-data`): corpora, tokenizer, POS tags, images, MovieLens; no burn;
//! - [`attn`] (`mask-attn`): attention-mask policies and masked attention kernels;
//! - [`model`] (`mask-model`): Transformer encoder/decoder and heads;
//! - [`train`] (`mask-train`): the `TrainTask` trait, the `Learner`, the built-in tasks;
//! - [`studies`]: text, vision and recommendation studies (the `dynmask compare` command);
//! - [`backend`]: the backends a binary can run on, chosen by flag;
//! - [`cli`]: the terminal front end of the binaries (progress bar, logging).

pub mod backend;
pub mod cli;
pub mod studies;

pub use mask_attn as attn;
pub use mask_core as core;
pub use mask_data as data;
pub use mask_model as model;
pub use mask_train as train;
