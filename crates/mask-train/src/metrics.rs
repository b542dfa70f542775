//! Evaluation metrics: masked-LM loss, accuracy and perplexity averaged over *masked positions
//! only*; classification accuracy, per-class and macro precision / recall / F1 with the
//! confusion matrix; ranking metrics (HR@k, NDCG@k) with exact tie averaging.
//!
//! Conventions (as scikit-learn's `zero_division=0`): a class never predicted has precision 0, a
//! class absent from the labels has recall 0, and F1 is 0 when precision + recall is 0. Macro
//! averages run over all `n_classes` classes, present or not.

use serde::{Deserialize, Serialize};

/// Running masked-LM statistics over masked positions (never over padding or unmasked tokens,
/// which is what a padded `CrossEntropyLoss` mean would include).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MlmMetrics {
    /// Sum of per-token cross-entropies (nats).
    pub loss_sum: f64,
    /// Masked positions seen.
    pub tokens: u64,
    /// Masked positions whose arg-max prediction was the target.
    pub correct: u64,
}

impl MlmMetrics {
    /// Adds one batch: per-token losses and whether each prediction was right.
    pub fn add(&mut self, losses: &[f32], correct: &[bool]) {
        debug_assert_eq!(losses.len(), correct.len());
        self.loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>();
        self.tokens += losses.len() as u64;
        self.correct += correct.iter().filter(|&&c| c).count() as u64;
    }

    /// Merges another accumulator.
    pub fn merge(&mut self, other: &MlmMetrics) {
        self.loss_sum += other.loss_sum;
        self.tokens += other.tokens;
        self.correct += other.correct;
    }

    /// Mean cross-entropy per masked token (`NaN` before any token).
    pub fn mlm_loss(&self) -> f64 {
        self.loss_sum / self.tokens as f64
    }

    /// Fraction of masked tokens predicted exactly.
    pub fn mlm_acc(&self) -> f64 {
        self.correct as f64 / self.tokens as f64
    }

    /// `exp(mlm_loss)`.
    pub fn perplexity(&self) -> f64 {
        self.mlm_loss().exp()
    }
}

/// A `C x C` confusion matrix, rows = true class, columns = predicted class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    n_classes: usize,
    counts: Vec<u64>,
}

/// Per-class and macro-averaged scores of a [`ConfusionMatrix`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Fraction of examples classified correctly.
    pub accuracy: f64,
    /// Precision per class.
    pub precision: Vec<f64>,
    /// Recall per class.
    pub recall: Vec<f64>,
    /// F1 per class.
    pub f1: Vec<f64>,
    /// Number of true examples per class.
    pub support: Vec<u64>,
    /// Unweighted mean of the per-class precisions.
    pub macro_precision: f64,
    /// Unweighted mean of the per-class recalls.
    pub macro_recall: f64,
    /// Unweighted mean of the per-class F1 scores.
    pub macro_f1: f64,
}

impl ConfusionMatrix {
    /// An empty matrix over `n_classes` classes.
    pub fn new(n_classes: usize) -> Self {
        Self {
            n_classes,
            counts: vec![0; n_classes * n_classes],
        }
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Records one example. Returns `false` (and records nothing) if a class is out of range.
    pub fn add(&mut self, label: usize, predicted: usize) -> bool {
        if label >= self.n_classes || predicted >= self.n_classes {
            return false;
        }
        self.counts[label * self.n_classes + predicted] += 1;
        true
    }

    /// Count of examples of class `label` predicted as `predicted`.
    pub fn get(&self, label: usize, predicted: usize) -> u64 {
        self.counts[label * self.n_classes + predicted]
    }

    /// Rows (true class) of counts.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.n_classes.max(1))
            .map(<[u64]>::to_vec)
            .collect()
    }

    /// Total examples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Accuracy, per-class and macro precision / recall / F1.
    pub fn report(&self) -> ClassificationReport {
        let c = self.n_classes;
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        let mut precision = vec![0.0; c];
        let mut recall = vec![0.0; c];
        let mut f1 = vec![0.0; c];
        let mut support = vec![0; c];
        for k in 0..c {
            let tp = self.get(k, k);
            let predicted: u64 = (0..c).map(|l| self.get(l, k)).sum();
            let actual: u64 = (0..c).map(|p| self.get(k, p)).sum();
            precision[k] = ratio(tp, predicted);
            recall[k] = ratio(tp, actual);
            let pr = precision[k] + recall[k];
            f1[k] = if pr == 0.0 {
                0.0
            } else {
                2.0 * precision[k] * recall[k] / pr
            };
            support[k] = actual;
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let correct: u64 = (0..c).map(|k| self.get(k, k)).sum();
        ClassificationReport {
            accuracy: ratio(correct, self.total()),
            macro_precision: mean(&precision),
            macro_recall: mean(&recall),
            macro_f1: mean(&f1),
            precision,
            recall,
            f1,
            support,
        }
    }
}

/// Rank counts of a target score among negative scores: `(higher, tied)`. A non-finite target
/// ranks below every negative (a model that outputs NaN must not score a hit), and a NaN
/// negative counts as higher than the target.
pub fn rank_counts(target: f32, negatives: &[f32]) -> (usize, usize) {
    if target.is_nan() {
        return (negatives.len(), 0);
    }
    let higher = negatives
        .iter()
        .filter(|&&s| s.is_nan() || s > target)
        .count();
    let tied = negatives.iter().filter(|&&s| s == target).count();
    (higher, tied)
}

/// `(HR@k, NDCG@k)` of a target with `higher` negatives scoring above it and `tied` equal,
/// averaged over the `tied + 1` equally likely ranks `higher..=higher + tied`.
pub fn hit_ndcg_at(k: usize, higher: usize, tied: usize) -> (f64, f64) {
    let (mut hit, mut ndcg) = (0.0, 0.0);
    for rank in higher..=higher + tied {
        if rank < k {
            hit += 1.0;
            ndcg += 1.0 / ((rank + 2) as f64).log2();
        }
    }
    let orders = (tied + 1) as f64;
    (hit / orders, ndcg / orders)
}

/// Mean HR@k and NDCG@k over users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankMetrics {
    /// Hit ratio at k.
    pub hr: f64,
    /// Normalised discounted cumulative gain at k.
    pub ndcg: f64,
    /// Users evaluated.
    pub users: usize,
}

/// HR@k and NDCG@k from per-user scores `[target, negatives...]`; `None` when a row is empty
/// (it has no target to rank).
pub fn rank_metrics(k: usize, scores: &[Vec<f32>]) -> Option<RankMetrics> {
    let (mut hr, mut ndcg) = (0.0, 0.0);
    for s in scores {
        let (target, negatives) = s.split_first()?;
        let (higher, tied) = rank_counts(*target, negatives);
        let (h, n) = hit_ndcg_at(k, higher, tied);
        hr += h;
        ndcg += n;
    }
    let users = scores.len();
    let d = users.max(1) as f64;
    Some(RankMetrics {
        hr: hr / d,
        ndcg: ndcg / d,
        users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn binary_matrix_by_hand() {
        // labels:    1 1 1 1 0 0 0 0 0 0
        // predicted: 1 1 1 0 0 0 0 0 1 1
        let mut m = ConfusionMatrix::new(2);
        for (l, p) in [
            (1, 1),
            (1, 1),
            (1, 1),
            (1, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 1),
            (0, 1),
        ] {
            assert!(m.add(l, p));
        }
        assert_eq!(m.rows(), vec![vec![4, 2], vec![1, 3]]);
        let r = m.report();
        assert!(close(r.accuracy, 0.7));
        // class 1: tp 3, predicted 5, actual 4; class 0: tp 4, predicted 5, actual 6
        assert!(close(r.precision[1], 3.0 / 5.0) && close(r.recall[1], 3.0 / 4.0));
        assert!(close(r.precision[0], 4.0 / 5.0) && close(r.recall[0], 4.0 / 6.0));
        assert!(close(r.f1[1], 2.0 * 0.6 * 0.75 / 1.35));
        assert!(close(r.f1[0], 2.0 * 0.8 * (2.0 / 3.0) / (0.8 + 2.0 / 3.0)));
        assert!(close(r.macro_f1, (r.f1[0] + r.f1[1]) / 2.0));
        assert_eq!(r.support, vec![6, 4]);
    }

    #[test]
    fn empty_classes_score_zero_not_nan() {
        // Class 2 never occurs and is never predicted; class 1 is never predicted.
        let mut m = ConfusionMatrix::new(3);
        for (l, p) in [(0, 0), (0, 0), (1, 0), (1, 0)] {
            m.add(l, p);
        }
        let r = m.report();
        assert!(close(r.accuracy, 0.5));
        assert_eq!(r.precision, vec![0.5, 0.0, 0.0]);
        assert_eq!(r.recall, vec![1.0, 0.0, 0.0]);
        assert!(close(r.f1[0], 2.0 / 3.0));
        assert_eq!(&r.f1[1..], &[0.0, 0.0]);
        assert!(close(r.macro_precision, 0.5 / 3.0));
        assert!(close(r.macro_recall, 1.0 / 3.0));
        assert!(close(r.macro_f1, (2.0 / 3.0) / 3.0));
        assert!([r.macro_precision, r.macro_recall, r.macro_f1]
            .iter()
            .all(|x| x.is_finite()));
        let empty = ConfusionMatrix::new(2).report();
        assert_eq!((empty.accuracy, empty.macro_f1), (0.0, 0.0));
        assert!(!m.add(3, 0), "out-of-range class is refused");
        assert_eq!(m.total(), 4);
    }

    #[test]
    fn three_class_matrix_by_hand() {
        // rows = true: [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
        let mut m = ConfusionMatrix::new(3);
        for (l, row) in [[5, 1, 0], [2, 3, 1], [0, 0, 4]].iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                for _ in 0..n {
                    m.add(l, p);
                }
            }
        }
        let r = m.report();
        assert!(close(r.accuracy, 12.0 / 16.0));
        assert!(close(r.precision[0], 5.0 / 7.0) && close(r.recall[0], 5.0 / 6.0));
        assert!(close(r.precision[1], 3.0 / 4.0) && close(r.recall[1], 3.0 / 6.0));
        assert!(close(r.precision[2], 4.0 / 5.0) && close(r.recall[2], 1.0));
        let f = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let want = (f(5.0 / 7.0, 5.0 / 6.0) + f(0.75, 0.5) + f(0.8, 1.0)) / 3.0;
        assert!(close(r.macro_f1, want));
    }

    #[test]
    fn mlm_metrics_average_over_masked_tokens() {
        let mut m = MlmMetrics::default();
        m.add(&[1.0, 3.0], &[true, false]);
        let mut n = MlmMetrics::default();
        n.add(&[2.0], &[true]);
        m.merge(&n);
        assert!(close(m.mlm_loss(), 2.0));
        assert!(close(m.mlm_acc(), 2.0 / 3.0));
        assert!(close(m.perplexity(), 2f64.exp()));
        assert!(MlmMetrics::default().mlm_loss().is_nan());
    }

    /// Regression (tests issue): a NaN target counted nothing above or tied, so a model that
    /// outputs NaN got HR@10 = NDCG@10 = 1; an empty candidate row panicked.
    #[test]
    fn nan_scores_never_hit_and_empty_rows_are_refused() {
        assert_eq!(rank_counts(f32::NAN, &[0.1, 0.2, 0.3]), (3, 0));
        assert_eq!(rank_counts(0.5, &[f32::NAN, 0.1, 0.5, 0.9]), (2, 1));
        let m = rank_metrics(10, &[vec![f32::NAN, 0.0, 0.0]]).unwrap();
        assert_eq!(
            (m.hr, m.ndcg),
            (1.0, 0.5),
            "ranked last of 3: still inside k = 10"
        );
        let m = rank_metrics(2, &[vec![f32::NAN, 0.0, 0.0]]).unwrap();
        assert_eq!((m.hr, m.ndcg), (0.0, 0.0), "ranked 3rd: outside k = 2");
        assert!(rank_metrics(10, &[vec![0.5], vec![]]).is_none());
    }

    #[test]
    fn hit_and_ndcg_by_hand_with_ties() {
        // Rank 0: hit 1, NDCG 1/log2(2) = 1.
        assert_eq!(hit_ndcg_at(10, 0, 0), (1.0, 1.0));
        // 9 higher: rank 9 < 10, NDCG 1/log2(11).
        let (h, n) = hit_ndcg_at(10, 9, 0);
        assert!(h == 1.0 && (n - 1.0 / 11f64.log2()).abs() < 1e-15);
        // 9 higher and 1 tie: ranks 9 and 10 equally likely: HR 1/2, NDCG (1/log2 11)/2.
        let (h, n) = hit_ndcg_at(10, 9, 1);
        assert!(h == 0.5 && (n - 0.5 / 11f64.log2()).abs() < 1e-15);
        // Two users, averaged: ranked first (HR 1, NDCG 1) and second, outside k = 1 (0, 0).
        let m = rank_metrics(1, &[vec![1.0, 0.0], vec![0.0, 1.0]]).unwrap();
        assert_eq!((m.hr, m.ndcg, m.users), (0.5, 0.5, 2));
    }
}
