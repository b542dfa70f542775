//! Typed errors of `mask-model`: every message names the field or tensor and the value.

use mask_attn::AttnError;
use thiserror::Error;

/// Everything that can go wrong building, running, saving or loading a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A configuration field is out of range.
    #[error("`{field}` = {value} is invalid: {expected}")]
    InvalidConfig {
        /// Name of the field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A tensor or input has the wrong shape.
    #[error("shape mismatch: {what}: expected {expected}, got {got}")]
    Shape {
        /// What was compared.
        what: String,
        /// Expected shape or size.
        expected: String,
        /// Shape or size found.
        got: String,
    },
    /// An input id is outside the vocabulary (tokens, items or labels).
    #[error("`{field}`: id {id} at position {position} is outside the vocabulary of {vocab_size}")]
    OutOfVocab {
        /// Which input.
        field: &'static str,
        /// The offending id.
        id: i64,
        /// Flat position in the input.
        position: usize,
        /// Size of the vocabulary.
        vocab_size: usize,
    },
    /// A sequence is empty or longer than the model's `max_len`.
    #[error("sequence length {len} is invalid: the model accepts 1..={max_len} positions")]
    SequenceLength {
        /// Length given.
        len: usize,
        /// The model's `max_len`.
        max_len: usize,
    },
    /// No preset of that name.
    #[error("unknown preset `{name}`; known presets: {known}")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// The attention layer refused its input.
    #[error(transparent)]
    Attn(#[from] AttnError),
    /// A checkpoint file is unreadable, truncated or corrupt.
    #[error("checkpoint `{path}`: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint was written for a model with a different configuration.
    #[error(
        "checkpoint `{path}` does not match the model: `{field}` is {found} in the checkpoint \
         but {expected} in the model's config"
    )]
    ConfigMismatch {
        /// The file.
        path: String,
        /// Dotted path of the first differing config field.
        field: String,
        /// Value stored in the checkpoint.
        found: String,
        /// Value in the config the model was built from.
        expected: String,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file is malformed or lacks a tensor.
    #[error("safetensors `{path}`: {reason}")]
    Safetensors {
        /// The file (or `<memory>`).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for `mask-model`.
pub type Result<T> = std::result::Result<T, ModelError>;

pub(crate) fn invalid(
    field: &'static str,
    value: impl ToString,
    expected: impl ToString,
) -> ModelError {
    ModelError::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}
