//! Masks pinned bit for bit. Every mask is a pure function of (seed, epoch, index, step), and
//! the published results depend on it: a change to the random stream, to a selector, or to
//! `rand_distr`'s algorithms (span lengths are its `Geometric`, BEiT aspect ratios its
//! `Uniform`) must show up here, not silently in the numbers.
//!
//! Each case masks 64 examples at 3 epochs and folds every output (ids, labels, patch or item
//! positions) into one 64-bit digest with `mix64`. When a change is *meant* to alter masks,
//! update the digests in the same commit and say so in its message; the studies' committed
//! results then need a rerun.

use std::sync::Arc;

use mask_core::*;

/// Folds `values` into `h` (order-sensitive).
fn fold(h: u64, values: impl IntoIterator<Item = u64>) -> u64 {
    values
        .into_iter()
        .fold(h, |h, v| mix64(h ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// A deterministic sentence of `len` tokens: [CLS] words [SEP], 1-3 sub-tokens per word.
fn sentence(i: u64, len: usize) -> (Vec<u32>, Vec<bool>, Vec<Option<u32>>) {
    let mut ids = vec![101];
    let mut words = vec![None];
    let mut word = 0u32;
    while ids.len() < len - 1 {
        let pieces = 1 + (mix64(i * 1000 + u64::from(word)) % 3) as usize;
        for p in 0..pieces.min(len - 1 - ids.len()) {
            ids.push(1000 + (mix64(i ^ (u64::from(word) << 8) ^ p as u64) % 20_000) as u32);
            words.push(Some(word));
        }
        word += 1;
    }
    ids.push(102);
    words.push(None);
    let special = ids.iter().map(|&t| t < 1000).collect();
    (ids, special, words)
}

fn token_digest(selection: SelectionConfig, regime: Regime) -> u64 {
    token_digest_at(selection, regime, 1234, 0.15)
}

/// [`token_digest`] under another seed and masking rate.
fn token_digest_at(selection: SelectionConfig, regime: Regime, seed: u64, mask_prob: f64) -> u64 {
    let vocab = VocabSpec::new(30522, 103, vec![0, 100, 101, 102, 103]);
    let policy = MaskingConfig::new(vocab)
        .with_selection(selection)
        .with_regime(regime)
        .with_rate(RateSchedule::Constant { mask_prob })
        .build()
        .unwrap();
    let mut h = 0;
    for epoch in 0..3 {
        for i in 0..64u64 {
            let (ids, special, words) = sentence(i, 24 + (i as usize % 40));
            let ex = Example::new(&ids, &special).with_word_ids(&words);
            let m = policy
                .mask(&ex, &MaskContext::new(seed, epoch, i, epoch * 64 + i))
                .unwrap();
            h = fold(h, m.input_ids.iter().map(|&x| u64::from(x)));
            h = fold(h, m.labels.iter().map(|&x| x as u64));
        }
    }
    h
}

/// Token statistics and a PMI table from the test sentences, each document also repeating one
/// of the first 8 (so their tokens' document frequencies differ from the rest, and their
/// n-grams occur often enough to enter the PMI table).
fn resources() -> SelectorResources {
    let docs: Vec<Vec<u32>> = (0..64u64)
        .map(|i| {
            let mut doc = sentence(i, 24 + (i as usize % 40)).0;
            doc.extend(sentence(i % 8, 24 + (i as usize % 8)).0);
            doc
        })
        .collect();
    SelectorResources {
        token_stats: Some(Arc::new(TokenStats::from_docs(30522, &docs).unwrap())),
        pmi: Some(Arc::new(
            PmiTable::build(&docs, &PmiTableConfig::default()).unwrap(),
        )),
        ..Default::default()
    }
}

/// [`token_digest`] of a selector that needs [`resources`].
fn resource_digest(selection: SelectionConfig) -> u64 {
    let vocab = VocabSpec::new(30522, 103, vec![0, 100, 101, 102, 103]);
    let policy = MaskingConfig::new(vocab)
        .with_selection(selection)
        .build_with(&resources())
        .unwrap();
    let mut h = 0;
    for epoch in 0..3 {
        for i in 0..64u64 {
            let (ids, special, _) = sentence(i, 24 + (i as usize % 40));
            let m = policy
                .mask(
                    &Example::new(&ids, &special),
                    &MaskContext::new(1234, epoch, i, epoch * 64 + i),
                )
                .unwrap();
            h = fold(h, m.input_ids.iter().map(|&x| u64::from(x)));
        }
    }
    h
}

fn patch_digest(selection: PatchSelectionConfig) -> u64 {
    let masker = PatchMaskingConfig::new(14, 14, selection).build().unwrap();
    let mut h = 0;
    for epoch in 0..3 {
        for i in 0..64 {
            let m = masker.mask(99, epoch, i);
            h = fold(h, m.masked.iter().map(|&x| u64::from(x)));
        }
    }
    h
}

fn span(anchor: SpanAnchor) -> SelectionConfig {
    SelectionConfig::Span {
        geometric_p: 0.2,
        min_span: 1,
        max_span: 10,
        anchor,
    }
}

/// Span masking at 100% of long sentences (`len` tokens, 16 examples, 3 epochs): starts drawn at
/// random mostly land on taken tokens, so the cap on rejected starts (`4 * budget + 16`) is
/// reached and the rest is drawn among the free units. With length-1 spans a coupon collector
/// needs about `n (H_n - 1)` rejections (~1,300 at n = 254), over the cap (1,032). Also checks
/// the closed form: at 100% every non-special token carries a label.
fn span_cap_digest(geometric_p: f64, max_span: u32, len: usize) -> u64 {
    let vocab = VocabSpec::new(30522, 103, vec![0, 100, 101, 102, 103]);
    let selection = SelectionConfig::Span {
        geometric_p,
        min_span: 1,
        max_span,
        anchor: SpanAnchor::Token,
    };
    let policy = MaskingConfig::new(vocab)
        .with_selection(selection)
        .with_rate(RateSchedule::Constant { mask_prob: 1.0 })
        .build()
        .unwrap();
    let mut h = 0;
    for epoch in 0..3 {
        for i in 0..16u64 {
            let (ids, special, _) = sentence(i, len);
            let m = policy
                .mask(
                    &Example::new(&ids, &special),
                    &MaskContext::new(77, epoch, i, epoch * 16 + i),
                )
                .unwrap();
            for (k, &s) in special.iter().enumerate() {
                assert_eq!(m.labels[k] >= 0, !s, "position {k} of example {i}");
            }
            h = fold(h, m.input_ids.iter().map(|&x| u64::from(x)));
        }
    }
    h
}

/// The digests, and what each pins.
#[test]
fn masks_are_pinned() {
    let cases: [(&str, u64, u64); 16] = [
        (
            "bernoulli, dynamic",
            token_digest(SelectionConfig::Bernoulli {}, Regime::Dynamic {}),
            0xb3da_e813_8509_c67c,
        ),
        (
            "fixed count, static k=2",
            token_digest(
                SelectionConfig::FixedCount {
                    max_predictions: 20,
                },
                Regime::Static { dupe_factor: 2 },
            ),
            0x5961_513b_72db_77bb,
        ),
        (
            "whole word, dynamic",
            token_digest(SelectionConfig::WholeWord {}, Regime::Dynamic {}),
            0xa333_3f3f_2d27_c79e,
        ),
        (
            "span (token anchor; rand_distr Geometric)",
            token_digest(span(SpanAnchor::Token), Regime::Dynamic {}),
            0xe1d1_a899_db67_aa1f,
        ),
        (
            "span (word anchor; rand_distr Geometric)",
            token_digest(span(SpanAnchor::Word), Regime::Dynamic {}),
            0x2b8d_de1b_3baa_ecbc,
        ),
        (
            "MAE random patches",
            patch_digest(PatchSelectionConfig::Random { mask_ratio: 0.75 }),
            0x3814_1b04_1269_5a4d,
        ),
        (
            "BEiT block-wise patches (rand_distr Uniform aspect)",
            patch_digest(PatchSelectionConfig::BlockWise {
                mask_ratio: 0.4,
                min_block: 4,
                min_aspect: 0.3,
            }),
            0xbbd5_fe5b_d67c_17f2,
        ),
        ("BERT4Rec Cloze items", item_digest(), 0x83b6_3bfd_306d_dd11),
        (
            // Every bit set: pins how the seed enters the key (the seeds above share no bit
            // with its constant, so `seed ^ C` and `seed | C` agreed on them).
            "bernoulli, dynamic, seed 2^64 - 1",
            token_digest_at(
                SelectionConfig::Bernoulli {},
                Regime::Dynamic {},
                u64::MAX,
                0.15,
            ),
            0x6eb8_6c85_6527_c965,
        ),
        (
            // At 80% most span starts land on taken tokens: pins the cap on rejected starts
            // and the fallback draw among free units.
            "span (token anchor) at 80%",
            token_digest_at(span(SpanAnchor::Token), Regime::Dynamic {}, 1234, 0.8),
            0x16b5_c77a_efe2_f1a8,
        ),
        (
            // Uniform weights before any feedback: pins the proportional sampler's draws.
            "loss-aware before feedback",
            token_digest(
                SelectionConfig::LossAware {
                    ema_decay: 0.99,
                    temperature: 1.0,
                    uniform_mix: 0.2,
                },
                Regime::Dynamic {},
            ),
            0xd054_c83e_959e_ab8b,
        ),
        (
            // Unequal weights: pins the proportional sampler's systematic draw.
            "idf (exponent 1)",
            resource_digest(SelectionConfig::Idf { exponent: 1.0 }),
            0x2d21_65f3_6c58_53c7,
        ),
        (
            // Whole n-gram units, the last one taken with probability left / length.
            "pmi spans",
            resource_digest(SelectionConfig::PmiSpan { max_ngram: 4 }),
            0xb4aa_78f4_70b0_3657,
        ),
        (
            // Length-1 spans at 100%: the cap on rejected starts is reached in every example.
            "span (token anchor, length 1) at 100%, 256 tokens",
            span_cap_digest(1.0, 1, 256),
            0x29b7_de83_6137_d278,
        ),
        (
            "span (token anchor, p 0.2, max 10) at 100%, 256 tokens",
            span_cap_digest(0.2, 10, 256),
            0x0c9e_e630_3bb8_ae4a,
        ),
        (
            // One-patch minimum blocks and aspect ratios down to 1/20: some draws round a side
            // to 0 and are skipped before a position is drawn.
            "BEiT block-wise, min block 1, aspect 0.05..20",
            patch_digest(PatchSelectionConfig::BlockWise {
                mask_ratio: 0.4,
                min_block: 1,
                min_aspect: 0.05,
            }),
            0x13fe_99b5_b8a4_aae1,
        ),
    ];
    let mut wrong = vec![];
    for (name, got, pinned) in cases {
        if got != pinned {
            wrong.push(format!("{name}: {got:#018x} (pinned {pinned:#018x})"));
        }
    }
    assert!(wrong.is_empty(), "masks changed:\n{}", wrong.join("\n"));
}

fn item_digest() -> u64 {
    let policy = ItemMaskingConfig::new(1682)
        .with_mask_prob(0.2)
        .build()
        .unwrap();
    let mut h = 0;
    for epoch in 0..3 {
        for i in 0..64u64 {
            let items: Vec<u32> = (0..50)
                .map(|k| 1 + (mix64(i * 64 + k) % 1682) as u32)
                .collect();
            let special = vec![false; items.len()];
            let m = policy
                .mask(
                    &Example::new(&items, &special),
                    &MaskContext::new(5, epoch, i, 0),
                )
                .unwrap();
            h = fold(h, m.input_ids.iter().map(|&x| u64::from(x)));
        }
    }
    h
}

/// The first span lengths of one stream, written out: a readable pin of the `Geometric` draw
/// (truncated by `K mod 10`).
#[test]
fn first_span_lengths_are_pinned() {
    let sel = SpanSelector::new(0.2, 1, 10, SpanAnchor::Token).unwrap();
    let mut rng = MaskRng::for_example(0, 0, 0, MaskRng::STREAM_TOKENS);
    let lengths: Vec<u32> = (0..12).map(|_| sel.sample_length(&mut rng)).collect();
    assert_eq!(lengths, [1, 1, 3, 5, 1, 5, 7, 10, 1, 4, 1, 9]);
}
