//! The adaptive selectors' arithmetic value by value (mutation testing found it was tested only
//! through its effect): loss-aware moments and weights from hand-computed EMAs, and the learned
//! scorer's predictions, objective and weights from the network written out in the test. Plus
//! the accessors and small boundaries the mutation run found unread.

use std::sync::Arc;

use mask_core::*;

/// `(1 - mix) * k * softmax(scores) + mix` over the eligible (`Some`) positions, 0 elsewhere:
/// the module docs' weight formula, written independently of the library.
fn mixed_softmax(scores: &[Option<f64>], mix: f64) -> Vec<f64> {
    let k = scores.iter().flatten().count() as f64;
    let max = scores
        .iter()
        .flatten()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let z: f64 = scores.iter().flatten().map(|s| (s - max).exp()).sum();
    scores
        .iter()
        .map(|s| s.map_or(0.0, |s| (1.0 - mix) * k * (s - max).exp() / z + mix))
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{i}: {g} vs {w}");
    }
}

/// Decay 1/2 makes the debiased EMAs exact in binary: feedback ids 0, 1 (losses 1, 3) then id 1
/// (loss 5), with an infinite loss, an out-of-range position and an out-of-vocabulary id
/// ignored.
///
/// - id 0: m = 1/2, z = 1/2, d = 1. id 1: m = 3/2 -> 13/4, z = 1/2 -> 3/4, d = 13/3.
/// - global: m = 1/2, 7/4, 27/8 and z = 1/2, 3/4, 7/8: mean = 27/7; of squares
///   m = 1/2, 19/4, 119/8: 17; sd = sqrt(17 - (27/7)^2) = sqrt(104) / 7.
#[test]
fn loss_aware_state_and_weights_by_hand() {
    let mut sel = LossAwareSelector::new(4, 0.5, 2.0, 0.2).unwrap();
    assert_eq!(sel.vocab_size(), 4);
    sel.observe(&[0, 1, 2], &[0, 1, 2, 5], &[1.0, 3.0, f32::INFINITY, 2.0]);
    sel.observe(&[1, 7], &[0, 1], &[5.0, 1.0]);
    assert_eq!(sel.total_observations(), 3);
    assert_eq!(
        [0, 1, 2, 3].map(|id| sel.observations(id)),
        [1, 2, 0, 0],
        "per-id counts"
    );
    let (mean, sd) = sel.loss_moments().unwrap();
    let (want_mean, want_sd) = (27.0 / 7.0, 104f64.sqrt() / 7.0);
    assert!((mean - want_mean).abs() < 1e-12, "{mean}");
    assert!((sd - want_sd).abs() < 1e-12, "{sd}");
    let d = [1.0, 13.0 / 3.0, want_mean, want_mean];
    for (id, want) in d.iter().enumerate() {
        assert!((sel.difficulty(id as u32) - want).abs() < 1e-12, "id {id}");
    }
    // Weights of ids [0, 1, 2, 3] with position 2 special: softmax of d / (tau sd), tau = 2.
    let (ids, special) = ([0, 1, 2, 3], [false, false, true, false]);
    let mut w = vec![];
    sel.weights(&Example::new(&ids, &special), &mut w);
    let scores: Vec<Option<f64>> = (0..4)
        .map(|i| (!special[i]).then(|| d[ids[i] as usize] / (2.0 * want_sd)))
        .collect();
    assert_close(&w, &mixed_softmax(&scores, 0.2), 1e-12);
    // A low temperature spreads the scores over ~2,300 nats: the softmax must subtract the
    // largest score, wherever it sits, or exp overflows.
    let mut sharp = LossAwareSelector::new(4, 0.5, 1e-3, 0.2).unwrap();
    sharp.observe(&[0, 1, 2], &[0, 1], &[1.0, 3.0]);
    sharp.observe(&[1], &[0], &[5.0]);
    sharp.weights(&Example::new(&[1, 0], &[false, false]), &mut w);
    assert_close(&w, &[0.8 * 2.0 + 0.2, 0.2], 1e-12);
}

/// The learned scorer, written out: `x = [E[prev], E[id], E[next], i / (n - 1), 1]`,
/// `h = tanh(W1 x)`, `y = w2 . h + b2`, with row `vocab` for a missing or unknown neighbour.
struct Scorer {
    vocab: usize,
    d: usize,
    hidden: usize,
    p: Vec<f64>,
}

impl Scorer {
    fn of(sel: &LearnedSelector, d: usize, hidden: usize) -> Self {
        let vocab = sel.vocab_size() as usize;
        let p = sel.parameters().to_vec();
        assert_eq!(p.len(), (vocab + 1) * d + hidden * (3 * d + 2) + hidden + 1);
        Self {
            vocab,
            d,
            hidden,
            p,
        }
    }

    fn predict(&self, ids: &[u32], i: usize) -> f64 {
        let (v, d, ni) = (self.vocab, self.d, 3 * self.d + 2);
        let row = |j: Option<usize>| match j.and_then(|j| ids.get(j)) {
            Some(&id) if (id as usize) < v => id as usize,
            _ => v,
        };
        let mut x = vec![];
        for r in [row(i.checked_sub(1)), row(Some(i)), row(Some(i + 1))] {
            x.extend_from_slice(&self.p[r * d..(r + 1) * d]);
        }
        let n = ids.len();
        x.push(if n > 1 {
            i as f64 / (n - 1) as f64
        } else {
            0.0
        });
        x.push(1.0);
        let w1 = (v + 1) * d;
        let w2 = w1 + self.hidden * ni;
        let mut y = self.p[w2 + self.hidden];
        for j in 0..self.hidden {
            let z: f64 = (0..ni).map(|k| self.p[w1 + j * ni + k] * x[k]).sum();
            y += self.p[w2 + j] * z.tanh();
        }
        y
    }
}

#[test]
fn learned_scorer_predictions_objective_and_weights_by_hand() {
    let (d, hidden) = (3, 5);
    let sel = LearnedSelector::new(6, d as u32, hidden as u32, 0.1, 0.5, 0.25, 7).unwrap();
    assert_eq!(sel.vocab_size(), 6);
    let scorer = Scorer::of(&sel, d, hidden);
    // First, middle and last positions, an unknown neighbour (id 9) and a one-token sequence.
    let ids = [2u32, 9, 4, 0, 5];
    for i in 0..ids.len() {
        let (got, want) = (sel.predict(&ids, i).unwrap(), scorer.predict(&ids, i));
        assert!((got - want).abs() < 1e-12, "position {i}: {got} vs {want}");
    }
    assert!((sel.predict(&[3], 0).unwrap() - scorer.predict(&[3], 0)).abs() < 1e-12);
    assert_eq!(sel.predict(&ids, ids.len()), None);
    // Objective: mean of 1/2 (y - loss)^2 over usable pairs only (out-of-vocabulary ids 9 and
    // 6 = vocab_size at positions 1 and 5, a NaN loss and an out-of-range position are dropped).
    let ids = [2u32, 9, 4, 0, 5, 6];
    let (positions, losses) = (
        [0u32, 1, 2, 3, 5, 8],
        [2.0f32, 1.0, f32::NAN, 4.5, 0.5, 3.0],
    );
    let want = [(0usize, 2.0), (3, 4.5)]
        .iter()
        .map(|&(i, l)| 0.5 * (scorer.predict(&ids, i) - l).powi(2))
        .sum::<f64>()
        / 2.0;
    let got = sel.objective(&ids, &positions, &losses);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // Weights: softmax of y / temperature over the eligible positions, mixed 3:1.
    let ids = [2u32, 9, 4, 0, 5];
    let special = [false, true, false, false, true];
    let mut w = vec![];
    sel.weights(&Example::new(&ids, &special), &mut w);
    let scores: Vec<Option<f64>> = (0..ids.len())
        .map(|i| (!special[i]).then(|| scorer.predict(&ids, i) / 0.5))
        .collect();
    assert_close(&w, &mixed_softmax(&scores, 0.25), 1e-12);
    sel.weights(&Example::new(&[], &[]), &mut w);
    assert!(w.is_empty());
}

/// Accessors report what was configured; a selector wrapped in [`AnySelector`] still checks
/// its example.
#[test]
fn accessors_and_delegated_checks() {
    let items = ItemMaskingConfig {
        pad_id: 102,
        ..ItemMaskingConfig::new(100)
    }
    .with_mode(ItemMaskMode::Cloze {})
    .with_regime(Regime::Static { dupe_factor: 2 })
    .build()
    .unwrap();
    assert_eq!(items.pad_id(), 102);
    assert_eq!(items.mode(), ItemMaskMode::Cloze {});
    assert_eq!(items.regime(), Regime::Static { dupe_factor: 2 });
    let last = ItemMaskingConfig::new(100)
        .with_mode(ItemMaskMode::MaskLast {})
        .build()
        .unwrap();
    assert_eq!(last.mode(), ItemMaskMode::MaskLast {});
    assert_eq!(last.regime(), Regime::Dynamic {});

    let stats = TokenStats::from_docs(10, [vec![1u32, 2, 3], vec![1, 4]]).unwrap();
    assert_eq!(IdfSelector::new(&stats, 0.5).unwrap().exponent(), 0.5);
    for anchor in [SpanAnchor::Token, SpanAnchor::Word] {
        assert_eq!(
            SpanSelector::new(0.2, 1, 10, anchor).unwrap().anchor(),
            anchor
        );
    }

    let tagged = AnySelector::TagWeighted(TagWeightedSelector::new(Arc::new(
        TagWeights::new(vec![1.0, 2.0]).unwrap(),
    )));
    let (ids, special) = ([5u32, 6], [false, false]);
    let untagged = Example::new(&ids, &special);
    assert!(matches!(
        tagged.check_example(&untagged),
        Err(MaskError::MissingInput { input: "tags", .. })
    ));
    let tags = [1u16, 0];
    assert!(tagged.check_example(&untagged.with_tags(&tags)).is_ok());
}

/// Example lengths: a non-empty example is not empty; tags must match the ids in length.
#[test]
fn example_lengths() {
    let (ids, special) = ([1u32, 2, 3], [false; 3]);
    let ex = Example::new(&ids, &special);
    assert!(!ex.is_empty());
    assert!(Example::new(&[], &[]).is_empty());
    assert!(ex.validate(10).is_ok());
    let (short, right) = ([0u16, 1], [0u16, 1, 2]);
    assert!(matches!(
        ex.with_tags(&short).validate(10),
        Err(MaskError::LengthMismatch {
            field: "tags",
            expected: 3,
            got: 2
        })
    ));
    assert!(ex.with_tags(&right).validate(10).is_ok());
}

/// The largest patch grid is 2^31 - 1 patches (the masker's counts stay in `u32` with room for
/// the hidden half); one more is refused by name. Building allocates nothing per patch.
#[test]
fn largest_patch_grid() {
    let random = PatchSelectionConfig::Random { mask_ratio: 0.5 };
    assert!(PatchMaskingConfig::new(i32::MAX as u32, 1, random)
        .build()
        .is_ok());
    assert!(matches!(
        PatchMaskingConfig::new(1 << 16, 1 << 15, random).build(),
        Err(MaskError::InvalidValue {
            field: "grid_h",
            ..
        })
    ));
}

/// All losses equal (standard deviation 0): uniform weights, also when the difficulty is 0
/// (no `0 / 0` turning an eligible position into an ineligible one).
#[test]
fn loss_aware_with_equal_losses_is_uniform() {
    let mut sel = LossAwareSelector::new(3, 0.9, 1.0, 0.2).unwrap();
    sel.observe(&[0, 1], &[0, 1], &[0.0, 0.0]);
    assert_eq!(sel.loss_moments(), Some((0.0, 0.0)));
    let mut w = vec![];
    sel.weights(&Example::new(&[0, 1, 2], &[false, false, false]), &mut w);
    assert_close(&w, &[1.0, 1.0, 1.0], 1e-12);
}

/// Names identify selectors in errors and checkpoints.
#[test]
fn selector_names() {
    assert_eq!(
        SpanSelector::new(0.2, 1, 10, SpanAnchor::Token)
            .unwrap()
            .name(),
        "span"
    );
    let docs: Vec<Vec<u32>> = (0..10).map(|_| vec![1, 2, 3, 4]).collect();
    let table = PmiTable::build(&docs, &PmiTableConfig::default()).unwrap();
    let pmi = PmiSpanSelector::new(Arc::new(table), 4).unwrap();
    assert_eq!(pmi.name(), "pmi_span");
}

/// More accessors and config boundaries: the item masker's serde default rate (BERT4Rec's
/// 0.2), a masker's schedule and patch count, the fixed-count cap, tag weights never empty,
/// and BEiT aspect ratios above 1 refused.
#[test]
fn more_accessors_and_boundaries() {
    let items: ItemMaskingConfig = toml::from_str("n_items = 10\nmask_id = 11").unwrap();
    assert_eq!(items.mask_prob, 0.2);
    let rate = RateSchedule::Constant { mask_prob: 0.3 };
    let policy = MaskingConfig::new(VocabSpec::new(100, 3, vec![0, 1, 2, 3]))
        .with_rate(rate)
        .build()
        .unwrap();
    assert_eq!(policy.schedule(), &rate);
    let random = PatchSelectionConfig::Random { mask_ratio: 0.75 };
    let masker = PatchMaskingConfig::new(6, 7, random).build().unwrap();
    assert_eq!(masker.n_patches(), 42);
    assert_eq!(FixedCountSelector::new(20).unwrap().max_predictions(), 20);
    assert!(!TagWeights::new(vec![1.0]).unwrap().is_empty());
    let block = |min_aspect| PatchSelectionConfig::BlockWise {
        mask_ratio: 0.4,
        min_block: 4,
        min_aspect,
    };
    assert!(PatchMaskingConfig::new(14, 14, block(1.0)).build().is_ok());
    for bad in [1.5, 0.0, f64::INFINITY] {
        assert!(matches!(
            PatchMaskingConfig::new(14, 14, block(bad)).build(),
            Err(MaskError::InvalidValue {
                field: "min_aspect",
                ..
            })
        ));
    }
}

/// Patch masks are equal only when visible, hidden and restore orders all agree.
#[test]
fn patch_masks_compare_every_field() {
    let masker = PatchMaskingConfig::new(4, 4, PatchSelectionConfig::Random { mask_ratio: 0.5 })
        .build()
        .unwrap();
    let a = masker.mask(1, 0, 0);
    assert_eq!(a, masker.mask(1, 0, 0));
    assert_ne!(a, masker.mask(1, 0, 1));
    for change in 0..3 {
        let mut c = a.clone();
        match change {
            0 => c.keep.swap(0, 1),
            1 => c.masked.swap(0, 1),
            _ => c.restore.swap(0, 1),
        }
        assert_ne!(a, c, "field {change}");
    }
}

/// Token statistics whose document frequency exceeds the number of documents are refused even
/// when the frequency is within the token's count.
#[test]
fn token_stats_refuse_doc_frequency_above_n_docs() {
    let stats = TokenStats::from_docs(4, [vec![1u32, 1, 1, 2]]).unwrap();
    let mut bytes = stats.to_bytes();
    assert!(TokenStats::from_bytes(&bytes).is_ok());
    bytes[12..20].copy_from_slice(&0u64.to_le_bytes()); // n_docs = 0 < df[1] = 1 <= count 3
    assert!(matches!(
        TokenStats::from_bytes(&bytes),
        Err(MaskError::State {
            policy: "token_stats",
            ..
        })
    ));
}

/// Names and needs the policies report, and the corruption's and item masker's mask ids.
#[test]
fn names_needs_and_mask_ids() {
    assert_eq!(FixedCountSelector::new(20).unwrap().name(), "fixed_count");
    let stats = TokenStats::from_docs(10, [vec![1u32, 2, 3], vec![1, 4]]).unwrap();
    assert_eq!(IdfSelector::new(&stats, 1.0).unwrap().name(), "idf");
    let word = SpanSelector::new(0.2, 1, 10, SpanAnchor::Word).unwrap();
    let token = SpanSelector::new(0.2, 1, 10, SpanAnchor::Token).unwrap();
    assert!(word.needs_word_ids() && !token.needs_word_ids());
    let vocab = VocabSpec::new(100, 7, vec![0, 7]);
    let corruption = CorruptionConfig::default().build(&vocab).unwrap();
    assert_eq!(corruption.mask_token_id(), 7);
    let items = ItemMaskingConfig::new(100).build().unwrap();
    assert_eq!(items.mask_id(), 101);
}

/// A token masker reports its regime; model-based selectors refuse vocabularies above 2^26
/// before allocating any state.
#[test]
fn regime_accessor_and_vocabulary_cap() {
    let policy = MaskingConfig::new(VocabSpec::new(100, 3, vec![0, 3]))
        .with_regime(Regime::Static { dupe_factor: 3 })
        .build()
        .unwrap();
    assert_eq!(policy.regime(), Regime::Static { dupe_factor: 3 });
    let too_big = (1u32 << 26) + 1;
    assert!(matches!(
        LossAwareSelector::new(too_big, 0.99, 1.0, 0.2),
        Err(MaskError::InvalidValue {
            field: "vocab_size",
            ..
        })
    ));
    assert!(matches!(
        LearnedSelector::new(too_big, 1, 4, 0.05, 1.0, 0.2, 0),
        Err(MaskError::InvalidValue {
            field: "vocab_size",
            ..
        })
    ));
}

/// Rate schedules by hand: a warm-up from 0.1 to 0.4 over 10 steps, then linear or cosine decay
/// to 0.1 over 100 steps.
#[test]
fn rate_schedules_by_hand() {
    let linear = RateSchedule::Linear {
        start: 0.4,
        end: 0.1,
        decay_steps: 100,
        warmup_steps: 10,
        warmup_start: Some(0.1),
    };
    for (step, want) in [
        (0, 0.1),
        (5, 0.25),
        (10, 0.4),
        (60, 0.25),
        (110, 0.1),
        (500, 0.1),
    ] {
        let got = linear.rate_at(step);
        assert!(
            (got - want).abs() < 1e-12,
            "linear at {step}: {got} vs {want}"
        );
    }
    let cosine = RateSchedule::Cosine {
        start: 0.4,
        end: 0.1,
        decay_steps: 100,
        warmup_steps: 10,
        warmup_start: Some(0.1),
    };
    // Cosine: 0.4 - 0.3 * (1 - cos(pi t)) / 2; at t = 1/4 that is 0.4 - 0.15 (1 - sqrt(1/2)).
    let quarter = 0.4 - 0.15 * (1.0 - 0.5f64.sqrt());
    for (step, want) in [(5, 0.25), (35, quarter), (60, 0.25), (110, 0.1)] {
        let got = cosine.rate_at(step);
        assert!(
            (got - want).abs() < 1e-12,
            "cosine at {step}: {got} vs {want}"
        );
    }
}

/// `Corruption::config` and `PmiTable::config` give back what they were built from (not a
/// default); `is_empty` is true exactly for a table without n-grams.
#[test]
fn corruption_and_pmi_accessors() {
    let vocab = VocabSpec::new(100, 3, vec![0, 1, 2, 3]);
    let cfg = CorruptionConfig {
        mask_replace_prob: 0.5,
        random_replace_prob: 0.25,
        per_unit: true,
        predict_prob: 0.5,
    };
    assert_eq!(cfg.build(&vocab).unwrap().config(), &cfg);

    let pmi_cfg = PmiTableConfig {
        max_ngram: 3,
        min_count: 2,
        top_k: 7,
        special_ids: vec![0],
    };
    // "5 6" and "5 6 7" repeat in every document: both enter the table.
    let docs: Vec<Vec<u32>> = (0..6u32).map(|i| vec![5, 6, 7, 10 + i, 20 + i]).collect();
    let table = PmiTable::build(&docs, &pmi_cfg).unwrap();
    assert_eq!(table.config(), &pmi_cfg);
    assert!(!table.is_empty());
    assert_ne!(table.len(), 0);
    // Nothing occurs twice: no n-gram reaches min_count.
    let unique: Vec<Vec<u32>> = (0..6u32).map(|i| vec![10 + 2 * i, 11 + 2 * i]).collect();
    let empty = PmiTable::build(&unique, &pmi_cfg).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
}

/// Every truncation of a valid selector state is refused with [`MaskError::State`], never a
/// panic: cutting inside the version field (after an intact magic) leaves fewer bytes than the
/// reader needs at a non-zero position, which a length check written as `len + pos < n`
/// instead of `len - pos < n` would let through to an out-of-range slice.
#[test]
fn every_truncated_state_is_a_typed_error() {
    let vocab = VocabSpec::new(16, 3, vec![0, 1, 2, 3]);
    let policy = MaskingConfig::new(vocab)
        .with_selection(SelectionConfig::LossAware {
            ema_decay: 0.5,
            temperature: 1.0,
            uniform_mix: 0.2,
        })
        .build()
        .unwrap();
    let state = policy.selector().state_bytes().unwrap();
    assert!(state.len() > 8, "magic + version + body");
    for cut in 0..state.len() {
        let mut fresh = policy.clone();
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fresh.selector_mut().load_state_bytes(&state[..cut])
        }));
        match got {
            Ok(Err(MaskError::State { .. })) => {}
            Ok(other) => panic!("{cut} of {} bytes: {other:?}", state.len()),
            Err(_) => panic!("{cut} of {} bytes: panicked", state.len()),
        }
    }
    let mut fresh = policy.clone();
    fresh.selector_mut().load_state_bytes(&state).unwrap();
}
