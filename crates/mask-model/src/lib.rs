//! # mask-model
//!
//! A config-driven Transformer on burn, generic over `B: Backend`, whose every attention call
//! goes through `mask-attn`, so any attention-mask policy (padding, causal, window, documents,
//! token exclusion, ...) works in every model.
//!
//! - Trunk: [`TransformerConfig`] -> [`Transformer`] (post-LN or pre-LN blocks, GELU
//!   feed-forward, dropout, final norm); [`TextEncoderConfig`] -> [`TextEncoder`] (token
//!   embeddings + learned / sinusoidal / rotary positions).
//! - Heads: [`MlmModel`] (BERT head tied to the token embedding), [`ClassifierModel`] (CLS or
//!   mean pooling), [`TokenClassifierModel`] (a class per token: tagging),
//!   [`CausalLmModel`] (decoder-only, causal by construction), [`SharedEncoderModel`] (one
//!   encoder, several prediction heads and token classifiers: multi-task and UniLM training).
//! - Other front ends: [`VitMae`] (ViT patches, MAE decoder, classification head) and
//!   [`Bert4Rec`] (item sequences).
//! - [`checkpoint`]: atomic, checksummed checkpoints that refuse a mismatched config;
//!   [`export`]: safetensors with HF BERT names.
//! - Presets: [`TextEncoderConfig::preset`] (`bert-tiny`, `bert-small-peer`, ...).
//!
//! Legend in shape docs: B batch, T positions, d `d_model`, H heads, D head dim, V vocabulary.

pub mod activation;
pub mod bert4rec;
pub mod block;
pub mod causal_lm;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod encoder;
pub mod error;
pub mod export;
mod host;
pub mod init;
pub mod loss;
pub mod mlm;
pub mod multitask;
pub mod norm;
pub mod position;
pub mod tagger;
pub mod vit_mae;

pub use bert4rec::{Bert4Rec, Bert4RecConfig};
pub use block::{Transformer, TransformerBlock};
pub use causal_lm::{CausalLmConfig, CausalLmModel};
pub use checkpoint::{load_checkpoint, save_checkpoint, Container, ModelConfig};
pub use classifier::{ClassifierConfig, ClassifierModel, Pooling};
pub use config::{NormPlacement, PositionEncoding, TextEncoderConfig, TransformerConfig, PRESETS};
pub use encoder::{ids_tensor, TextEncoder};
pub use error::{ModelError, Result};
pub use export::{hf_bert_config, import_hf_bert_mlm, NamedTensors, HF_BERT_NAMES};
pub use init::materialize;
pub use loss::{masked_lm_loss, masked_patch_mse, token_cross_entropy, MaskedTargets};
pub use mlm::{MlmConfig, MlmHead, MlmModel};
pub use multitask::{SharedEncoderConfig, SharedEncoderModel, TaggerHead};
pub use tagger::{TokenClassifierConfig, TokenClassifierModel};
pub use vit_mae::{MaeIndices, MaeOutput, VitMae, VitMaeConfig};

pub use mask_attn;

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
