//! Embedded real data (see `data/README.md` in this crate for provenance and licences).

use std::io::Read;

use thiserror::Error;

/// Jane Austen's novels, one paragraph per row (`label<TAB>text`), gzip-compressed.
static AUSTEN_TSV_GZ: &[u8] = include_bytes!("../data/janeausten/austen_paragraphs.tsv.gz");

/// Errors reading embedded or user-supplied data.
#[derive(Debug, Error)]
pub enum DataError {
    /// The gzip stream or its text could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A TSV row does not have the expected columns.
    #[error("{what}: line {line} has {got} tab-separated fields, expected {expected}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// 1-based line number.
        line: usize,
        /// Fields found.
        got: usize,
        /// Fields expected.
        expected: usize,
    },
}

/// One labelled document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledText {
    /// Label column (for Austen: the novel).
    pub label: String,
    /// The text.
    pub text: String,
}

/// Decompresses a gzip byte slice into a UTF-8 string.
pub fn gunzip_to_string(bytes: &[u8], what: &'static str) -> Result<String, DataError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|source| DataError::Decode { what, source })?;
    Ok(text)
}

/// Parses a two-column TSV (`label<TAB>text`) with a header row.
pub fn parse_labeled_tsv(text: &str, what: &'static str) -> Result<Vec<LabeledText>, DataError> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, line)| {
            let mut parts = line.splitn(3, '\t');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(label), Some(text), None) => Ok(LabeledText {
                    label: label.to_string(),
                    text: text.to_string(),
                }),
                _ => Err(DataError::Malformed {
                    what,
                    line: i + 1,
                    got: line.split('\t').count(),
                    expected: 2,
                }),
            }
        })
        .collect()
}

/// The embedded Austen corpus, uncompressed TSV text.
pub fn austen_tsv() -> Result<String, DataError> {
    gunzip_to_string(AUSTEN_TSV_GZ, "embedded Austen corpus")
}

/// The embedded Austen corpus: 10,298 paragraphs labelled by novel.
pub fn austen_paragraphs() -> Result<Vec<LabeledText>, DataError> {
    parse_labeled_tsv(&austen_tsv()?, "embedded Austen corpus")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn austen_is_intact() {
        let text = austen_tsv().unwrap();
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "cf4c8320a6b8df57c9926c2b9d00fdf5984e2c94524091405d9d6ed9722c2392"
        );
        let paras = austen_paragraphs().unwrap();
        assert_eq!(paras.len(), 10_298);
        let novels: std::collections::BTreeSet<_> = paras.iter().map(|p| &p.label).collect();
        assert_eq!(novels.len(), 6);
    }

    #[test]
    fn malformed_rows_are_named() {
        let err = parse_labeled_tsv("label\ttext\na\tb\nno tab here\n", "test").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test: line 3 has 1 tab-separated fields, expected 2"
        );
    }
}
