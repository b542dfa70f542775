//! Paired statistics for comparing arms: per-seed paired differences with Student-t
//! intervals, Holm's step-down correction across a study's declared contrasts, and a paired
//! bootstrap over held-out documents.
//!
//! Arms of a study share seeds, initialisation, data order and evaluation masks, so the unit of
//! comparison is the *paired* difference: arm A minus arm B under the same seed (across
//! seeds), or under the same held-out document (across documents, by resampling).

use mask_core::MaskRng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, StudentsT};

/// A two-sided 95% interval of a paired mean difference across seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedT {
    /// Pairs (seeds).
    pub n: usize,
    /// Mean difference.
    pub mean: f64,
    /// Sample standard deviation of the differences (0 for one pair).
    pub sd: f64,
    /// Lower end of the 95% t-interval (the mean itself for one pair: no interval).
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Two-sided p-value of "mean difference = 0" (1 for one pair or zero spread with a zero
    /// mean; 0 for zero spread with a non-zero mean).
    pub p: f64,
}

/// The paired t-interval (95%, two-sided) and p-value of `diffs`.
///
/// # Panics
/// Never; an empty slice gives `n = 0` with a NaN mean, which [`super::report::write_json`]
/// refuses, so callers pass at least one pair.
pub fn paired_t(diffs: &[f64]) -> PairedT {
    let n = diffs.len();
    let (mean, sd) = super::report::mean_std(diffs);
    if n < 2 {
        return PairedT {
            n,
            mean,
            sd: 0.0,
            lo: mean,
            hi: mean,
            p: 1.0,
        };
    }
    let se = sd / (n as f64).sqrt();
    if se == 0.0 {
        let p = if mean == 0.0 { 1.0 } else { 0.0 };
        return PairedT {
            n,
            mean,
            sd,
            lo: mean,
            hi: mean,
            p,
        };
    }
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).expect("n - 1 >= 1 degrees of freedom");
    let q = t.inverse_cdf(0.975);
    let p = 2.0 * (1.0 - t.cdf((mean / se).abs()));
    PairedT {
        n,
        mean,
        sd,
        lo: mean - q * se,
        hi: mean + q * se,
        p: p.clamp(0.0, 1.0),
    }
}

/// Holm's step-down adjusted p-values (family-wise error control across `p`), in the input
/// order: sort ascending, multiply the i-th smallest by `m - i`, keep them monotone, cap at 1.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (i, &k) in order.iter().enumerate() {
        running = running.max(((m - i) as f64 * p[k]).min(1.0));
        adjusted[k] = running;
    }
    adjusted
}

/// Per-document sums of one arm under one seed: loss and position count at each held-out
/// document's `[MASK]` positions (the same documents and masks for every arm).
pub type DocLosses<'a> = (&'a [f64], &'a [u32]);

/// A paired bootstrap over held-out documents of the mean per-token loss difference A - B,
/// averaged over seeds: each replicate draws documents with replacement (the same draw for
/// every seed and both arms) and recomputes `mean_s (sum_d a_s[d] - b_s[d]) / sum_d n[d]`.
/// Returns the (2.5%, 97.5%) percentiles of `replicates` replicates, drawn from `seed`.
///
/// `a[s]` and `b[s]` are seed `s`'s per-document sums of arms A and B.
pub fn paired_bootstrap(
    a: &[DocLosses<'_>],
    b: &[DocLosses<'_>],
    replicates: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    let docs = a.first()?.0.len();
    if docs == 0 || a.len() != b.len() || replicates == 0 {
        return None;
    }
    // Per document: the seed-averaged ratio needs each seed's numerator and denominator.
    let diff: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|((la, _), (lb, _))| la.iter().zip(lb.iter()).map(|(x, y)| x - y).collect())
        .collect();
    let counts: Vec<&[u32]> = a.iter().map(|(_, n)| *n).collect();
    let mut rng = MaskRng::for_example(seed, 0, 0, 0xb007_57a9);
    let mut stats = Vec::with_capacity(replicates);
    let mut draws = vec![0usize; docs];
    for _ in 0..replicates {
        draws
            .iter_mut()
            .for_each(|d| *d = rng.below(docs as u64) as usize);
        let mut total = 0.0;
        for (s, diff_s) in diff.iter().enumerate() {
            let (num, den) = draws.iter().fold((0.0, 0u64), |(x, n), &d| {
                (x + diff_s[d], n + counts[s][d] as u64)
            });
            total += if den > 0 { num / den as f64 } else { 0.0 };
        }
        stats.push(total / diff.len() as f64);
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (replicates - 1) as f64).round() as usize).min(replicates - 1)];
    Some((at(0.025), at(0.975)))
}

/// What a contrast's interval says, in words: which arm is lower (better, for a loss) when the
/// Holm-adjusted p-value is below 0.05 and the interval excludes 0, else "inconclusive".
pub fn verdict(t: &PairedT, holm_p: f64, a: &str, b: &str) -> String {
    if t.n < 2 {
        "one seed: no interval".into()
    } else if holm_p < 0.05 && t.hi < 0.0 {
        format!("{a} lower")
    } else if holm_p < 0.05 && t.lo > 0.0 {
        format!("{b} lower")
    } else {
        "inconclusive".into()
    }
}

/// The contrasts a study tests: `declared` (pairs of arm names), or, when it declares none,
/// every pair (later arm, earlier arm) of `arms` in their order.
pub fn contrast_pairs(declared: &[[String; 2]], arms: &[&str]) -> Vec<[String; 2]> {
    if !declared.is_empty() {
        return declared.to_vec();
    }
    let mut pairs = vec![];
    for (j, b) in arms.iter().enumerate() {
        for a in &arms[j + 1..] {
            pairs.push([a.to_string(), b.to_string()]);
        }
    }
    pairs
}

/// A paired contrast of a metric (an accuracy, a hit ratio, a loss) between two arms, `a - b`,
/// over the seeds both ran; Holm-corrected across the contrasts it was tested with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricContrast {
    /// First arm.
    pub a: String,
    /// Second arm.
    pub b: String,
    /// Per-seed paired differences (a - b), with the 95% t-interval.
    pub seeds: PairedT,
    /// Holm-adjusted p-value across the contrasts tested together.
    pub holm_p: f64,
    /// `a higher ...`, `a lower ...` or `inconclusive` (the rule of [`verdict`]).
    pub verdict: String,
}

/// Paired contrasts `pairs` of a metric given as `(arm, seed, value)` rows, Holm-corrected
/// together; the verdict reads `a higher {what}` or `a lower {what}` (which direction is better
/// is the reader's: accuracy up, loss down), or inconclusive. A pair with no seed in common is
/// left out.
pub fn metric_contrasts(
    pairs: &[[String; 2]],
    rows: &[(&str, u64, f64)],
    what: &str,
) -> Vec<MetricContrast> {
    let mut found = vec![];
    for [a, b] in pairs {
        let diffs: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == a)
            .filter_map(|ra| {
                let rb = rows.iter().find(|r| r.0 == b && r.1 == ra.1)?;
                Some(ra.2 - rb.2)
            })
            .collect();
        if !diffs.is_empty() {
            found.push((a.clone(), b.clone(), paired_t(&diffs)));
        }
    }
    let adjusted = holm(&found.iter().map(|f| f.2.p).collect::<Vec<_>>());
    found
        .into_iter()
        .zip(adjusted)
        .map(|((a, b, t), holm_p)| {
            // `verdict` names the lower arm; say it from `a`'s side, with the metric.
            let verdict = match verdict(&t, holm_p, &a, &b) {
                v if v == format!("{a} lower") => format!("{a} lower {what}"),
                v if v == format!("{b} lower") => format!("{a} higher {what}"),
                v => v,
            };
            MetricContrast {
                a,
                b,
                seeds: t,
                holm_p,
                verdict,
            }
        })
        .collect()
}

/// McNemar's exact test of two classifiers scored on the same items (users): `a_only` items
/// only the first gets right, `b_only` only the second. Two-sided p-value of "both are equally
/// often right" = `min(1, 2 P(X <= min(a_only, b_only)))` for `X ~ Binomial(a_only + b_only,
/// 1/2)`; 1 when there is no discordant item.
pub fn mcnemar_exact(a_only: u64, b_only: u64) -> f64 {
    let n = a_only + b_only;
    if n == 0 {
        return 1.0;
    }
    let x = Binomial::new(0.5, n).expect("p = 0.5 and n >= 1 are valid");
    (2.0 * x.cdf(a_only.min(b_only))).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from the t table: t_{0.975, 2} = 4.302653, t_{0.975, 4} = 2.776445.
    /// diffs = [1, 2, 3]: mean 2, sd 1, se 1/sqrt 3; t = 2 sqrt 3 = 3.4641 on 2 df, two-sided
    /// p = 0.074180 (R: 2 * pt(-3.4641, 2)).
    #[test]
    fn paired_t_matches_the_t_table() {
        let r = paired_t(&[1.0, 2.0, 3.0]);
        let half = 4.302653 / 3f64.sqrt();
        assert!((r.mean - 2.0).abs() < 1e-12 && (r.sd - 1.0).abs() < 1e-12);
        assert!((r.lo - (2.0 - half)).abs() < 1e-5, "{r:?}");
        assert!((r.hi - (2.0 + half)).abs() < 1e-5, "{r:?}");
        assert!((r.p - 0.074180).abs() < 1e-5, "{r:?}");
        let r5 = paired_t(&[0.1, 0.3, 0.2, 0.4, 0.5]);
        let half5 = 2.776445 * (0.025f64).sqrt() / 5f64.sqrt();
        assert!((r5.hi - r5.lo - 2.0 * half5).abs() < 1e-5, "{r5:?}");
        assert_eq!(paired_t(&[0.7]).p, 1.0);
        assert_eq!(paired_t(&[0.5, 0.5]).p, 0.0);
        assert_eq!(paired_t(&[0.0, 0.0]).p, 1.0);
    }

    /// Holm by hand: p = (0.01, 0.04, 0.03) -> sorted 0.01 x 3, 0.03 x 2, 0.04 x 1 =
    /// 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06.
    #[test]
    fn holm_steps_down_and_stays_monotone() {
        let a = holm(&[0.01, 0.04, 0.03]);
        let want = [0.03, 0.06, 0.06];
        for (x, w) in a.iter().zip(want) {
            assert!((x - w).abs() < 1e-12, "{a:?}");
        }
        assert_eq!(holm(&[0.5, 0.9]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }

    /// A constant per-document difference has a degenerate bootstrap at that difference; a
    /// zero-mean symmetric one has an interval around 0 whose width shrinks like 1/sqrt(docs).
    #[test]
    fn bootstrap_is_paired_and_shrinks_with_more_documents() {
        let n = vec![2u32; 50];
        let a: Vec<f64> = (0..50).map(|i| 3.0 + i as f64 * 0.01).collect();
        let b: Vec<f64> = a.iter().map(|x| x - 0.4).collect(); // per token: 0.2 lower
        let (lo, hi) = paired_bootstrap(&[(&a, &n)], &[(&b, &n)], 500, 1).unwrap();
        assert!(
            (lo - 0.2).abs() < 1e-12 && (hi - 0.2).abs() < 1e-12,
            "{lo} {hi}"
        );
        let width = |docs: usize| {
            let n = vec![1u32; docs];
            let a: Vec<f64> = (0..docs)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            let z = vec![0.0; docs];
            let (lo, hi) = paired_bootstrap(&[(&a, &n)], &[(&z, &n)], 2000, 7).unwrap();
            assert!(lo < 0.0 && hi > 0.0, "{docs}: {lo} {hi}");
            hi - lo
        };
        // sd of the mean = 1/sqrt(docs): the 95% width is about 3.92/sqrt(docs).
        let (w100, w400) = (width(100), width(400));
        assert!((w100 - 0.392).abs() < 0.06, "{w100}");
        assert!((w400 - 0.196).abs() < 0.03, "{w400}");
        assert!(paired_bootstrap(&[], &[], 10, 0).is_none());
    }

    #[test]
    fn verdicts_need_an_interval_that_excludes_zero_after_holm() {
        let below = paired_t(&[-0.3, -0.2, -0.25]);
        assert_eq!(verdict(&below, 0.01, "dynamic", "static"), "dynamic lower");
        assert_eq!(verdict(&below, 0.2, "dynamic", "static"), "inconclusive");
        let above = paired_t(&[0.3, 0.2, 0.25]);
        assert_eq!(verdict(&above, 0.01, "dynamic", "static"), "static lower");
        assert_eq!(
            verdict(&paired_t(&[0.1]), 0.0, "a", "b"),
            "one seed: no interval"
        );
    }

    /// McNemar by hand: 10 discordant, split 8 / 2: P(X <= 2) = (1 + 10 + 45) / 1024 = 56/1024,
    /// two-sided 112/1024 = 0.109375; split 9 / 1: (1 + 10) / 1024 x 2 = 0.021484375; an even
    /// split gives 1 (capped), no discordant pair gives 1.
    #[test]
    fn mcnemar_matches_the_binomial_by_hand() {
        assert!((mcnemar_exact(8, 2) - 112.0 / 1024.0).abs() < 1e-10);
        assert!((mcnemar_exact(2, 8) - 112.0 / 1024.0).abs() < 1e-10);
        assert!((mcnemar_exact(9, 1) - 22.0 / 1024.0).abs() < 1e-10);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // 0 / 6: 2 x (1/2)^6 = 0.03125.
        assert!((mcnemar_exact(0, 6) - 0.03125).abs() < 1e-10);
    }

    #[test]
    fn every_pair_when_none_is_declared() {
        let names = ["a", "b", "c"];
        let all = contrast_pairs(&[], &names);
        let want: Vec<[String; 2]> = [["b", "a"], ["c", "a"], ["c", "b"]]
            .iter()
            .map(|[x, y]| [x.to_string(), y.to_string()])
            .collect();
        assert_eq!(all, want);
        let declared = vec![["a".to_string(), "c".to_string()]];
        assert_eq!(contrast_pairs(&declared, &names), declared);
    }
}
