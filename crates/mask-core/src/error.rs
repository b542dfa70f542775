//! Typed errors for masking policies: every variant names the offending field and value.

use thiserror::Error;

/// Everything that can go wrong when building or applying a masking policy.
///
/// Nothing in `mask-core` panics on user input: invalid configurations are refused when a
/// policy is built, malformed examples or batches when they are masked.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MaskError {
    /// A probability-valued field is outside `[0, 1]` (or not finite).
    #[error("`{field}` must be a probability in [0, 1], got {value}")]
    InvalidProbability {
        /// Name of the field, as in the config.
        field: &'static str,
        /// The value that was given.
        value: f64,
    },
    /// `mask_replace_prob + random_replace_prob` exceeds 1.
    #[error(
        "`mask_replace_prob` + `random_replace_prob` must be <= 1, got {mask_replace_prob} + {random_replace_prob} = {}",
        mask_replace_prob + random_replace_prob
    )]
    SplitSumExceedsOne {
        /// Probability of replacing a chosen token by the mask token.
        mask_replace_prob: f64,
        /// Probability of replacing a chosen token by a random token.
        random_replace_prob: f64,
    },
    /// Random replacement is enabled but every vocabulary id is special.
    #[error(
        "`random_replace_prob` = {random_replace_prob} > 0 but no id is left for random replacement: \
         `vocab_size` = {vocab_size} and {num_excluded} ids are special or the mask token"
    )]
    EmptyRandomVocab {
        /// Probability of random replacement that was requested.
        random_replace_prob: f64,
        /// Vocabulary size.
        vocab_size: u32,
        /// Number of distinct ids excluded from random replacement.
        num_excluded: u32,
    },
    /// The mask token id is not a valid vocabulary id.
    #[error(
        "`mask_token_id` = {mask_token_id} is outside the vocabulary (`vocab_size` = {vocab_size})"
    )]
    MaskTokenOutOfVocab {
        /// The mask token id given.
        mask_token_id: u32,
        /// Vocabulary size.
        vocab_size: u32,
    },
    /// A listed special id is not a valid vocabulary id.
    #[error("`special_ids` contains {id}, outside the vocabulary (`vocab_size` = {vocab_size})")]
    SpecialIdOutOfVocab {
        /// The offending id.
        id: u32,
        /// Vocabulary size.
        vocab_size: u32,
    },
    /// An input token id is not a valid vocabulary id.
    #[error("token id {id} at position {position} is outside the vocabulary (`vocab_size` = {vocab_size})")]
    TokenOutOfVocab {
        /// Position in the sequence.
        position: usize,
        /// The offending id.
        id: u32,
        /// Vocabulary size.
        vocab_size: u32,
    },
    /// Span length bounds are inverted.
    #[error("span lengths: `min_span` = {min_span} > `max_span` = {max_span}")]
    SpanRange {
        /// Smallest span length.
        min_span: u32,
        /// Largest span length.
        max_span: u32,
    },
    /// A numeric field has a value outside its allowed range.
    #[error("`{field}` = {value} is invalid: {expected}")]
    InvalidValue {
        /// Name of the field, as in the config.
        field: &'static str,
        /// The value that was given, printed.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// A per-position input has a different length than the token ids.
    #[error("`{field}` has length {got} but the sequence has {expected} tokens")]
    LengthMismatch {
        /// Name of the input (`special_mask`, `word_ids`, ...).
        field: &'static str,
        /// Number of token ids.
        expected: usize,
        /// Length of the mismatched input.
        got: usize,
    },
    /// The policy needs word ids but the example has none.
    #[error("policy `{policy}` needs `word_ids` but the example has none")]
    MissingWordIds {
        /// Name of the policy.
        policy: &'static str,
    },
    /// A batch buffer does not have the shape `[batch, seq_len]`.
    #[error("batch `{field}` has {got} elements, expected {expected} (batch {batch} x seq_len {seq_len})")]
    BatchShape {
        /// Name of the buffer.
        field: &'static str,
        /// Number of elements expected.
        expected: usize,
        /// Number of elements given.
        got: usize,
        /// Batch size.
        batch: usize,
        /// Sequence length.
        seq_len: usize,
    },
    /// A sequence (or batch) has length zero or more than the supported maximum.
    #[error("sequence length {len} is not supported: it must be in [1, {max}]")]
    SequenceLength {
        /// The length given.
        len: usize,
        /// Largest supported length.
        max: usize,
    },
    /// The policy needs an external resource (corpus statistics, PMI table, tag weights) that
    /// was not provided.
    #[error("policy `{policy}` needs the resource `{resource}`, which was not provided")]
    MissingResource {
        /// Name of the policy.
        policy: &'static str,
        /// Name of the missing resource (a field of `SelectorResources`).
        resource: &'static str,
    },
    /// The policy needs a per-token input (e.g. `tags`) that the example does not have.
    #[error("policy `{policy}` needs `{input}` but the example has none")]
    MissingInput {
        /// Name of the policy.
        policy: &'static str,
        /// Name of the missing input.
        input: &'static str,
    },
    /// Learned or serialised state is corrupt or does not match the policy.
    #[error("state of `{policy}` cannot be restored: {reason}")]
    State {
        /// Name of the policy (or of the table / statistics).
        policy: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A resource file could not be read, written or parsed.
    #[error("resource file `{path}`: {reason}")]
    File {
        /// Path of the file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A serialised config could not be parsed.
    #[error("malformed masking config: {0}")]
    Config(String),
}

/// Result alias for `mask-core`.
pub type Result<T> = std::result::Result<T, MaskError>;

/// Checks that `value` is a finite probability, naming `field` otherwise.
pub(crate) fn check_prob(field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(MaskError::InvalidProbability { field, value })
    }
}
