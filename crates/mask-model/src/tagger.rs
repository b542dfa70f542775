//! Token classification on the encoder (BERT section 4.3, e.g. part-of-speech tagging or NER):
//! each selected position's state through dropout and a linear layer to the classes.
//!
//! Legend: B batch, T positions, N selected positions, d `d_model`, C classes.

use burn::nn::Linear;
use burn::prelude::*;
use mask_attn::{AttnMask, Dropout};

use crate::config::TextEncoderConfig;
use crate::encoder::TextEncoder;
use crate::error::{invalid, ModelError};
use crate::init::linear;

/// Configuration of a [`TokenClassifierModel`].
#[derive(Config, Debug)]
pub struct TokenClassifierConfig {
    /// The encoder.
    pub encoder: TextEncoderConfig,
    /// Number of classes C.
    pub n_classes: usize,
    /// Dropout before the classifier. Default: 0.1
    #[config(default = 0.1)]
    pub classifier_dropout: f64,
}

/// Encoder + per-token linear classifier.
#[derive(Module, Debug)]
pub struct TokenClassifierModel<B: Backend> {
    /// The encoder (pretrained or fresh).
    pub encoder: TextEncoder<B>,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// `d -> C` (`classifier`).
    pub classifier: Linear<B>,
}

impl TokenClassifierConfig {
    /// Builds the model with a fresh encoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<TokenClassifierModel<B>> {
        self.init_with_encoder(self.encoder.init(device)?, device)
    }

    /// Builds the model on an existing (e.g. pretrained) encoder; its sizes must match the
    /// config's.
    pub fn init_with_encoder<B: Backend>(
        &self,
        encoder: TextEncoder<B>,
        device: &B::Device,
    ) -> crate::Result<TokenClassifierModel<B>> {
        if self.n_classes < 2 {
            return Err(invalid("n_classes", self.n_classes, "at least 2"));
        }
        if !(0.0..1.0).contains(&self.classifier_dropout) {
            return Err(invalid(
                "classifier_dropout",
                self.classifier_dropout,
                "a probability in [0, 1)",
            ));
        }
        self.encoder.check_encoder(&encoder, "tagger")?;
        let t = &self.encoder.transformer;
        let model = TokenClassifierModel {
            encoder,
            dropout: Dropout::new(self.classifier_dropout)?,
            classifier: linear(t.d_model, self.n_classes, t.init_std, true, device),
        };
        crate::init::materialize(&model);
        Ok(model)
    }
}

impl<B: Backend> TokenClassifierModel<B> {
    /// Class logits at the N flat positions `b * T + t`.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`, `positions`: `[N]` -> `[N, C]`
    pub fn forward_at(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: &dyn AttnMask,
        positions: Tensor<B, 1, Int>,
    ) -> crate::Result<Tensor<B, 2>> {
        let hidden = self.encoder.forward(ids, mask)?; // [B, T, d]
        self.head_at(hidden, positions)
    }

    /// Class logits from encoder states at the N flat positions: the part that trains when the
    /// encoder is frozen.
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, d]`, `positions`: `[N]` -> `[N, C]`
    pub fn head_at(
        &self,
        hidden: Tensor<B, 3>,
        positions: Tensor<B, 1, Int>,
    ) -> crate::Result<Tensor<B, 2>> {
        let [batch, seq, d] = hidden.dims();
        let [n] = positions.dims();
        if n == 0 {
            return Err(ModelError::Shape {
                what: "number of tagged positions".into(),
                expected: ">= 1".into(),
                got: "0".into(),
            });
        }
        let selected = hidden.reshape([batch * seq, d]).select(0, positions); // [N, d]
        Ok(self.classifier.forward(self.dropout.forward(selected))) // [N, C]
    }
}
