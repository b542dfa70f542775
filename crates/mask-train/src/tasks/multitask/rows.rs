//! Host batches of a multi-task run (padded rows, scored positions, targets), the attention
//! mask each is run under, and held-out scoring, shared by training, evaluation and the
//! studies.
//!
//! Legend: B rows, T padded length, N scored positions, V vocabulary, C classes.

use burn::prelude::*;
use mask_core::{BatchContext, BatchMasker, MaskingConfig};
use mask_data::collate::{pad, Fnv};
use mask_data::{collate, Encoded, TextBatch};
use mask_model::mask_attn::{AttnMask, AttnMaskConfig, KeyPadding, MaskInputs};
use mask_model::{ids_tensor, token_cross_entropy, MaskedTargets, SharedEncoderModel};
use serde::{Deserialize, Serialize};

use super::config::Objective;
use crate::error::{invalid, Result};
use crate::task::Metrics;
use crate::tasks::token_classification::first_pieces;

/// Seed of the fixed evaluation mask of MLM tasks (BERT's 15%, 80/10/10).
pub const EVAL_MASK_SEED: u64 = 20_261_201;
/// Documents per evaluation batch.
const EVAL_BATCH: usize = 64;

/// The head a task trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Head {
    /// Prediction head `i` over the vocabulary.
    Lm(usize),
    /// Token classifier `i`.
    Tagger(usize),
}

/// A host batch of one task: padded rows, the positions scored and their targets.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The task (its index in the run's list).
    pub task: usize,
    /// The task's epoch.
    pub epoch: u64,
    /// Padded length T.
    pub seq_len: usize,
    /// Model input `[B * T]` (corrupted by the task's masking policy, if any).
    pub input_ids: Vec<u32>,
    /// Real tokens per row `[B]`.
    pub lengths: Vec<usize>,
    /// Prefix length per row `[B]` (next-token tasks; empty otherwise).
    pub prefix: Vec<usize>,
    /// Flat positions `r * T + t` scored `[N]`, ascending.
    pub positions: Vec<i64>,
    /// Their targets (token ids or classes) `[N]`.
    pub targets: Vec<i64>,
    /// Seed of random attention masks (random key drop) of this batch.
    pub mask_seed: u64,
    /// The masked batch of an `mlm` task (for adaptive policies' feedback).
    pub text: Option<TextBatch>,
}

impl Rows {
    /// Rows of documents `docs` with model input `input_ids` (`None`: the documents as they
    /// are), scored as `objective` says (`masked`: the masked batch of an MLM task; `draws`:
    /// one random word per row for `uniform` prefixes, `None` in evaluation).
    pub(crate) fn build(
        task: usize,
        objective: &Objective,
        docs: &[&Encoded],
        pad_id: u32,
        masked: Option<TextBatch>,
        draws: Option<&[u64]>,
    ) -> Result<Self> {
        let (ids, lengths, seq_len) = pad(docs, pad_id);
        let (mut prefix, mut positions, mut targets) = (vec![], vec![], vec![]);
        match objective {
            Objective::Mlm {} => {
                let text = masked.as_ref().ok_or_else(|| {
                    invalid("masking", "none", "a masking policy for an mlm task")
                })?;
                // The vocabulary bound was checked when the task was built.
                let t = MaskedTargets::from_labels(&text.labels, usize::MAX >> 1)?;
                (positions, targets) = (t.positions, t.targets);
            }
            Objective::NextToken { prefix: rule } => {
                for (r, &len) in lengths.iter().enumerate() {
                    let p = rule.prefix(len, draws.map(|d| d[r]));
                    prefix.push(p);
                    for t in p.max(1) - 1..len.saturating_sub(1) {
                        positions.push((r * seq_len + t) as i64);
                        targets.push(ids[r * seq_len + t + 1] as i64);
                    }
                }
            }
            Objective::Tagging { .. } => (positions, targets) = first_pieces(docs, seq_len),
        }
        Ok(Self {
            task,
            epoch: masked.as_ref().map_or(0, |m| m.epoch),
            seq_len,
            input_ids: masked.as_ref().map_or(ids, |m| m.input_ids.clone()),
            lengths,
            prefix,
            positions,
            targets,
            mask_seed: 0,
            text: masked,
        })
    }

    /// Rows B.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// FNV-1a over the task, inputs, positions and targets.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::default();
        h.eat(self.task as u32);
        self.input_ids.iter().for_each(|&i| h.eat(i));
        self.positions.iter().for_each(|&p| h.eat(p as u32));
        self.targets.iter().for_each(|&t| h.eat(t as u32));
        h.0
    }
}

/// The attention mask of `rows` under `attention`: key padding alone when `attention` is
/// `none`, else both.
pub fn attention_mask(
    attention: &AttnMaskConfig,
    rows: &Rows,
    heads: usize,
) -> Result<Box<dyn AttnMask>> {
    let padding = || {
        KeyPadding::from_lengths(&rows.lengths, rows.seq_len).map_err(mask_model::ModelError::from)
    };
    if matches!(attention, AttnMaskConfig::None {}) {
        return Ok(Box::new(padding()?));
    }
    let both = AttnMaskConfig::And {
        masks: vec![AttnMaskConfig::KeyPadding {}, attention.clone()],
    };
    let inputs = MaskInputs {
        batch: rows.rows(),
        heads,
        seq_len: rows.seq_len,
        lengths: Some(&rows.lengths),
        prefix_lengths: (!rows.prefix.is_empty()).then_some(rows.prefix.as_slice()),
        seed: rows.mask_seed,
        ..MaskInputs::default()
    };
    Ok(both.build(&inputs).map_err(mask_model::ModelError::from)?)
}

/// Summed loss, hits and count of scored positions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    /// Sum of the per-position cross-entropies (nats).
    pub loss_sum: f64,
    /// Positions whose arg-max is the target.
    pub correct: u64,
    /// Positions scored.
    pub items: u64,
}

impl Score {
    /// Mean loss per position.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.items.max(1) as f64
    }
    /// Share of positions predicted exactly.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.items.max(1) as f64
    }
}

/// Logits of `head` at the scored positions of `rows` under `attention`.
///
/// # Shapes
/// -> `([N, V or C], targets [N])`
pub(crate) fn logits<B: Backend>(
    model: &SharedEncoderModel<B>,
    (head, heads): (Head, usize),
    attention: &AttnMaskConfig,
    rows: &Rows,
    device: &B::Device,
) -> Result<(Tensor<B, 2>, Tensor<B, 1, Int>)> {
    let n = rows.positions.len();
    let vocab = model.encoder.vocab_size;
    let x = ids_tensor::<B>("input_ids", &rows.input_ids, rows.rows(), vocab, device)?;
    let mask = attention_mask(attention, rows, heads)?;
    let hidden = model.encoder.forward(x, mask.as_ref())?; // [B, T, d]
    let at = Tensor::<B, 1, Int>::from_data(TensorData::new(rows.positions.clone(), [n]), device);
    let targets =
        Tensor::<B, 1, Int>::from_data(TensorData::new(rows.targets.clone(), [n]), device);
    let logits = match head {
        Head::Lm(i) => model.lm_at(i, hidden, at)?,
        Head::Tagger(i) => model.tag_at(i, hidden, at)?,
    };
    Ok((logits, targets))
}

/// Scores `model` (inference: no dropout; `heads` attention heads) with `head` under
/// `attention` on `batches`.
pub fn score_rows<B: Backend>(
    model: &SharedEncoderModel<B>,
    (head, heads): (Head, usize),
    attention: &AttnMaskConfig,
    batches: &[Rows],
    device: &B::Device,
) -> Result<Score> {
    let mut score = Score::default();
    for rows in batches.iter().filter(|r| !r.positions.is_empty()) {
        let (logits, targets) = logits(model, (head, heads), attention, rows, device)?;
        let n = rows.positions.len();
        let hits = logits
            .clone()
            .argmax(1)
            .reshape([n])
            .equal(targets.clone())
            .int()
            .sum()
            .into_scalar()
            .elem::<i64>();
        let loss = token_cross_entropy(logits, targets)
            .sum()
            .into_scalar()
            .elem::<f64>();
        score.loss_sum += loss;
        score.correct += hits as u64;
        score.items += n as u64;
    }
    Ok(score)
}

/// Evaluation batches of `objective` on `docs`: MLM under BERT's 15% / 80/10/10 at
/// [`EVAL_MASK_SEED`] (`vocab` gives the policy), next-token with the evaluation prefix,
/// tagging at every word.
pub fn eval_rows(
    objective: &Objective,
    docs: &[Encoded],
    vocab: Option<&mask_core::VocabSpec>,
    pad_id: u32,
) -> Result<Vec<Rows>> {
    let mut masker = match (objective, vocab) {
        (Objective::Mlm {}, Some(v)) => {
            Some(BatchMasker::new(MaskingConfig::new(v.clone()).build()?))
        }
        (Objective::Mlm {}, None) => {
            return Err(invalid(
                "masking",
                "none",
                "a vocabulary for the MLM evaluation mask",
            ))
        }
        _ => None,
    };
    let indices: Vec<usize> = (0..docs.len()).collect();
    indices
        .chunks(EVAL_BATCH)
        .map(|chunk| {
            let rows: Vec<&Encoded> = chunk.iter().map(|&i| &docs[i]).collect();
            let ctx = BatchContext {
                seed: EVAL_MASK_SEED,
                epoch: 0,
                step: 0,
            };
            let masked = match masker.as_mut() {
                Some(m) => Some(collate(m, docs, chunk, pad_id, ctx)?),
                None => None,
            };
            Rows::build(0, objective, &rows, pad_id, masked, None)
        })
        .collect()
}

/// Held-out metrics of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEval {
    /// The task's name.
    pub task: String,
    /// Mean cross-entropy per scored position (nats).
    pub loss: f64,
    /// Share of positions whose arg-max is the target.
    pub accuracy: f64,
    /// Positions scored.
    pub items: u64,
}

/// Held-out metrics of a multi-task run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiEval {
    /// The tasks' losses averaged with their weights (what early stopping watches).
    pub score: f64,
    /// Each task's metrics, in task order.
    pub tasks: Vec<TaskEval>,
}

impl Metrics for MultiEval {
    fn score(&self) -> f64 {
        self.score
    }
    fn values(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![("score", self.score)];
        for t in &self.tasks {
            v.push(("loss", t.loss));
            v.push(("accuracy", t.accuracy));
        }
        v
    }
}
