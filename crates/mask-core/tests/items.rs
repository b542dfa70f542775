//! Item masking (BERT4Rec's Cloze task and mask-last): invariants under random sequences
//! (proptest), the masking rate against its exact expectation with a tolerance of six binomial
//! standard deviations, regimes, serde and errors.

use mask_core::*;
use proptest::prelude::*;
use proptest::test_runner::Config;

const N_ITEMS: u32 = 50;
const MASK: u32 = N_ITEMS + 1;

/// A right-padded item sequence: `len` positions, the first `real` are items.
#[derive(Debug, Clone)]
struct Seq {
    ids: Vec<u32>,
    pad: Vec<bool>,
}

impl Seq {
    fn view(&self) -> Example<'_> {
        Example::new(&self.ids, &self.pad)
    }
    fn real(&self) -> usize {
        self.pad.iter().filter(|&&p| !p).count()
    }
}

fn arb_seq() -> impl Strategy<Value = Seq> {
    (1usize..=40).prop_flat_map(|len| {
        (prop::collection::vec(1u32..=N_ITEMS, len), 0..=len).prop_map(move |(mut ids, real)| {
            let pad: Vec<bool> = (0..len).map(|i| i >= real).collect();
            for (id, &p) in ids.iter_mut().zip(&pad) {
                if p {
                    *id = 0;
                }
            }
            Seq { ids, pad }
        })
    })
}

fn cloze(p: f64, regime: Regime) -> ItemMasker {
    ItemMaskingConfig::new(N_ITEMS)
        .with_mask_prob(p)
        .with_regime(regime)
        .build()
        .unwrap()
}

fn check_invariants(seq: &Seq, out: &MaskedExample) -> usize {
    let mut changed = 0;
    for i in 0..seq.ids.len() {
        if seq.pad[i] {
            assert_eq!(out.input_ids[i], seq.ids[i], "padding changed at {i}");
            assert_eq!(out.labels[i], IGNORE_INDEX);
        } else if out.input_ids[i] != seq.ids[i] {
            assert_eq!(out.input_ids[i], MASK, "only mask-item substitutions");
            assert_eq!(out.labels[i], seq.ids[i] as i32, "label = original item");
            changed += 1;
        } else {
            assert_eq!(
                out.labels[i], IGNORE_INDEX,
                "label at an unchanged position {i}"
            );
        }
    }
    changed
}

proptest! {
    #![proptest_config(Config::with_cases(3000))]

    #[test]
    fn cloze_invariants(seq in arb_seq(), p in 0.0f64..=1.0, seed: u64, epoch in 0u64..100, index: u64) {
        let policy = cloze(p, Regime::Dynamic {});
        let ctx = MaskContext::new(seed, epoch, index, 0);
        let out = policy.mask(&seq.view(), &ctx).unwrap();
        let changed = check_invariants(&seq, &out);
        let labelled = out.masked_positions().len();
        prop_assert_eq!(changed, labelled);
        if seq.real() > 0 {
            prop_assert!(changed >= 1, "a non-empty sequence has a masked item");
        } else {
            prop_assert_eq!(changed, 0);
        }
        if p == 1.0 {
            prop_assert_eq!(changed, seq.real());
        }
        // Reproducible, and mask_into agrees with mask.
        prop_assert_eq!(&out, &policy.mask(&seq.view(), &ctx).unwrap());
        let (mut ids, mut labels) = (vec![7; seq.ids.len()], vec![3; seq.ids.len()]);
        let n = policy.mask_into(&seq.view(), &ctx, &mut Scratch::default(), &mut ids, &mut labels).unwrap();
        prop_assert_eq!(n, changed);
        prop_assert_eq!(ids, out.input_ids);
        prop_assert_eq!(labels, out.labels);
    }

    #[test]
    fn mask_last_masks_exactly_the_last_item(seq in arb_seq(), seed: u64, epoch: u64) {
        let policy = ItemMaskingConfig::new(N_ITEMS)
            .with_mode(ItemMaskMode::MaskLast {})
            .build()
            .unwrap();
        let out = policy.mask(&seq.view(), &MaskContext::new(seed, epoch, 0, 0)).unwrap();
        let changed = check_invariants(&seq, &out);
        let real = seq.real();
        if real == 0 {
            prop_assert_eq!(changed, 0);
        } else {
            prop_assert_eq!(changed, 1);
            prop_assert_eq!(out.masked_positions(), vec![real - 1]);
        }
    }

    #[test]
    fn static_repeats_every_k_epochs_dynamic_does_not(
        seq in arb_seq(), k in 1u64..12, e in 0u64..50, seed: u64, index: u64,
    ) {
        let stat = cloze(0.3, Regime::Static { dupe_factor: k });
        let at = |policy: &ItemMasker, epoch| {
            policy.mask(&seq.view(), &MaskContext::new(seed, epoch, index, 0)).unwrap()
        };
        prop_assert_eq!(at(&stat, e), at(&stat, e + k));
        prop_assert_eq!(at(&stat, e), at(&stat, e + 7 * k));
        // Static and dynamic share their first k epochs.
        let dynamic = cloze(0.3, Regime::Dynamic {});
        prop_assert_eq!(at(&stat, e % k), at(&dynamic, e % k));
    }
}

/// Dynamic masks of a long sequence differ between epochs (a collision of two Bernoulli(0.3)
/// patterns over 40 items has probability < 0.58^40 ~ 4e-10 per pair).
#[test]
fn dynamic_masks_differ_across_epochs() {
    let ids: Vec<u32> = (0..40).map(|i| 1 + i % N_ITEMS).collect();
    let pad = vec![false; 40];
    let policy = cloze(0.3, Regime::Dynamic {});
    let stat = cloze(0.3, Regime::Static { dupe_factor: 3 });
    for index in 0..50u64 {
        let masks: Vec<MaskedExample> = (0..10)
            .map(|e| {
                policy
                    .mask(&Example::new(&ids, &pad), &MaskContext::new(1, e, index, 0))
                    .unwrap()
            })
            .collect();
        for a in 0..masks.len() {
            for b in a + 1..masks.len() {
                assert_ne!(masks[a], masks[b], "index {index}: epochs {a} and {b}");
            }
        }
        // Static k = 3 has exactly three distinct masks, cycled.
        let s: Vec<MaskedExample> = (0..9)
            .map(|e| {
                stat.mask(&Example::new(&ids, &pad), &MaskContext::new(1, e, index, 0))
                    .unwrap()
            })
            .collect();
        assert_ne!(s[0], s[1]);
        assert_ne!(s[1], s[2]);
        assert_ne!(s[0], s[2]);
        assert_eq!(s[0], s[3]);
        assert_eq!(s[2], s[8]);
    }
}

/// Total masked items over many sequences vs the exact expectation `sum n p + (1-p)^n`, with a
/// tolerance of six standard deviations of the sum. For one sequence the count is `X + 1[X=0]`
/// with `X ~ Bin(n, p)`: variance `n p q + q^n - 2 n p q^n - q^(2n)`.
#[test]
fn cloze_rate_matches_its_expectation_with_the_at_least_one_rule() {
    for &p in &[0.05, 0.2, 0.5] {
        let policy = cloze(p, Regime::Dynamic {});
        let mut rng = MaskRng::for_example(99, 0, 0, 7);
        let (mut total, mut expected, mut var) = (0usize, 0.0f64, 0.0f64);
        let (mut short_total, mut short_expected) = (0usize, 0.0f64);
        for index in 0..20_000u64 {
            let n = 1 + rng.below(30) as usize;
            let ids: Vec<u32> = (0..n)
                .map(|_| 1 + rng.below(N_ITEMS as u64) as u32)
                .collect();
            let pad = vec![false; n];
            let out = policy
                .mask(&Example::new(&ids, &pad), &MaskContext::new(5, 0, index, 0))
                .unwrap();
            let got = out.masked_positions().len();
            let q = 1.0 - p;
            let np = n as f64 * p;
            let qn = q.powi(n as i32);
            total += got;
            expected += policy.expected_cloze_count(n);
            assert!((policy.expected_cloze_count(n) - (np + qn)).abs() < 1e-12);
            var += np * q + qn - 2.0 * np * qn - qn * qn;
            if n <= 3 {
                short_total += got;
                short_expected += np;
            }
        }
        let tol = 6.0 * var.sqrt();
        assert!(
            (total as f64 - expected).abs() < tol,
            "p = {p}: {total} masked, expected {expected:.1} +- {tol:.1}"
        );
        // The bias is real: short sequences get clearly more than n p.
        assert!(short_total as f64 > short_expected * 1.1, "p = {p}");
    }
}

/// Each item of a sequence is equally likely to be masked (per-position frequencies, six
/// binomial standard deviations), the fallback position included (p = 0.01: nearly always the
/// fallback).
#[test]
fn positions_are_masked_uniformly() {
    for &p in &[0.01, 0.2] {
        let policy = cloze(p, Regime::Dynamic {});
        let n = 8;
        let ids: Vec<u32> = (1..=n as u32).collect();
        let pad = vec![false; n];
        let trials = 40_000u64;
        let mut hits = vec![0usize; n];
        for index in 0..trials {
            let out = policy
                .mask(&Example::new(&ids, &pad), &MaskContext::new(3, 0, index, 0))
                .unwrap();
            for i in out.masked_positions() {
                hits[i] += 1;
            }
        }
        let per_pos = policy.expected_cloze_count(n) / n as f64;
        let sd = (trials as f64 * per_pos * (1.0 - per_pos)).sqrt();
        for (i, &h) in hits.iter().enumerate() {
            assert!(
                (h as f64 - trials as f64 * per_pos).abs() < 6.0 * sd,
                "p = {p}, position {i}: {h} vs {:.0}",
                trials as f64 * per_pos
            );
        }
    }
}

#[test]
fn works_with_the_batch_masker() {
    let policy = cloze(0.2, Regime::Static { dupe_factor: 10 });
    let ids = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 0, 0, 0, 0, 0, 0];
    let pad: Vec<bool> = ids.iter().map(|&i| i == 0).collect();
    let mut masker = BatchMasker::new(policy.clone());
    let batch = TokenBatch {
        batch: 2,
        seq_len: 8,
        ids: &ids,
        special_mask: &pad,
        word_ids: None,
        tags: None,
        example_indices: &[11, 12],
    };
    let ctx = BatchContext {
        seed: 4,
        epoch: 13,
        step: 0,
    };
    let out = masker.mask_batch(&batch, ctx).unwrap();
    for r in 0..2 {
        let one = policy
            .mask(
                &batch.example(r),
                &MaskContext::new(4, 13, 11 + r as u64, 0),
            )
            .unwrap();
        assert_eq!(&out.input_ids[r * 8..(r + 1) * 8], &one.input_ids[..]);
        assert_eq!(&out.labels[r * 8..(r + 1) * 8], &one.labels[..]);
    }
    assert!(out.num_masked >= 2);
    assert_eq!(policy.vocab_size(), N_ITEMS + 2);
}

/// Padding is recognised by id as well as by the special mask.
#[test]
fn pad_id_is_never_masked_even_without_special_mask() {
    let policy = cloze(1.0, Regime::Dynamic {});
    let ids = [3, 0, 4, 0];
    let out = policy
        .mask(&Example::new(&ids, &[false; 4]), &MaskContext::default())
        .unwrap();
    assert_eq!(out.input_ids, vec![MASK, 0, MASK, 0]);
    assert_eq!(out.labels, vec![3, IGNORE_INDEX, 4, IGNORE_INDEX]);
}

#[test]
fn serde_round_trips_and_refuses_unknown_fields_and_variants() {
    let configs = [
        ItemMaskingConfig::new(1682),
        ItemMaskingConfig::new(10)
            .with_mask_prob(0.4)
            .with_mode(ItemMaskMode::MaskLast {})
            .with_regime(Regime::Static { dupe_factor: 10 }),
        ItemMaskingConfig {
            pad_id: 12,
            ..ItemMaskingConfig::new(10)
        },
    ];
    for c in &configs {
        let json = serde_json::to_string(c).unwrap();
        assert_eq!(
            &serde_json::from_str::<ItemMaskingConfig>(&json).unwrap(),
            c
        );
        let toml_text = toml::to_string(c).unwrap();
        assert_eq!(&toml::from_str::<ItemMaskingConfig>(&toml_text).unwrap(), c);
        c.build().unwrap();
    }
    // Defaults.
    let c: ItemMaskingConfig = toml::from_str("n_items = 5\nmask_id = 6").unwrap();
    assert_eq!(c, ItemMaskingConfig::new(5));
    let c: ItemMaskingConfig =
        toml::from_str("n_items = 5\nmask_id = 6\nmode = { type = \"mask_last\" }").unwrap();
    assert_eq!(c.mode, ItemMaskMode::MaskLast {});
    // Wrong variant, stray field in a variant, unknown field, missing field.
    let e =
        toml::from_str::<ItemMaskingConfig>("n_items = 5\nmask_id = 6\nmode = { type = \"span\" }")
            .unwrap_err()
            .to_string();
    assert!(e.contains("span"), "{e}");
    let e = toml::from_str::<ItemMaskingConfig>(
        "n_items = 5\nmask_id = 6\nmode = { type = \"cloze\", mask_prob = 0.3 }",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mask_prob"), "{e}");
    let e = toml::from_str::<ItemMaskingConfig>("n_items = 5\nmask_id = 6\nrate = 0.2")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rate"), "{e}");
    let e = toml::from_str::<ItemMaskingConfig>("n_items = 5")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mask_id"), "{e}");
}

#[test]
fn build_errors_name_the_field() {
    let field = |c: ItemMaskingConfig| match c.build().unwrap_err() {
        MaskError::InvalidValue { field, .. } | MaskError::InvalidProbability { field, .. } => {
            field
        }
        other => panic!("unexpected {other:?}"),
    };
    let base = ItemMaskingConfig::new(10);
    assert_eq!(field(base.clone().with_mask_prob(1.5)), "mask_prob");
    assert_eq!(field(base.clone().with_mask_prob(f64::NAN)), "mask_prob");
    assert_eq!(field(base.clone().with_mask_prob(-0.1)), "mask_prob");
    assert_eq!(
        field(base.clone().with_regime(Regime::Static { dupe_factor: 0 })),
        "dupe_factor"
    );
    assert_eq!(field(ItemMaskingConfig::new(0)), "n_items");
    for mask_id in [0, 5, 10, u32::MAX] {
        assert_eq!(
            field(ItemMaskingConfig {
                mask_id,
                ..base.clone()
            }),
            "mask_id"
        );
    }
    for pad_id in [3, 10, 11, u32::MAX] {
        assert_eq!(
            field(ItemMaskingConfig {
                pad_id,
                ..base.clone()
            }),
            "pad_id"
        );
    }
}

#[test]
fn mask_errors_on_bad_input() {
    let policy = cloze(0.2, Regime::Dynamic {});
    let ctx = MaskContext::default();
    // The mask item in the input.
    let e = policy
        .mask(&Example::new(&[1, MASK, 2], &[false; 3]), &ctx)
        .unwrap_err();
    assert!(
        matches!(e, MaskError::InvalidValue { field: "ids", ref value, .. } if value.contains("position 1")),
        "{e:?}"
    );
    // Outside the vocabulary.
    let e = policy
        .mask(&Example::new(&[1, 999], &[false; 2]), &ctx)
        .unwrap_err();
    assert!(
        matches!(e, MaskError::TokenOutOfVocab { position: 1, .. }),
        "{e:?}"
    );
    // Length mismatches.
    let e = policy
        .mask(&Example::new(&[1, 2], &[false; 3]), &ctx)
        .unwrap_err();
    assert!(matches!(
        e,
        MaskError::LengthMismatch {
            field: "special_mask",
            ..
        }
    ));
    let e = policy
        .mask_into(
            &Example::new(&[1, 2], &[false; 2]),
            &ctx,
            &mut Scratch::default(),
            &mut [0; 1],
            &mut [0; 2],
        )
        .unwrap_err();
    assert!(matches!(
        e,
        MaskError::LengthMismatch {
            field: "out_ids",
            ..
        }
    ));
    // The mask item under padding is ignored (padding is never read).
    policy
        .mask(&Example::new(&[1, MASK], &[false, true]), &ctx)
        .unwrap();
}
