//! # mask-data
//!
//! Data for dynamic-masking training, with no burn dependency: what `mask-train`'s tasks read,
//! and what a user of `mask-core` alone may want for real text.
//!
//! - [`text`]: the embedded Jane Austen paragraphs and Amazon fine-food reviews; readers for
//!   one-document-per-line corpora and labelled TSV files.
//! - [`tokenizer`]: a BERT-style WordPiece tokenizer whose training is deterministic (our own
//!   trainer; HuggingFace `tokenizers` applies it), cached under a digest of corpus and settings.
//! - [`pos`]: the vendored Brown Corpus subset with coarse part-of-speech classes.
//! - [`image`]: IDX images (Fashion-MNIST subset embedded) and greyscale PNG output.
//! - [`movielens`]: MovieLens interactions, the leave-one-out split, sampled negatives.
//! - [`sampler`]: the per-epoch shuffle and fixed-size batches, a pure function of
//!   `(seed, step)`; [`collate`](mod@collate): padded, masked host batches of documents.
//!
//! Every fallible function returns [`DataError`], which names the file, line, field or value at
//! fault; decompression is bounded ([`compress`]).

pub mod collate;
pub mod compress;
pub mod error;
pub mod image;
pub mod movielens;
pub mod pos;
pub mod sampler;
pub mod text;
pub mod tokenizer;

pub use collate::{collate, TextBatch};
pub use error::{DataError, Result};
pub use sampler::{epoch_order, BatchSchedule, EpochOrder};
pub use text::LabeledText;
pub use tokenizer::{Encoded, TextTokenizer, TokenizerConfig};

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
