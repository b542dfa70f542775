//! Host-side text batches: tokenized documents padded to their longest row and masked by any
//! `mask-core` policy. This is the one place where documents become a `[B, T]` block; tasks turn
//! the block into tensors.

use mask_core::{BatchContext, BatchMasker, MaskPolicy, TokenBatch, IGNORE_INDEX};

use crate::error::Result;
use crate::tokenizer::Encoded;

/// A padded, masked batch of documents. Legend: B rows, T padded length.
#[derive(Debug, Clone, PartialEq)]
pub struct TextBatch {
    /// Training step this batch belongs to.
    pub step: u64,
    /// Epoch of that step.
    pub epoch: u64,
    /// Rows B.
    pub batch: usize,
    /// Padded length T (the longest row).
    pub seq_len: usize,
    /// Corrupted ids `[B * T]` (padding = the pad id).
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

impl TextBatch {
    /// FNV-1a over the corrupted ids and labels: equal digests mean bit-identical masks (how
    /// resume tests and readers of the logs compare runs).
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::default();
        self.input_ids.iter().for_each(|&i| h.eat(i));
        self.labels.iter().for_each(|&l| h.eat(l as u32));
        h.0
    }

    /// The rows `rows` (in that order) as a batch of their own, with the same padded length,
    /// step and epoch: how a data-parallel peer takes its share of a global batch. Panics if a
    /// row is out of range (callers pass rows of this batch).
    pub fn select_rows(&self, rows: &[usize]) -> TextBatch {
        let t = self.seq_len;
        let pick = |v: &[u32]| -> Vec<u32> {
            rows.iter()
                .flat_map(|&r| v[r * t..(r + 1) * t].iter().copied())
                .collect()
        };
        let labels: Vec<i32> = rows
            .iter()
            .flat_map(|&r| self.labels[r * t..(r + 1) * t].iter().copied())
            .collect();
        TextBatch {
            step: self.step,
            epoch: self.epoch,
            batch: rows.len(),
            seq_len: t,
            input_ids: pick(&self.input_ids),
            num_masked: labels.iter().filter(|&&l| l != IGNORE_INDEX).count(),
            labels,
            lengths: rows.iter().map(|&r| self.lengths[r]).collect(),
            example_indices: rows.iter().map(|&r| self.example_indices[r]).collect(),
        }
    }

    /// Masked positions in each row, in row order.
    pub fn masked_per_row(&self) -> Vec<usize> {
        self.labels
            .chunks(self.seq_len.max(1))
            .take(self.batch)
            .map(|row| row.iter().filter(|&&l| l != IGNORE_INDEX).count())
            .collect()
    }

    /// The original (uncorrupted) ids of row `r`'s real tokens: the labels restore the masked
    /// positions.
    pub fn original_row(&self, r: usize) -> Vec<u32> {
        let row = r * self.seq_len..r * self.seq_len + self.lengths[r];
        self.input_ids[row.clone()]
            .iter()
            .zip(&self.labels[row])
            .map(|(&id, &l)| if l == IGNORE_INDEX { id } else { l as u32 })
            .collect()
    }
}

/// 64-bit FNV-1a over little-endian `u32`s.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mixes one word in.
    pub fn eat(&mut self, x: u32) {
        for b in x.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Pads the documents `indices` of `docs` to their longest length and masks them with `masker`
/// at `ctx`. Tags travel with the tokens when every chosen document has them (tag-weighted
/// selection reads them).
pub fn collate<P: MaskPolicy>(
    masker: &mut BatchMasker<P>,
    docs: &[Encoded],
    indices: &[usize],
    pad_id: u32,
    ctx: BatchContext,
) -> Result<TextBatch> {
    let batch = indices.len();
    let seq_len = indices
        .iter()
        .map(|&i| docs[i].ids.len())
        .max()
        .unwrap_or(0);
    let n = batch * seq_len;
    let tagged = indices.iter().all(|&i| docs[i].tags.is_some());
    let (mut ids, mut special, mut words) = (vec![pad_id; n], vec![true; n], vec![None; n]);
    let mut tags = if tagged { vec![0u16; n] } else { vec![] };
    let mut lengths = Vec::with_capacity(batch);
    for (r, &i) in indices.iter().enumerate() {
        let d = &docs[i];
        let row = r * seq_len..r * seq_len + d.ids.len();
        ids[row.clone()].copy_from_slice(&d.ids);
        special[row.clone()].copy_from_slice(&d.special_mask);
        words[row.clone()].copy_from_slice(&d.word_ids);
        if let (true, Some(t)) = (tagged, &d.tags) {
            tags[row].copy_from_slice(t);
        }
        lengths.push(d.ids.len());
    }
    let example_indices: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    let tokens = TokenBatch {
        batch,
        seq_len,
        ids: &ids,
        special_mask: &special,
        word_ids: Some(&words),
        tags: tagged.then_some(tags.as_slice()),
        example_indices: &example_indices,
    };
    let masked = masker.mask_batch(&tokens, ctx)?;
    Ok(TextBatch {
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

/// Pads documents without masking: `(ids [B * T], lengths, T)`.
pub fn pad(docs: &[&Encoded], pad_id: u32) -> (Vec<u32>, Vec<usize>, usize) {
    let seq_len = docs.iter().map(|d| d.ids.len()).max().unwrap_or(0);
    let mut ids = vec![pad_id; docs.len() * seq_len];
    for (r, d) in docs.iter().enumerate() {
        ids[r * seq_len..r * seq_len + d.ids.len()].copy_from_slice(&d.ids);
    }
    (ids, docs.iter().map(|d| d.ids.len()).collect(), seq_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three rows of T = 3 (row 1 has no masked position): rows 2 and 0, in that order, keep
    /// their ids, labels, lengths and data-set indices; the count of masked positions follows.
    #[test]
    fn selected_rows_keep_their_contents_in_the_given_order() {
        let n = IGNORE_INDEX;
        let batch = TextBatch {
            step: 7,
            epoch: 2,
            batch: 3,
            seq_len: 3,
            input_ids: vec![1, 4, 2, 1, 5, 0, 1, 4, 4],
            labels: vec![n, 9, n, n, n, n, 8, n, 7],
            lengths: vec![3, 2, 3],
            example_indices: vec![10, 11, 12],
            num_masked: 3,
        };
        assert_eq!(batch.masked_per_row(), vec![1, 0, 2]);
        let s = batch.select_rows(&[2, 0]);
        assert_eq!(
            s,
            TextBatch {
                step: 7,
                epoch: 2,
                batch: 2,
                seq_len: 3,
                input_ids: vec![1, 4, 4, 1, 4, 2],
                labels: vec![8, n, 7, n, 9, n],
                lengths: vec![3, 3],
                example_indices: vec![12, 10],
                num_masked: 3,
            }
        );
        assert_eq!(s.masked_per_row(), vec![2, 1]);
        let empty = batch.select_rows(&[1]);
        assert_eq!((empty.num_masked, empty.original_row(0)), (0, vec![1, 5]));
    }
}
