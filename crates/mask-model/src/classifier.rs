//! Sequence classification on the encoder (BERT section 4.1): the `[CLS]` state through BERT's
//! pooler (dense + tanh), or the mean of the real positions' states, then dropout and a linear
//! layer to the classes.
//!
//! Legend: B batch, T positions, d `d_model`, C classes.

use burn::nn::Linear;
use burn::prelude::*;
use mask_attn::{AttnMask, Dropout};
use serde::{Deserialize, Serialize};

use crate::config::TextEncoderConfig;
use crate::encoder::TextEncoder;
use crate::error::{invalid, ModelError};
use crate::init::linear;

/// How a sequence becomes one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Position 0 through dense + tanh (BERT's pooler).
    Cls,
    /// Mean over the first `length` positions of each sequence.
    Mean,
}

/// Configuration of a [`ClassifierModel`].
#[derive(Config, Debug)]
pub struct ClassifierConfig {
    /// The encoder.
    pub encoder: TextEncoderConfig,
    /// Number of classes C.
    pub n_classes: usize,
    /// Pooling. Default: cls
    #[config(default = "Pooling::Cls")]
    pub pooling: Pooling,
    /// Dropout before the classifier. Default: 0.1
    #[config(default = 0.1)]
    pub classifier_dropout: f64,
}

/// Encoder + pooling + linear classifier.
#[derive(Module, Debug)]
pub struct ClassifierModel<B: Backend> {
    /// The encoder (pretrained or fresh).
    pub encoder: TextEncoder<B>,
    /// BERT pooler `d -> d` (CLS pooling only; `bert.pooler.dense`).
    pub pooler: Option<Linear<B>>,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// `d -> C` (`classifier`).
    pub classifier: Linear<B>,
}

impl ClassifierConfig {
    fn check(&self) -> crate::Result<()> {
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
        Ok(())
    }

    /// Builds the model with a fresh encoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<ClassifierModel<B>> {
        self.init_with_encoder(self.encoder.init(device)?, device)
    }

    /// Builds the model on an existing (e.g. pretrained) encoder; its sizes must match the
    /// config's.
    pub fn init_with_encoder<B: Backend>(
        &self,
        encoder: TextEncoder<B>,
        device: &B::Device,
    ) -> crate::Result<ClassifierModel<B>> {
        self.check()?;
        self.encoder.check_encoder(&encoder, "classifier")?;
        let t = &self.encoder.transformer;
        let (d, std) = (t.d_model, t.init_std);
        let model = ClassifierModel {
            encoder,
            pooler: (self.pooling == Pooling::Cls).then(|| linear(d, d, std, true, device)),
            dropout: Dropout::new(self.classifier_dropout)?,
            classifier: linear(d, self.n_classes, std, true, device),
        };
        crate::init::materialize(&model);
        Ok(model)
    }
}

impl<B: Backend> ClassifierModel<B> {
    /// Class logits. `lengths` (real positions per sequence) is used by mean pooling; `None`
    /// averages over all T positions.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]` -> `[B, C]`
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: &dyn AttnMask,
        lengths: Option<&[usize]>,
    ) -> crate::Result<Tensor<B, 2>> {
        let hidden = self.encoder.forward(ids, mask)?; // [B, T, d]
        self.head(hidden, lengths)
    }

    /// Class logits from encoder states (pooling, dropout, classifier): the part that trains
    /// when the encoder is frozen.
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, d]` -> `[B, C]`
    pub fn head(
        &self,
        hidden: Tensor<B, 3>,
        lengths: Option<&[usize]>,
    ) -> crate::Result<Tensor<B, 2>> {
        let [batch, seq, d] = hidden.dims();
        let device = hidden.device();
        let pooled = match &self.pooler {
            Some(pooler) => {
                let cls = hidden.slice([0..batch, 0..1, 0..d]).reshape([batch, d]); // [B, d]
                pooler.forward(cls).tanh()
            }
            None => {
                let weights = mean_weights(batch, seq, lengths)?;
                let w = Tensor::<B, 2>::from_data(TensorData::new(weights, [batch, seq]), &device);
                (hidden * w.unsqueeze_dim::<3>(2))
                    .sum_dim(1)
                    .reshape([batch, d]) // [B, d]
            }
        };
        Ok(self.classifier.forward(self.dropout.forward(pooled)))
    }
}

/// `[B, T]` weights `1 / length` on the first `length` positions of each row.
fn mean_weights(batch: usize, seq: usize, lengths: Option<&[usize]>) -> crate::Result<Vec<f32>> {
    let lengths = match lengths {
        Some(l) if l.len() != batch => {
            return Err(ModelError::Shape {
                what: "number of lengths for mean pooling".into(),
                expected: batch.to_string(),
                got: l.len().to_string(),
            })
        }
        Some(l) => l.to_vec(),
        None => vec![seq; batch],
    };
    let mut w = vec![0.0f32; batch * seq];
    for (b, &len) in lengths.iter().enumerate() {
        if len == 0 || len > seq {
            return Err(ModelError::Shape {
                what: format!("length of sequence {b} for mean pooling"),
                expected: format!("1..={seq}"),
                got: len.to_string(),
            });
        }
        w[b * seq..b * seq + len].fill(1.0 / len as f32);
    }
    Ok(w)
}
