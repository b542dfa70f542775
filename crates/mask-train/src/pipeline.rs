//! The data pipeline: a per-epoch shuffle from `(seed, epoch)`, padded batches, masking by any
//! `mask-core` policy, and worker threads that prefetch batches ahead of the model.
//!
//! Reproducibility: the batch of step `s` is a pure function of `(seed, s)` — its epoch is
//! `s / steps_per_epoch`, its documents a slice of that epoch's permutation, its masks drawn from
//! `(seed, epoch, document index, step)` — so results do not depend on the number of workers, and
//! a resumed run sees exactly the batches an uninterrupted one would.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use mask_core::{BatchContext, BatchMasker, MaskPolicy, MaskRng, TokenBatch, IGNORE_INDEX};

use crate::error::{invalid, Result};
use crate::tokenizer::Encoded;

/// A permutation of `0..n` drawn from `(seed, epoch)` (Fisher-Yates).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = MaskRng::for_example(seed, epoch, u64::MAX, 0x5eed);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Which documents each step trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSchedule {
    /// Documents in the training set.
    pub n_docs: usize,
    /// Documents per batch.
    pub batch_size: usize,
    /// Shuffle seed.
    pub seed: u64,
}

impl BatchSchedule {
    /// Checks that at least one full batch fits.
    pub fn new(n_docs: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(invalid("batch_size", 0, "at least 1"));
        }
        if n_docs < batch_size {
            return Err(invalid(
                "batch_size",
                batch_size,
                format!("at most the number of training documents ({n_docs})"),
            ));
        }
        Ok(Self {
            n_docs,
            batch_size,
            seed,
        })
    }

    /// Full batches per epoch (the last partial batch of an epoch is dropped).
    pub fn steps_per_epoch(&self) -> u64 {
        (self.n_docs / self.batch_size) as u64
    }

    /// Epoch of step `step`.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.steps_per_epoch()
    }

    /// Document indices of step `step`.
    pub fn docs_at(&self, step: u64) -> Vec<usize> {
        self.docs_at_cached(step, &mut EpochOrder::default())
    }

    /// Document indices of step `step`, reusing `cache`'s permutation while the epoch is the
    /// same (a shuffle is O(documents); a batch needs only `batch_size` of them).
    pub fn docs_at_cached(&self, step: u64, cache: &mut EpochOrder) -> Vec<usize> {
        let within = (step % self.steps_per_epoch()) as usize;
        let order = cache.get(self.n_docs, self.seed, self.epoch_of(step));
        order[within * self.batch_size..(within + 1) * self.batch_size].to_vec()
    }
}

/// The permutation of the last epoch asked for, recomputed only when the epoch changes.
#[derive(Debug, Clone, Default)]
pub struct EpochOrder {
    epoch: Option<u64>,
    order: Vec<usize>,
}

impl EpochOrder {
    /// [`epoch_order`]`(n, seed, epoch)`, cached.
    pub fn get(&mut self, n: usize, seed: u64, epoch: u64) -> &[usize] {
        if self.epoch != Some(epoch) || self.order.len() != n {
            self.order = epoch_order(n, seed, epoch);
            self.epoch = Some(epoch);
        }
        &self.order
    }
}

/// A padded, masked batch ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBatch {
    /// Training step this batch belongs to.
    pub step: u64,
    /// Epoch of that step.
    pub epoch: u64,
    /// Rows B.
    pub batch: usize,
    /// Padded length T (the longest row).
    pub seq_len: usize,
    /// Corrupted ids `[B * T]` (padding = `[PAD]`).
    pub input_ids: Vec<u32>,
    /// Original ids at masked positions, `IGNORE_INDEX` elsewhere `[B * T]`.
    pub labels: Vec<i32>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
    /// Data-set index of each row.
    pub example_indices: Vec<u64>,
    /// Masked positions in the batch.
    pub num_masked: usize,
}

/// Pads the documents `indices` to their longest length and masks them with `masker` at
/// `(seed, epoch, step)`.
pub fn make_batch<P: MaskPolicy>(
    masker: &mut BatchMasker<P>,
    docs: &[Encoded],
    indices: &[usize],
    pad_id: u32,
    ctx: BatchContext,
) -> Result<TrainBatch> {
    let batch = indices.len();
    let seq_len = indices
        .iter()
        .map(|&i| docs[i].ids.len())
        .max()
        .unwrap_or(0);
    let n = batch * seq_len;
    let (mut ids, mut special, mut words) = (vec![pad_id; n], vec![true; n], vec![None; n]);
    let mut lengths = Vec::with_capacity(batch);
    for (r, &i) in indices.iter().enumerate() {
        let d = &docs[i];
        let row = r * seq_len..r * seq_len + d.ids.len();
        ids[row.clone()].copy_from_slice(&d.ids);
        special[row.clone()].copy_from_slice(&d.special_mask);
        words[row].copy_from_slice(&d.word_ids);
        lengths.push(d.ids.len());
    }
    let example_indices: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    let tokens = TokenBatch {
        batch,
        seq_len,
        ids: &ids,
        special_mask: &special,
        word_ids: Some(&words),
        example_indices: &example_indices,
    };
    let masked = masker.mask_batch(&tokens, ctx)?;
    Ok(TrainBatch {
        step: ctx.step,
        epoch: ctx.epoch,
        batch,
        seq_len,
        input_ids: masked.input_ids,
        labels: masked.labels,
        lengths,
        example_indices,
        num_masked: masked.num_masked,
    })
}

/// The batch of one step under a schedule and a policy.
pub fn batch_at<P: MaskPolicy>(
    masker: &mut BatchMasker<P>,
    docs: &[Encoded],
    schedule: &BatchSchedule,
    pad_id: u32,
    step: u64,
) -> Result<TrainBatch> {
    batch_at_cached(
        masker,
        docs,
        schedule,
        pad_id,
        step,
        &mut EpochOrder::default(),
    )
}

/// [`batch_at`] reusing an epoch-order cache (one shuffle per epoch instead of per step).
pub fn batch_at_cached<P: MaskPolicy>(
    masker: &mut BatchMasker<P>,
    docs: &[Encoded],
    schedule: &BatchSchedule,
    pad_id: u32,
    step: u64,
    cache: &mut EpochOrder,
) -> Result<TrainBatch> {
    let ctx = BatchContext {
        seed: schedule.seed,
        epoch: schedule.epoch_of(step),
        step,
    };
    make_batch(
        masker,
        docs,
        &schedule.docs_at_cached(step, cache),
        pad_id,
        ctx,
    )
}

/// Worker threads producing the batches of steps `start..end` ahead of the consumer, in order.
/// Worker `w` makes steps `s` with `s % workers == w`; the consumer reads the workers' channels
/// round-robin, so the sequence is the same for any number of workers.
pub struct Prefetcher {
    receivers: Vec<Receiver<Result<TrainBatch>>>,
    handles: Vec<JoinHandle<()>>,
    next: u64,
    end: u64,
}

impl Prefetcher {
    /// Starts `workers` threads, each keeping up to `depth` batches ready.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn<P: MaskPolicy + Clone + Send + 'static>(
        docs: Arc<Vec<Encoded>>,
        policy: P,
        schedule: BatchSchedule,
        pad_id: u32,
        start: u64,
        end: u64,
        workers: usize,
        depth: usize,
    ) -> Self {
        let workers = workers.max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers as u64 {
            let (tx, rx) = sync_channel(depth.max(1));
            let (docs, policy) = (Arc::clone(&docs), policy.clone());
            handles.push(std::thread::spawn(move || {
                let mut masker = BatchMasker::new(policy);
                let mut order = EpochOrder::default();
                let first = start + (w + workers as u64 - start % workers as u64) % workers as u64;
                let mut step = first;
                while step < end {
                    let batch =
                        batch_at_cached(&mut masker, &docs, &schedule, pad_id, step, &mut order);
                    if tx.send(batch).is_err() {
                        return; // consumer gone
                    }
                    step += workers as u64;
                }
            }));
            receivers.push(rx);
        }
        Self {
            receivers,
            handles,
            next: start,
            end,
        }
    }

    /// The next step's batch, or `None` after the last.
    pub fn next_batch(&mut self) -> Option<Result<TrainBatch>> {
        if self.next >= self.end {
            return None;
        }
        let w = (self.next % self.receivers.len() as u64) as usize;
        self.next += 1;
        Some(self.receivers[w].recv().unwrap_or_else(|_| {
            Err(crate::error::TrainError::Tokenizer(
                "a data worker stopped".into(),
            ))
        }))
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.receivers.clear(); // unblock workers waiting to send
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Pads documents for inference or fine-tuning without masking: `(ids [B * T], lengths, T)`.
pub fn pad_docs(docs: &[&Encoded], pad_id: u32) -> (Vec<u32>, Vec<usize>, usize) {
    let seq_len = docs.iter().map(|d| d.ids.len()).max().unwrap_or(0);
    let mut ids = vec![pad_id; docs.len() * seq_len];
    for (r, d) in docs.iter().enumerate() {
        ids[r * seq_len..r * seq_len + d.ids.len()].copy_from_slice(&d.ids);
    }
    (ids, docs.iter().map(|d| d.ids.len()).collect(), seq_len)
}

/// Count of labelled positions (sanity for callers).
pub fn labelled(labels: &[i32]) -> usize {
    labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
}
