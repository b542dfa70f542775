//! Masked language modelling (BERT's task #1) under any `mask-core` policy: static or dynamic,
//! uniform, whole-word, span, content-aware or adaptive. The head runs at the masked positions
//! only; the loss is the mean cross-entropy over them; adaptive policies get each masked token's
//! loss back. Evaluation scores held-out documents under one fixed mask (the same for every run
//! that builds it from the same documents and seed).
//!
//! Legend: B documents, T padded length, N masked positions, V vocabulary.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{
    BatchContext, BatchMasker, MaskingConfig, Selector, SelectorResources, TokenMasker,
};
use mask_data::{collate, BatchSchedule, Encoded, EpochOrder, TextBatch, TextTokenizer};
use mask_model::mask_attn::KeyPadding;
use mask_model::{ids_tensor, token_cross_entropy, MaskedTargets, MlmConfig, MlmModel};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{invalid, Result, TrainError};
use crate::heldout::{Corruption, ScoredToken};
use crate::metrics::MlmMetrics;
use crate::task::shard_rows;
use crate::task::{BatchInfo, Metrics, TaskOutput, TrainTask};
use crate::tasks::{docs_digest, text_bindings};

/// Checkpoint section holding an adaptive policy's learned state (exact bytes).
pub const MASKING_STATE: &str = "masking.state";

/// Held-out documents masked once with a fixed policy and context: BERT-style 15%, 80/10/10,
/// `seed`, epoch 0, identical for every run that builds it from the same documents.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// The masked batches.
    pub batches: Vec<TextBatch>,
}

impl EvalSet {
    /// Masks `docs` in batches of `batch_size` with `policy` at `(seed, epoch 0, step 0)`.
    pub fn new(
        docs: &[Encoded],
        policy: TokenMasker,
        pad_id: u32,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self> {
        if docs.is_empty() {
            return Err(invalid("eval_docs", 0, "at least one held-out document"));
        }
        let mut masker = BatchMasker::new(policy);
        let indices: Vec<usize> = (0..docs.len()).collect();
        let batches = indices
            .chunks(batch_size.max(1))
            .map(|chunk| {
                let ctx = BatchContext {
                    seed,
                    epoch: 0,
                    step: 0,
                };
                Ok(collate(&mut masker, docs, chunk, pad_id, ctx)?)
            })
            .collect::<Result<Vec<_>>>()?;
        if batches.iter().all(|b| b.num_masked == 0) {
            return Err(invalid(
                "eval_docs",
                docs.len(),
                "enough held-out tokens for the evaluation mask to hide at least one",
            ));
        }
        Ok(Self { batches })
    }
}

/// Held-out MLM metrics over the masked positions of the evaluation set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MlmEval {
    /// Mean cross-entropy per masked token (nats).
    pub mlm_loss: f64,
    /// Fraction of masked tokens predicted exactly.
    pub mlm_acc: f64,
    /// `exp(mlm_loss)`.
    pub perplexity: f64,
    /// Masked tokens scored.
    pub tokens: u64,
}

impl From<MlmMetrics> for MlmEval {
    fn from(m: MlmMetrics) -> Self {
        Self {
            mlm_loss: m.mlm_loss(),
            mlm_acc: m.mlm_acc(),
            perplexity: m.perplexity(),
            tokens: m.tokens,
        }
    }
}

impl Metrics for MlmEval {
    fn score(&self) -> f64 {
        self.mlm_loss
    }
    fn values(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("mlm_loss", self.mlm_loss),
            ("mlm_acc", self.mlm_acc),
            ("perplexity", self.perplexity),
        ]
    }
}

/// The masked-LM task.
#[derive(Debug, Clone)]
pub struct MlmTask {
    model: MlmConfig,
    masking: MaskingConfig,
    masker: BatchMasker<TokenMasker>,
    docs: Arc<Vec<Encoded>>,
    eval: Arc<EvalSet>,
    pad_id: u32,
    tokenizer: String,
    data: String,
    order: EpochOrder,
}

impl MlmTask {
    /// A task training `model` on `docs` under `masking` (built with `resources` for
    /// content-aware policies), evaluated on `eval`; bound to `tokenizer`'s digest and the
    /// documents.
    pub fn new(
        model: MlmConfig,
        masking: MaskingConfig,
        resources: &SelectorResources,
        docs: Arc<Vec<Encoded>>,
        eval: Arc<EvalSet>,
        tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        if masking.vocab.vocab_size as usize != model.encoder.vocab_size {
            return Err(invalid(
                "masking.vocab.vocab_size",
                masking.vocab.vocab_size,
                format!("the model's vocab_size ({})", model.encoder.vocab_size),
            ));
        }
        if let Some(d) = docs.iter().find(|d| d.ids.len() > model.encoder.max_len) {
            return Err(invalid(
                "max_len",
                model.encoder.max_len,
                format!("at least the longest document ({} tokens)", d.ids.len()),
            ));
        }
        let policy = masking.build_with(resources)?;
        Ok(Self {
            data: docs_digest(docs.iter()),
            model,
            masking,
            masker: BatchMasker::new(policy),
            docs,
            eval,
            pad_id: tokenizer.pad_id,
            tokenizer: tokenizer.digest().to_string(),
            order: EpochOrder::default(),
        })
    }

    /// The masking policy.
    pub fn policy(&self) -> &TokenMasker {
        self.masker.policy()
    }

    /// The model config.
    pub fn model_config(&self) -> &MlmConfig {
        &self.model
    }
}

/// Evaluates `model` on `eval` (no dropout, no autodiff).
pub fn evaluate_mlm<B: Backend>(
    model: &MlmModel<B>,
    eval: &EvalSet,
    device: &B::Device,
) -> Result<MlmMetrics> {
    let mut metrics = MlmMetrics::default();
    for t in score_mlm(model, eval, u32::MAX, device)? {
        metrics.add(&[t.loss], &[t.correct]);
    }
    Ok(metrics)
}

/// Scores every masked position of `eval` with `model` (no dropout, no autodiff): its document
/// (the batch's example index), target, corruption (read against `mask_id`), loss and whether
/// the arg-max was right, in batch order.
pub fn score_mlm<B: Backend>(
    model: &MlmModel<B>,
    eval: &EvalSet,
    mask_id: u32,
    device: &B::Device,
) -> Result<Vec<ScoredToken>> {
    let vocab = model.encoder.vocab_size;
    let mut scored = Vec::new();
    for batch in &eval.batches {
        let targets = MaskedTargets::from_labels(&batch.labels, vocab)?;
        if targets.is_empty() {
            continue;
        }
        let x = ids_tensor::<B>("input_ids", &batch.input_ids, batch.batch, vocab, device)?;
        let mask = KeyPadding::from_lengths(&batch.lengths, batch.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let (positions, t) = targets.to_tensors::<B>(device);
        let logits = model.forward_at(x, &mask, positions)?; // [N, V]
        let predicted: Vec<i64> = logits
            .clone()
            .argmax(1)
            .reshape([targets.len()])
            .into_data()
            .convert::<i64>()
            .to_vec()
            .map_err(|e| invalid("predictions", format!("{e:?}"), "int tensor"))?;
        let losses: Vec<f32> = token_cross_entropy(logits, t)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| invalid("losses", format!("{e:?}"), "float tensor"))?;
        for (k, &pos) in targets.positions.iter().enumerate() {
            let pos = pos as usize;
            let target = targets.targets[k] as u32;
            scored.push(ScoredToken {
                doc: batch.example_indices[pos / batch.seq_len] as usize,
                target,
                corruption: Corruption::of(batch.input_ids[pos], target, mask_id),
                loss: losses[k],
                correct: predicted[k] == targets.targets[k],
            });
        }
    }
    Ok(scored)
}

/// Hands the per-token losses of one step back, one example at a time: `observe(original ids
/// of the row, masked positions within the row, their losses)`. `flat_positions` index the
/// `[B * T]` batch in ascending order (as [`MaskedTargets::from_labels`] produces them); rows
/// without a masked position are skipped.
pub fn feed_back(
    batch: &TextBatch,
    flat_positions: &[i64],
    losses: &[f32],
    mut observe: impl FnMut(&[u32], &[u32], &[f32]),
) {
    let t = batch.seq_len;
    let mut k = 0;
    let (mut positions, mut row_losses) = (Vec::new(), Vec::new());
    for r in 0..batch.batch {
        positions.clear();
        row_losses.clear();
        while k < flat_positions.len() && (flat_positions[k] as usize) < (r + 1) * t {
            positions.push((flat_positions[k] as usize - r * t) as u32);
            row_losses.push(losses[k]);
            k += 1;
        }
        if !positions.is_empty() {
            observe(&batch.original_row(r), &positions, &row_losses);
        }
    }
}

impl<B: AutodiffBackend> TrainTask<B> for MlmTask {
    type Model = MlmModel<B>;
    type Batch = TextBatch;
    type Metrics = MlmEval;

    fn kind(&self) -> &'static str {
        "mlm"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "model": self.model,
            "masking": self.masking,
            "train_docs": self.docs.len(),
            "eval_batches": self.eval.batches.len(),
        })
    }

    fn bindings(&self) -> Vec<(String, String)> {
        text_bindings(&self.tokenizer, self.data.clone())
    }

    fn num_examples(&self) -> usize {
        self.docs.len()
    }

    fn init_model(&self, device: &B::Device) -> Result<MlmModel<B>> {
        Ok(self.model.init::<B>(device)?)
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<TextBatch> {
        let schedule = BatchSchedule::new(self.docs.len(), batch_size, seed)?;
        let indices = schedule.indices_at_cached(step, &mut self.order);
        let ctx = BatchContext {
            seed,
            epoch: schedule.epoch_of(step),
            step,
        };
        Ok(collate(
            &mut self.masker,
            &self.docs,
            &indices,
            self.pad_id,
            ctx,
        )?)
    }

    fn describe(&self, batch: &TextBatch) -> BatchInfo {
        BatchInfo {
            epoch: batch.epoch,
            examples: batch.batch,
            tokens: batch.lengths.iter().sum(),
            items: batch.num_masked,
            digest: batch.digest(),
            task: None,
        }
    }

    fn forward(
        &self,
        model: &MlmModel<B>,
        batch: &TextBatch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        let vocab = self.model.encoder.vocab_size;
        let targets = MaskedTargets::from_labels(&batch.labels, vocab)?;
        if targets.is_empty() {
            return Ok(None);
        }
        let x = ids_tensor::<B>("input_ids", &batch.input_ids, batch.batch, vocab, device)?;
        let mask = KeyPadding::from_lengths(&batch.lengths, batch.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let (positions, t) = targets.to_tensors::<B>(device);
        let per_token = token_cross_entropy(model.forward_at(x, &mask, positions)?, t); // [N]
        Ok(Some(TaskOutput {
            loss: per_token.clone().mean(),
            per_item: Some(per_token),
        }))
    }

    fn shard(&self, batch: &TextBatch, rank: usize, world: usize) -> Option<TextBatch> {
        Some(batch.select_rows(&shard_rows(batch.batch, rank, world)))
    }

    fn items_per_row(&self, batch: &TextBatch) -> Option<Vec<usize>> {
        Some(batch.masked_per_row())
    }

    fn is_adaptive(&self) -> bool {
        self.masker.policy().is_adaptive()
    }

    fn observe(&mut self, batch: &TextBatch, per_item: &[f32]) -> Result<()> {
        let targets = MaskedTargets::from_labels(&batch.labels, self.model.encoder.vocab_size)?;
        if targets.len() != per_item.len() {
            return Err(invalid(
                "per_item",
                per_item.len(),
                format!("one loss per masked position ({})", targets.len()),
            ));
        }
        let policy = self.masker.policy_mut();
        feed_back(batch, &targets.positions, per_item, |ids, pos, losses| {
            policy.observe(ids, pos, losses)
        });
        Ok(())
    }

    fn evaluate(&self, model: &MlmModel<B::InnerBackend>, device: &B::Device) -> Result<MlmEval> {
        Ok(evaluate_mlm(model, &self.eval, device)?.into())
    }

    fn state_sections(&self) -> Vec<(String, Vec<u8>)> {
        self.masker
            .policy()
            .selector()
            .state_bytes()
            .map(|b| vec![(MASKING_STATE.to_string(), b)])
            .unwrap_or_default()
    }

    fn load_state_sections(
        &mut self,
        section: &dyn Fn(&str) -> Option<Vec<u8>>,
        path: &str,
    ) -> Result<()> {
        let policy = self.masker.policy_mut();
        let err = |reason: String| TrainError::Resume {
            path: path.to_string(),
            reason,
        };
        match (section(MASKING_STATE), policy.is_adaptive()) {
            (Some(bytes), true) => policy
                .selector_mut()
                .load_state_bytes(&bytes)
                .map_err(|e| err(format!("masking state: {e}"))),
            (None, true) => Err(err(format!(
                "the policy `{}` learns from feedback but the checkpoint has no \
                 `{MASKING_STATE}` section",
                policy.selector().name()
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mask_core::IGNORE_INDEX;

    /// Regression (tests issue): nothing checked that feedback reaches the right rows. Three
    /// rows of T = 4; row 1 has no masked position; the labels restore the original ids.
    #[test]
    fn feedback_reaches_the_right_rows_with_original_ids() {
        let n = IGNORE_INDEX;
        let batch = TextBatch {
            step: 0,
            epoch: 0,
            batch: 3,
            seq_len: 4,
            input_ids: vec![2, 9, 4, 3, 2, 7, 3, 0, 2, 4, 4, 3],
            labels: vec![n, n, 11, n, n, n, n, n, n, 12, 13, n],
            lengths: vec![4, 3, 4],
            example_indices: vec![0, 1, 2],
            num_masked: 3,
        };
        let targets = MaskedTargets::from_labels(&batch.labels, 20).unwrap();
        assert_eq!(targets.positions, vec![2, 9, 10]);
        let mut seen = vec![];
        feed_back(
            &batch,
            &targets.positions,
            &[0.5, 1.5, 2.5],
            |ids, pos, losses| seen.push((ids.to_vec(), pos.to_vec(), losses.to_vec())),
        );
        assert_eq!(
            seen,
            vec![
                (vec![2, 9, 11, 3], vec![2], vec![0.5]),
                (vec![2, 12, 13, 3], vec![1, 2], vec![1.5, 2.5]),
            ]
        );
    }
}
