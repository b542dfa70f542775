//! Held-out masked-LM scores taken apart by position, beside the trivial baseline.
//!
//! One held-out loss over all masked positions mixes three problems: at a `[MASK]` input the
//! model must infer the token from context; at a kept token it can copy its input; at a random
//! replacement it must notice the swap. A model that only learned word frequencies already
//! scores well on frequent tokens. So every figure here comes split by what the input showed
//! ([`Corruption`]), by how frequent the target is in the training split (rank buckets), and
//! beside a [`Unigram`] model fitted on the training split and scored on the same positions:
//! what a model that ignores its input achieves.
//!
//! Host code only: a model's scores come in as [`ScoredToken`]s (the masked-LM task's
//! `score_mlm` makes them).

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

/// What the input showed at a masked position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// The mask token.
    Mask,
    /// Another token than the target (a random replacement).
    Random,
    /// The target itself (chosen but kept, or a random draw that hit the target).
    Kept,
}

impl Corruption {
    /// Reads the corruption of a position from its input id, its target and the mask id.
    pub fn of(input: u32, target: u32, mask_id: u32) -> Self {
        if input == mask_id {
            Corruption::Mask
        } else if input == target {
            Corruption::Kept
        } else {
            Corruption::Random
        }
    }
}

/// One masked held-out position, scored by a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredToken {
    /// Index of its document in the evaluated set.
    pub doc: usize,
    /// The original token.
    pub target: u32,
    /// What the input showed.
    pub corruption: Corruption,
    /// The model's cross-entropy at the position (nats).
    pub loss: f32,
    /// Whether the model's arg-max was the target.
    pub correct: bool,
}

/// A unigram model of the training split: `p(id) = (count(id) + 1) / (N + V)` (add-one
/// smoothing over the whole vocabulary, so every id has a finite loss), counting non-special
/// tokens only. Its cross-entropy on held-out targets is what a model that ignores its input
/// scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Unigram {
    neg_log_prob: Vec<f64>,
    rank: Vec<u32>,
}

impl Unigram {
    /// Fits the model to `docs` over a vocabulary of `vocab_size` ids, skipping `special_ids`.
    pub fn fit<'a>(
        docs: impl IntoIterator<Item = &'a [u32]>,
        vocab_size: usize,
        special_ids: &[u32],
    ) -> Result<Self> {
        if vocab_size == 0 {
            return Err(invalid("vocab_size", 0, "at least 1"));
        }
        let mut counts = vec![0u64; vocab_size];
        for doc in docs {
            for &id in doc {
                if special_ids.contains(&id) {
                    continue;
                }
                let c = counts.get_mut(id as usize).ok_or_else(|| {
                    invalid(
                        "docs",
                        id,
                        format!("token ids below vocab_size ({vocab_size})"),
                    )
                })?;
                *c += 1;
            }
        }
        let total = counts.iter().sum::<u64>() as f64 + vocab_size as f64;
        let neg_log_prob = counts
            .iter()
            .map(|&c| -((c as f64 + 1.0) / total).ln())
            .collect();
        // Rank 0 = most frequent; ties broken by id, so the ranks are a pure function of the data.
        let mut order: Vec<u32> = (0..vocab_size as u32).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(counts[i as usize]), i));
        let mut rank = vec![0u32; vocab_size];
        for (r, &i) in order.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        Ok(Self { neg_log_prob, rank })
    }

    /// Cross-entropy of predicting `id` by frequency alone (nats).
    pub fn loss(&self, id: u32) -> f64 {
        self.neg_log_prob[id as usize]
    }

    /// Frequency rank of `id` in the training split (0 = most frequent).
    pub fn rank(&self, id: u32) -> usize {
        self.rank[id as usize] as usize
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.rank.len()
    }
}

/// Loss, accuracy and the unigram baseline over one set of positions.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HeldoutStats {
    /// Positions scored.
    pub tokens: u64,
    /// Mean model cross-entropy (nats; 0 when `tokens` is 0).
    pub loss: f64,
    /// Fraction predicted exactly (0 when `tokens` is 0).
    pub acc: f64,
    /// Mean unigram cross-entropy at the same positions (nats).
    pub unigram_loss: f64,
}

impl HeldoutStats {
    /// `unigram_loss - loss`: nats the model gains over word frequencies (positive = better).
    pub fn gain(&self) -> f64 {
        self.unigram_loss - self.loss
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    n: u64,
    loss: f64,
    correct: u64,
    unigram: f64,
}

impl Acc {
    fn add(&mut self, t: &ScoredToken, unigram: &Unigram) {
        self.n += 1;
        self.loss += t.loss as f64;
        self.correct += t.correct as u64;
        self.unigram += unigram.loss(t.target);
    }

    fn stats(&self) -> HeldoutStats {
        let n = self.n.max(1) as f64;
        HeldoutStats {
            tokens: self.n,
            loss: self.loss / n,
            acc: self.correct as f64 / n,
            unigram_loss: self.unigram / n,
        }
    }
}

/// One frequency bucket: targets whose training rank is in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketStats {
    /// First rank (inclusive).
    pub from: usize,
    /// Last rank (exclusive; the vocabulary size for the last bucket).
    pub to: usize,
    /// Scores at these positions.
    pub stats: HeldoutStats,
}

/// Held-out scores split by corruption kind and by target frequency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Every masked position.
    pub all: HeldoutStats,
    /// Positions whose input is the mask token.
    pub mask: HeldoutStats,
    /// Positions whose input is a random replacement.
    pub random: HeldoutStats,
    /// Positions whose input is the target itself.
    pub kept: HeldoutStats,
    /// All masked positions, by the training-frequency rank of the target.
    pub buckets: Vec<BucketStats>,
}

/// Refuses frequency-bucket `edges` that are not strictly increasing ranks above 0 (field
/// `frequency_buckets`).
pub fn check_bucket_edges(edges: &[usize]) -> Result<()> {
    if edges.windows(2).any(|w| w[0] >= w[1]) || edges.first() == Some(&0) {
        return Err(invalid(
            "frequency_buckets",
            format!("{edges:?}"),
            "strictly increasing ranks above 0",
        ));
    }
    Ok(())
}

/// Splits `tokens` by corruption kind and by frequency-rank bucket; `edges` are the ascending
/// rank boundaries (`[100, 1000]`: ranks 0-99, 100-999, 1000 and up).
pub fn breakdown(tokens: &[ScoredToken], unigram: &Unigram, edges: &[usize]) -> Result<Breakdown> {
    check_bucket_edges(edges)?;
    let (mut all, mut mask, mut random, mut kept) = Default::default();
    let mut buckets = vec![Acc::default(); edges.len() + 1];
    for t in tokens {
        Acc::add(&mut all, t, unigram);
        let by_kind: &mut Acc = match t.corruption {
            Corruption::Mask => &mut mask,
            Corruption::Random => &mut random,
            Corruption::Kept => &mut kept,
        };
        by_kind.add(t, unigram);
        let r = unigram.rank(t.target);
        buckets[edges.partition_point(|&e| e <= r)].add(t, unigram);
    }
    let bounds = std::iter::once(0).chain(edges.iter().copied());
    let ends = edges.iter().copied().chain([unigram.vocab_size()]);
    Ok(Breakdown {
        all: all.stats(),
        mask: mask.stats(),
        random: random.stats(),
        kept: kept.stats(),
        buckets: bounds
            .zip(ends)
            .zip(&buckets)
            .map(|((from, to), a)| BucketStats {
                from,
                to,
                stats: a.stats(),
            })
            .collect(),
    })
}

/// Per-document sums at the `[MASK]` positions, for paired resampling over documents: the
/// same documents and masks for every model scored on one evaluation set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DocSums {
    /// Sum of the model's losses at each document's `[MASK]` positions.
    pub loss: Vec<f64>,
    /// Number of `[MASK]` positions of each document.
    pub count: Vec<u32>,
}

impl DocSums {
    /// Zero sums over `docs` documents.
    pub fn new(docs: usize) -> Self {
        Self {
            loss: vec![0.0; docs],
            count: vec![0; docs],
        }
    }

    /// Adds the `[MASK]` positions of `tokens`; refuses a document index out of range.
    pub fn add(&mut self, tokens: &[ScoredToken]) -> Result<()> {
        for t in tokens.iter().filter(|t| t.corruption == Corruption::Mask) {
            if t.doc >= self.loss.len() {
                return Err(invalid(
                    "doc",
                    t.doc,
                    format!("below the {} evaluated documents", self.loss.len()),
                ));
            }
            self.loss[t.doc] += t.loss as f64;
            self.count[t.doc] += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(
        doc: usize,
        target: u32,
        corruption: Corruption,
        loss: f32,
        correct: bool,
    ) -> ScoredToken {
        ScoredToken {
            doc,
            target,
            corruption,
            loss,
            correct,
        }
    }

    #[test]
    fn corruption_is_read_from_input_target_and_mask_id() {
        assert_eq!(Corruption::of(4, 9, 4), Corruption::Mask);
        assert_eq!(Corruption::of(9, 9, 4), Corruption::Kept);
        assert_eq!(Corruption::of(7, 9, 4), Corruption::Random);
    }

    /// By hand: ids 5, 5, 5, 6 (and two specials skipped) over V = 8: N + V = 12, so
    /// p(5) = 4/12, p(6) = 2/12, p(other) = 1/12; ranks 5, 6, then the rest by id.
    #[test]
    fn unigram_is_add_one_smoothed_and_skips_specials() {
        let docs: Vec<Vec<u32>> = vec![vec![0, 5, 5, 1], vec![0, 5, 6, 1]];
        let u = Unigram::fit(docs.iter().map(|d| d.as_slice()), 8, &[0, 1]).unwrap();
        assert!((u.loss(5) - (12.0f64 / 4.0).ln()).abs() < 1e-12);
        assert!((u.loss(6) - (12.0f64 / 2.0).ln()).abs() < 1e-12);
        assert!((u.loss(0) - 12.0f64.ln()).abs() < 1e-12);
        let p: f64 = (0..8).map(|i| (-u.loss(i)).exp()).sum();
        assert!((p - 1.0).abs() < 1e-12, "probabilities sum to {p}");
        assert_eq!((u.rank(5), u.rank(6), u.rank(0), u.rank(7)), (0, 1, 2, 7));
        assert!(Unigram::fit([[9u32].as_slice()], 8, &[]).is_err());
    }

    /// Every split by hand on six positions.
    #[test]
    fn breakdown_splits_by_kind_and_rank_with_the_baseline_beside() {
        let docs: Vec<Vec<u32>> = vec![vec![1, 1, 1, 2, 2, 3]];
        let u = Unigram::fit(docs.iter().map(|d| d.as_slice()), 4, &[]).unwrap();
        // ranks: 1 -> 0, 2 -> 1, 3 -> 2, 0 -> 3.
        let tokens = [
            tok(0, 1, Corruption::Mask, 1.0, true),
            tok(0, 2, Corruption::Mask, 3.0, false),
            tok(1, 3, Corruption::Random, 2.0, false),
            tok(1, 1, Corruption::Kept, 0.5, true),
            tok(2, 0, Corruption::Mask, 5.0, false),
            tok(2, 2, Corruption::Kept, 0.5, true),
        ];
        let b = breakdown(&tokens, &u, &[1, 2]).unwrap();
        assert_eq!(b.all.tokens, 6);
        assert!((b.all.loss - 12.0 / 6.0).abs() < 1e-12);
        assert!((b.all.acc - 0.5).abs() < 1e-12);
        assert_eq!(b.mask.tokens, 3);
        assert!((b.mask.loss - 3.0).abs() < 1e-12);
        let want = (u.loss(1) + u.loss(2) + u.loss(0)) / 3.0;
        assert!((b.mask.unigram_loss - want).abs() < 1e-12);
        assert!((b.mask.gain() - (want - 3.0)).abs() < 1e-12);
        assert_eq!((b.random.tokens, b.kept.tokens), (1, 2));
        assert!((b.kept.acc - 1.0).abs() < 1e-12 && b.random.acc == 0.0);
        let n: Vec<(usize, usize, u64)> = b
            .buckets
            .iter()
            .map(|x| (x.from, x.to, x.stats.tokens))
            .collect();
        assert_eq!(n, vec![(0, 1, 2), (1, 2, 2), (2, 4, 2)]);
        assert!((b.buckets[2].stats.loss - 3.5).abs() < 1e-12);
        assert!(breakdown(&tokens, &u, &[2, 2]).is_err());
        assert!(breakdown(&tokens, &u, &[0]).is_err());
    }

    #[test]
    fn doc_sums_count_mask_positions_only() {
        let mut s = DocSums::new(3);
        s.add(&[
            tok(0, 1, Corruption::Mask, 1.0, true),
            tok(2, 1, Corruption::Mask, 2.0, true),
            tok(2, 1, Corruption::Mask, 0.5, true),
            tok(1, 1, Corruption::Kept, 9.0, true),
        ])
        .unwrap();
        assert_eq!(s.count, vec![1, 0, 2]);
        assert_eq!(s.loss, vec![1.0, 0.0, 2.5]);
        assert!(s.add(&[tok(3, 1, Corruption::Mask, 1.0, true)]).is_err());
    }
}
