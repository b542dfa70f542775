//! Statistical tests. Every tolerance is five standard deviations of the statistic under the
//! stated sample size (two-sided false-alarm rate below 1e-6), computed in the test. The data
//! are fixed by seeds, so the tests are deterministic.

use mask_core::*;

const VOCAB: u32 = 30522;
const MASK: u32 = 103;

fn bert_vocab() -> VocabSpec {
    VocabSpec::new(VOCAB, MASK, vec![0, 100, 101, 102, 103])
}

/// `n` BERT-shaped rows of length `len`: `[CLS] ... [SEP]` then ~10% padding, ids away from
/// the special range, word ids grouping runs of 1-3 tokens.
struct Corpus {
    len: usize,
    ids: Vec<u32>,
    special: Vec<bool>,
    words: Vec<Option<u32>>,
}

fn corpus(n: usize, len: usize, seed: u64) -> Corpus {
    let mut rng = MaskRng::for_example(seed, 0, 0, 99);
    let (mut ids, mut special, mut words) = (vec![], vec![], vec![]);
    for _ in 0..n {
        let real = len - rng.below((len / 5) as u64) as usize; // 0-20% padding, ~10% on average
        let mut w = 0u32;
        let mut left_in_word = 0;
        for i in 0..len {
            let is_special = i == 0 || i >= real - 1;
            ids.push(if is_special {
                0
            } else {
                1000 + rng.below(29_000) as u32
            });
            special.push(is_special);
            if left_in_word == 0 {
                w += 1;
                left_in_word = 1 + rng.below(3);
            }
            left_in_word -= 1;
            words.push((!is_special).then_some(w));
        }
    }
    Corpus {
        len,
        ids,
        special,
        words,
    }
}

impl Corpus {
    fn rows(&self) -> usize {
        self.ids.len() / self.len
    }
    fn example(&self, r: usize) -> Example<'_> {
        let s = r * self.len..(r + 1) * self.len;
        Example::new(&self.ids[s.clone()], &self.special[s.clone()]).with_word_ids(&self.words[s])
    }
    fn eligible(&self) -> usize {
        self.special.iter().filter(|&&s| !s).count()
    }
}

fn policy(selection: SelectionConfig, rate: RateSchedule, c: CorruptionConfig) -> TokenMasker {
    MaskingConfig::new(bert_vocab())
        .with_selection(selection)
        .with_rate(rate)
        .with_corruption(c)
        .build()
        .unwrap()
}

fn count_chosen(p: &TokenMasker, c: &Corpus, step: u64) -> (usize, Vec<MaskedExample>) {
    let outs: Vec<MaskedExample> = (0..c.rows())
        .map(|r| {
            p.mask(&c.example(r), &MaskContext::new(7, 3, r as u64, step))
                .unwrap()
        })
        .collect();
    let n = outs.iter().map(|o| o.masked_positions().len()).sum();
    (n, outs)
}

/// `|observed - expected| < 5 sd` for a binomial count.
fn assert_binomial(what: &str, observed: usize, trials: usize, p: f64) {
    let mean = trials as f64 * p;
    let sd = (trials as f64 * p * (1.0 - p)).sqrt();
    let z = (observed as f64 - mean) / sd;
    assert!(
        z.abs() < 5.0,
        "{what}: observed {observed} of {trials}, expected {mean:.1} (p = {p}), z = {z:.2}"
    );
}

#[test]
fn bernoulli_rate_matches_mask_prob() {
    let c = corpus(4000, 128, 1);
    for p in [0.15, 0.4] {
        let pol = policy(
            SelectionConfig::Bernoulli {},
            RateSchedule::constant(p),
            CorruptionConfig::default(),
        );
        let (n, _) = count_chosen(&pol, &c, 0);
        assert_binomial("bernoulli selected fraction", n, c.eligible(), p);
    }
}

#[test]
fn rate_follows_the_schedule() {
    let c = corpus(2000, 128, 2);
    let pol = policy(
        SelectionConfig::Bernoulli {},
        RateSchedule::linear(0.3, 0.15, 100),
        CorruptionConfig::default(),
    );
    for (step, p) in [(0, 0.3), (50, 0.225), (100, 0.15), (1000, 0.15)] {
        let (n, _) = count_chosen(&pol, &c, step);
        assert_binomial("scheduled fraction", n, c.eligible(), p);
    }
}

#[test]
fn corruption_split_is_80_10_10() {
    let c = corpus(3000, 128, 3);
    let pol = policy(
        SelectionConfig::Bernoulli {},
        RateSchedule::constant(0.5),
        CorruptionConfig::default(),
    );
    let (chosen, outs) = count_chosen(&pol, &c, 0);
    let (mut masked, mut random, mut kept) = (0, 0, 0);
    for (r, o) in outs.iter().enumerate() {
        let ex = c.example(r);
        for pos in o.masked_positions() {
            match o.input_ids[pos] {
                MASK => masked += 1,
                id if id == ex.ids[pos] => kept += 1,
                _ => random += 1,
            }
        }
    }
    assert_eq!(masked + random + kept, chosen);
    // A random replacement equals the original with probability 1 / (allowed ids).
    let same = 1.0 / (VOCAB - 5) as f64;
    assert_binomial("mask share", masked, chosen, 0.8);
    assert_binomial("random share", random, chosen, 0.1 * (1.0 - same));
    assert_binomial("keep share", kept, chosen, 0.1 + 0.1 * same);
}

/// Wettig et al.'s "corrupt 40%, predict 15%": with `predict_prob = 0.375` the chosen positions
/// are those of `predict_prob = 1` (selection draws first, from the same stream), each is still
/// corrupted 80/10/10 whether labelled or not, and the labelled ones are a subset holding
/// 0.375 of them, 15% of the eligible tokens.
#[test]
fn predict_prob_labels_a_subset_of_the_corrupted_positions() {
    let c = corpus(3000, 128, 6);
    let all = policy(
        SelectionConfig::Bernoulli {},
        RateSchedule::constant(0.4),
        CorruptionConfig::default(),
    );
    let some = policy(
        SelectionConfig::Bernoulli {},
        RateSchedule::constant(0.4),
        CorruptionConfig {
            predict_prob: 0.375,
            ..CorruptionConfig::default()
        },
    );
    let (chosen, full) = count_chosen(&all, &c, 0);
    let (labelled, part) = count_chosen(&some, &c, 0);
    let mut masked = 0;
    for (r, (f, p)) in full.iter().zip(&part).enumerate() {
        let ex = c.example(r);
        let chosen_here = f.masked_positions();
        for pos in p.masked_positions() {
            assert!(
                chosen_here.contains(&pos),
                "row {r}: label at unchosen {pos}"
            );
            assert_eq!(p.labels[pos], ex.ids[pos] as i32);
        }
        for (pos, &id) in p.input_ids.iter().enumerate() {
            if !chosen_here.contains(&pos) {
                assert_eq!(id, ex.ids[pos], "row {r}: unchosen {pos} changed");
            } else if id == MASK {
                masked += 1;
            }
        }
    }
    assert_binomial("predicted share of chosen", labelled, chosen, 0.375);
    assert_binomial("mask share of all chosen", masked, chosen, 0.8);
    assert_binomial("predicted share of eligible", labelled, c.eligible(), 0.15);
}

#[test]
fn whole_word_rate_is_per_word() {
    let c = corpus(3000, 128, 4);
    let p = 0.2;
    let pol = policy(
        SelectionConfig::WholeWord {},
        RateSchedule::constant(p),
        CorruptionConfig::default(),
    );
    let (_, outs) = count_chosen(&pol, &c, 0);
    let (mut words, mut chosen_words) = (0, 0);
    for (r, o) in outs.iter().enumerate() {
        let ex = c.example(r);
        let w = ex.word_ids.unwrap();
        for i in 0..ex.len() {
            let starts_word = !ex.special_mask[i] && (i == 0 || w[i - 1] != w[i]);
            if starts_word {
                words += 1;
                chosen_words += (o.labels[i] != IGNORE_INDEX) as usize;
            }
        }
    }
    assert_binomial("whole-word fraction of words", chosen_words, words, p);
}

#[test]
fn span_budget_matches_mask_prob_in_expectation() {
    let c = corpus(3000, 128, 5);
    let p = 0.15;
    let pol = policy(
        SelectionConfig::Span {
            geometric_p: 0.2,
            min_span: 1,
            max_span: 10,
            anchor: SpanAnchor::Token,
        },
        RateSchedule::constant(p),
        CorruptionConfig::default(),
    );
    let (n, _) = count_chosen(&pol, &c, 0);
    // Each row masks floor(p * n_row + u) tokens: mean p * n_row, variance <= 1/4.
    let expected = p * c.eligible() as f64;
    let sd = (c.rows() as f64 / 4.0).sqrt();
    assert!(
        (n as f64 - expected).abs() < 5.0 * sd,
        "span masked {n}, expected {expected:.1} +- {:.1}",
        5.0 * sd
    );
}

/// Span lengths against the truncated geometric pmf, for SpanBERT's setting and for `p` on
/// both of `rand_distr::Geometric`'s code paths (a plain loop for `p >= 2/3`, Bringmann and
/// Friedrich's method below), with an offset support.
#[test]
fn span_lengths_follow_the_truncated_geometric() {
    for (p, min_span, max_span) in [(0.2, 1u32, 10u32), (0.7, 1, 4), (0.03, 2, 40)] {
        let sel = SpanSelector::new(p, min_span, max_span, SpanAnchor::Token).unwrap();
        let q: f64 = 1.0 - p;
        let m = (max_span - min_span + 1) as usize;
        let z: f64 = 1.0 - q.powi(m as i32);
        let pmf: Vec<f64> = (0..m).map(|k| p * q.powi(k as i32) / z).collect();
        let length = |k: usize| (min_span as usize + k) as f64;
        let mean: f64 = pmf.iter().enumerate().map(|(k, w)| length(k) * w).sum();
        let var: f64 = pmf
            .iter()
            .enumerate()
            .map(|(k, w)| (length(k) - mean).powi(2) * w)
            .sum();
        assert!((mean - sel.mean_length()).abs() < 1e-12);
        let n = 200_000;
        let mut rng = MaskRng::for_example(11, 0, 0, 0);
        let mut hist = vec![0usize; m];
        let mut sum = 0u64;
        for _ in 0..n {
            let l = sel.sample_length(&mut rng);
            assert!((min_span..=max_span).contains(&l));
            hist[(l - min_span) as usize] += 1;
            sum += l as u64;
        }
        let observed_mean = sum as f64 / n as f64;
        let tol = 5.0 * (var / n as f64).sqrt();
        assert!(
            (observed_mean - mean).abs() < tol,
            "p {p}: mean span length {observed_mean:.4}, expected {mean:.4} +- {tol:.4}"
        );
        for (k, &h) in hist.iter().enumerate() {
            assert_binomial(&format!("p {p}, span length {}", length(k)), h, n, pmf[k]);
        }
    }
}

#[test]
fn per_unit_corruption_decides_once_per_span_at_the_split_rate() {
    let corruption = CorruptionConfig {
        per_unit: true,
        ..CorruptionConfig::default()
    }
    .build(&bert_vocab())
    .unwrap();
    // 400 rows of 200 tokens, each with 40 disjoint spans of length 3 (gaps of 2).
    let ids: Vec<u32> = (0..200).map(|i| 1000 + i).collect();
    let spans: Vec<Span> = (0..40)
        .map(|k| Span {
            start: 5 * k,
            len: 3,
        })
        .collect();
    let (mut units, mut masked, mut random, mut kept) = (0, 0, 0, 0);
    for row in 0..400 {
        let mut out = ids.clone();
        let mut labels = vec![IGNORE_INDEX; ids.len()];
        let mut rng = MaskRng::for_example(5, 0, row, 0);
        corruption.apply(&ids, &spans, &mut rng, &mut out, &mut labels);
        for s in &spans {
            let r = s.range();
            units += 1;
            if r.clone().all(|p| out[p] == MASK) {
                masked += 1;
            } else if r.clone().all(|p| out[p] == ids[p]) {
                kept += 1;
            } else {
                assert!(
                    r.clone().all(|p| out[p] != MASK),
                    "span mixes [MASK] with others"
                );
                random += 1;
            }
        }
    }
    assert_binomial("masked spans", masked, units, 0.8);
    assert_binomial("random spans", random, units, 0.1);
    assert_binomial("kept spans", kept, units, 0.1);
}
