//! Multi-head self-attention whose mask is any [`AttnMask`] policy (Vaswani et al. 2017,
//! section 3.2.2), computed by any of the kernels. Used by `mask-model`.
//!
//! Legend: B batch, T positions, H heads, D = d_model / H head dim.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::affine;
use crate::dropout::Dropout;
use crate::error::AttnError;
use crate::kernels::{masked_attention, AttnKernel, AttnOptions};
use crate::mask::AttnMask;

/// Configuration of [`MaskedSelfAttention`].
#[derive(Config, Debug)]
pub struct MaskedSelfAttentionConfig {
    /// Model width `d_model`.
    pub d_model: usize,
    /// Number of heads; must divide `d_model`.
    pub n_heads: usize,
    /// Dropout on the attention weights. Default: 0.1
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Kernel computing the attention. Default: block_sparse
    #[config(default = "AttnKernel::BlockSparse")]
    pub kernel: AttnKernel,
    /// Tile size of the block-sparse kernel. Default: 128
    #[config(default = 128)]
    pub tile: usize,
}

impl MaskedSelfAttentionConfig {
    /// Builds the module, refusing `d_model` not divisible by `n_heads`.
    pub fn init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<MaskedSelfAttention<B>, AttnError> {
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(AttnError::InvalidValue {
                field: "n_heads",
                value: self.n_heads.to_string(),
                expected: "a positive divisor of d_model",
            });
        }
        if self.tile == 0 {
            return Err(AttnError::InvalidValue {
                field: "tile",
                value: "0".into(),
                expected: "a tile size >= 1",
            });
        }
        let linear = || LinearConfig::new(self.d_model, self.d_model).init(device);
        Ok(MaskedSelfAttention {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            dropout: Dropout::new(self.dropout)?,
            n_heads: self.n_heads,
            d_k: self.d_model / self.n_heads,
            kernel: self.kernel,
            tile: self.tile,
        })
    }
}

/// Multi-head self-attention with a pluggable mask policy and kernel.
#[derive(Module, Debug)]
pub struct MaskedSelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    /// Output projection.
    pub output: Linear<B>,
    /// Dropout on attention weights.
    pub dropout: Dropout,
    /// Number of heads.
    pub n_heads: usize,
    /// Head dim.
    pub d_k: usize,
    /// Kernel.
    #[module(skip)]
    pub kernel: AttnKernel,
    /// Tile size of the block-sparse kernel.
    pub tile: usize,
}

impl<B: Backend> MaskedSelfAttention<B> {
    /// Attends `x` to itself under `mask`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d_model]`
    /// - output: `[B, T, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: &dyn AttnMask) -> Result<Tensor<B, 3>, AttnError> {
        self.forward_with(x, mask, |t| t)
    }

    /// Like [`forward`](Self::forward), with `qk` applied to the queries and keys after the
    /// head split (rotary position embeddings hook in here).
    ///
    /// # Shapes
    /// - `x`: `[B, T, d_model]`
    /// - `qk` maps `[B, H, T, D]` to `[B, H, T, D]`
    /// - output: `[B, T, d_model]`
    pub fn forward_with<F>(
        &self,
        x: Tensor<B, 3>,
        mask: &dyn AttnMask,
        qk: F,
    ) -> Result<Tensor<B, 3>, AttnError>
    where
        F: Fn(Tensor<B, 4>) -> Tensor<B, 4>,
    {
        let [batch, seq, d_model] = x.dims();
        let (h, d) = (self.n_heads, self.d_k);
        let split = |t: Tensor<B, 3>| t.reshape([batch, seq, h, d]).swap_dims(1, 2); // [B, H, T, D]

        // On flex each projection is one `gemm` into a buffer that starts as the bias
        // (`affine`); burn's `Linear` elsewhere.
        let q = qk(split(affine::linear(&self.query, x.clone())));
        let k = qk(split(affine::linear(&self.key, x.clone())));
        let v = split(affine::linear(&self.value, x));
        // burn's fused op is an inference path: no dropout, and under `Autodiff` burn
        // decomposes it (full score matrix), with NaN gradients for rows without a visible key
        // on wgpu. Training goes through the block-sparse kernel instead. (The host kernel
        // trains on flex and falls back to block-sparse on other autodiff backends itself.)
        let kernel = match self.kernel {
            AttnKernel::Fused if B::ad_enabled(&q.device()) => AttnKernel::BlockSparse,
            k => k,
        };
        let options = AttnOptions::default().with_tile(self.tile);
        let ctx = masked_attention(kernel, q, k, v, mask, &options, Some(&self.dropout))?; // [B, H, T, D]
        let ctx = ctx.swap_dims(1, 2).reshape([batch, seq, d_model]); // [B, T, d_model]
        Ok(affine::linear(&self.output, ctx))
    }
}
