//! The batch API: mask a padded `[batch, seq_len]` block of examples into reusable buffers.
//!
//! Each row is masked independently from `(seed, epoch, example_indices[row], step)`, so a row's
//! result never depends on which other rows share its batch or in which order they come.

use crate::error::{MaskError, Result};
use crate::example::{Example, MAX_SEQ_LEN};
use crate::policy::{MaskContext, MaskPolicy, Scratch};

/// A padded batch of tokenised examples, row-major `[batch, seq_len]`, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct TokenBatch<'a> {
    /// Number of rows.
    pub batch: usize,
    /// Tokens per row (padding included).
    pub seq_len: usize,
    /// Token ids, `batch * seq_len`.
    pub ids: &'a [u32],
    /// `true` at special tokens and padding, `batch * seq_len`.
    pub special_mask: &'a [bool],
    /// Optional word ids, `batch * seq_len`.
    pub word_ids: Option<&'a [Option<u32>]>,
    /// Optional tag per token (e.g. part-of-speech class ids), `batch * seq_len`; read by
    /// tag-weighted selection.
    pub tags: Option<&'a [u16]>,
    /// Stable data-set index of each row, `batch`.
    pub example_indices: &'a [u64],
}

impl TokenBatch<'_> {
    fn validate(&self) -> Result<()> {
        if self.seq_len == 0 || self.seq_len > MAX_SEQ_LEN {
            return Err(MaskError::SequenceLength {
                len: self.seq_len,
                max: MAX_SEQ_LEN,
            });
        }
        if self.batch == 0 {
            return Err(MaskError::InvalidValue {
                field: "batch",
                value: "0".into(),
                expected: "at least one example",
            });
        }
        let n = self
            .batch
            .checked_mul(self.seq_len)
            .ok_or(MaskError::InvalidValue {
                field: "batch",
                value: self.batch.to_string(),
                expected: "batch * seq_len to fit in memory",
            })?;
        let shape = |field, expected, got| {
            if expected == got {
                Ok(())
            } else {
                Err(MaskError::BatchShape {
                    field,
                    expected,
                    got,
                    batch: self.batch,
                    seq_len: self.seq_len,
                })
            }
        };
        shape("ids", n, self.ids.len())?;
        shape("special_mask", n, self.special_mask.len())?;
        if let Some(w) = self.word_ids {
            shape("word_ids", n, w.len())?;
        }
        if let Some(t) = self.tags {
            shape("tags", n, t.len())?;
        }
        shape("example_indices", self.batch, self.example_indices.len())
    }

    /// Row `r` as an [`Example`].
    pub fn example(&self, r: usize) -> Example<'_> {
        let span = r * self.seq_len..(r + 1) * self.seq_len;
        Example {
            ids: &self.ids[span.clone()],
            special_mask: &self.special_mask[span.clone()],
            word_ids: self.word_ids.map(|w| &w[span.clone()]),
            tags: self.tags.map(|t| &t[span]),
        }
    }
}

/// The part of the context shared by a batch: the row index comes from the batch itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchContext {
    /// Run seed.
    pub seed: u64,
    /// Epoch.
    pub epoch: u64,
    /// Global step.
    pub step: u64,
}

/// Masked batch buffers, reused across calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskedBatch {
    /// Number of rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Corrupted ids, `[batch, seq_len]`.
    pub input_ids: Vec<u32>,
    /// Labels, `[batch, seq_len]`, [`crate::IGNORE_INDEX`] where not chosen.
    pub labels: Vec<i32>,
    /// Number of labels set in the whole batch.
    pub num_masked: usize,
}

/// Masks batches with one policy, reusing its scratch buffers (allocation-free after warm-up).
#[derive(Debug, Clone)]
pub struct BatchMasker<P> {
    policy: P,
    scratch: Scratch,
}

impl<P: MaskPolicy> BatchMasker<P> {
    /// A batch masker for `policy`.
    pub fn new(policy: P) -> Self {
        Self {
            policy,
            scratch: Scratch::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The policy, mutably (adaptive policies learn from the learner's feedback).
    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    /// Masks `batch` into `out`, resizing its buffers as needed.
    pub fn mask_batch_into(
        &mut self,
        batch: &TokenBatch<'_>,
        ctx: BatchContext,
        out: &mut MaskedBatch,
    ) -> Result<()> {
        batch.validate()?;
        let n = batch.batch * batch.seq_len;
        out.batch = batch.batch;
        out.seq_len = batch.seq_len;
        out.input_ids.resize(n, 0);
        out.labels.resize(n, 0);
        out.num_masked = 0;
        let rows = out
            .input_ids
            .chunks_exact_mut(batch.seq_len)
            .zip(out.labels.chunks_exact_mut(batch.seq_len));
        for (r, (ids, labels)) in rows.enumerate() {
            let ctx = MaskContext {
                seed: ctx.seed,
                epoch: ctx.epoch,
                index: batch.example_indices[r],
                step: ctx.step,
            };
            out.num_masked +=
                self.policy
                    .mask_into(&batch.example(r), &ctx, &mut self.scratch, ids, labels)?;
        }
        Ok(())
    }

    /// Masks `batch` into fresh buffers.
    pub fn mask_batch(&mut self, batch: &TokenBatch<'_>, ctx: BatchContext) -> Result<MaskedBatch> {
        let mut out = MaskedBatch::default();
        self.mask_batch_into(batch, ctx, &mut out)?;
        Ok(out)
    }
}
