//! Sequential recommendation with BERT4Rec (Sun et al. 2019): item sequences Cloze-masked by a
//! `mask-core` item policy (always the mask item; static or dynamic), the head over the item
//! vocabulary at the masked positions, cross-entropy. Evaluation ranks each user's held-out item
//! against sampled negatives at a mask item appended to the history (HR@k, NDCG@k, exact tie
//! averaging; a NaN score never hits).
//!
//! Legend: B users, T items per row, N masked items, C candidates, V = items + 2.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{
    BatchContext, BatchMasker, ItemMasker, ItemMaskingConfig, MaskedBatch, TokenBatch,
};
use mask_data::collate::Fnv;
use mask_data::movielens::last_items;
use mask_data::{BatchSchedule, EpochOrder};
use mask_model::mask_attn::KeyPadding;
use mask_model::{token_cross_entropy, Bert4Rec, Bert4RecConfig, MaskedTargets};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{invalid, Result};
use crate::metrics::{rank_metrics, RankMetrics};
use crate::task::{BatchInfo, Metrics, TaskOutput, TrainTask};

impl Metrics for RankMetrics {
    /// `1 - NDCG@k`.
    fn score(&self) -> f64 {
        1.0 - self.ndcg
    }
    fn values(&self) -> Vec<(&'static str, f64)> {
        vec![("hr", self.hr), ("ndcg", self.ndcg)]
    }
}

/// A ranking evaluation: per user a history and a candidate list `[target, negatives...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankingEval {
    /// Item histories (the model sees their last `max_len - 1` items, then the mask item).
    pub histories: Vec<Vec<u32>>,
    /// Candidates per user, the target first.
    pub candidates: Vec<Vec<u32>>,
    /// The cut-off k.
    pub k: usize,
}

/// Scores of candidate lists at the mask position appended to each history (its last
/// `max_len - 1` items), in batches of `batch_size`, without dropout.
pub fn score_histories<B: Backend>(
    model: &Bert4Rec<B>,
    config: &Bert4RecConfig,
    histories: &[Vec<u32>],
    cands: &[Vec<u32>],
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    if let Some(u) = cands.iter().position(Vec::is_empty) {
        return Err(invalid(
            "candidates",
            format!("user {u}: []"),
            "at least one per user",
        ));
    }
    let mut out = Vec::with_capacity(histories.len());
    let mask_id = config.mask_id();
    for (hs, cs) in histories
        .chunks(batch_size.max(1))
        .zip(cands.chunks(batch_size.max(1)))
    {
        let rows: Vec<Vec<u32>> = hs
            .iter()
            .map(|h| {
                let mut r = last_items(h, config.max_len - 1).to_vec();
                r.push(mask_id);
                r
            })
            .collect();
        let seq = rows.iter().map(Vec::len).max().unwrap_or(1);
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        let mut ids = vec![Bert4RecConfig::PAD as i64; rows.len() * seq];
        for (r, row) in rows.iter().enumerate() {
            for (t, &i) in row.iter().enumerate() {
                ids[r * seq + t] = i as i64;
            }
        }
        // Ragged lists (users with fewer negatives left) are padded with their first
        // candidate; the padding scores are dropped below.
        let n_c = cs.iter().map(Vec::len).max().unwrap_or(1);
        let flat_c: Vec<i64> = cs
            .iter()
            .flat_map(|c| (0..n_c).map(move |j| *c.get(j).unwrap_or(&c[0]) as i64))
            .collect();
        let items = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows.len(), seq]), device);
        let cand =
            Tensor::<B, 2, Int>::from_data(TensorData::new(flat_c, [rows.len(), n_c]), device);
        let mask = KeyPadding::from_lengths(&lengths, seq).map_err(mask_model::ModelError::from)?;
        let positions: Vec<usize> = lengths.iter().map(|l| l - 1).collect();
        let v: Vec<f32> = model
            .score(items, &mask, &positions, cand)?
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| invalid("scores", format!("{e:?}"), "a float tensor"))?;
        out.extend(v.chunks(n_c).zip(cs).map(|(s, c)| s[..c.len()].to_vec()));
    }
    Ok(out)
}

/// HR@k / NDCG@k of `model` on `eval`.
pub fn evaluate_ranking<B: Backend>(
    model: &Bert4Rec<B>,
    config: &Bert4RecConfig,
    eval: &RankingEval,
    batch_size: usize,
    device: &B::Device,
) -> Result<RankMetrics> {
    let scores = score_histories(
        model,
        config,
        &eval.histories,
        &eval.candidates,
        batch_size,
        device,
    )?;
    rank_metrics(eval.k, &scores)
        .ok_or_else(|| invalid("candidates", "an empty list", "at least one per user"))
}

/// A Cloze-masked batch of item sequences.
#[derive(Debug, Clone)]
pub struct ItemBatch {
    /// Epoch.
    pub epoch: u64,
    /// Masked items and labels `[B * T]`.
    pub masked: MaskedBatch,
    /// Real items per row.
    pub lengths: Vec<usize>,
}

/// The BERT4Rec Cloze task.
#[derive(Debug, Clone)]
pub struct Bert4RecTask {
    config: Bert4RecConfig,
    masking: ItemMaskingConfig,
    masker: BatchMasker<ItemMasker>,
    samples: Arc<Vec<Vec<u32>>>,
    eval: Arc<RankingEval>,
    eval_batch_size: usize,
    data: String,
    order: EpochOrder,
}

impl Bert4RecTask {
    /// Trains `config`'s model on the item sequences `samples` (each at most `max_len` items)
    /// with `masking`, evaluated on `eval`.
    pub fn new(
        config: Bert4RecConfig,
        masking: ItemMaskingConfig,
        samples: Arc<Vec<Vec<u32>>>,
        eval: Arc<RankingEval>,
        eval_batch_size: usize,
    ) -> Result<Self> {
        if masking.n_items as usize != config.n_items {
            return Err(invalid(
                "masking.n_items",
                masking.n_items,
                format!("the model's n_items ({})", config.n_items),
            ));
        }
        if let Some(s) = samples
            .iter()
            .find(|s| s.is_empty() || s.len() > config.max_len)
        {
            return Err(invalid(
                "samples",
                format!("a sequence of {} items", s.len()),
                format!("1..={} items", config.max_len),
            ));
        }
        if eval.histories.len() != eval.candidates.len() || eval.k == 0 || eval_batch_size == 0 {
            return Err(invalid(
                "eval",
                format!(
                    "{} histories, {} candidate lists, k {}, batch {eval_batch_size}",
                    eval.histories.len(),
                    eval.candidates.len(),
                    eval.k
                ),
                "one candidate list per history, k >= 1, batch >= 1",
            ));
        }
        let mut h = Fnv::default();
        for s in samples
            .iter()
            .chain(&eval.histories)
            .chain(&eval.candidates)
        {
            h.eat(s.len() as u32);
            s.iter().for_each(|&i| h.eat(i));
        }
        Ok(Self {
            masker: BatchMasker::new(masking.build()?),
            config,
            masking,
            samples,
            eval,
            eval_batch_size,
            data: format!("{:016x}", h.0),
            order: EpochOrder::default(),
        })
    }

    /// The model config.
    pub fn model_config(&self) -> &Bert4RecConfig {
        &self.config
    }
}

impl<B: AutodiffBackend> TrainTask<B> for Bert4RecTask {
    type Model = Bert4Rec<B>;
    type Batch = ItemBatch;
    type Metrics = RankMetrics;

    fn kind(&self) -> &'static str {
        "bert4rec"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "model": self.config,
            "masking": self.masking,
            "users": self.samples.len(),
            "eval_users": self.eval.histories.len(),
            "k": self.eval.k,
        })
    }

    fn bindings(&self) -> Vec<(String, String)> {
        vec![("data".to_string(), self.data.clone())]
    }

    fn num_examples(&self) -> usize {
        self.samples.len()
    }

    fn init_model(&self, device: &B::Device) -> Result<Bert4Rec<B>> {
        Ok(self.config.init::<B>(device)?)
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<ItemBatch> {
        let schedule = BatchSchedule::new(self.samples.len(), batch_size, seed)?;
        let idx = schedule.indices_at_cached(step, &mut self.order);
        let seq = idx
            .iter()
            .map(|&i| self.samples[i].len())
            .max()
            .unwrap_or(1);
        let mut ids = vec![Bert4RecConfig::PAD; idx.len() * seq];
        let mut pad = vec![true; idx.len() * seq];
        let lengths: Vec<usize> = idx.iter().map(|&i| self.samples[i].len()).collect();
        for (r, &i) in idx.iter().enumerate() {
            let s = &self.samples[i];
            ids[r * seq..r * seq + s.len()].copy_from_slice(s);
            pad[r * seq..r * seq + s.len()].fill(false);
        }
        let indices: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
        let tokens = TokenBatch {
            batch: idx.len(),
            seq_len: seq,
            ids: &ids,
            special_mask: &pad,
            word_ids: None,
            tags: None,
            example_indices: &indices,
        };
        let ctx = BatchContext {
            seed,
            epoch: schedule.epoch_of(step),
            step,
        };
        Ok(ItemBatch {
            epoch: ctx.epoch,
            masked: self.masker.mask_batch(&tokens, ctx)?,
            lengths,
        })
    }

    fn describe(&self, b: &ItemBatch) -> BatchInfo {
        let mut h = Fnv::default();
        b.masked.input_ids.iter().for_each(|&i| h.eat(i));
        b.masked.labels.iter().for_each(|&l| h.eat(l as u32));
        BatchInfo {
            epoch: b.epoch,
            examples: b.masked.batch,
            tokens: b.lengths.iter().sum(),
            items: b.masked.num_masked,
            digest: h.0,
            task: None,
        }
    }

    fn shard(&self, b: &ItemBatch, rank: usize, world: usize) -> Option<ItemBatch> {
        let m = &b.masked;
        let rows = crate::task::shard_rows(m.batch, rank, world);
        let labels = super::pick_rows(&m.labels, m.seq_len, &rows);
        Some(ItemBatch {
            epoch: b.epoch,
            masked: MaskedBatch {
                batch: rows.len(),
                seq_len: m.seq_len,
                input_ids: super::pick_rows(&m.input_ids, m.seq_len, &rows),
                num_masked: labels
                    .iter()
                    .filter(|&&l| l != mask_core::IGNORE_INDEX)
                    .count(),
                labels,
            },
            lengths: rows.iter().map(|&r| b.lengths[r]).collect(),
        })
    }

    fn forward(
        &self,
        model: &Bert4Rec<B>,
        b: &ItemBatch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        let vocab = self.config.vocab_size();
        let targets = MaskedTargets::from_labels(&b.masked.labels, vocab)?;
        if targets.is_empty() {
            return Ok(None);
        }
        let x = mask_model::ids_tensor::<B>(
            "items",
            &b.masked.input_ids,
            b.masked.batch,
            vocab,
            device,
        )?;
        let mask = KeyPadding::from_lengths(&b.lengths, b.masked.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let (positions, t) = targets.to_tensors::<B>(device);
        let per_item = token_cross_entropy(model.mlm.forward_at(x, &mask, positions)?, t);
        Ok(Some(TaskOutput {
            loss: per_item.mean(),
            per_item: None,
        }))
    }

    fn evaluate(
        &self,
        model: &Bert4Rec<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<RankMetrics> {
        evaluate_ranking(
            model,
            &self.config,
            &self.eval,
            self.eval_batch_size,
            device,
        )
    }
}
