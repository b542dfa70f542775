//! The token front end and trunk shared by every text model: word embeddings, positions
//! (learned, sinusoidal or rotary), embedding norm (post-LN) and dropout, then the blocks
//! (Devlin et al. 2018, BERT section 3; Su et al. 2021 for rotary).
//!
//! Legend: B batch, T positions, d `d_model`, V vocabulary.

use burn::nn::{Embedding, LayerNorm};
use burn::prelude::*;

use crate::norm::normalize;
use mask_attn::{AttnMask, Dropout};

use crate::block::Transformer;
use crate::config::{NormPlacement, PositionEncoding, TextEncoderConfig};
use crate::error::{ModelError, Result};
use crate::init::{embedding, layer_norm};
use crate::position::{rotary_tables, sinusoid_table, table_tensor, Rope};

/// Host-side position tables (not parameters).
#[derive(Debug, Clone)]
pub enum PositionTables {
    /// Learned: the table is a parameter.
    Learned,
    /// Sinusoidal `[max_len, d]`.
    Sinusoidal(Vec<f32>),
    /// Rotary `cos`, `sin`, each `[max_len, D]`.
    Rotary {
        /// Cosines.
        cos: Vec<f32>,
        /// Sines.
        sin: Vec<f32>,
        /// Head dim `D`.
        head_dim: usize,
    },
}

/// Embeddings + Transformer blocks.
#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    /// Token embeddings `[V, d]` (tied to the MLM / LM output layer).
    pub word_embeddings: Embedding<B>,
    /// Learned position embeddings `[max_len, d]` (learned positions only).
    pub position_embeddings: Option<Embedding<B>>,
    /// Embedding layer norm (post-LN models only, as in BERT).
    pub embed_norm: Option<LayerNorm<B>>,
    /// Embedding dropout.
    pub dropout: Dropout,
    /// The blocks.
    pub transformer: Transformer<B>,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Longest accepted sequence.
    pub max_len: usize,
    /// Fixed position tables.
    #[module(skip)]
    pub positions: PositionTables,
}

impl TextEncoderConfig {
    /// Validates the config and checks that `encoder` (e.g. a pretrained one) has its sizes;
    /// `head` names the model being built in the error.
    pub fn check_encoder<B: Backend>(&self, encoder: &TextEncoder<B>, head: &str) -> Result<()> {
        self.validate()?;
        let t = &self.transformer;
        for (what, want, got) in [
            ("d_model", t.d_model, encoder.d_model()),
            ("vocab_size", self.vocab_size, encoder.vocab_size),
            ("n_layers", t.n_layers, encoder.transformer.blocks.len()),
            ("max_len", self.max_len, encoder.max_len),
        ] {
            if want != got {
                return Err(crate::ModelError::Shape {
                    what: format!("`{what}` of the given encoder vs the {head} config"),
                    expected: want.to_string(),
                    got: got.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Builds the encoder, validating the config first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<TextEncoder<B>> {
        self.validate()?;
        let t = &self.transformer;
        let (d, std) = (t.d_model, t.init_std);
        let positions = match self.position {
            PositionEncoding::Learned => PositionTables::Learned,
            PositionEncoding::Sinusoidal => {
                PositionTables::Sinusoidal(sinusoid_table(self.max_len, d))
            }
            PositionEncoding::Rotary => {
                let (cos, sin) = rotary_tables(self.max_len, t.head_dim(), 10_000.0);
                PositionTables::Rotary {
                    cos,
                    sin,
                    head_dim: t.head_dim(),
                }
            }
        };
        let encoder = TextEncoder {
            word_embeddings: embedding(self.vocab_size, d, std, device),
            position_embeddings: (self.position == PositionEncoding::Learned)
                .then(|| embedding(self.max_len, d, std, device)),
            embed_norm: (t.norm == NormPlacement::PostLn)
                .then(|| layer_norm(d, t.layer_norm_eps, device)),
            dropout: Dropout::new(t.dropout)?,
            transformer: t.init(device)?,
            vocab_size: self.vocab_size,
            max_len: self.max_len,
            positions,
        };
        crate::init::materialize(&encoder);
        Ok(encoder)
    }
}

impl<B: Backend> TextEncoder<B> {
    /// Model width `d`.
    pub fn d_model(&self) -> usize {
        self.word_embeddings.weight.val().dims()[1]
    }

    /// Checks a batch's dimensions against the model and the mask.
    pub(crate) fn check_input(&self, batch: usize, seq: usize, mask: &dyn AttnMask) -> Result<()> {
        if seq == 0 || seq > self.max_len {
            return Err(ModelError::SequenceLength {
                len: seq,
                max_len: self.max_len,
            });
        }
        if batch == 0 {
            return Err(ModelError::Shape {
                what: "batch size of the input ids".into(),
                expected: ">= 1".into(),
                got: "0".into(),
            });
        }
        for (what, want, got) in [
            ("batch size", batch, mask.batch_size()),
            ("sequence length", seq, mask.seq_len()),
        ] {
            if let Some(got) = got.filter(|&g| g != want) {
                return Err(ModelError::Shape {
                    what: format!("{what} of attention mask `{}` vs input ids", mask.name()),
                    expected: want.to_string(),
                    got: got.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Token + position embeddings, normalised (post-LN) and dropped out, and the rotary tables
    /// when positions are rotary.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]` -> `[B, T, d]`
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> (Tensor<B, 3>, Option<Rope<B>>) {
        let [_batch, seq] = ids.dims();
        let device = ids.device();
        let d = self.d_model();
        let mut x = self.word_embeddings.forward(ids); // [B, T, d]
        let mut rope = None;
        match (&self.positions, &self.position_embeddings) {
            (PositionTables::Learned, Some(table)) => {
                let pos = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>(); // [1, T]
                x = x + table.forward(pos); // [1, T, d] broadcast over B
            }
            (PositionTables::Sinusoidal(table), _) => {
                x = x + table_tensor::<B>(table, seq, d, &device).unsqueeze::<3>();
                // [1, T, d]
            }
            (PositionTables::Rotary { cos, sin, head_dim }, _) => {
                let cos = table_tensor::<B>(cos, seq, *head_dim, &device).unsqueeze::<4>(); // [1, 1, T, D]
                let sin = table_tensor::<B>(sin, seq, *head_dim, &device).unsqueeze::<4>();
                rope = Some(Rope { cos, sin });
            }
            (PositionTables::Learned, None) => {}
        }
        if let Some(norm) = &self.embed_norm {
            x = normalize(norm, x);
        }
        (self.dropout.forward(x), rope)
    }

    /// Final hidden states.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]` with `T <= max_len`
    /// - output: `[B, T, d]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: &dyn AttnMask) -> Result<Tensor<B, 3>> {
        let [batch, seq] = ids.dims();
        self.check_input(batch, seq, mask)?;
        let (x, rope) = self.embed(ids);
        self.transformer.forward(x, mask, rope.as_ref())
    }
}

/// Uploads host ids as a `[batch, seq]` tensor after checking the length and that every id is
/// inside the vocabulary (the one place host ids enter a model).
pub fn ids_tensor<B: Backend>(
    field: &'static str,
    ids: &[u32],
    batch: usize,
    vocab_size: usize,
    device: &B::Device,
) -> Result<Tensor<B, 2, Int>> {
    if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
        return Err(ModelError::Shape {
            what: format!("`{field}`: number of ids for batch size {batch}"),
            expected: format!("a positive multiple of {batch}"),
            got: ids.len().to_string(),
        });
    }
    if let Some((position, &id)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab_size)
    {
        return Err(ModelError::OutOfVocab {
            field,
            id: id as i64,
            position,
            vocab_size,
        });
    }
    let data: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
    Ok(Tensor::from_data(
        TensorData::new(data, [batch, ids.len() / batch]),
        device,
    ))
}
