//! Masked-language-model head and model (Devlin et al. 2018, BERT section 3.1, task #1): a
//! dense + GELU + layer-norm transform, then logits against the token embedding matrix (tied
//! weights, Press & Wolf 2017) plus a per-token bias, as HF's `BertLMPredictionHead`.
//!
//! Legend: B batch, T positions, N selected positions, d `d_model`, V vocabulary.

use crate::activation::gelu;
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::norm::normalize;
use mask_attn::{affine, AttnMask};

use crate::config::TextEncoderConfig;
use crate::encoder::TextEncoder;
use crate::error::ModelError;
use crate::init::{layer_norm, linear};

/// Configuration of an [`MlmModel`].
#[derive(Config, Debug)]
pub struct MlmConfig {
    /// The encoder.
    pub encoder: TextEncoderConfig,
}

/// The BERT prediction head; the decoder matrix is the encoder's token embedding.
#[derive(Module, Debug)]
pub struct MlmHead<B: Backend> {
    /// `d -> d` transform (`cls.predictions.transform.dense`).
    pub transform: Linear<B>,
    /// Norm after GELU (`cls.predictions.transform.LayerNorm`).
    pub norm: LayerNorm<B>,
    /// Output bias `[V]` (`cls.predictions.bias`).
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> MlmHead<B> {
    /// A fresh head for `config`'s encoder: transform `N(0, init_std)`, norm 1/0, bias 0.
    pub fn new(config: &TextEncoderConfig, device: &B::Device) -> Self {
        let t = &config.transformer;
        Self {
            transform: linear(t.d_model, t.d_model, t.init_std, true, device),
            norm: layer_norm(t.d_model, t.layer_norm_eps, device),
            bias: burn::module::Initializer::Zeros.init([config.vocab_size], device),
        }
    }

    /// Logits against the tied embedding matrix.
    ///
    /// # Shapes
    /// - `hidden`: `[N, d]`, `embeddings`: `[V, d]` -> `[N, V]`
    pub fn forward(&self, hidden: Tensor<B, 2>, embeddings: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = normalize(&self.norm, gelu(affine::linear(&self.transform, hidden))); // [N, d]
        affine::tied_logits(h, embeddings, self.bias.val()) // [N, V]
    }
}

/// Encoder + MLM head.
#[derive(Module, Debug)]
pub struct MlmModel<B: Backend> {
    /// The encoder (reused by fine-tuning, see [`MlmModel::into_encoder`]).
    pub encoder: TextEncoder<B>,
    /// The prediction head.
    pub head: MlmHead<B>,
}

impl MlmConfig {
    /// Builds the model, validating the config first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<MlmModel<B>> {
        let model = MlmModel {
            encoder: self.encoder.init(device)?,
            head: MlmHead::new(&self.encoder, device),
        };
        crate::init::materialize(&model);
        Ok(model)
    }
}

impl<B: Backend> MlmModel<B> {
    /// Logits at every position.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]` -> `[B, T, V]`
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: &dyn AttnMask,
    ) -> crate::Result<Tensor<B, 3>> {
        let hidden = self.encoder.forward(ids, mask)?; // [B, T, d]
        let [batch, seq, d] = hidden.dims();
        let logits = self.head.forward(
            hidden.reshape([batch * seq, d]), // [B*T, d]
            self.encoder.word_embeddings.weight.val(),
        );
        Ok(logits.reshape([batch, seq, self.encoder.vocab_size])) // [B, T, V]
    }

    /// Logits at the N flat positions `b * T + t` only: the head (the largest matmul of a
    /// small model, `d x V`) runs on the ~15% masked positions instead of all of them.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`, `positions`: `[N]` -> `[N, V]`
    pub fn forward_at(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: &dyn AttnMask,
        positions: Tensor<B, 1, Int>,
    ) -> crate::Result<Tensor<B, 2>> {
        let hidden = self.encoder.forward(ids, mask)?; // [B, T, d]
        let [batch, seq, d] = hidden.dims();
        let [n] = positions.dims();
        if n == 0 {
            return Err(ModelError::Shape {
                what: "number of MLM positions".into(),
                expected: ">= 1".into(),
                got: "0".into(),
            });
        }
        let selected = hidden.reshape([batch * seq, d]).select(0, positions); // [N, d]
        Ok(self
            .head
            .forward(selected, self.encoder.word_embeddings.weight.val()))
    }

    /// The encoder, for fine-tuning.
    pub fn into_encoder(self) -> TextEncoder<B> {
        self.encoder
    }
}
