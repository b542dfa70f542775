//! Embedded real data (see `data/README.md` in this crate for provenance and licences).

use std::io::Read;

use thiserror::Error;

/// Jane Austen's novels, one paragraph per row (`label<TAB>text`), gzip-compressed.
static AUSTEN_TSV_GZ: &[u8] = include_bytes!("../data/janeausten/austen_paragraphs.tsv.gz");

/// Amazon fine-food reviews, train split (`label<TAB>product<TAB>text`), gzip-compressed.
static FINEFOOD_TRAIN_GZ: &[u8] = include_bytes!("../data/finefood/train.tsv.gz");
/// Amazon fine-food reviews, test split.
static FINEFOOD_TEST_GZ: &[u8] = include_bytes!("../data/finefood/test.tsv.gz");

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
    /// A TSV header lacks a needed column.
    #[error("{what}: the header has no `{column}` column (found: {found})")]
    MissingColumn {
        /// What was being parsed.
        what: &'static str,
        /// The column looked for.
        column: String,
        /// The header's columns.
        found: String,
    },
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A corpus has no usable documents.
    #[error("{what} is empty (no non-blank documents)")]
    Empty {
        /// What was read.
        what: String,
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

/// Parses a TSV with a header row, taking the label and text from the named columns (any
/// number of other columns). Blank lines are skipped.
pub fn parse_tsv_columns(
    text: &str,
    what: &'static str,
    label_column: &str,
    text_column: &str,
) -> Result<Vec<LabeledText>, DataError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let find = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| DataError::MissingColumn {
                what,
                column: name.to_string(),
                found: header.join(", "),
            })
    };
    let (li, ti) = (find(label_column)?, find(text_column)?);
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != header.len() {
                return Err(DataError::Malformed {
                    what,
                    line: i + 2,
                    got: fields.len(),
                    expected: header.len(),
                });
            }
            Ok(LabeledText {
                label: fields[li].to_string(),
                text: fields[ti].to_string(),
            })
        })
        .collect()
}

/// The embedded fine-food reviews: `(train, test)`, labels `great` / `other`.
pub fn finefood() -> Result<(Vec<LabeledText>, Vec<LabeledText>), DataError> {
    let what = "embedded fine-food reviews";
    let train = parse_tsv_columns(
        &gunzip_to_string(FINEFOOD_TRAIN_GZ, what)?,
        what,
        "label",
        "text",
    )?;
    let test = parse_tsv_columns(
        &gunzip_to_string(FINEFOOD_TEST_GZ, what)?,
        what,
        "label",
        "text",
    )?;
    Ok((train, test))
}

/// Reads a user corpus: one document per line (blank lines skipped).
pub fn read_lines_corpus(path: &std::path::Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let docs: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if docs.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
        });
    }
    Ok(docs)
}

/// Reads a user TSV with a header and `label` and `text` columns.
pub fn read_labeled_tsv(path: &std::path::Path) -> Result<Vec<LabeledText>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let rows = parse_tsv_columns(&text, "labelled TSV", "label", "text")?;
    if rows.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
        });
    }
    Ok(rows)
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
    fn finefood_is_intact() {
        let hex = |s: &str| -> String {
            Sha256::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let train = gunzip_to_string(FINEFOOD_TRAIN_GZ, "t").unwrap();
        let test = gunzip_to_string(FINEFOOD_TEST_GZ, "t").unwrap();
        assert_eq!(
            hex(&train),
            "ac94fde3ece2d03c8781fc5352891a50731358b0397036dedab7f44d27c18dd8"
        );
        assert_eq!(
            hex(&test),
            "551037d72e6653f78aab25a922a4ea49a1ade279effe8a7ec6120aa4c222e90d"
        );
        let (train, test) = finefood().unwrap();
        assert_eq!((train.len(), test.len()), (4000, 1000));
        assert_eq!(train.iter().filter(|r| r.label == "great").count(), 2600);
        assert!(train
            .iter()
            .chain(&test)
            .all(|r| r.label == "great" || r.label == "other"));
    }

    #[test]
    fn tsv_columns_and_user_files_give_clear_errors() {
        let rows =
            parse_tsv_columns("id\ttext\tlabel\n1\thello\tpos\n\n", "t", "label", "text").unwrap();
        assert_eq!(
            rows,
            vec![LabeledText {
                label: "pos".into(),
                text: "hello".into()
            }]
        );
        let err = parse_tsv_columns("a\tb\n", "t", "label", "text").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: the header has no `label` column (found: a, b)"
        );
        let err = parse_tsv_columns("label\ttext\nx\ty\tz\n", "t", "label", "text").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: line 2 has 3 tab-separated fields, expected 2"
        );
        let err = read_lines_corpus(std::path::Path::new("/nonexistent/corpus.txt")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read `/nonexistent/corpus.txt`"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("mask-train-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("blank.txt"), "\n  \n").unwrap();
        let err = read_lines_corpus(&dir.join("blank.txt")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is empty (no non-blank documents)"),
            "{err}"
        );
        std::fs::write(dir.join("docs.txt"), "one\n\ntwo\n").unwrap();
        assert_eq!(
            read_lines_corpus(&dir.join("docs.txt")).unwrap(),
            vec!["one", "two"]
        );
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
