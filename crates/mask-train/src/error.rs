//! Typed errors of `mask-train`, each naming the file, field, step or value at fault.

use mask_core::MaskError;
use mask_data::DataError;
use mask_model::ModelError;
use thiserror::Error;

/// Everything that can go wrong preparing, training, evaluating or resuming a run.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Reading or preparing data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model refused its config or input, or a checkpoint.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The masking policy refused its config or input.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// A setting is out of range.
    #[error("`{field}` = {value} is invalid: {expected}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A checkpoint does not fit this run (another task, config, tokenizer or data), or its
    /// training state is unreadable.
    #[error("cannot resume from `{path}`: {reason}")]
    Resume {
        /// The checkpoint.
        path: String,
        /// Why.
        reason: String,
    },
    /// Training produced a non-finite loss, gradient norm or metric. The model was not updated
    /// with it and no checkpoint was written after the last good one.
    #[error(
        "non-finite {what} at step {step}: {value} (lower the learning rate, check the data; \
         the last checkpoint, if any, is intact)"
    )]
    NonFinite {
        /// `loss`, `gradient norm` or a metric's name.
        what: String,
        /// The step (0-based) whose forward, backward or evaluation produced it.
        step: u64,
        /// The value (`NaN`, `inf` or `-inf`).
        value: f64,
    },
    /// A run directory holds state that this command would overwrite.
    #[error("{path} already holds {what}: {hint}")]
    RunExists {
        /// The run directory.
        path: String,
        /// What is there.
        what: String,
        /// How to proceed.
        hint: String,
    },
    /// An input would not fit in memory.
    #[error("{what} needs about {needed_mib} MiB, more than the {limit_mib} MiB allowed: {hint}")]
    TooLarge {
        /// What was sized.
        what: String,
        /// The estimate.
        needed_mib: u64,
        /// The limit.
        limit_mib: u64,
        /// Which setting to lower.
        hint: String,
    },
    /// A data worker thread died.
    #[error("a data worker stopped before producing the batch of step {step}")]
    WorkerStopped {
        /// The step whose batch never came.
        step: u64,
    },
    /// A collective operation of data-parallel training failed or got no answer in time on
    /// one peer (another peer died, hangs, or stopped).
    #[error(
        "data-parallel {op} failed on peer {rank} at step {step}: {reason} (checkpoints written \
         before it are intact)"
    )]
    Collective {
        /// `register`, `all-reduce` or `finish`.
        op: &'static str,
        /// The peer that saw it.
        rank: usize,
        /// The step.
        step: u64,
        /// Why.
        reason: String,
    },
    /// A data-parallel peer failed (an error or a panic); the other peers stopped.
    #[error(
        "data-parallel peer {rank} failed at step {step}: {reason}; the other peers stopped \
         (checkpoints written before it are intact)"
    )]
    PeerLost {
        /// The peer.
        rank: usize,
        /// The step it was on.
        step: u64,
        /// Its error or panic message.
        reason: String,
    },
    /// Data-parallel replicas that must be identical are not (a backend or task that is not
    /// deterministic across threads); found by `ParallelOptions::verify_replicas`.
    #[error(
        "data-parallel peer {rank} diverged from peer 0 after step {step}: its {what} differs"
    )]
    ReplicaDiverged {
        /// The peer.
        rank: usize,
        /// Steps done.
        step: u64,
        /// `model` or the name of a task state section.
        what: String,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on `{path}`: {source}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for `mask-train`.
pub type Result<T> = std::result::Result<T, TrainError>;

/// An [`TrainError::InvalidConfig`].
pub fn invalid(field: &'static str, value: impl ToString, expected: impl ToString) -> TrainError {
    TrainError::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// Maps an I/O error on `path` into a [`TrainError::Io`].
pub fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}
