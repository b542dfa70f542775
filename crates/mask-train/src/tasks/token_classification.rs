//! Token classification (BERT section 4.3): one class per word, predicted at the word's first
//! word piece (the others are not scored, as BERT's NER setup), e.g. part-of-speech tagging on
//! the Brown subset. With `freeze_encoder` only the linear head trains: a probe of what the
//! pretrained representations hold about each token in its context.
//!
//! Legend: B sentences, T padded length, N scored words, d `d_model`, C classes.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_data::collate::{pad, Fnv};
use mask_data::{BatchSchedule, Encoded, EpochOrder, TextTokenizer};
use mask_model::mask_attn::KeyPadding;
use mask_model::{
    ids_tensor, token_cross_entropy, TextEncoder, TokenClassifierConfig, TokenClassifierModel,
};
use serde_json::json;

use crate::error::{invalid, Result};
use crate::metrics::ConfusionMatrix;
use crate::task::{BatchInfo, TaskOutput, TrainTask};
use crate::tasks::classification::ClassificationEval;
use crate::tasks::{docs_digest, encoder_states, text_bindings};

/// The flat positions `[r * T + t]` of the first word piece of every word in the rows of a
/// padded block, with the word's tag: `(positions, classes)`.
pub fn first_pieces(docs: &[&Encoded], seq_len: usize) -> (Vec<i64>, Vec<i64>) {
    let (mut positions, mut classes) = (vec![], vec![]);
    for (r, d) in docs.iter().enumerate() {
        let tags = d.tags.as_deref().unwrap_or(&[]);
        let mut prev = None;
        for (t, w) in d.word_ids.iter().enumerate() {
            if d.special_mask[t] || w.is_none() || *w == prev {
                prev = *w;
                continue;
            }
            prev = *w;
            positions.push((r * seq_len + t) as i64);
            classes.push(tags.get(t).copied().unwrap_or(0) as i64);
        }
    }
    (positions, classes)
}

/// A batch of tagged sentences.
#[derive(Debug, Clone)]
pub struct TagBatch {
    /// Epoch.
    pub epoch: u64,
    /// Padded ids `[B * T]`.
    pub ids: Vec<u32>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
    /// Padded length T.
    pub seq_len: usize,
    /// Flat positions of the scored words `[N]`.
    pub positions: Vec<i64>,
    /// Their classes `[N]`.
    pub classes: Vec<i64>,
}

fn tag_batch(docs: &[&Encoded], pad_id: u32, epoch: u64) -> TagBatch {
    let (ids, lengths, seq_len) = pad(docs, pad_id);
    let (positions, classes) = first_pieces(docs, seq_len);
    TagBatch {
        epoch,
        ids,
        lengths,
        seq_len,
        positions,
        classes,
    }
}

/// Tagging with a linear head on an encoder, frozen or fine-tuned.
#[derive(Debug, Clone)]
pub struct TokenClassificationTask<B: Backend> {
    config: TokenClassifierConfig,
    encoder: Option<TextEncoder<B>>,
    freeze_encoder: bool,
    train: Arc<Vec<Encoded>>,
    test: Arc<Vec<Encoded>>,
    eval_batch_size: usize,
    pad_id: u32,
    tokenizer: String,
    data: String,
    order: EpochOrder,
}

impl<B: Backend> TokenClassificationTask<B> {
    /// Trains `config`'s tagger on the tagged documents `train` (evaluated on `test`), from
    /// `encoder` (pretrained; `None`: fresh), all of it or (`freeze_encoder`) the head only.
    pub fn new(
        config: TokenClassifierConfig,
        encoder: Option<TextEncoder<B>>,
        freeze_encoder: bool,
        train: Arc<Vec<Encoded>>,
        test: Arc<Vec<Encoded>>,
        tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        for (what, set) in [("train", &train), ("test", &test)] {
            if set.is_empty() {
                return Err(invalid("sentences", format!("0 {what}"), "at least one"));
            }
            if let Some(i) = set.iter().position(|d| d.tags.is_none()) {
                return Err(invalid(
                    "tags",
                    format!("{what} sentence {i} has none"),
                    "tags on every sentence",
                ));
            }
            let max = set
                .iter()
                .flat_map(|d| d.tags.iter().flatten())
                .copied()
                .max()
                .unwrap_or(0);
            if max as usize >= config.n_classes {
                return Err(invalid(
                    "tags",
                    max,
                    format!("a class < n_classes = {}", config.n_classes),
                ));
            }
        }
        Ok(Self {
            data: docs_digest(train.iter().chain(test.iter())),
            config,
            encoder,
            freeze_encoder,
            train,
            test,
            eval_batch_size: 64,
            pad_id: tokenizer.pad_id,
            tokenizer: tokenizer.digest().to_string(),
            order: EpochOrder::default(),
        })
    }
}

/// Per-word confusion matrix of a tagger on `docs`.
pub fn evaluate_tagger<B: Backend>(
    model: &TokenClassifierModel<B>,
    docs: &[Encoded],
    n_classes: usize,
    pad_id: u32,
    batch_size: usize,
    device: &B::Device,
) -> Result<ConfusionMatrix> {
    let vocab = model.encoder.vocab_size;
    let mut matrix = ConfusionMatrix::new(n_classes);
    for chunk in docs.chunks(batch_size.max(1)) {
        let rows: Vec<&Encoded> = chunk.iter().collect();
        let b = tag_batch(&rows, pad_id, 0);
        if b.positions.is_empty() {
            continue;
        }
        let x = ids_tensor::<B>("input_ids", &b.ids, rows.len(), vocab, device)?;
        let mask = KeyPadding::from_lengths(&b.lengths, b.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let n = b.positions.len();
        let at = Tensor::<B, 1, Int>::from_data(TensorData::new(b.positions.clone(), [n]), device);
        let predicted: Vec<i64> = model
            .forward_at(x, &mask, at)?
            .argmax(1)
            .reshape([n])
            .into_data()
            .convert::<i64>()
            .to_vec()
            .map_err(|e| invalid("predictions", format!("{e:?}"), "an int tensor"))?;
        for (&c, p) in b.classes.iter().zip(predicted) {
            matrix.add(c as usize, p as usize);
        }
    }
    Ok(matrix)
}

impl<B: AutodiffBackend> TrainTask<B> for TokenClassificationTask<B> {
    type Model = TokenClassifierModel<B>;
    type Batch = TagBatch;
    type Metrics = ClassificationEval;

    fn kind(&self) -> &'static str {
        "token_classification"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "model": self.config,
            "pretrained_encoder": self.encoder.is_some(),
            "freeze_encoder": self.freeze_encoder,
            "train_sentences": self.train.len(),
            "test_sentences": self.test.len(),
        })
    }

    fn bindings(&self) -> Vec<(String, String)> {
        text_bindings(&self.tokenizer, self.data.clone())
    }

    fn num_examples(&self) -> usize {
        self.train.len()
    }

    fn init_model(&self, device: &B::Device) -> Result<TokenClassifierModel<B>> {
        Ok(match &self.encoder {
            Some(e) => self.config.init_with_encoder(e.clone(), device)?,
            None => self.config.init(device)?,
        })
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<TagBatch> {
        let schedule = BatchSchedule::new(self.train.len(), batch_size, seed)?;
        let rows = schedule.rows_at(&self.train, step, &mut self.order);
        Ok(tag_batch(&rows, self.pad_id, schedule.epoch_of(step)))
    }

    fn describe(&self, b: &TagBatch) -> BatchInfo {
        let mut h = Fnv::default();
        b.ids.iter().for_each(|&i| h.eat(i));
        b.classes.iter().for_each(|&c| h.eat(c as u32));
        BatchInfo {
            epoch: b.epoch,
            examples: b.lengths.len(),
            tokens: b.lengths.iter().sum(),
            items: b.positions.len(),
            digest: h.0,
            task: None,
        }
    }

    fn forward(
        &self,
        model: &TokenClassifierModel<B>,
        b: &TagBatch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        let n = b.positions.len();
        if n == 0 {
            return Ok(None);
        }
        let rows = b.lengths.len();
        let mask = KeyPadding::from_lengths(&b.lengths, b.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let hidden = encoder_states(
            &model.encoder,
            &b.ids,
            rows,
            &mask,
            self.freeze_encoder,
            device,
        )?;
        let at = Tensor::<B, 1, Int>::from_data(TensorData::new(b.positions.clone(), [n]), device);
        let t = Tensor::<B, 1, Int>::from_data(TensorData::new(b.classes.clone(), [n]), device);
        let per_word = token_cross_entropy(model.head_at(hidden, at)?, t);
        Ok(Some(TaskOutput {
            loss: per_word.mean(),
            per_item: None,
        }))
    }

    fn evaluate(
        &self,
        model: &TokenClassifierModel<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<ClassificationEval> {
        Ok(evaluate_tagger(
            model,
            &self.test,
            self.config.n_classes,
            self.pad_id,
            self.eval_batch_size,
            device,
        )?
        .into())
    }
}
