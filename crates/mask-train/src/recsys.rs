//! Sequential recommendation with BERT4Rec (Sun et al. 2019) under static vs dynamic Cloze
//! masking: a MovieLens `u.data` reader, the leave-one-out split, training with AdamW on the
//! Cloze loss, and the BERT4Rec evaluation protocol (HR@10 and NDCG@10 of the held-out item
//! against 100 sampled negatives), with a popularity baseline as a sanity floor.
//!
//! Protocol, as implemented:
//! - Items are remapped densely to `1..=n_items` in order of their original ids (0 = padding,
//!   `n_items + 1` = the mask item); each user's interactions are sorted by timestamp, ties kept
//!   in file order.
//! - Leave-one-out: the last item is the test target, the second-to-last the validation target,
//!   the rest the training prefix. Users with fewer than 3 interactions are dropped (counted).
//! - Training sample of a user: the last `max_len` items of the training prefix, Cloze-masked by
//!   [`mask_core::ItemMasker`] with the arm's regime (static `dupe_factor` or dynamic).
//! - Test: history = training prefix + validation item (its last `max_len - 1` items), then the
//!   mask item appended (mask-last); the model scores the target and 100 negatives at the mask
//!   position. Validation: the same with the training prefix as history and the validation item
//!   as target. Negatives are sampled uniformly without replacement from the items the user never
//!   interacted with (BERT4Rec sampled by popularity; we sample uniformly, which is easier), once
//!   per user from `negative_seed`, the same lists for every arm and for the baseline.
//! - Rank of the target = number of negatives scoring higher; ties are broken uniformly at
//!   random, in expectation: HR and NDCG are averaged exactly over the tie orders (with no ties
//!   this is the usual definition). `HR@k = [rank < k]`, `NDCG@k = [rank < k] / log2(rank + 2)`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{
    BatchContext, BatchMasker, ItemMaskingConfig, MaskRng, MaskedBatch, Regime, TokenBatch,
};
use mask_model::mask_attn::KeyPadding;
use mask_model::{token_cross_entropy, Bert4Rec, Bert4RecConfig, MaskedTargets};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::{invalid, io_error, Result};
use crate::pipeline::{BatchSchedule, EpochOrder};
use crate::schedule::{clip_global_norm, global_grad_norm, lr_at, Decay};

/// A malformed interaction file.
#[derive(Debug, Error)]
pub enum RecDataError {
    /// A line does not have the four fields `user item rating timestamp`.
    #[error(
        "{source_name}: line {line} has {got} fields, expected 4 (user item rating timestamp)"
    )]
    FieldCount {
        /// The file (or name of the text).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// Number of whitespace-separated fields found.
        got: usize,
    },
    /// A field does not parse.
    #[error("{source_name}: line {line}: field `{field}` = `{value}` is not {expected}")]
    BadField {
        /// The file (or name of the text).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// `user`, `item`, `rating` or `timestamp`.
        field: &'static str,
        /// The text found.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// No interactions at all.
    #[error("{source_name} has no interactions")]
    Empty {
        /// The file (or name of the text).
        source_name: String,
    },
}

/// Interaction histories, one time-ordered item sequence per user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interactions {
    /// Number of distinct items; dense ids are `1..=n_items`.
    pub n_items: usize,
    /// Original id of dense item `i` at index `i - 1`.
    pub item_ids: Vec<u64>,
    /// Original id of each user, in order of the sequences.
    pub user_ids: Vec<u64>,
    /// Dense item ids per user, sorted by timestamp (ties in file order).
    pub sequences: Vec<Vec<u32>>,
}

impl Interactions {
    /// Total number of interactions.
    pub fn n_interactions(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }
}

/// Reads a MovieLens `u.data` file: `user item rating timestamp` per line, whitespace
/// separated (tabs in the original), blank lines skipped.
pub fn read_movielens(path: &Path) -> Result<Interactions> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    parse_movielens(&text, &path.display().to_string())
}

/// Parses `u.data` text; `source_name` names it in errors.
pub fn parse_movielens(text: &str, source_name: &str) -> Result<Interactions> {
    let mut rows: Vec<(u64, u64, u64)> = vec![]; // (user, item, timestamp) in file order
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 4 {
            return Err(RecDataError::FieldCount {
                source_name: source_name.into(),
                line: n + 1,
                got: fields.len(),
            }
            .into());
        }
        let bad = |field, value: &str, expected| RecDataError::BadField {
            source_name: source_name.into(),
            line: n + 1,
            field,
            value: value.into(),
            expected,
        };
        let int = |i: usize, field| {
            fields[i]
                .parse::<u64>()
                .map_err(|_| bad(field, fields[i], "an unsigned integer"))
        };
        let (user, item, timestamp) = (int(0, "user")?, int(1, "item")?, int(3, "timestamp")?);
        match fields[2].parse::<f64>() {
            Ok(r) if r.is_finite() => {}
            _ => return Err(bad("rating", fields[2], "a finite number").into()),
        }
        rows.push((user, item, timestamp));
    }
    if rows.is_empty() {
        return Err(RecDataError::Empty {
            source_name: source_name.into(),
        }
        .into());
    }
    let items: BTreeMap<u64, u32> = rows.iter().map(|r| (r.1, 0)).collect();
    let item_ids: Vec<u64> = items.keys().copied().collect();
    let dense: BTreeMap<u64, u32> = item_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32 + 1))
        .collect();
    let mut by_user: BTreeMap<u64, Vec<(u64, u32)>> = BTreeMap::new();
    for &(user, item, ts) in &rows {
        by_user.entry(user).or_default().push((ts, dense[&item]));
    }
    let mut user_ids = vec![];
    let mut sequences = vec![];
    for (user, mut seq) in by_user {
        seq.sort_by_key(|&(ts, _)| ts); // stable: ties keep file order
        user_ids.push(user);
        sequences.push(seq.into_iter().map(|(_, item)| item).collect());
    }
    Ok(Interactions {
        n_items: item_ids.len(),
        item_ids,
        user_ids,
        sequences,
    })
}

/// One user's leave-one-out split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSplit {
    /// Index of the user in [`Interactions::sequences`].
    pub user: usize,
    /// Training prefix (all but the last two items).
    pub train: Vec<u32>,
    /// Validation target (second-to-last item).
    pub valid: u32,
    /// Test target (last item).
    pub test: u32,
}

/// The leave-one-out split of every user with at least 3 interactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LooSplit {
    /// Kept users.
    pub users: Vec<UserSplit>,
    /// Users dropped for having fewer than 3 interactions.
    pub dropped_users: usize,
}

/// Splits every user's sequence: last item = test, second-to-last = validation, rest = training.
pub fn leave_one_out(data: &Interactions) -> LooSplit {
    let mut users = vec![];
    let mut dropped_users = 0;
    for (user, seq) in data.sequences.iter().enumerate() {
        if seq.len() < 3 {
            dropped_users += 1;
            continue;
        }
        let n = seq.len();
        users.push(UserSplit {
            user,
            train: seq[..n - 2].to_vec(),
            valid: seq[n - 2],
            test: seq[n - 1],
        });
    }
    LooSplit {
        users,
        dropped_users,
    }
}

/// The last `max_len` items of `seq`.
pub fn last_items(seq: &[u32], max_len: usize) -> &[u32] {
    &seq[seq.len().saturating_sub(max_len)..]
}

/// Stream id of negative sampling (distinct from the masking streams of `mask-core`).
const STREAM_NEGATIVES: u64 = 0x004e_4547;

/// `n` negatives per user of `split`, uniformly without replacement from the items (`1..=n_items`)
/// the user never interacted with (all of them when fewer are left), from `(seed, user index)`.
pub fn sample_negatives(
    data: &Interactions,
    split: &LooSplit,
    n: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    split
        .users
        .iter()
        .map(|u| {
            let mut seen = vec![false; data.n_items + 1];
            for &i in &data.sequences[u.user] {
                seen[i as usize] = true;
            }
            let mut pool: Vec<u32> = (1..=data.n_items as u32)
                .filter(|&i| !seen[i as usize])
                .collect();
            let k = n.min(pool.len());
            let mut rng = MaskRng::for_example(seed, 0, u.user as u64, STREAM_NEGATIVES);
            for i in 0..k {
                let j = i + rng.below((pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            pool.truncate(k);
            pool
        })
        .collect()
}

/// Rank counts of a target score among negative scores: `(higher, tied)`.
pub fn rank_counts(target: f32, negatives: &[f32]) -> (usize, usize) {
    let higher = negatives.iter().filter(|&&s| s > target).count();
    let tied = negatives.iter().filter(|&&s| s == target).count();
    (higher, tied)
}

/// `(HR@k, NDCG@k)` of a target with `higher` negatives scoring above it and `tied` equal,
/// averaged over the `tied + 1` equally likely ranks `higher..=higher + tied`.
pub fn hit_ndcg_at(k: usize, higher: usize, tied: usize) -> (f64, f64) {
    let (mut hit, mut ndcg) = (0.0, 0.0);
    for rank in higher..=higher + tied {
        if rank < k {
            hit += 1.0;
            ndcg += 1.0 / ((rank + 2) as f64).log2();
        }
    }
    let orders = (tied + 1) as f64;
    (hit / orders, ndcg / orders)
}

/// Mean HR@k and NDCG@k over users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankMetrics {
    /// Hit ratio at k.
    pub hr: f64,
    /// Normalised discounted cumulative gain at k.
    pub ndcg: f64,
    /// Users evaluated.
    pub users: usize,
}

/// HR@k and NDCG@k from per-user scores `[target, negatives...]`.
pub fn rank_metrics(k: usize, scores: &[Vec<f32>]) -> RankMetrics {
    let (mut hr, mut ndcg) = (0.0, 0.0);
    for s in scores {
        let (higher, tied) = rank_counts(s[0], &s[1..]);
        let (h, n) = hit_ndcg_at(k, higher, tied);
        hr += h;
        ndcg += n;
    }
    let users = scores.len();
    let d = users.max(1) as f64;
    RankMetrics {
        hr: hr / d,
        ndcg: ndcg / d,
        users,
    }
}

/// One masking arm: its name and regime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecArmConfig {
    /// Row name in the results.
    pub name: String,
    /// Static (with `dupe_factor`) or dynamic.
    pub regime: Regime,
}

/// Settings of the BERT4Rec static-vs-dynamic study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecStudyConfig {
    /// Masking arms. Default: static (dupe_factor 10, BERT4Rec's) and dynamic
    pub arms: Vec<RecArmConfig>,
    /// Cloze masking probability (BERT4Rec's MovieLens setting). Default: 0.2
    pub mask_prob: f64,
    /// Longest item sequence (training window and evaluation history + mask). Default: 50
    pub max_len: usize,
    /// Optimizer steps per arm (43 epochs of ML-100k's 943 users). Default: 600
    pub steps: u64,
    /// Sequences (users) per batch. Default: 64
    pub batch_size: usize,
    /// Peak learning rate. Default: 1e-3
    pub lr: f64,
    /// Linear warm-up steps, then linear decay to 0. Default: 100
    pub warmup_steps: u64,
    /// AdamW weight decay. Default: 0.01
    pub weight_decay: f64,
    /// Global gradient-norm clip (`None`: off). Default: 5.0
    pub grad_clip: Option<f64>,
    /// Seed of initialisation, data order, masks and dropout (shared by all arms). Default: 0
    pub seed: u64,
    /// Seed of the negative samples. Default: 12345
    pub negative_seed: u64,
    /// Sampled negatives per user. Default: 100
    pub n_negatives: usize,
    /// Cut-off k of HR@k and NDCG@k. Default: 10
    pub k: usize,
    /// Users per evaluation batch. Default: 128
    pub eval_batch_size: usize,
    /// Width. Default: 64
    pub d_model: usize,
    /// Heads. Default: 2
    pub n_heads: usize,
    /// Blocks. Default: 2
    pub n_layers: usize,
    /// Feed-forward width. Default: 256
    pub d_ff: usize,
    /// Dropout. Default: 0.1
    pub dropout: f64,
}

impl Default for RecStudyConfig {
    fn default() -> Self {
        Self {
            arms: vec![
                RecArmConfig {
                    name: "static (k=10)".into(),
                    regime: Regime::Static { dupe_factor: 10 },
                },
                RecArmConfig {
                    name: "dynamic".into(),
                    regime: Regime::Dynamic {},
                },
            ],
            mask_prob: 0.2,
            max_len: 50,
            steps: 600,
            batch_size: 64,
            lr: 1e-3,
            warmup_steps: 100,
            weight_decay: 0.01,
            grad_clip: Some(5.0),
            seed: 0,
            negative_seed: 12345,
            n_negatives: 100,
            k: 10,
            eval_batch_size: 128,
            d_model: 64,
            n_heads: 2,
            n_layers: 2,
            d_ff: 256,
            dropout: 0.1,
        }
    }
}

impl RecStudyConfig {
    /// A smoke-test version (a few seconds on tiny data): short sequences, a one-block model,
    /// 300 steps of 16 sequences.
    pub fn quick(mut self) -> Self {
        self.max_len = 20;
        self.steps = 300;
        self.batch_size = 16;
        self.warmup_steps = 5;
        self.lr = 3e-3;
        self.d_model = 32;
        self.n_layers = 1;
        self.d_ff = 64;
        self
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.arms.is_empty() {
            return Err(invalid("arms", "[]", "at least one arm"));
        }
        for a in &self.arms {
            a.regime.validate()?;
        }
        if !(self.mask_prob.is_finite() && (0.0..=1.0).contains(&self.mask_prob)) {
            return Err(invalid("mask_prob", self.mask_prob, "in [0, 1]"));
        }
        if self.max_len < 2 {
            return Err(invalid("max_len", self.max_len, "at least 2"));
        }
        if self.steps == 0 {
            return Err(invalid("steps", 0, "at least 1"));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(invalid("batch_size", 0, "at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("lr", self.lr, "a finite value > 0"));
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return Err(invalid("weight_decay", self.weight_decay, "in [0, 1)"));
        }
        if let Some(c) = self.grad_clip.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return Err(invalid("grad_clip", c, "a finite value > 0 (or absent)"));
        }
        if self.n_negatives == 0 || self.k == 0 {
            return Err(invalid("n_negatives / k", 0, "at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "in [0, 1)"));
        }
        Ok(())
    }

    /// The model config for `n_items` items.
    pub fn model(&self, n_items: usize) -> Bert4RecConfig {
        Bert4RecConfig::new(n_items)
            .with_max_len(self.max_len)
            .with_d_model(self.d_model)
            .with_n_heads(self.n_heads)
            .with_n_layers(self.n_layers)
            .with_d_ff(self.d_ff)
            .with_dropout(self.dropout)
    }
}

/// Results of one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecArmReport {
    /// Arm name.
    pub name: String,
    /// Its regime.
    pub regime: Regime,
    /// Test HR@k / NDCG@k.
    pub test: RankMetrics,
    /// Validation HR@k / NDCG@k.
    pub valid: RankMetrics,
    /// Mean training loss per epoch (over the steps of the epoch).
    pub epoch_losses: Vec<f64>,
    /// Training loss per step.
    pub step_losses: Vec<f64>,
    /// Mean training loss over the last tenth of the steps (on the arm's own masks: a static
    /// arm's training loss falls further by memorising its `dupe_factor` masks).
    pub final_loss: f64,
    /// Training wall time, seconds.
    pub train_seconds: f64,
    /// Training sequences per second.
    pub sequences_per_second: f64,
    /// FNV-1a digest of the candidate lists scored (equal across arms by construction).
    pub candidates_digest: u64,
}

/// Results of the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecReport {
    /// The config.
    pub config: RecStudyConfig,
    /// Users kept.
    pub users: usize,
    /// Users dropped (< 3 interactions).
    pub dropped_users: usize,
    /// Items.
    pub n_items: usize,
    /// Interactions.
    pub interactions: usize,
    /// Popularity baseline (score = training count of the item), test.
    pub popularity_test: RankMetrics,
    /// Popularity baseline, validation.
    pub popularity_valid: RankMetrics,
    /// One report per arm.
    pub arms: Vec<RecArmReport>,
}

/// What [`run_rec_study_with`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum RecEvent<'a> {
    /// Arm `arm` finished step `step` with loss `loss`.
    Step {
        /// Arm name.
        arm: &'a str,
        /// Step (0-based).
        step: u64,
        /// Its loss.
        loss: f64,
    },
    /// An arm finished.
    ArmDone(&'a RecArmReport),
}

/// Candidate lists `[target, negatives...]` per user.
fn candidates(targets: impl Iterator<Item = u32>, negatives: &[Vec<u32>]) -> Vec<Vec<u32>> {
    targets
        .zip(negatives)
        .map(|(t, n)| std::iter::once(t).chain(n.iter().copied()).collect())
        .collect()
}

fn digest(lists: &[Vec<u32>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in lists {
        for x in l.iter().chain(std::iter::once(&u32::MAX)) {
            for b in x.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

/// Popularity scores of candidate lists: the number of training-prefix occurrences of each item.
pub fn popularity_scores(split: &LooSplit, n_items: usize, cands: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let mut count = vec![0f32; n_items + 2];
    for u in &split.users {
        for &i in &u.train {
            count[i as usize] += 1.0;
        }
    }
    cands
        .iter()
        .map(|c| c.iter().map(|&i| count[i as usize]).collect())
        .collect()
}

/// Scores of candidate lists at the mask position appended to each history (its last
/// `max_len - 1` items), in batches, without dropout.
pub fn score_histories<B: Backend>(
    model: &Bert4Rec<B>,
    model_cfg: &Bert4RecConfig,
    histories: &[&[u32]],
    cands: &[Vec<u32>],
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(histories.len());
    let mask_id = model_cfg.mask_id();
    for (hs, cs) in histories
        .chunks(batch_size.max(1))
        .zip(cands.chunks(batch_size.max(1)))
    {
        let rows: Vec<Vec<u32>> = hs
            .iter()
            .map(|h| {
                let mut r = last_items(h, model_cfg.max_len - 1).to_vec();
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
        // Ragged lists (users with fewer negatives left) are padded with their first candidate;
        // the padding scores are dropped below.
        let n_c = cs.iter().map(Vec::len).max().unwrap_or(1);
        if let Some(c) = cs.iter().find(|c| c.is_empty()) {
            return Err(invalid(
                "candidates",
                format!("{c:?}"),
                "at least one per user",
            ));
        }
        let flat_c: Vec<i64> = cs
            .iter()
            .flat_map(|c| (0..n_c).map(move |j| *c.get(j).unwrap_or(&c[0]) as i64))
            .collect();
        let items = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows.len(), seq]), device);
        let cand =
            Tensor::<B, 2, Int>::from_data(TensorData::new(flat_c, [rows.len(), n_c]), device);
        let mask = KeyPadding::from_lengths(&lengths, seq).map_err(mask_model::ModelError::from)?;
        let positions: Vec<usize> = lengths.iter().map(|l| l - 1).collect();
        let scores = model.score(items, &mask, &positions, cand)?;
        let v: Vec<f32> = scores
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| invalid("scores", format!("{e:?}"), "a float tensor"))?;
        out.extend(v.chunks(n_c).zip(cs).map(|(s, c)| s[..c.len()].to_vec()));
    }
    Ok(out)
}

fn dropout_seed(seed: u64, step: u64) -> u64 {
    mask_core::mix64(seed ^ 0xd50f_a11c_e5ee_d000 ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Cloze-masks the users `idx` of `samples` into a right-padded batch.
fn masked_batch(
    masker: &mut BatchMasker<mask_core::ItemMasker>,
    samples: &[&[u32]],
    idx: &[usize],
    ctx: BatchContext,
) -> Result<(MaskedBatch, Vec<usize>)> {
    let seq = idx.iter().map(|&i| samples[i].len()).max().unwrap_or(1);
    let mut ids = vec![0u32; idx.len() * seq];
    let mut pad = vec![true; idx.len() * seq];
    let lengths: Vec<usize> = idx.iter().map(|&i| samples[i].len()).collect();
    for (r, &i) in idx.iter().enumerate() {
        ids[r * seq..r * seq + samples[i].len()].copy_from_slice(samples[i]);
        pad[r * seq..r * seq + samples[i].len()].fill(false);
    }
    let indices: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
    let batch = TokenBatch {
        batch: idx.len(),
        seq_len: seq,
        ids: &ids,
        special_mask: &pad,
        word_ids: None,
        example_indices: &indices,
    };
    Ok((masker.mask_batch(&batch, ctx)?, lengths))
}

/// `(epoch, loss)` per step.
type EpochLosses = Vec<(u64, f64)>;

/// Trains one arm; returns the trained model and the per-step losses.
fn train_arm<B: AutodiffBackend>(
    cfg: &RecStudyConfig,
    arm: &RecArmConfig,
    model_cfg: &Bert4RecConfig,
    samples: &[&[u32]],
    device: &B::Device,
    on_event: &mut dyn FnMut(RecEvent<'_>),
) -> Result<(Bert4Rec<B>, EpochLosses)> {
    let policy = ItemMaskingConfig::new(model_cfg.n_items as u32)
        .with_mask_prob(cfg.mask_prob)
        .with_regime(arm.regime)
        .build()?;
    let mut masker = BatchMasker::new(policy);
    let schedule = BatchSchedule::new(samples.len(), cfg.batch_size, cfg.seed)?;
    let mut order = EpochOrder::default();
    B::seed(device, cfg.seed);
    let mut model = model_cfg.init::<B>(device)?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .with_epsilon(1e-6)
        .init::<B, Bert4Rec<B>>();
    let vocab = model_cfg.vocab_size();
    let mut losses = Vec::with_capacity(cfg.steps as usize);
    for step in 0..cfg.steps {
        let epoch = schedule.epoch_of(step);
        let idx = schedule.docs_at_cached(step, &mut order);
        let ctx = BatchContext {
            seed: cfg.seed,
            epoch,
            step,
        };
        let (batch, lengths) = masked_batch(&mut masker, samples, &idx, ctx)?;
        let targets = MaskedTargets::from_labels(&batch.labels, vocab)?;
        B::seed(device, dropout_seed(cfg.seed, step));
        let x = mask_model::ids_tensor::<B>("items", &batch.input_ids, batch.batch, vocab, device)?;
        let mask = KeyPadding::from_lengths(&lengths, batch.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let (positions, t) = targets.to_tensors::<B>(device);
        let logits = model.mlm.forward_at(x, &mask, positions)?;
        let loss = token_cross_entropy(logits, t).mean();
        let loss_value = loss.clone().into_scalar().elem::<f64>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        match cfg.grad_clip {
            Some(max) => clip_global_norm::<B, _>(&model, &mut grads, max),
            None => global_grad_norm::<B, _>(&model, &grads),
        };
        let lr = lr_at(
            step,
            cfg.steps,
            cfg.lr,
            cfg.warmup_steps,
            Decay::Linear,
            0.0,
        );
        model = optim.step(lr, model, grads);
        losses.push((epoch, loss_value));
        on_event(RecEvent::Step {
            arm: &arm.name,
            step,
            loss: loss_value,
        });
    }
    Ok((model, losses))
}

/// [`run_rec_study_with`] without progress reports.
pub fn run_rec_study<B: AutodiffBackend>(
    cfg: &RecStudyConfig,
    data: &Interactions,
    out_dir: &Path,
    device: &B::Device,
) -> Result<RecReport> {
    run_rec_study_with::<B>(cfg, data, out_dir, device, &mut |_| {})
}

/// Trains every arm on the leave-one-out training prefixes and evaluates it, with the
/// popularity baseline, on the same candidates; writes `report.json` and `results.md` to
/// `out_dir`.
pub fn run_rec_study_with<B: AutodiffBackend>(
    cfg: &RecStudyConfig,
    data: &Interactions,
    out_dir: &Path,
    device: &B::Device,
    on_event: &mut dyn FnMut(RecEvent<'_>),
) -> Result<RecReport> {
    cfg.validate()?;
    let split = leave_one_out(data);
    if split.users.is_empty() {
        return Err(invalid(
            "interactions",
            format!("{} users", data.sequences.len()),
            "at least one user with 3 or more interactions",
        ));
    }
    let model_cfg = cfg.model(data.n_items);
    let samples: Vec<&[u32]> = split
        .users
        .iter()
        .map(|u| last_items(&u.train, cfg.max_len))
        .collect();
    let negatives = sample_negatives(data, &split, cfg.n_negatives, cfg.negative_seed);
    let test_c = candidates(split.users.iter().map(|u| u.test), &negatives);
    let valid_c = candidates(split.users.iter().map(|u| u.valid), &negatives);
    let full: Vec<Vec<u32>> = split
        .users
        .iter()
        .map(|u| [&u.train[..], &[u.valid]].concat())
        .collect();
    let test_h: Vec<&[u32]> = full.iter().map(Vec::as_slice).collect();
    let valid_h: Vec<&[u32]> = split.users.iter().map(|u| u.train.as_slice()).collect();

    let popularity_test = rank_metrics(cfg.k, &popularity_scores(&split, data.n_items, &test_c));
    let popularity_valid = rank_metrics(cfg.k, &popularity_scores(&split, data.n_items, &valid_c));

    let mut arms = vec![];
    for arm in &cfg.arms {
        let start = Instant::now();
        let (model, losses) = train_arm::<B>(cfg, arm, &model_cfg, &samples, device, on_event)?;
        let train_seconds = start.elapsed().as_secs_f64();
        let model = model.valid();
        let inner = device.clone();
        let score = |h: &[&[u32]], c: &[Vec<u32>]| {
            score_histories::<B::InnerBackend>(
                &model,
                &model_cfg,
                h,
                c,
                cfg.eval_batch_size,
                &inner,
            )
        };
        let test = rank_metrics(cfg.k, &score(&test_h, &test_c)?);
        let valid = rank_metrics(cfg.k, &score(&valid_h, &valid_c)?);
        let mut epoch_losses: Vec<f64> = vec![];
        let mut counts: Vec<usize> = vec![];
        for &(e, l) in &losses {
            let e = e as usize;
            if epoch_losses.len() <= e {
                epoch_losses.resize(e + 1, 0.0);
                counts.resize(e + 1, 0);
            }
            epoch_losses[e] += l;
            counts[e] += 1;
        }
        for (l, c) in epoch_losses.iter_mut().zip(&counts) {
            *l /= (*c).max(1) as f64;
        }
        let report = RecArmReport {
            name: arm.name.clone(),
            regime: arm.regime,
            test,
            valid,
            epoch_losses,
            step_losses: losses.iter().map(|&(_, l)| l).collect(),
            final_loss: {
                let tail = (losses.len() / 10).max(1);
                losses[losses.len() - tail..]
                    .iter()
                    .map(|&(_, l)| l)
                    .sum::<f64>()
                    / tail as f64
            },
            train_seconds,
            sequences_per_second: (cfg.steps as usize * cfg.batch_size) as f64
                / train_seconds.max(1e-9),
            candidates_digest: digest(&test_c) ^ digest(&valid_c).rotate_left(1),
        };
        on_event(RecEvent::ArmDone(&report));
        arms.push(report);
    }
    let report = RecReport {
        config: cfg.clone(),
        users: split.users.len(),
        dropped_users: split.dropped_users,
        n_items: data.n_items,
        interactions: data.n_interactions(),
        popularity_test,
        popularity_valid,
        arms,
    };
    write_report(&report, out_dir)?;
    Ok(report)
}

/// The results as a markdown table.
pub fn rec_results_table(r: &RecReport) -> String {
    let k = r.config.k;
    let mut s = format!(
        "| arm | test HR@{k} | test NDCG@{k} | valid HR@{k} | valid NDCG@{k} | final train loss | train s | seq/s |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for a in &r.arms {
        s += &format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.0} | {:.0} |\n",
            a.name,
            a.test.hr,
            a.test.ndcg,
            a.valid.hr,
            a.valid.ndcg,
            a.final_loss,
            a.train_seconds,
            a.sequences_per_second
        );
    }
    s += &format!(
        "| popularity | {:.4} | {:.4} | {:.4} | {:.4} | - | - | - |\n",
        r.popularity_test.hr,
        r.popularity_test.ndcg,
        r.popularity_valid.hr,
        r.popularity_valid.ndcg
    );
    s += &format!(
        "\n{} users ({} dropped with < 3 interactions), {} items, {} interactions; {} negatives per user; {} steps of {} sequences, max_len {}.\n",
        r.users,
        r.dropped_users,
        r.n_items,
        r.interactions,
        r.config.n_negatives,
        r.config.steps,
        r.config.batch_size,
        r.config.max_len
    );
    s
}

fn write_report(r: &RecReport, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    let json = out_dir.join("report.json");
    let text = serde_json::to_string_pretty(r)
        .map_err(|e| invalid("report", e.to_string(), "serialisable"))?;
    std::fs::write(&json, text).map_err(io_error(&json))?;
    let md = out_dir.join("results.md");
    let mut f = std::fs::File::create(&md).map_err(io_error(&md))?;
    f.write_all(rec_results_table(r).as_bytes())
        .map_err(io_error(&md))
}
