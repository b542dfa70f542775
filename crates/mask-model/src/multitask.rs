//! One encoder shared by several objectives (multi-task learning, UniLM, Dong et al. 2019):
//! BERT prediction heads over the vocabulary (the decoder matrix is always the shared token
//! embedding, so even separate heads share most of their weights) and per-token classifiers.
//! A task picks its head by index; the attention mask, chosen per batch by the caller, decides
//! what the objective is (bidirectional cloze, left-to-right, prefix-LM).
//!
//! Legend: B batch, T positions, N selected positions, d `d_model`, V vocabulary, C classes.

use burn::nn::Linear;
use burn::prelude::*;
use mask_attn::Dropout;

use crate::config::TextEncoderConfig;
use crate::encoder::TextEncoder;
use crate::error::{invalid, ModelError};
use crate::init::linear;
use crate::mlm::MlmHead;

/// Configuration of a [`SharedEncoderModel`].
#[derive(Config, Debug)]
pub struct SharedEncoderConfig {
    /// The shared encoder.
    pub encoder: TextEncoderConfig,
    /// Number of prediction heads over the vocabulary.
    pub lm_heads: usize,
    /// Classes of each token classifier, in head order.
    pub taggers: Vec<usize>,
    /// Dropout before each token classifier. Default: 0.1
    #[config(default = 0.1)]
    pub tagger_dropout: f64,
}

/// A per-token classifier: dropout, then `d -> C`.
#[derive(Module, Debug)]
pub struct TaggerHead<B: Backend> {
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// `d -> C`.
    pub classifier: Linear<B>,
}

/// The shared encoder and every head.
#[derive(Module, Debug)]
pub struct SharedEncoderModel<B: Backend> {
    /// The encoder every task trains.
    pub encoder: TextEncoder<B>,
    /// Prediction heads over the vocabulary.
    pub lm_heads: Vec<MlmHead<B>>,
    /// Token classifiers.
    pub taggers: Vec<TaggerHead<B>>,
}

impl SharedEncoderConfig {
    /// Builds the model, validating the config first. Parameters are drawn in the order
    /// encoder, prediction heads, classifiers, so a model with one prediction head and no
    /// classifier starts from the same weights as [`MlmConfig::init`](crate::MlmConfig::init)
    /// under the same backend seed.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<SharedEncoderModel<B>> {
        if self.lm_heads + self.taggers.len() == 0 {
            return Err(invalid(
                "lm_heads",
                0,
                "at least one head (lm_heads or taggers)",
            ));
        }
        if let Some(&c) = self.taggers.iter().find(|&&c| c < 2) {
            return Err(invalid("taggers", c, "at least 2 classes per classifier"));
        }
        let t = &self.encoder.transformer;
        let encoder = self.encoder.init(device)?;
        let lm_heads = (0..self.lm_heads)
            .map(|_| MlmHead::new(&self.encoder, device))
            .collect();
        let taggers = self
            .taggers
            .iter()
            .map(|&c| {
                Ok(TaggerHead {
                    dropout: Dropout::new(self.tagger_dropout)?,
                    classifier: linear(t.d_model, c, t.init_std, true, device),
                })
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let model = SharedEncoderModel {
            encoder,
            lm_heads,
            taggers,
        };
        crate::init::materialize(&model);
        Ok(model)
    }
}

/// The states at the N flat positions `b * T + t`, refusing none.
///
/// # Shapes
/// - `hidden`: `[B, T, d]`, `positions`: `[N]` -> `[N, d]`
fn select<B: Backend>(
    hidden: Tensor<B, 3>,
    positions: Tensor<B, 1, Int>,
    what: &str,
) -> crate::Result<Tensor<B, 2>> {
    let [batch, seq, d] = hidden.dims();
    let [n] = positions.dims();
    if n == 0 {
        return Err(ModelError::Shape {
            what: format!("number of {what} positions"),
            expected: ">= 1".into(),
            got: "0".into(),
        });
    }
    Ok(hidden.reshape([batch * seq, d]).select(0, positions))
}

fn head_index(what: &'static str, index: usize, count: usize) -> crate::Result<()> {
    if index >= count {
        return Err(invalid(what, index, format!("an index below {count}")));
    }
    Ok(())
}

impl<B: Backend> SharedEncoderModel<B> {
    /// Vocabulary logits of prediction head `head` at the N flat positions.
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, d]` (the encoder's output), `positions`: `[N]` -> `[N, V]`
    pub fn lm_at(
        &self,
        head: usize,
        hidden: Tensor<B, 3>,
        positions: Tensor<B, 1, Int>,
    ) -> crate::Result<Tensor<B, 2>> {
        head_index("lm_head", head, self.lm_heads.len())?;
        let selected = select(hidden, positions, "predicted")?; // [N, d]
        Ok(self.lm_heads[head].forward(selected, self.encoder.word_embeddings.weight.val()))
    }

    /// Class logits of token classifier `head` at the N flat positions.
    ///
    /// # Shapes
    /// - `hidden`: `[B, T, d]`, `positions`: `[N]` -> `[N, C]`
    pub fn tag_at(
        &self,
        head: usize,
        hidden: Tensor<B, 3>,
        positions: Tensor<B, 1, Int>,
    ) -> crate::Result<Tensor<B, 2>> {
        head_index("tagger", head, self.taggers.len())?;
        let selected = select(hidden, positions, "tagged")?; // [N, d]
        let tagger = &self.taggers[head];
        Ok(tagger.classifier.forward(tagger.dropout.forward(selected)))
    }

    /// The encoder with prediction head `head` as an MLM model (for the MLM evaluation
    /// protocol and fine-tuning).
    pub fn mlm_model(&self, head: usize) -> crate::Result<crate::MlmModel<B>> {
        head_index("lm_head", head, self.lm_heads.len())?;
        Ok(crate::MlmModel {
            encoder: self.encoder.clone(),
            head: self.lm_heads[head].clone(),
        })
    }
}
