//! Causal (left-to-right) language modelling, GPT-style: position t predicts token t + 1 under
//! the model's built-in causal mask (intersected with key padding); the loss is the mean
//! cross-entropy over every real next token. Evaluation: held-out loss per token and
//! perplexity.
//!
//! Legend: B documents, T padded length, N predicted tokens, V vocabulary.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_data::collate::{pad, Fnv};
use mask_data::{BatchSchedule, Encoded, EpochOrder, TextTokenizer};
use mask_model::mask_attn::KeyPadding;
use mask_model::{ids_tensor, token_cross_entropy, CausalLmConfig, CausalLmModel};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{invalid, Result};
use crate::task::{BatchInfo, Metrics, TaskOutput, TrainTask};
use crate::tasks::{docs_digest, text_bindings};

/// A batch of documents for next-token prediction.
#[derive(Debug, Clone)]
pub struct LmBatch {
    /// Epoch.
    pub epoch: u64,
    /// Padded ids `[B * T]`.
    pub ids: Vec<u32>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
    /// Padded length T.
    pub seq_len: usize,
}

impl LmBatch {
    /// Flat positions `r * T + t` that predict a next token (`t + 1 < length`) and the tokens
    /// they predict.
    pub fn targets(&self) -> (Vec<i64>, Vec<i64>) {
        let (mut at, mut next) = (vec![], vec![]);
        for (r, &len) in self.lengths.iter().enumerate() {
            for t in 0..len.saturating_sub(1) {
                at.push((r * self.seq_len + t) as i64);
                next.push(self.ids[r * self.seq_len + t + 1] as i64);
            }
        }
        (at, next)
    }
}

fn lm_batch(docs: &[&Encoded], pad_id: u32, epoch: u64) -> LmBatch {
    let (ids, lengths, seq_len) = pad(docs, pad_id);
    LmBatch {
        epoch,
        ids,
        lengths,
        seq_len,
    }
}

/// Held-out next-token metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LmEval {
    /// Mean cross-entropy per predicted token (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Tokens predicted.
    pub tokens: u64,
}

impl Metrics for LmEval {
    fn score(&self) -> f64 {
        self.loss
    }
    fn values(&self) -> Vec<(&'static str, f64)> {
        vec![("loss", self.loss), ("perplexity", self.perplexity)]
    }
}

/// The per-token losses `[N]` of `batch` under `model`, or `None` when no row has two tokens.
fn token_losses<B: Backend>(
    model: &CausalLmModel<B>,
    batch: &LmBatch,
    device: &B::Device,
) -> Result<Option<Tensor<B, 1>>> {
    let (at, next) = batch.targets();
    if at.is_empty() {
        return Ok(None);
    }
    let vocab = model.encoder.vocab_size;
    let rows = batch.lengths.len();
    let x = ids_tensor::<B>("input_ids", &batch.ids, rows, vocab, device)?;
    let mask = KeyPadding::from_lengths(&batch.lengths, batch.seq_len)
        .map_err(mask_model::ModelError::from)?;
    let n = at.len();
    let logits = model
        .forward(x, Some(&mask))?
        .reshape([rows * batch.seq_len, vocab])
        .select(0, Tensor::from_data(TensorData::new(at, [n]), device)); // [N, V]
    let t = Tensor::<B, 1, Int>::from_data(TensorData::new(next, [n]), device);
    Ok(Some(token_cross_entropy(logits, t)))
}

/// Held-out loss per token of `model` on `docs`.
pub fn evaluate_lm<B: Backend>(
    model: &CausalLmModel<B>,
    docs: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    device: &B::Device,
) -> Result<LmEval> {
    let (mut sum, mut tokens) = (0.0f64, 0u64);
    for chunk in docs.chunks(batch_size.max(1)) {
        let rows: Vec<&Encoded> = chunk.iter().collect();
        if let Some(l) = token_losses(model, &lm_batch(&rows, pad_id, 0), device)? {
            tokens += l.dims()[0] as u64;
            sum += l.sum().into_scalar().elem::<f64>();
        }
    }
    if tokens == 0 {
        return Err(invalid(
            "eval_docs",
            docs.len(),
            "documents of at least two tokens",
        ));
    }
    let loss = sum / tokens as f64;
    Ok(LmEval {
        loss,
        perplexity: loss.exp(),
        tokens,
    })
}

/// The causal-LM task.
#[derive(Debug, Clone)]
pub struct CausalLmTask {
    config: CausalLmConfig,
    docs: Arc<Vec<Encoded>>,
    eval_docs: Arc<Vec<Encoded>>,
    pad_id: u32,
    tokenizer: String,
    data: String,
    order: EpochOrder,
}

impl CausalLmTask {
    /// Trains `config`'s decoder on `docs`, evaluated on `eval_docs`.
    pub fn new(
        config: CausalLmConfig,
        docs: Arc<Vec<Encoded>>,
        eval_docs: Arc<Vec<Encoded>>,
        tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        if config.encoder.vocab_size != tokenizer.vocab_size() {
            return Err(invalid(
                "vocab_size",
                config.encoder.vocab_size,
                format!("the tokenizer's ({})", tokenizer.vocab_size()),
            ));
        }
        if let Some(d) = docs
            .iter()
            .chain(eval_docs.iter())
            .find(|d| d.ids.len() > config.encoder.max_len)
        {
            return Err(invalid(
                "max_len",
                config.encoder.max_len,
                format!("at least the longest document ({} tokens)", d.ids.len()),
            ));
        }
        Ok(Self {
            data: docs_digest(docs.iter().chain(eval_docs.iter())),
            config,
            docs,
            eval_docs,
            pad_id: tokenizer.pad_id,
            tokenizer: tokenizer.digest().to_string(),
            order: EpochOrder::default(),
        })
    }
}

impl<B: AutodiffBackend> TrainTask<B> for CausalLmTask {
    type Model = CausalLmModel<B>;
    type Batch = LmBatch;
    type Metrics = LmEval;

    fn kind(&self) -> &'static str {
        "causal_lm"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "model": self.config,
            "train_docs": self.docs.len(),
            "eval_docs": self.eval_docs.len(),
        })
    }

    fn bindings(&self) -> Vec<(String, String)> {
        text_bindings(&self.tokenizer, self.data.clone())
    }

    fn num_examples(&self) -> usize {
        self.docs.len()
    }

    fn init_model(&self, device: &B::Device) -> Result<CausalLmModel<B>> {
        Ok(self.config.init::<B>(device)?)
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<LmBatch> {
        let schedule = BatchSchedule::new(self.docs.len(), batch_size, seed)?;
        let rows = schedule.rows_at(&self.docs, step, &mut self.order);
        Ok(lm_batch(&rows, self.pad_id, schedule.epoch_of(step)))
    }

    fn describe(&self, b: &LmBatch) -> BatchInfo {
        let mut h = Fnv::default();
        b.ids.iter().for_each(|&i| h.eat(i));
        BatchInfo {
            epoch: b.epoch,
            examples: b.lengths.len(),
            tokens: b.lengths.iter().sum(),
            items: b.lengths.iter().map(|l| l.saturating_sub(1)).sum(),
            digest: h.0,
            task: None,
        }
    }

    fn shard(&self, b: &LmBatch, rank: usize, world: usize) -> Option<LmBatch> {
        let rows = crate::task::shard_rows(b.lengths.len(), rank, world);
        Some(LmBatch {
            epoch: b.epoch,
            ids: super::pick_rows(&b.ids, b.seq_len, &rows),
            lengths: rows.iter().map(|&r| b.lengths[r]).collect(),
            seq_len: b.seq_len,
        })
    }

    fn forward(
        &self,
        model: &CausalLmModel<B>,
        b: &LmBatch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        Ok(token_losses(model, b, device)?.map(|l| TaskOutput {
            loss: l.mean(),
            per_item: None,
        }))
    }

    fn evaluate(
        &self,
        model: &CausalLmModel<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<LmEval> {
        evaluate_lm(model, &self.eval_docs, self.pad_id, 64, device)
    }
}
