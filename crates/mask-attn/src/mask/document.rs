//! Document (segment) masking for packed sequences (xformers `BlockDiagonalMask`, FlashAttention
//! varlen): query `i` attends key `j` only inside the same document, `doc[i] == doc[j]`.
//! Documents need not be contiguous; contiguous ones classify in O(log n) per tile.

use std::ops::Range;

use super::{check_rows_len, AttnMask, TileKind};
use crate::error::Result;

/// Bidirectional attention within documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    seq_len: usize,
    doc_ids: Vec<Vec<u32>>,
    /// Per batch element: maximal runs `(start, end, id)` of equal ids.
    runs: Vec<Vec<(usize, usize, u32)>>,
}

impl Document {
    /// `doc_ids[b * seq_len + i]` is the document of position `i` of example `b`.
    pub fn new(doc_ids: &[u32], batch: usize, seq_len: usize) -> Result<Self> {
        check_rows_len("doc_ids", doc_ids.len(), batch, seq_len)?;
        let rows: Vec<Vec<u32>> = (0..batch)
            .map(|b| doc_ids[b * seq_len..(b + 1) * seq_len].to_vec())
            .collect();
        let runs = rows
            .iter()
            .map(|row| {
                let mut runs: Vec<(usize, usize, u32)> = vec![];
                for (i, &d) in row.iter().enumerate() {
                    match runs.last_mut() {
                        Some(last) if last.2 == d => last.1 = i + 1,
                        _ => runs.push((i, i + 1, d)),
                    }
                }
                runs
            })
            .collect();
        Ok(Self {
            seq_len,
            doc_ids: rows,
            runs,
        })
    }

    /// Packed documents of the given lengths, the same for every batch element.
    pub fn from_lengths(doc_lengths: &[usize], batch: usize) -> Result<Self> {
        let row: Vec<u32> = doc_lengths
            .iter()
            .enumerate()
            .flat_map(|(d, &n)| std::iter::repeat_n(d as u32, n))
            .collect();
        let seq_len = row.len();
        let all: Vec<u32> = (0..batch).flat_map(|_| row.iter().copied()).collect();
        Self::new(&all, batch, seq_len)
    }

    /// Distinct ids of the runs overlapping `r` (few: runs are maximal).
    fn ids_in(&self, b: usize, r: Range<usize>, out: &mut Vec<u32>) {
        out.clear();
        let runs = &self.runs[b];
        let first = runs.partition_point(|run| run.1 <= r.start);
        for run in &runs[first..] {
            if run.0 >= r.end {
                break;
            }
            if !out.contains(&run.2) {
                out.push(run.2);
            }
        }
    }
}

impl AttnMask for Document {
    fn name(&self) -> &'static str {
        "document"
    }
    fn allows(&self, b: usize, _: usize, q: usize, k: usize) -> bool {
        self.doc_ids[b][q] == self.doc_ids[b][k]
    }
    fn classify(&self, b: usize, _: usize, q: Range<usize>, k: Range<usize>) -> TileKind {
        let (mut qs, mut ks) = (Vec::new(), Vec::new());
        self.ids_in(b, q, &mut qs);
        self.ids_in(b, k, &mut ks);
        if !qs.iter().any(|d| ks.contains(d)) {
            TileKind::Empty
        } else if qs.len() == 1 && ks.len() == 1 {
            TileKind::Full
        } else {
            TileKind::Partial
        }
    }
    fn batch_size(&self) -> Option<usize> {
        Some(self.doc_ids.len())
    }
    fn seq_len(&self) -> Option<usize> {
        Some(self.seq_len)
    }
}
