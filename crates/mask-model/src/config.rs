//! Configurations of the Transformer trunk and the text encoder, and named size presets.
//!
//! Every config is a burn `#[derive(Config)]` (serde, JSON save/load, `with_*` builders), so a
//! checkpoint carries the exact config it was trained with.

use burn::prelude::*;
use mask_attn::AttnKernel;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, ModelError};

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionEncoding {
    /// A learned table added to the token embeddings (BERT, GPT-2).
    Learned,
    /// The fixed sin/cos table of Vaswani et al. 2017, added to the token embeddings.
    Sinusoidal,
    /// Rotary embeddings applied to queries and keys in every layer (Su et al. 2021, RoFormer),
    /// in the rotate-half layout of GPT-NeoX / HF LLaMA.
    Rotary,
}

/// Where the layer norms sit in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// `x = LN(x + sublayer(x))` (Vaswani et al. 2017, BERT). The embeddings are normalised too.
    PostLn,
    /// `x = x + sublayer(LN(x))`, with a final LN after the last block (GPT-2, ViT, MAE;
    /// Xiong et al. 2020).
    PreLn,
}

/// The stack of Transformer blocks: widths, depth, dropout, norm placement and the attention
/// kernel.
#[derive(Config, Debug)]
pub struct TransformerConfig {
    /// Model width `d_model`.
    pub d_model: usize,
    /// Attention heads; must divide `d_model`.
    pub n_heads: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Width of the feed-forward layer (`intermediate_size` in HF).
    pub d_ff: usize,
    /// Dropout on the embeddings and on each sub-layer's output. Default: 0.1
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Dropout on the attention weights. Default: 0.1
    #[config(default = 0.1)]
    pub attn_dropout: f64,
    /// Layer-norm placement. Default: post_ln
    #[config(default = "NormPlacement::PostLn")]
    pub norm: NormPlacement,
    /// Layer-norm epsilon. Default: 1e-12 (BERT)
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal initialisation of weights (biases start at 0, norms at
    /// 1). Default: 0.02 (BERT)
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Attention kernel. Default: block_sparse
    #[config(default = "AttnKernel::BlockSparse")]
    pub kernel: AttnKernel,
    /// Tile size of the block-sparse kernel. Default: 128
    #[config(default = 128)]
    pub tile: usize,
}

impl TransformerConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> std::result::Result<(), ModelError> {
        if self.d_model == 0 {
            return Err(invalid("d_model", 0, "at least 1"));
        }
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(invalid(
                "n_heads",
                self.n_heads,
                format!("a positive divisor of d_model = {}", self.d_model),
            ));
        }
        if self.n_layers == 0 {
            return Err(invalid("n_layers", 0, "at least 1"));
        }
        if self.d_ff == 0 {
            return Err(invalid("d_ff", 0, "at least 1"));
        }
        for (field, p) in [
            ("dropout", self.dropout),
            ("attn_dropout", self.attn_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(invalid(field, p, "a probability in [0, 1)"));
            }
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(invalid(
                "layer_norm_eps",
                self.layer_norm_eps,
                "a finite value > 0",
            ));
        }
        if !(self.init_std > 0.0 && self.init_std.is_finite()) {
            return Err(invalid("init_std", self.init_std, "a finite value > 0"));
        }
        if self.tile == 0 {
            return Err(invalid("tile", 0, "at least 1"));
        }
        Ok(())
    }

    /// Head dimension `D = d_model / n_heads`.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }
}

/// A token front end (embeddings + positions) on a [`TransformerConfig`] trunk.
#[derive(Config, Debug)]
pub struct TextEncoderConfig {
    /// The block stack.
    pub transformer: TransformerConfig,
    /// Vocabulary size (tokens, or items plus specials for BERT4Rec).
    pub vocab_size: usize,
    /// Longest sequence (`max_position_embeddings` in HF). Default: 512
    #[config(default = 512)]
    pub max_len: usize,
    /// Position encoding. Default: learned
    #[config(default = "PositionEncoding::Learned")]
    pub position: PositionEncoding,
}

/// Names of the presets [`TextEncoderConfig::preset`] knows.
pub const PRESETS: &[&str] = &[
    "bert-tiny",
    "bert-mini",
    "bert-small",
    "bert-base",
    "bert-small-peer",
    "gpt-tiny",
];

impl TextEncoderConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> std::result::Result<(), ModelError> {
        self.transformer.validate()?;
        if self.vocab_size == 0 {
            return Err(invalid("vocab_size", 0, "at least 1"));
        }
        if self.max_len == 0 {
            return Err(invalid("max_len", 0, "at least 1"));
        }
        if self.position == PositionEncoding::Rotary
            && !self.transformer.head_dim().is_multiple_of(2)
        {
            return Err(invalid(
                "n_heads",
                self.transformer.n_heads,
                "a head dim d_model / n_heads that is even (rotary embeddings rotate pairs)",
            ));
        }
        if self.position == PositionEncoding::Sinusoidal
            && !self.transformer.d_model.is_multiple_of(2)
        {
            return Err(invalid(
                "d_model",
                self.transformer.d_model,
                "even for sinusoidal positions",
            ));
        }
        Ok(())
    }

    /// A named size preset (see [`PRESETS`]):
    ///
    /// | name | layers | d_model | heads | d_ff | vocab | positions |
    /// |---|---|---|---|---|---|---|
    /// | `bert-tiny` | 2 | 128 | 2 | 512 | 30522 | learned, 512 |
    /// | `bert-mini` | 4 | 256 | 4 | 1024 | 30522 | learned, 512 |
    /// | `bert-small` | 4 | 512 | 8 | 2048 | 30522 | learned, 512 |
    /// | `bert-base` | 12 | 768 | 12 | 3072 | 30522 | learned, 512 |
    /// | `bert-small-peer` | 4 | 256 | 4 | 1024 | 8192 | learned, 512 |
    /// | `gpt-tiny` | 2 | 128 | 4 | 512 | 8192 | rotary, pre-LN, 1024 |
    ///
    /// The BERT sizes are those of Turc et al. 2019 ("Well-Read Students Learn Better");
    /// `bert-small-peer` is the HuggingFace peer measurement's model (docs/benchmarks.md).
    /// Override the vocabulary with `.with_vocab_size(n)`.
    pub fn preset(name: &str) -> std::result::Result<Self, ModelError> {
        let bert = |layers, d, heads, ff, vocab| {
            TextEncoderConfig::new(TransformerConfig::new(d, heads, layers, ff), vocab)
        };
        Ok(match name {
            "bert-tiny" => bert(2, 128, 2, 512, 30522),
            "bert-mini" => bert(4, 256, 4, 1024, 30522),
            "bert-small" => bert(4, 512, 8, 2048, 30522),
            "bert-base" => bert(12, 768, 12, 3072, 30522),
            "bert-small-peer" => bert(4, 256, 4, 1024, 8192),
            "gpt-tiny" => TextEncoderConfig::new(
                TransformerConfig::new(128, 4, 2, 512)
                    .with_norm(NormPlacement::PreLn)
                    .with_layer_norm_eps(1e-5),
                8192,
            )
            .with_max_len(1024)
            .with_position(PositionEncoding::Rotary),
            _ => {
                return Err(ModelError::UnknownPreset {
                    name: name.to_string(),
                    known: PRESETS.join(", "),
                })
            }
        })
    }
}
