//! Item-sequence front end for BERT4Rec (Sun et al. 2019): items are tokens of a vocabulary
//! `0 = padding, 1..=n_items, n_items + 1 = [mask]`, learned positions, a bidirectional
//! encoder, and the MLM head with the item embedding as output matrix. Candidates are scored
//! at one position per sequence (the masked last item in the leave-one-out protocol).
//!
//! Legend: B batch, T positions, C candidates, d `d_model`, V = n_items + 2.

use burn::prelude::*;
use mask_attn::AttnMask;

use crate::config::{TextEncoderConfig, TransformerConfig};
use crate::error::ModelError;
use crate::mlm::{MlmConfig, MlmModel};

/// Configuration of a [`Bert4Rec`] model (defaults follow the paper's MovieLens setting where
/// it gives one, scaled down).
#[derive(Config, Debug)]
pub struct Bert4RecConfig {
    /// Number of distinct items.
    pub n_items: usize,
    /// Longest item sequence. Default: 200
    #[config(default = 200)]
    pub max_len: usize,
    /// Width. Default: 64
    #[config(default = 64)]
    pub d_model: usize,
    /// Heads. Default: 2
    #[config(default = 2)]
    pub n_heads: usize,
    /// Blocks. Default: 2
    #[config(default = 2)]
    pub n_layers: usize,
    /// Feed-forward width. Default: 256
    #[config(default = 256)]
    pub d_ff: usize,
    /// Dropout. Default: 0.1
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl Bert4RecConfig {
    /// Id of the padding item.
    pub const PAD: u32 = 0;

    /// Id of the mask item.
    pub fn mask_id(&self) -> u32 {
        self.n_items as u32 + 1
    }

    /// Vocabulary size V = n_items + 2.
    pub fn vocab_size(&self) -> usize {
        self.n_items + 2
    }

    /// The equivalent MLM config.
    pub fn mlm(&self) -> MlmConfig {
        MlmConfig::new(
            TextEncoderConfig::new(
                TransformerConfig::new(self.d_model, self.n_heads, self.n_layers, self.d_ff)
                    .with_dropout(self.dropout)
                    .with_attn_dropout(self.dropout),
                self.vocab_size(),
            )
            .with_max_len(self.max_len),
        )
    }

    /// Builds the model, validating the config first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<Bert4Rec<B>> {
        if self.n_items == 0 {
            return Err(crate::error::invalid("n_items", 0, "at least 1"));
        }
        Ok(Bert4Rec {
            mlm: self.mlm().init(device)?,
        })
    }
}

/// BERT4Rec: an MLM over items.
#[derive(Module, Debug)]
pub struct Bert4Rec<B: Backend> {
    /// Encoder + tied output head over the item vocabulary.
    pub mlm: MlmModel<B>,
}

impl<B: Backend> Bert4Rec<B> {
    /// Logits over the item vocabulary at every position.
    ///
    /// # Shapes
    /// - `items`: `[B, T]` -> `[B, T, V]`
    pub fn forward(
        &self,
        items: Tensor<B, 2, Int>,
        mask: &dyn AttnMask,
    ) -> crate::Result<Tensor<B, 3>> {
        self.mlm.forward(items, mask)
    }

    /// Scores of C candidate items at one position per sequence (`positions[b]` indexes row b).
    ///
    /// # Shapes
    /// - `items`: `[B, T]`, `candidates`: `[B, C]` -> `[B, C]`
    pub fn score(
        &self,
        items: Tensor<B, 2, Int>,
        mask: &dyn AttnMask,
        positions: &[usize],
        candidates: Tensor<B, 2, Int>,
    ) -> crate::Result<Tensor<B, 2>> {
        let [batch, seq] = items.dims();
        let [cb, c] = candidates.dims();
        if positions.len() != batch || cb != batch {
            return Err(ModelError::Shape {
                what: "positions / candidate rows vs batch".into(),
                expected: batch.to_string(),
                got: format!("{} / {cb}", positions.len()),
            });
        }
        if let Some(&p) = positions.iter().find(|&&p| p >= seq) {
            return Err(ModelError::Shape {
                what: "scored position".into(),
                expected: format!("< {seq}"),
                got: p.to_string(),
            });
        }
        let device = items.device();
        let hidden = self.mlm.encoder.forward(items, mask)?; // [B, T, d]
        let d = hidden.dims()[2];
        let flat: Vec<i64> = positions
            .iter()
            .enumerate()
            .map(|(b, &p)| (b * seq + p) as i64)
            .collect();
        let at = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [batch]), &device);
        let h = hidden.reshape([batch * seq, d]).select(0, at); // [B, d]
        let head = &self.mlm.head;
        let h = head
            .norm
            .forward(crate::activation::gelu(head.transform.forward(h))); // [B, d]
        let flat_c = candidates.reshape([batch * c]); // [B*C]
        let emb = self
            .mlm
            .encoder
            .word_embeddings
            .weight
            .val()
            .select(0, flat_c.clone())
            .reshape([batch, c, d]); // [B, C, d]
        let bias = head.bias.val().select(0, flat_c).reshape([batch, c]); // [B, C]
        let scores = emb.matmul(h.unsqueeze_dim::<3>(2)).reshape([batch, c]); // [B, C]
        Ok(scores + bias)
    }
}
