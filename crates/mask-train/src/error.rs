//! Typed errors of `mask-train`, each naming the file, field or value at fault.

use mask_core::MaskError;
use mask_model::ModelError;
use thiserror::Error;

use crate::data::DataError;

/// Everything that can go wrong preparing data, training, evaluating or resuming.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Reading the corpus failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// An interaction file (recommendation data) is malformed.
    #[error(transparent)]
    Rec(#[from] crate::recsys::RecDataError),
    /// The model refused its config or input, or a checkpoint.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The masking policy refused its config or input.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// The tokenizer could not be trained, loaded or applied.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A training setting is out of range.
    #[error("`{field}` = {value} is invalid: {expected}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A checkpoint's training state does not fit this run.
    #[error("cannot resume from `{path}`: {reason}")]
    Resume {
        /// The checkpoint.
        path: String,
        /// Why.
        reason: String,
    },
    /// An IDX image or label file is malformed.
    #[error(transparent)]
    Idx(crate::vision::IdxError),
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

pub(crate) fn invalid(
    field: &'static str,
    value: impl ToString,
    expected: impl ToString,
) -> TrainError {
    TrainError::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}
