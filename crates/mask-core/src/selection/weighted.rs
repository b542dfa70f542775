//! Proportional selection: choose positions with inclusion probabilities proportional to
//! per-position weights, capped at 1, with a fixed expected count (the masking budget).
//!
//! This is the sampler behind the content-aware policies (IDF-weighted, tag-weighted and the
//! model-based ones). Informative tokens are masked more often than frequent ones, as in
//! InforMask (Sadeq et al. 2022), while the expected number of masks stays `mask_prob * n`.
//!
//! 1. [`inclusion_probabilities`]: `pi_i = min(1, c * w_i)`, `c` chosen so that `sum pi =
//!    budget` (water-filling: tokens whose scaled weight reaches 1 are capped and the rest of the
//!    budget is spread over the others).
//! 2. `sample_proportional`: systematic (Madow 1949) sampling over a random permutation of the
//!    positive-weight positions: with one uniform `u`, position `i` is chosen when an integer
//!    point `u + k` falls in its interval `[S_{i-1}, S_i)` of the cumulated `pi`. Each interval
//!    has length `pi_i <= 1`, so `P(i chosen) = pi_i` exactly and the number chosen is
//!    `floor(budget)` or `ceil(budget)`. Capped positions (`pi_i = 1`) are taken directly, so
//!    rounding in the cumulated sums can never drop them.

use super::SelectScratch;
use crate::example::Span;
use crate::rng::MaskRng;

/// Inclusion probabilities `pi_i = min(1, c * w_i)` with `sum pi = budget` (water-filling);
/// `w_i <= 0` (or not finite) gives `pi_i = 0`. The budget is clamped to `[0, m]`, `m` being the
/// number of positive weights. `out` is cleared and gets one entry per weight.
pub fn inclusion_probabilities(weights: &[f64], budget: f64, out: &mut Vec<f64>) {
    out.clear();
    let positive = |w: f64| w.is_finite() && w > 0.0;
    let m = weights.iter().filter(|&&w| positive(w)).count();
    let budget = if budget.is_finite() {
        budget.clamp(0.0, m as f64)
    } else {
        0.0
    };
    if m == 0 || budget <= 0.0 {
        out.resize(weights.len(), 0.0);
        return;
    }
    if budget >= m as f64 {
        out.extend(weights.iter().map(|&w| if positive(w) { 1.0 } else { 0.0 }));
        return;
    }
    // Markers while water-filling: 0 = zero weight, 1 = capped, -1 = free.
    out.extend(
        weights
            .iter()
            .map(|&w| if positive(w) { -1.0 } else { 0.0 }),
    );
    let mut rest = budget;
    let c = loop {
        let free_sum: f64 = weights
            .iter()
            .zip(out.iter())
            .filter(|(_, &p)| p < 0.0)
            .map(|(&w, _)| w)
            .sum();
        let c = rest / free_sum;
        let mut newly_capped = 0usize;
        for (&w, p) in weights.iter().zip(out.iter_mut()) {
            if *p < 0.0 && c * w >= 1.0 {
                *p = 1.0;
                newly_capped += 1;
            }
        }
        if newly_capped == 0 {
            break c;
        }
        rest -= newly_capped as f64;
        // rest > 0 always: fewer than `budget < m` positions can be capped with `c * w >= 1`
        // while the free ones keep a positive share; guard against rounding anyway.
        if rest <= 0.0 {
            break 0.0;
        }
    };
    for (&w, p) in weights.iter().zip(out.iter_mut()) {
        if *p < 0.0 {
            *p = (c * w).min(1.0);
        }
    }
}

/// The selection step shared by the weighted selectors: `fill` writes one weight per position
/// (0 for special/padding) into the scratch weight buffer, then [`sample_proportional`] draws.
pub(crate) fn select_weighted(
    mask_prob: f64,
    rng: &mut MaskRng,
    scratch: &mut SelectScratch,
    out: &mut Vec<Span>,
    fill: impl FnOnce(&mut Vec<f64>),
) {
    let mut weights = std::mem::take(&mut scratch.weights);
    weights.clear();
    fill(&mut weights);
    sample_proportional(&weights, mask_prob, rng, scratch, out);
    scratch.weights = weights;
}

/// Chooses positions with inclusion probabilities [`inclusion_probabilities`]`(weights,
/// mask_prob * m)` (`m` = number of positive weights) and `floor` or `ceil` of that budget of
/// them: systematic (Madow) sampling over a random permutation of the positions with `w_i > 0`.
/// `weights[i] == 0` for special/padding positions. Emits ascending single-token spans into
/// `out` (cleared first).
pub(crate) fn sample_proportional(
    weights: &[f64],
    mask_prob: f64,
    rng: &mut MaskRng,
    scratch: &mut SelectScratch,
    out: &mut Vec<Span>,
) {
    out.clear();
    let probs = &mut scratch.probs;
    let m = weights
        .iter()
        .filter(|&&w| w.is_finite() && w > 0.0)
        .count();
    if m == 0 || mask_prob <= 0.0 || !mask_prob.is_finite() {
        return;
    }
    inclusion_probabilities(weights, mask_prob.min(1.0) * m as f64, probs);
    let chosen = &mut scratch.positions;
    chosen.clear();
    // Free (uncapped, positive) positions, in a uniformly random order.
    let free = &mut scratch.spans;
    free.clear();
    for (i, &p) in probs.iter().enumerate() {
        if p >= 1.0 {
            chosen.push(i as u32);
        } else if p > 0.0 {
            free.push(Span {
                start: i as u32,
                len: 1,
            });
        }
    }
    for j in (1..free.len()).rev() {
        let r = rng.below(j as u64 + 1) as usize;
        free.swap(j, r);
    }
    let u = rng.next_f64();
    // Points u, u + 1, u + 2, ...: position i is chosen when one falls in [S_{i-1}, S_i).
    let mut cum = 0.0f64;
    let mut before = (cum - u).ceil();
    for s in free.iter() {
        cum += probs[s.start as usize];
        let after = (cum - u).ceil();
        if after > before {
            chosen.push(s.start);
        }
        before = after;
    }
    chosen.sort_unstable();
    out.extend(chosen.iter().map(|&p| Span { start: p, len: 1 }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pis(w: &[f64], budget: f64) -> Vec<f64> {
        let mut out = vec![];
        inclusion_probabilities(w, budget, &mut out);
        out
    }

    #[test]
    fn probabilities_sum_to_the_budget_and_cap_at_one() {
        let w = [1.0, 2.0, 0.0, 50.0, 3.0, 4.0, 0.5, 100.0, 1.0, 0.0];
        for budget in [0.3, 1.0, 1.5, 2.5, 4.0, 7.9, 8.0] {
            let p = pis(&w, budget);
            let sum: f64 = p.iter().sum();
            assert!((sum - budget).abs() < 1e-9, "budget {budget}: sum {sum}");
            assert!(p.iter().all(|&x| (0.0..=1.0).contains(&x)), "{p:?}");
            assert_eq!(p[2], 0.0);
            assert_eq!(p[9], 0.0);
            // Uncapped probabilities are proportional to the weights.
            let free: Vec<(f64, f64)> = w
                .iter()
                .zip(&p)
                .filter(|(_, &x)| x > 0.0 && x < 1.0)
                .map(|(&w, &x)| (w, x))
                .collect();
            for pair in free.windows(2) {
                let (r0, r1) = (pair[0].1 / pair[0].0, pair[1].1 / pair[1].0);
                assert!((r0 - r1).abs() < 1e-9 * r0.max(r1), "{p:?}");
            }
        }
        // Heavy weights cap at 1 and the rest of the budget is spread over the others.
        let p = pis(&w, 2.5);
        assert_eq!(p[3], 1.0);
        assert_eq!(p[7], 1.0);
        // Budgets at or above the number of positive weights take everything.
        assert_eq!(pis(&w, 9.0).iter().filter(|&&x| x == 1.0).count(), 8);
        assert!(pis(&w, 0.0).iter().all(|&x| x == 0.0));
        assert!(pis(&[0.0, 0.0], 1.0).iter().all(|&x| x == 0.0));
    }

    #[test]
    fn sampler_matches_inclusion_probabilities_and_count() {
        // 40 positions, weights spanning two orders of magnitude, a few zeros (specials).
        let mut w: Vec<f64> = (0..40).map(|i| 0.2 + ((i * 7) % 13) as f64).collect();
        w[0] = 0.0;
        w[39] = 0.0;
        w[17] = 0.0;
        w[5] = 400.0; // capped
        let mask_prob = 0.2;
        let m = w.iter().filter(|&&x| x > 0.0).count();
        let budget = mask_prob * m as f64;
        let p = pis(&w, budget);
        let draws = 40_000usize;
        let mut hits = vec![0usize; w.len()];
        let mut scratch = SelectScratch::default();
        let mut out = vec![];
        for d in 0..draws {
            let mut rng = MaskRng::for_example(3, d as u64, 11, 0);
            sample_proportional(&w, mask_prob, &mut rng, &mut scratch, &mut out);
            let k = out.len();
            assert!(
                k == budget.floor() as usize || k == budget.ceil() as usize,
                "count {k} for budget {budget}"
            );
            assert!(out.windows(2).all(|s| s[0].start < s[1].start));
            for s in &out {
                assert_eq!(s.len, 1);
                hits[s.start as usize] += 1;
            }
        }
        for i in 0..w.len() {
            let f = hits[i] as f64 / draws as f64;
            if p[i] == 0.0 {
                assert_eq!(hits[i], 0, "zero weight chosen at {i}");
                continue;
            }
            let sd = (p[i] * (1.0 - p[i]) / draws as f64).sqrt();
            assert!(
                (f - p[i]).abs() <= 6.0 * sd + 1e-12,
                "position {i}: frequency {f} vs pi {} (6 sd = {})",
                p[i],
                6.0 * sd
            );
        }
        assert_eq!(hits[5], draws);
    }

    #[test]
    fn degenerate_inputs_choose_nothing_or_everything() {
        let mut scratch = SelectScratch::default();
        let mut out = vec![];
        let mut rng = MaskRng::from_state(1);
        sample_proportional(&[0.0; 5], 0.5, &mut rng, &mut scratch, &mut out);
        assert!(out.is_empty());
        sample_proportional(&[1.0; 5], 0.0, &mut rng, &mut scratch, &mut out);
        assert!(out.is_empty());
        sample_proportional(&[1.0, 0.0, 2.0], 1.0, &mut rng, &mut scratch, &mut out);
        assert_eq!(out.iter().map(|s| s.start).collect::<Vec<_>>(), vec![0, 2]);
    }
}
