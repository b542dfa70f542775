//! Corpus token statistics: unigram counts, document frequencies, number of documents and of
//! tokens. They feed IDF-weighted selection (informative tokens are masked more often;
//! cf. InforMask, Sadeq et al. 2022) and may serve as features for learned selectors.
//!
//! `idf(id) = ln((1 + n_docs) / (1 + df(id))) + 1` (the smoothed IDF of scikit-learn), so every
//! id has an IDF of at least 1, unseen ids the largest.
//!
//! Exact binary form (`to_bytes` / `from_bytes`), little-endian:
//! `b"DMTS"`, version `u32` = 1, `vocab_size: u32`, `n_docs: u64`, `total_tokens: u64`, then
//! `vocab_size` counts `u64` and `vocab_size` document frequencies `u64`.

use crate::error::{MaskError, Result};

const MAGIC: &[u8; 4] = b"DMTS";
const VERSION: u32 = 1;
const HEADER: usize = 4 + 4 + 4 + 8 + 8;

/// Unigram counts and document frequencies of a tokenised corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStats {
    counts: Vec<u64>,
    df: Vec<u64>,
    n_docs: u64,
    total_tokens: u64,
}

impl TokenStats {
    /// Counts `docs` (each a sequence of ids below `vocab_size`). Ids out of range are refused
    /// with [`MaskError::TokenOutOfVocab`] (position counted over the whole corpus).
    pub fn from_docs<I, D>(vocab_size: u32, docs: I) -> Result<TokenStats>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<[u32]>,
    {
        if vocab_size == 0 {
            return Err(MaskError::InvalidValue {
                field: "vocab_size",
                value: "0".into(),
                expected: "at least one id",
            });
        }
        let v = vocab_size as usize;
        let mut counts = vec![0u64; v];
        let mut df = vec![0u64; v];
        // Last document (1-based) in which each id was seen: distinct ids per document.
        let mut last_doc = vec![0u64; v];
        let mut n_docs = 0u64;
        let mut total_tokens = 0u64;
        for doc in docs {
            n_docs += 1;
            for &id in doc.as_ref() {
                if id >= vocab_size {
                    return Err(MaskError::TokenOutOfVocab {
                        position: total_tokens as usize,
                        id,
                        vocab_size,
                    });
                }
                let i = id as usize;
                counts[i] += 1;
                if last_doc[i] != n_docs {
                    last_doc[i] = n_docs;
                    df[i] += 1;
                }
                total_tokens += 1;
            }
        }
        Ok(TokenStats {
            counts,
            df,
            n_docs,
            total_tokens,
        })
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> u32 {
        self.counts.len() as u32
    }

    /// Number of documents counted.
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }

    /// Number of tokens counted.
    pub fn total_tokens(&self) -> u64 {
        self.total_tokens
    }

    /// Occurrences of `id` (0 outside the vocabulary).
    pub fn count(&self, id: u32) -> u64 {
        self.counts.get(id as usize).copied().unwrap_or(0)
    }

    /// Number of documents containing `id` (0 outside the vocabulary).
    pub fn doc_freq(&self, id: u32) -> u64 {
        self.df.get(id as usize).copied().unwrap_or(0)
    }

    /// Smoothed inverse document frequency `ln((1 + n_docs) / (1 + df)) + 1` (>= 1).
    pub fn idf(&self, id: u32) -> f64 {
        ((1.0 + self.n_docs as f64) / (1.0 + self.doc_freq(id) as f64)).ln() + 1.0
    }

    /// Exact binary form (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + 16 * self.counts.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.vocab_size().to_le_bytes());
        b.extend_from_slice(&self.n_docs.to_le_bytes());
        b.extend_from_slice(&self.total_tokens.to_le_bytes());
        for &c in self.counts.iter().chain(&self.df) {
            b.extend_from_slice(&c.to_le_bytes());
        }
        b
    }

    /// Parses [`TokenStats::to_bytes`] output; [`MaskError::State`] (policy `token_stats`) on a
    /// wrong magic or version, a wrong length or inconsistent counts.
    pub fn from_bytes(bytes: &[u8]) -> Result<TokenStats> {
        let err = |reason: String| MaskError::State {
            policy: "token_stats",
            reason,
        };
        if bytes.len() < HEADER {
            return Err(err(format!(
                "{} bytes, shorter than the {HEADER}-byte header",
                bytes.len()
            )));
        }
        if &bytes[..4] != MAGIC {
            return Err(err(format!(
                "bad magic {:?}, expected \"DMTS\"",
                &bytes[..4]
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(4);
        if version != VERSION {
            return Err(err(format!("version {version}, expected {VERSION}")));
        }
        let v = u32_at(8) as usize;
        let n_docs = u64_at(12);
        let total_tokens = u64_at(20);
        let expected = (v as u128) * 16 + HEADER as u128;
        if bytes.len() as u128 != expected {
            return Err(err(format!(
                "{} bytes, expected {expected} for vocab_size {v}",
                bytes.len()
            )));
        }
        if v == 0 {
            return Err(err("vocab_size 0".into()));
        }
        let read = |k: usize| u64_at(HEADER + 8 * k);
        let counts: Vec<u64> = (0..v).map(read).collect();
        let df: Vec<u64> = (v..2 * v).map(read).collect();
        let sum = counts
            .iter()
            .try_fold(0u64, |a, &c| a.checked_add(c))
            .ok_or_else(|| err("counts overflow".into()))?;
        if sum != total_tokens {
            return Err(err(format!(
                "counts sum to {sum} but total_tokens is {total_tokens}"
            )));
        }
        if let Some(id) = (0..v).find(|&i| df[i] > n_docs || df[i] > counts[i]) {
            return Err(err(format!(
                "id {id}: doc frequency {} exceeds n_docs {n_docs} or count {}",
                df[id], counts[id]
            )));
        }
        Ok(TokenStats {
            counts,
            df,
            n_docs,
            total_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> TokenStats {
        TokenStats::from_docs(10, [vec![1u32, 2, 2, 3], vec![2, 4], vec![], vec![9, 9, 9]]).unwrap()
    }

    #[test]
    fn counts_doc_freqs_and_idf() {
        let s = stats();
        assert_eq!(s.n_docs(), 4);
        assert_eq!(s.total_tokens(), 9);
        assert_eq!((s.count(2), s.doc_freq(2)), (3, 2));
        assert_eq!((s.count(9), s.doc_freq(9)), (3, 1));
        assert_eq!((s.count(0), s.doc_freq(0)), (0, 0));
        assert_eq!(s.count(100), 0);
        assert!((s.idf(2) - ((5.0f64 / 3.0).ln() + 1.0)).abs() < 1e-12);
        assert!((s.idf(0) - (5.0f64.ln() + 1.0)).abs() < 1e-12);
        assert!(s.idf(9) > s.idf(2));
        let e = TokenStats::from_docs(5, [vec![1u32, 7]]).unwrap_err();
        assert_eq!(
            e,
            MaskError::TokenOutOfVocab {
                position: 1,
                id: 7,
                vocab_size: 5
            }
        );
        assert!(TokenStats::from_docs(0, Vec::<Vec<u32>>::new()).is_err());
    }

    #[test]
    fn bytes_round_trip_and_corruption_is_refused() {
        let s = stats();
        let b = s.to_bytes();
        assert_eq!(TokenStats::from_bytes(&b).unwrap(), s);
        let reason = |bytes: &[u8]| match TokenStats::from_bytes(bytes).unwrap_err() {
            MaskError::State { policy, reason } => {
                assert_eq!(policy, "token_stats");
                reason
            }
            e => panic!("unexpected error {e}"),
        };
        assert!(reason(&b[..10]).contains("header"));
        assert!(reason(&b[..b.len() - 1]).contains("expected"));
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(reason(&bad).contains("magic"));
        let mut bad = b.clone();
        bad[4] = 2;
        assert!(reason(&bad).contains("version 2"));
        let mut bad = b.clone();
        bad[HEADER] = 1; // count of id 0 changes: sum no longer matches total_tokens
        assert!(reason(&bad).contains("total_tokens"));
        let mut bad = b.clone();
        bad[HEADER + 8 * 10 + 8 * 2] = 9; // df of id 2 > n_docs
        assert!(reason(&bad).contains("id 2"));
    }
}
