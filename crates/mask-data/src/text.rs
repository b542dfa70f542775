//! Text corpora: the embedded Jane Austen paragraphs and Amazon fine-food reviews (see
//! `data/README.md` for provenance and licences), and readers for user files (one document per
//! line; labelled TSV). Byte-order marks are stripped; errors name the file and line.

use std::path::Path;

use crate::compress::{gunzip_to_string, DEFAULT_LIMIT};
use crate::error::{io_error, DataError, Result};

/// Jane Austen's novels, one paragraph per row (`label<TAB>text`), gzip-compressed.
static AUSTEN_TSV_GZ: &[u8] = include_bytes!("../data/janeausten/austen_paragraphs.tsv.gz");
/// Amazon fine-food reviews, train split (`label<TAB>product<TAB>text`), gzip-compressed.
static FINEFOOD_TRAIN_GZ: &[u8] = include_bytes!("../data/finefood/train.tsv.gz");
/// Amazon fine-food reviews, test split.
static FINEFOOD_TEST_GZ: &[u8] = include_bytes!("../data/finefood/test.tsv.gz");

/// One labelled document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledText {
    /// Label column (for Austen: the novel).
    pub label: String,
    /// The text.
    pub text: String,
}

/// `text` without a leading UTF-8 byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Parses a TSV with a header row, taking the label and text from the named columns (any
/// number of other columns). Blank lines are skipped; a byte-order mark is ignored.
pub fn parse_tsv_columns(
    text: &str,
    what: &str,
    label_column: &str,
    text_column: &str,
) -> Result<Vec<LabeledText>> {
    let mut lines = strip_bom(text).lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .split('\t')
        .collect();
    let find = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| DataError::MissingColumn {
                what: what.to_string(),
                column: name.to_string(),
                found: header.join(", "),
            })
    };
    let (li, ti) = (find(label_column)?, find(text_column)?);
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let fields: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
            if fields.len() != header.len() {
                return Err(DataError::Malformed {
                    what: what.to_string(),
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
pub fn finefood() -> Result<(Vec<LabeledText>, Vec<LabeledText>)> {
    let what = "embedded fine-food reviews";
    let read = |gz: &[u8]| {
        parse_tsv_columns(
            &gunzip_to_string(gz, what, DEFAULT_LIMIT)?,
            what,
            "label",
            "text",
        )
    };
    Ok((read(FINEFOOD_TRAIN_GZ)?, read(FINEFOOD_TEST_GZ)?))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_error(path))
}

/// Reads a user corpus: one document per line (blank lines skipped, BOM ignored).
pub fn read_lines_corpus(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let docs: Vec<String> = strip_bom(&text)
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
pub fn read_labeled_tsv(path: &Path) -> Result<Vec<LabeledText>> {
    let rows = parse_tsv_columns(
        &read_text(path)?,
        &path.display().to_string(),
        "label",
        "text",
    )?;
    if rows.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
        });
    }
    Ok(rows)
}

/// The embedded Austen corpus, uncompressed TSV text.
pub fn austen_tsv() -> Result<String> {
    gunzip_to_string(AUSTEN_TSV_GZ, "embedded Austen corpus", DEFAULT_LIMIT)
}

/// The embedded Austen corpus: 10,298 paragraphs labelled by novel, in the novels' order
/// (Sense and Sensibility, Pride and Prejudice, Mansfield Park, Emma, Northanger Abbey,
/// Persuasion).
pub fn austen_paragraphs() -> Result<Vec<LabeledText>> {
    let what = "embedded Austen corpus";
    parse_tsv_columns(&austen_tsv()?, what, "label", "text")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hex(s: &str) -> String {
        Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn austen_is_intact() {
        assert_eq!(
            hex(&austen_tsv().unwrap()),
            "cf4c8320a6b8df57c9926c2b9d00fdf5984e2c94524091405d9d6ed9722c2392"
        );
        let paras = austen_paragraphs().unwrap();
        assert_eq!(paras.len(), 10_298);
        let novels: std::collections::BTreeSet<_> = paras.iter().map(|p| &p.label).collect();
        assert_eq!(novels.len(), 6);
    }

    #[test]
    fn finefood_is_intact() {
        let gz = |b| gunzip_to_string(b, "t", DEFAULT_LIMIT).unwrap();
        assert_eq!(
            hex(&gz(FINEFOOD_TRAIN_GZ)),
            "ac94fde3ece2d03c8781fc5352891a50731358b0397036dedab7f44d27c18dd8"
        );
        assert_eq!(
            hex(&gz(FINEFOOD_TEST_GZ)),
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
        let err = read_lines_corpus(Path::new("/nonexistent/corpus.txt")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("i/o error on `/nonexistent/corpus.txt`"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("mask-data-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("blank.txt"), "\n  \n").unwrap();
        let err = read_lines_corpus(&dir.join("blank.txt")).unwrap_err();
        assert!(
            err.to_string().ends_with("is empty (no usable records)"),
            "{err}"
        );
        std::fs::write(dir.join("docs.txt"), "\u{feff}one\n\ntwo\n").unwrap();
        assert_eq!(
            read_lines_corpus(&dir.join("docs.txt")).unwrap(),
            vec!["one", "two"]
        );
    }

    /// Regression (run-state issue, finding 8): a TSV saved with a UTF-8 byte-order mark (as
    /// Windows editors do) was refused with "no label column (found: \u{feff}label, text)".
    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
        let rows = parse_tsv_columns(
            "\u{feff}label\ttext\r\ngreat\tyum\r\n",
            "t",
            "label",
            "text",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![LabeledText {
                label: "great".into(),
                text: "yum".into()
            }]
        );
    }
}
