//! One Transformer block (Vaswani et al. 2017): masked multi-head self-attention and a GELU
//! feed-forward layer (Hendrycks & Gimpel 2016, as in BERT), each with dropout and a residual,
//! with post-LN (BERT) or pre-LN (GPT-2, ViT) placement of the layer norms.
//!
//! Legend: B batch, T positions, d `d_model`, F `d_ff`.

use crate::activation::gelu;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::norm::normalize;
use mask_attn::{affine, AttnMask, Dropout, MaskedSelfAttention, MaskedSelfAttentionConfig};

use crate::config::{NormPlacement, TransformerConfig};
use crate::error::Result;
use crate::init::{layer_norm, linear};
use crate::position::Rope;

/// Attention + feed-forward with residuals and layer norms.
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    /// Masked self-attention (`attention.self` + `attention.output.dense` in HF).
    pub attn: MaskedSelfAttention<B>,
    /// Norm around the attention sub-layer (`attention.output.LayerNorm`).
    pub attn_norm: LayerNorm<B>,
    /// Feed-forward input `d -> F` (`intermediate.dense`).
    pub ff_in: Linear<B>,
    /// Feed-forward output `F -> d` (`output.dense`).
    pub ff_out: Linear<B>,
    /// Norm around the feed-forward sub-layer (`output.LayerNorm`).
    pub ff_norm: LayerNorm<B>,
    /// Dropout on each sub-layer's output.
    pub dropout: Dropout,
    /// Layer-norm placement.
    #[module(skip)]
    pub norm: NormPlacement,
}

impl<B: Backend> TransformerBlock<B> {
    /// Builds a block from a validated config.
    pub(crate) fn new(config: &TransformerConfig, device: &B::Device) -> Result<Self> {
        let (d, std) = (config.d_model, config.init_std);
        let mut attn = MaskedSelfAttentionConfig::new(d, config.n_heads)
            .with_dropout(config.attn_dropout)
            .with_kernel(config.kernel)
            .with_tile(config.tile)
            .init(device)?;
        // BERT initialisation for the projections too (burn's default is Kaiming uniform).
        for proj in [
            &mut attn.query,
            &mut attn.key,
            &mut attn.value,
            &mut attn.output,
        ] {
            *proj = linear(d, d, std, true, device);
        }
        Ok(Self {
            attn,
            attn_norm: layer_norm(d, config.layer_norm_eps, device),
            ff_in: linear(d, config.d_ff, std, true, device),
            ff_out: linear(config.d_ff, d, std, true, device),
            ff_norm: layer_norm(d, config.layer_norm_eps, device),
            dropout: Dropout::new(config.dropout)?,
            norm: config.norm,
        })
    }

    fn attention(
        &self,
        x: Tensor<B, 3>,
        mask: &dyn AttnMask,
        rope: Option<&Rope<B>>,
    ) -> Result<Tensor<B, 3>> {
        let out = match rope {
            Some(rope) => self.attn.forward_with(x, mask, |t| rope.apply(t))?,
            None => self.attn.forward(x, mask)?,
        };
        Ok(self.dropout.forward(out))
    }

    fn feed_forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = gelu(affine::linear(&self.ff_in, x)); // [B, T, F]
        self.dropout.forward(affine::linear(&self.ff_out, hidden))
    }

    /// Applies the block.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]` -> `[B, T, d]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: &dyn AttnMask,
        rope: Option<&Rope<B>>,
    ) -> Result<Tensor<B, 3>> {
        Ok(match self.norm {
            NormPlacement::PostLn => {
                let x = normalize(&self.attn_norm, x.clone() + self.attention(x, mask, rope)?);
                normalize(&self.ff_norm, x.clone() + self.feed_forward(x))
            }
            NormPlacement::PreLn => {
                let x = x.clone() + self.attention(normalize(&self.attn_norm, x), mask, rope)?;
                x.clone() + self.feed_forward(normalize(&self.ff_norm, x))
            }
        })
    }
}

/// A stack of blocks, with a final layer norm when the blocks are pre-LN.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// The blocks, input first.
    pub blocks: Vec<TransformerBlock<B>>,
    /// Final norm (pre-LN only; post-LN blocks end normalised).
    pub final_norm: Option<LayerNorm<B>>,
}

impl TransformerConfig {
    /// Builds the stack, validating the config first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Transformer<B>> {
        self.validate()?;
        let blocks = (0..self.n_layers)
            .map(|_| TransformerBlock::new(self, device))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = (self.norm == NormPlacement::PreLn)
            .then(|| layer_norm(self.d_model, self.layer_norm_eps, device));
        let stack = Transformer { blocks, final_norm };
        crate::init::materialize(&stack);
        Ok(stack)
    }
}

impl<B: Backend> Transformer<B> {
    /// Applies every block, then the final norm if any.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]` -> `[B, T, d]`
    pub fn forward(
        &self,
        mut x: Tensor<B, 3>,
        mask: &dyn AttnMask,
        rope: Option<&Rope<B>>,
    ) -> Result<Tensor<B, 3>> {
        for block in &self.blocks {
            x = block.forward(x, mask, rope)?;
        }
        Ok(match &self.final_norm {
            Some(norm) => normalize(norm, x),
            None => x,
        })
    }
}
