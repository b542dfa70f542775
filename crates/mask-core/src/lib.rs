//! # mask-core
//!
//! Masking policies for training Transformers with *dynamic* masking: which tokens to hide, how
//! to corrupt them and at what rate, reproducibly. Pure Rust; no burn needed.
//!
//! ## The pipeline, one small piece per stage
//! - [`Selector`]: which positions (Bernoulli, fixed count, whole word, span; content-aware:
//!   IDF-weighted, POS/tag-weighted, PMI n-gram spans), some of them built from
//!   [`SelectorResources`] (corpus [`TokenStats`], a [`PmiTable`], [`TagWeights`]) and some
//!   adaptive (loss-aware, learned scorer: learning from per-token losses via
//!   [`Selector::observe`], with exact state in checkpoints);
//! - [`RateSchedule`]: the masking rate by global step (constant, linear, cosine, warm-up);
//! - [`Corruption`]: how a chosen position is corrupted (mask / random / keep, 80/10/10);
//! - [`Regime`]: static with duplication factor `k` or dynamic;
//! - [`TokenMasker`]: the composite, itself a [`MaskPolicy`]; [`BatchMasker`] masks batches.
//! - [`ItemMasker`]: item masking for sequential recommendation (BERT4Rec's Cloze task, and
//!   mask-last for leave-one-out evaluation), also a [`MaskPolicy`].
//! - [`PatchMasker`]: patches of an image grid for vision Transformers, random (MAE, 75 %) or
//!   block-wise (BEiT, 40 %), an exact count per image, with the same static/dynamic regimes
//!   ([`PatchMaskingConfig`], [`PatchMask`] with MAE's keep / restore indices; module [`patch`]).
//!
//! ## Static and dynamic masking are one function
//! The corruption of example `i` at epoch `e` under seed `s` is a pure function of
//! `(s, regime.effective_epoch(e), i)` and, through the rate schedule, of the global step.
//! Dynamic masking (RoBERTa) uses `e` itself; static masking with duplication factor `k`
//! (BERT's `dupe_factor`) uses `e mod k`, which reproduces BERT's `k` pre-masked copies without
//! storing them; `k = 1` is fully static. Randomness is counter-based ([`MaskRng`]), so masks do
//! not depend on batch order, batch composition or worker count, and a resumed run regenerates
//! exactly the masks it would have seen.
//!
//! ```
//! use mask_core::{Example, MaskContext, MaskPolicy, MaskingConfig, Regime, VocabSpec};
//!
//! let vocab = VocabSpec::new(30522, 103, vec![0, 100, 101, 102]);
//! let policy = MaskingConfig::new(vocab)
//!     .with_regime(Regime::Static { dupe_factor: 2 })
//!     .build()?;
//! let ids = [101, 2023, 2003, 1037, 7099, 6251, 102];
//! let special = [true, false, false, false, false, false, true];
//! let ex = Example::new(&ids, &special);
//! let e0 = policy.mask(&ex, &MaskContext::new(42, 0, 7, 0))?;
//! let e2 = policy.mask(&ex, &MaskContext::new(42, 2, 7, 0))?;
//! assert_eq!(e0, e2); // static, k = 2: epochs 0 and 2 share a mask
//! # Ok::<(), mask_core::MaskError>(())
//! ```

mod batch;
mod config;
mod corruption;
mod error;
mod example;
mod fused;
pub mod io;
mod item;
pub mod patch;
mod policy;
mod regime;
mod rng;
mod schedule;
pub mod selection;
mod vocab;

pub use batch::{BatchContext, BatchMasker, MaskedBatch, TokenBatch};
pub use config::MaskingConfig;
pub use corruption::{Action, Corruption, CorruptionConfig};
pub use error::{MaskError, Result};
pub use example::{Example, MaskedExample, Span, IGNORE_INDEX, MAX_SEQ_LEN};
pub use item::{ItemMaskMode, ItemMasker, ItemMaskingConfig};
pub use patch::{
    AnyPatchSelector, BlockWisePatchSelector, PatchMask, PatchMasker, PatchMaskingConfig,
    PatchSelectionConfig, RandomPatchSelector,
};
pub use policy::{MaskContext, MaskPolicy, Scratch, TokenMasker};
pub use regime::Regime;
pub use rng::{mix64, threshold_u32, MaskRng};
pub use schedule::RateSchedule;
pub use selection::{
    AnySelector, BernoulliSelector, FixedCountSelector, IdfSelector, LearnedSelector,
    LossAwareSelector, PmiEntry, PmiSpanSelector, PmiTable, PmiTableConfig, SelectionConfig,
    Selector, SelectorResources, SpanAnchor, SpanSelector, TagWeightedSelector, TagWeights,
    TokenStats, WholeWordSelector,
};
pub use vocab::{RandomIds, VocabSpec};

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
