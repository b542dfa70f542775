//! # mask-train
//!
//! The training engine of dynmask: one [`Learner`] that runs any [`TrainTask`], and the
//! built-in tasks, one file each under [`tasks`].
//!
//! - [`TrainTask`]: a model, host batches (a pure function of `(seed, step)`, prefetched when
//!   the task is not adaptive), the loss with per-item losses, feedback to adaptive masking
//!   policies, held-out metrics and extra checkpoint state.
//! - [`Learner`]: AdamW with weight decay, one learning-rate schedule vocabulary
//!   ([`TrainConfig`]), global-norm clipping, a non-finite guard, per-step dropout reseeding,
//!   prefetching workers, evaluation with early stopping, atomic checkpoints with exact resume,
//!   and [`LearnerEvent`]s. It never prints.
//! - [`run`]: one directory per run (checkpoints, JSONL log, resolved config, result), pruned
//!   and resumed without touching other runs.
//! - [`metrics`]: masked-LM, classification and ranking metrics; [`heldout`]: held-out MLM
//!   scores split by corruption kind and token frequency, beside a unigram baseline.
//!
//! Data (corpora, tokenizer, images, MovieLens) lives in `mask-data`; the studies and the
//! `dynmask` CLI live in the root package.

pub mod config;
pub mod error;
pub mod events;
pub mod heldout;
pub mod learner;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod task;
pub mod tasks;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use events::{EvalRecord, LearnerEvent, StepRecord, StepTiming};
pub use learner::{
    backend_rng_lock, dropout_seed, load_model, CheckpointPolicy, EarlyStopping, Learner,
    LearnerState, NodeOptions, ParallelOptions, PeerReport, ResumeOptions, SessionTiming,
};
pub use metrics::{ClassificationReport, ConfusionMatrix, MlmMetrics, RankMetrics};
pub use run::{JsonlLog, RunDir};
pub use schedule::Decay;
pub use task::{BatchInfo, Metrics, TaskOutput, TrainTask};

pub use mask_data;
pub use mask_model;

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
