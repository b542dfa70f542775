//! PMI-span selection (Levine et al. 2021, "PMI-Masking: Principled Masking of Correlated
//! Spans", ICLR): n-grams whose tokens co-occur far more often than chance ("new york city",
//! "e . g .") are masked as whole units, so the model cannot recover one of their tokens from
//! the others and must use the wider context.
//!
//! ## The table ([`PmiTable`])
//! Counted over a corpus, never across special ids (they split documents into segments). With
//! `p(g) = count(g) / N_|g|`, `N_k` being the number of length-`k` windows in the corpus:
//! - bigrams: `PMI(ab) = ln p(ab) / (p(a) p(b))`;
//! - `n > 2`: the minimum over all binary segmentations `w = (l, r)` of
//!   `ln p(w) / (p(l) p(r))` (the paper's "Naive-PMI_n" with `min` instead of a product over
//!   all segmentations: an n-gram is only as cohesive as its weakest split).
//!
//! N-grams of length `2..=max_ngram` with `count >= min_count` are ranked by PMI (ties by the
//! ids) and the `top_k` best kept.
//!
//! ## The selector ([`PmiSpanSelector`])
//! The example is cut into *units*: scanning left to right, the longest table n-gram (up to
//! `max_ngram` tokens, not crossing a special position) starting at the current token is one
//! unit, otherwise the token alone. Units are drawn uniformly in random order and masked whole
//! while the budget `floor(mask_prob * n + u)` (expectation `mask_prob * n`, `n` eligible
//! tokens) is not reached; the unit that would overshoot it, with `r` tokens of budget left
//! and `L > r` tokens, is taken with probability `r / L`, so the expected count stays exactly
//! `mask_prob * n` and no unit is ever split.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{prob_round, SelectScratch, Selector};
use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;

pub(crate) fn default_max_ngram() -> u32 {
    4
}
fn default_min_count() -> u64 {
    5
}
fn default_top_k() -> usize {
    2000
}

/// How a [`PmiTable`] is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmiTableConfig {
    /// Longest n-gram counted (>= 2). Default: 4
    #[serde(default = "default_max_ngram")]
    pub max_ngram: u32,
    /// Fewest occurrences for an n-gram to be kept (>= 1). Default: 5
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// Number of n-grams kept, best PMI first (>= 1). Default: 2000
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Ids that split documents (CLS, SEP, padding, ...): n-grams never contain or cross them.
    /// Default: none
    #[serde(default)]
    pub special_ids: Vec<u32>,
}

impl Default for PmiTableConfig {
    fn default() -> Self {
        Self {
            max_ngram: default_max_ngram(),
            min_count: default_min_count(),
            top_k: default_top_k(),
            special_ids: vec![],
        }
    }
}

impl PmiTableConfig {
    fn validate(&self) -> Result<()> {
        if !(2..=64).contains(&self.max_ngram) {
            return Err(MaskError::InvalidValue {
                field: "max_ngram",
                value: self.max_ngram.to_string(),
                expected: "an integer in [2, 64]",
            });
        }
        if self.min_count == 0 {
            return Err(MaskError::InvalidValue {
                field: "min_count",
                value: "0".into(),
                expected: "an integer >= 1",
            });
        }
        if self.top_k == 0 {
            return Err(MaskError::InvalidValue {
                field: "top_k",
                value: "0".into(),
                expected: "an integer >= 1",
            });
        }
        Ok(())
    }
}

/// One n-gram of a [`PmiTable`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmiEntry {
    /// Token ids, 2 or more.
    pub ngram: Vec<u32>,
    /// Occurrences in the corpus.
    pub count: u64,
    /// Its PMI (natural log; see the module docs).
    pub pmi: f64,
}

/// On-disk form of a table.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PmiFile {
    format: String,
    version: u32,
    config: PmiTableConfig,
    entries: Vec<PmiEntry>,
}

const FORMAT: &str = "dynmask-pmi-table";
const VERSION: u32 = 1;

/// The `top_k` most cohesive n-grams of a corpus, best PMI first.
#[derive(Debug, Clone, PartialEq)]
pub struct PmiTable {
    config: PmiTableConfig,
    entries: Vec<PmiEntry>,
    index: HashMap<Vec<u32>, usize>,
    max_len: usize,
}

impl PmiTable {
    /// Counts the n-grams of `docs` and keeps the best (see the module docs).
    pub fn build<I, D>(docs: I, cfg: &PmiTableConfig) -> Result<PmiTable>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<[u32]>,
    {
        cfg.validate()?;
        let max_n = cfg.max_ngram as usize;
        let segments: Vec<Vec<u32>> = docs
            .into_iter()
            .flat_map(|doc| {
                doc.as_ref()
                    .split(|id| cfg.special_ids.contains(id))
                    .filter(|seg| !seg.is_empty())
                    .map(<[u32]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        // Level by level (apriori): a window of length n is counted only when its two
        // (n-1)-sub-windows reach `min_count`. Exact for every n-gram that can be kept, and for
        // all of its sub-n-grams (each occurs at least as often), at a fraction of the memory.
        let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
        // windows[k] = number of length-k windows (k = 1..=max_n), pruned or not.
        let mut windows = vec![0u64; max_n + 1];
        for n in 1..=max_n {
            let mut level: HashMap<Vec<u32>, u64> = HashMap::new();
            for seg in &segments {
                for w in seg.windows(n) {
                    windows[n] += 1;
                    let frequent = |g: &[u32]| counts.get(g).is_some_and(|&c| c >= cfg.min_count);
                    if n == 1 || (frequent(&w[..n - 1]) && frequent(&w[1..])) {
                        *level.entry(w.to_vec()).or_insert(0) += 1;
                    }
                }
            }
            counts.extend(level);
        }
        let ln_p = |g: &[u32]| -> f64 {
            let c = counts.get(g).copied().unwrap_or(0) as f64;
            (c / windows[g.len()] as f64).ln()
        };
        let mut entries: Vec<PmiEntry> = counts
            .iter()
            .filter(|(g, &c)| g.len() >= 2 && c >= cfg.min_count)
            .map(|(g, &c)| {
                let lw = ln_p(g);
                let pmi = (1..g.len())
                    .map(|k| lw - ln_p(&g[..k]) - ln_p(&g[k..]))
                    .fold(f64::INFINITY, f64::min);
                PmiEntry {
                    ngram: g.clone(),
                    count: c,
                    pmi,
                }
            })
            .collect();
        entries.sort_by(|a, b| b.pmi.total_cmp(&a.pmi).then_with(|| a.ngram.cmp(&b.ngram)));
        entries.truncate(cfg.top_k);
        Ok(Self::from_entries(cfg.clone(), entries))
    }

    fn from_entries(config: PmiTableConfig, entries: Vec<PmiEntry>) -> PmiTable {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.ngram.clone(), i))
            .collect();
        let max_len = entries.iter().map(|e| e.ngram.len()).max().unwrap_or(0);
        PmiTable {
            config,
            entries,
            index,
            max_len,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &PmiTableConfig {
        &self.config
    }

    /// Number of n-grams.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no n-grams.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Length of the longest n-gram (0 when empty).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether `ngram` is in the table.
    pub fn contains(&self, ngram: &[u32]) -> bool {
        self.index.contains_key(ngram)
    }

    /// PMI of `ngram`, if it is in the table.
    pub fn pmi(&self, ngram: &[u32]) -> Option<f64> {
        self.index.get(ngram).map(|&i| self.entries[i].pmi)
    }

    /// The n-grams, best PMI first.
    pub fn iter(&self) -> impl Iterator<Item = &PmiEntry> {
        self.entries.iter()
    }

    /// Writes the table as JSON; [`MaskError::File`] naming `path` on failure.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = PmiFile {
            format: FORMAT.into(),
            version: VERSION,
            config: self.config.clone(),
            entries: self.entries.clone(),
        };
        let err = |reason: String| MaskError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = serde_json::to_string(&file).map_err(|e| err(e.to_string()))?;
        crate::io::write_atomic(path, text.as_bytes()).map_err(|e| err(e.to_string()))
    }

    /// Reads a table written by [`PmiTable::save`]; [`MaskError::File`] naming `path` when it
    /// cannot be read, is not such a table, or is inconsistent (n-gram lengths, duplicates,
    /// non-finite PMI).
    pub fn load(path: impl AsRef<Path>) -> Result<PmiTable> {
        let path = path.as_ref();
        let err = |reason: String| MaskError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: PmiFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(err(format!(
                "format {:?} version {}, expected {FORMAT:?} version {VERSION}",
                file.format, file.version
            )));
        }
        file.config.validate()?;
        let max_n = file.config.max_ngram as usize;
        for e in &file.entries {
            if e.ngram.len() < 2 || e.ngram.len() > max_n || !e.pmi.is_finite() {
                return Err(err(format!(
                    "entry {:?}: needs 2..={max_n} ids and a finite PMI, got PMI {}",
                    e.ngram, e.pmi
                )));
            }
        }
        let table = Self::from_entries(file.config, file.entries);
        if table.index.len() != table.entries.len() {
            return Err(err("duplicate n-grams".into()));
        }
        Ok(table)
    }
}

/// Masks whole high-PMI n-grams (greedy longest match) or single tokens, up to the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct PmiSpanSelector {
    table: Arc<PmiTable>,
    max_ngram: u32,
}

impl PmiSpanSelector {
    /// A selector over `table`, matching n-grams of at most `max_ngram` tokens (>= 1; 1 means
    /// single tokens only).
    pub fn new(table: Arc<PmiTable>, max_ngram: u32) -> Result<Self> {
        if max_ngram == 0 {
            return Err(MaskError::InvalidValue {
                field: "max_ngram",
                value: "0".into(),
                expected: "an integer >= 1",
            });
        }
        Ok(Self { table, max_ngram })
    }

    /// The table.
    pub fn table(&self) -> &PmiTable {
        &self.table
    }

    /// Cuts `ex` into units (greedy longest table match, else single tokens), into `out`.
    pub fn units(&self, ex: &Example<'_>, out: &mut Vec<Span>) {
        out.clear();
        let longest = (self.max_ngram as usize).min(self.table.max_len());
        let n = ex.len();
        let mut i = 0;
        while i < n {
            if ex.special_mask[i] {
                i += 1;
                continue;
            }
            // Eligible run length from i, up to `longest`.
            let run = ex.special_mask[i..n.min(i + longest.max(1))]
                .iter()
                .take_while(|&&s| !s)
                .count();
            let len = (2..=run)
                .rev()
                .find(|&l| self.table.contains(&ex.ids[i..i + l]))
                .unwrap_or(1);
            out.push(Span {
                start: i as u32,
                len: len as u32,
            });
            i += len;
        }
    }
}

impl Selector for PmiSpanSelector {
    fn name(&self) -> &'static str {
        "pmi_span"
    }

    fn select(
        &self,
        ex: &Example<'_>,
        mask_prob: f64,
        rng: &mut MaskRng,
        scratch: &mut SelectScratch,
        out: &mut Vec<Span>,
    ) {
        out.clear();
        let units = &mut scratch.units;
        self.units(ex, units);
        let n_tokens: usize = units.iter().map(|u| u.len as usize).sum();
        if n_tokens == 0 || mask_prob <= 0.0 {
            return;
        }
        let budget = prob_round(mask_prob * n_tokens as f64, rng).min(n_tokens);
        let mut masked = 0usize;
        // Incremental Fisher-Yates: units[..j] are the ones drawn so far, in draw order.
        for j in 0..units.len() {
            if masked >= budget {
                break;
            }
            let r = j + rng.below((units.len() - j) as u64) as usize;
            units.swap(j, r);
            let unit = units[j];
            let left = budget - masked;
            if unit.len as usize <= left {
                out.push(unit);
                masked += unit.len as usize;
            } else {
                if rng.next_f64() * (unit.len as f64) < left as f64 {
                    out.push(unit);
                }
                break;
            }
        }
        out.sort_unstable_by_key(|s| s.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min_count: u64) -> PmiTableConfig {
        PmiTableConfig {
            max_ngram: 3,
            min_count,
            top_k: 100,
            special_ids: vec![0],
        }
    }

    #[test]
    fn pmi_is_the_minimum_over_segmentations() {
        let docs: Vec<Vec<u32>> = vec![
            vec![1, 2, 3],
            vec![1, 2, 3],
            vec![1, 2, 5],
            vec![1, 2, 5],
            vec![9, 2, 3],
            vec![1, 7],
            vec![8, 3],
        ];
        let t = PmiTable::build(&docs, &cfg(1)).unwrap();
        // Windows: 19 unigrams, 12 bigrams, 5 trigrams.
        // c(1)=5, c(3)=4, c(2 3)=3, c(1 2)=4, c(1 2 3)=2.
        let p123: f64 = 2.0 / 5.0;
        let split1 = (p123 / ((5.0 / 19.0) * (3.0 / 12.0))).ln(); // (1)(2 3)
        let split2 = (p123 / ((4.0 / 12.0) * (4.0 / 19.0))).ln(); // (1 2)(3)
        assert!(split2 < split1 - 0.05);
        let got = t.pmi(&[1, 2, 3]).unwrap();
        assert!((got - split2).abs() < 1e-12, "{got} vs {split2}");
        let p23 = ((3.0f64 / 12.0) / ((5.0 / 19.0) * (4.0 / 19.0))).ln();
        assert!((t.pmi(&[2, 3]).unwrap() - p23).abs() < 1e-12);
        // Sorted best first.
        let v: Vec<f64> = t.iter().map(|e| e.pmi).collect();
        assert!(v.windows(2).all(|w| w[0] >= w[1]));
        // min_count prunes (only 2-count n-grams or more survive at min_count 3).
        let t3 = PmiTable::build(&docs, &cfg(3)).unwrap();
        assert!(t3.iter().all(|e| e.count >= 3));
        assert!(!t3.contains(&[1, 2, 3]) && t3.contains(&[1, 2]));
    }

    /// Readable reference: count every window, no pruning.
    fn reference(docs: &[Vec<u32>], cfg: &PmiTableConfig) -> Vec<PmiEntry> {
        let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
        let mut windows = vec![0u64; cfg.max_ngram as usize + 1];
        for doc in docs {
            for seg in doc.split(|id| cfg.special_ids.contains(id)) {
                for n in 1..=cfg.max_ngram as usize {
                    for w in seg.windows(n) {
                        windows[n] += 1;
                        *counts.entry(w.to_vec()).or_default() += 1;
                    }
                }
            }
        }
        let lp = |g: &[u32]| (counts[g] as f64 / windows[g.len()] as f64).ln();
        let mut out: Vec<PmiEntry> = counts
            .iter()
            .filter(|(g, &c)| g.len() >= 2 && c >= cfg.min_count)
            .map(|(g, &c)| PmiEntry {
                ngram: g.clone(),
                count: c,
                pmi: (1..g.len())
                    .map(|k| lp(g) - lp(&g[..k]) - lp(&g[k..]))
                    .fold(f64::INFINITY, f64::min),
            })
            .collect();
        out.sort_by(|a, b| b.pmi.total_cmp(&a.pmi).then_with(|| a.ngram.cmp(&b.ngram)));
        out.truncate(cfg.top_k);
        out
    }

    #[test]
    fn pruned_counting_matches_the_reference() {
        let mut rng = MaskRng::from_state(42);
        // Small vocabulary with a skewed distribution and some specials (0).
        let docs: Vec<Vec<u32>> = (0..300)
            .map(|_| {
                (0..30)
                    .map(|_| {
                        let r = rng.below(100) as u32;
                        if r < 5 {
                            0
                        } else {
                            1 + (r * r) % 17
                        }
                    })
                    .collect()
            })
            .collect();
        for (min_count, top_k) in [(1, 10_000), (3, 10_000), (20, 50)] {
            let cfg = PmiTableConfig {
                max_ngram: 4,
                min_count,
                top_k,
                special_ids: vec![0],
            };
            let fast = PmiTable::build(&docs, &cfg).unwrap();
            let want = reference(&docs, &cfg);
            assert!(!want.is_empty());
            assert_eq!(
                fast.iter().cloned().collect::<Vec<_>>(),
                want,
                "min_count {min_count}"
            );
        }
    }

    #[test]
    fn ngrams_never_cross_special_ids() {
        let docs: Vec<Vec<u32>> = (0..10).map(|_| vec![5, 6, 0, 7, 8, 0]).collect();
        let t = PmiTable::build(&docs, &cfg(1)).unwrap();
        assert!(t.contains(&[5, 6]) && t.contains(&[7, 8]));
        assert_eq!(t.len(), 2, "{:?}", t.iter().collect::<Vec<_>>());
        assert!(t.iter().all(|e| !e.ngram.contains(&0)));
    }

    #[test]
    fn config_is_validated() {
        for bad in [
            PmiTableConfig {
                max_ngram: 1,
                ..Default::default()
            },
            PmiTableConfig {
                min_count: 0,
                ..Default::default()
            },
            PmiTableConfig {
                top_k: 0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                PmiTable::build(Vec::<Vec<u32>>::new(), &bad),
                Err(MaskError::InvalidValue { .. })
            ));
        }
    }

    #[test]
    fn units_are_greedy_longest_matches_within_eligible_runs() {
        let docs: Vec<Vec<u32>> = (0..10).map(|_| vec![1, 2, 3, 4]).collect();
        let table = Arc::new(PmiTable::build(&docs, &cfg(1)).unwrap());
        let sel = PmiSpanSelector::new(table.clone(), 4).unwrap();
        let ids = [9, 1, 2, 3, 4, 1, 2, 9, 2, 3];
        let special = [
            true, false, false, false, false, false, true, false, false, false,
        ];
        let mut units = vec![];
        sel.units(&Example::new(&ids, &special), &mut units);
        let got: Vec<(u32, u32)> = units.iter().map(|u| (u.start, u.len)).collect();
        // [1 2 3] (max trigram), [4], [1] (2 is special), [9], [2 3].
        assert_eq!(got, vec![(1, 3), (4, 1), (5, 1), (7, 1), (8, 2)]);
        let single = PmiSpanSelector::new(table, 1).unwrap();
        single.units(&Example::new(&ids, &special), &mut units);
        assert!(units.iter().all(|u| u.len == 1));
        assert_eq!(units.len(), 8);
    }
}
