//! One example as the policies see it, and the owned result of masking it.

use crate::error::{MaskError, Result};

/// Label value at positions that were not chosen (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// Largest supported sequence length (positions are stored as `u32`).
pub const MAX_SEQ_LEN: usize = u32::MAX as usize;

/// One tokenised example, borrowed.
///
/// `special_mask[i]` is `true` for special tokens (`[CLS]`, `[SEP]`, ...) *and* padding: such
/// positions are never chosen and never changed. `word_ids[i]` (HF `word_ids()` semantics) groups
/// sub-tokens into words for whole-word and word-anchored span masking; `None` marks tokens that
/// belong to no word. A maximal run of equal word ids is one word.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    /// Token ids.
    pub ids: &'a [u32],
    /// `true` where the token is special or padding.
    pub special_mask: &'a [bool],
    /// Optional word id per token.
    pub word_ids: Option<&'a [Option<u32>]>,
    /// Optional tag per token (e.g. a part-of-speech class id), read by tag-weighted selection.
    pub tags: Option<&'a [u16]>,
}

impl<'a> Example<'a> {
    /// An example without word ids.
    pub fn new(ids: &'a [u32], special_mask: &'a [bool]) -> Self {
        Self {
            ids,
            special_mask,
            word_ids: None,
            tags: None,
        }
    }

    /// Attaches tags (one per token; e.g. part-of-speech class ids).
    pub fn with_tags(mut self, tags: &'a [u16]) -> Self {
        self.tags = Some(tags);
        self
    }

    /// Attaches word ids.
    pub fn with_word_ids(mut self, word_ids: &'a [Option<u32>]) -> Self {
        self.word_ids = Some(word_ids);
        self
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the example has no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Checks lengths and the vocabulary range of the ids.
    pub fn validate(&self, vocab_size: u32) -> Result<()> {
        self.validate_lengths()?;
        // Branch-free test first, locate the culprit only on failure. An OR of comparisons
        // vectorises with baseline SSE2; a `u32` max does not (no unsigned max before
        // SSE4.1) and took 4x as long, a quarter of masking a BERT batch.
        let any_out = self
            .ids
            .iter()
            .fold(false, |any, &id| any | (id >= vocab_size));
        if any_out {
            let position = self
                .ids
                .iter()
                .position(|&id| id >= vocab_size)
                .unwrap_or(0);
            return Err(MaskError::TokenOutOfVocab {
                position,
                id: self.ids[position],
                vocab_size,
            });
        }
        Ok(())
    }

    /// The length checks of [`Example::validate`], without the vocabulary range.
    pub(crate) fn validate_lengths(&self) -> Result<()> {
        let n = self.ids.len();
        if n > MAX_SEQ_LEN {
            return Err(MaskError::SequenceLength {
                len: n,
                max: MAX_SEQ_LEN,
            });
        }
        if self.special_mask.len() != n {
            return Err(MaskError::LengthMismatch {
                field: "special_mask",
                expected: n,
                got: self.special_mask.len(),
            });
        }
        if let Some(w) = self.word_ids {
            if w.len() != n {
                return Err(MaskError::LengthMismatch {
                    field: "word_ids",
                    expected: n,
                    got: w.len(),
                });
            }
        }
        if let Some(t) = self.tags {
            if t.len() != n {
                return Err(MaskError::LengthMismatch {
                    field: "tags",
                    expected: n,
                    got: t.len(),
                });
            }
        }
        Ok(())
    }
}

/// A masked example, owned: corrupted inputs and labels (`IGNORE_INDEX` where not chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedExample {
    /// Corrupted token ids, same length as the input.
    pub input_ids: Vec<u32>,
    /// Original id at chosen positions, `IGNORE_INDEX` elsewhere.
    pub labels: Vec<i32>,
}

impl MaskedExample {
    /// Positions that carry a label.
    pub fn masked_positions(&self) -> Vec<usize> {
        self.labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l != IGNORE_INDEX)
            .map(|(i, _)| i)
            .collect()
    }
}

/// A contiguous run of chosen positions `[start, start + len)`: one token, one word or one span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// First position.
    pub start: u32,
    /// Number of positions (>= 1).
    pub len: u32,
}

impl Span {
    /// Positions covered.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}
