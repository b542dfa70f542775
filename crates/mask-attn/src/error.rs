//! Typed errors for attention masks and kernels.

use thiserror::Error;

/// Everything that can go wrong building an attention mask or running a kernel.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AttnError {
    /// Two tensors or a tensor and a mask disagree on a dimension.
    #[error("shape mismatch: {what}: expected {expected}, got {got}")]
    Shape {
        /// What was compared.
        what: String,
        /// Expected value.
        expected: usize,
        /// Value found.
        got: usize,
    },
    /// A per-batch or per-position input has the wrong length.
    #[error("`{field}` has length {got}, expected {expected}")]
    Length {
        /// Name of the input.
        field: &'static str,
        /// Expected length.
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// A numeric parameter is out of range.
    #[error("`{field}` = {value} is invalid: {expected}")]
    InvalidValue {
        /// Name of the field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A mask kind needs per-batch data that was not supplied.
    #[error("attention mask `{kind}` needs `{field}` in the mask inputs")]
    MissingInput {
        /// The mask kind.
        kind: &'static str,
        /// The missing input.
        field: &'static str,
    },
}

/// Result alias for `mask-attn`.
pub type Result<T> = std::result::Result<T, AttnError>;
