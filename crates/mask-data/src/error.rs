//! The one error type of `mask-data`: every variant names the file, line, field or value at
//! fault.

use thiserror::Error;

/// Everything that can go wrong reading, decoding or preparing data.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("i/o error on `{path}`: {source}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A gzip stream or its text could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Decompressing would exceed the size bound (a gzip bomb, or a file far larger than
    /// expected).
    #[error("{what}: decompressed size exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was being decompressed.
        what: String,
        /// The bound in bytes.
        limit: u64,
    },
    /// A TSV row does not have the expected columns.
    #[error("{what}: line {line} has {got} tab-separated fields, expected {expected}")]
    Malformed {
        /// What was being parsed.
        what: String,
        /// 1-based line number.
        line: usize,
        /// Fields found.
        got: usize,
        /// Fields expected.
        expected: usize,
    },
    /// A TSV header lacks a needed column.
    #[error("{what}: the header has no `{column}` column (found: {found})")]
    MissingColumn {
        /// What was being parsed.
        what: String,
        /// The column looked for.
        column: String,
        /// The header's columns.
        found: String,
    },
    /// A corpus or file has no usable records.
    #[error("{what} is empty (no usable records)")]
    Empty {
        /// What was read.
        what: String,
    },
    /// A record's field does not parse or is out of range.
    #[error("{what}: line {line}: field `{field}` = `{value}` is not {expected}")]
    BadField {
        /// The file (or name of the text).
        what: String,
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
        /// The text found.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An IDX file does not start with the expected magic number.
    #[error("{what}: magic number {got:#010x}, expected {expected:#010x} ({kind})")]
    BadMagic {
        /// The file or buffer.
        what: String,
        /// Magic number found.
        got: u32,
        /// Magic number expected.
        expected: u32,
        /// What that magic means.
        kind: &'static str,
    },
    /// IDX image dimensions are zero or absurd.
    #[error("{what}: image dimensions {rows} x {cols} are not supported (1..=4096 each)")]
    BadDims {
        /// The file or buffer.
        what: String,
        /// Rows per image.
        rows: u32,
        /// Columns per image.
        cols: u32,
    },
    /// A file is shorter (or longer) than its header says.
    #[error("{what}: header says {expected} bytes of data, found {got}")]
    Truncated {
        /// The file or buffer.
        what: String,
        /// Bytes the header announces (after the header).
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// Two parallel inputs disagree on their number of records.
    #[error("{what}: {left} vs {right} records")]
    CountMismatch {
        /// What was paired (e.g. `images vs labels`).
        what: String,
        /// Records on the left.
        left: usize,
        /// Records on the right.
        right: usize,
    },
    /// The tokenizer could not be trained, loaded or applied.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
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
    /// The masking policy refused its config or input.
    #[error(transparent)]
    Mask(#[from] mask_core::MaskError),
}

/// Result alias for `mask-data`.
pub type Result<T> = std::result::Result<T, DataError>;

/// An [`DataError::InvalidConfig`].
pub fn invalid(field: &'static str, value: impl ToString, expected: impl ToString) -> DataError {
    DataError::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// Maps an I/O error on `path` into a [`DataError::Io`].
pub fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.display().to_string(),
        source,
    }
}
