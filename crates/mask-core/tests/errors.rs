//! Bad input gets a typed error naming the field and the value; nothing panics.

use mask_core::*;

fn base() -> MaskingConfig {
    MaskingConfig::new(VocabSpec::new(100, 4, vec![0, 1, 2, 3]))
}

fn build_err(cfg: MaskingConfig) -> String {
    cfg.build().unwrap_err().to_string()
}

#[test]
fn invalid_configs_are_refused_with_field_and_value() {
    let e = build_err(base().with_rate(RateSchedule::constant(1.5)));
    assert_eq!(e, "`mask_prob` must be a probability in [0, 1], got 1.5");
    let e = build_err(base().with_corruption(CorruptionConfig {
        mask_replace_prob: 0.9,
        random_replace_prob: 0.2,
        ..CorruptionConfig::default()
    }));
    assert!(e.contains("0.9 + 0.2"), "{e}");
    let e = build_err(base().with_corruption(CorruptionConfig {
        mask_replace_prob: 0.8,
        random_replace_prob: f64::NAN,
        ..CorruptionConfig::default()
    }));
    assert!(e.contains("random_replace_prob"), "{e}");
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        let e = build_err(base().with_corruption(CorruptionConfig {
            predict_prob: bad,
            ..CorruptionConfig::default()
        }));
        assert!(
            e.contains("predict_prob") && e.contains(&bad.to_string()),
            "{e}"
        );
    }
    let e = build_err(MaskingConfig::new(VocabSpec::new(100, 100, vec![])));
    assert!(e.contains("mask_token_id") && e.contains("100"), "{e}");
    let e = build_err(MaskingConfig::new(VocabSpec::new(2, 0, vec![1])));
    assert!(
        e.contains("random_replace_prob") && e.contains("vocab_size"),
        "{e}"
    );
    let e = build_err(base().with_selection(SelectionConfig::Span {
        geometric_p: 0.2,
        min_span: 4,
        max_span: 2,
        anchor: SpanAnchor::Token,
    }));
    assert!(
        e.contains("min_span") && e.contains('4') && e.contains('2'),
        "{e}"
    );
    let e = build_err(base().with_selection(SelectionConfig::FixedCount { max_predictions: 0 }));
    assert!(e.contains("max_predictions"), "{e}");
    let e = build_err(base().with_regime(Regime::Static { dupe_factor: 0 }));
    assert!(e.contains("dupe_factor"), "{e}");
}

#[test]
fn malformed_examples_are_refused() {
    let p = base().build().unwrap();
    let ids = [5, 6, 7];
    let ctx = MaskContext::default();
    let e = p
        .mask(&Example::new(&ids, &[false, false]), &ctx)
        .unwrap_err();
    assert_eq!(
        e,
        MaskError::LengthMismatch {
            field: "special_mask",
            expected: 3,
            got: 2
        }
    );
    let e = p
        .mask(&Example::new(&[5, 600, 7], &[false; 3]), &ctx)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "token id 600 at position 1 is outside the vocabulary (`vocab_size` = 100)"
    );
    let words = [Some(0), Some(1)];
    let e = p
        .mask(&Example::new(&ids, &[false; 3]).with_word_ids(&words), &ctx)
        .unwrap_err();
    assert!(e.to_string().contains("word_ids"), "{e}");
    let ww = base()
        .with_selection(SelectionConfig::WholeWord {})
        .build()
        .unwrap();
    let e = ww.mask(&Example::new(&ids, &[false; 3]), &ctx).unwrap_err();
    assert_eq!(
        e,
        MaskError::MissingWordIds {
            policy: "whole_word"
        }
    );
}

#[test]
fn no_eligible_position_gives_no_labels() {
    for sel in [
        SelectionConfig::Bernoulli {},
        SelectionConfig::FixedCount { max_predictions: 5 },
        SelectionConfig::Span {
            geometric_p: 0.2,
            min_span: 1,
            max_span: 10,
            anchor: SpanAnchor::Token,
        },
    ] {
        let p = base()
            .with_selection(sel)
            .with_rate(RateSchedule::constant(1.0))
            .build()
            .unwrap();
        let out = p
            .mask(
                &Example::new(&[1, 2, 0], &[true; 3]),
                &MaskContext::default(),
            )
            .unwrap();
        assert_eq!(out.labels, vec![IGNORE_INDEX; 3]);
        assert_eq!(out.input_ids, vec![1, 2, 0]);
        let empty = p
            .mask(&Example::new(&[], &[]), &MaskContext::default())
            .unwrap();
        assert!(empty.labels.is_empty());
    }
}

#[test]
fn malformed_batches_are_refused() {
    let mut bm = BatchMasker::new(base().build().unwrap());
    let ids = [5u32; 6];
    let special = [false; 6];
    let ok = TokenBatch {
        batch: 2,
        seq_len: 3,
        ids: &ids,
        special_mask: &special,
        word_ids: None,
        tags: None,
        example_indices: &[0, 1],
    };
    assert!(bm.mask_batch(&ok, BatchContext::default()).is_ok());
    let e = bm
        .mask_batch(
            &TokenBatch {
                example_indices: &[0],
                ..ok
            },
            BatchContext::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("example_indices"), "{e}");
    let e = bm
        .mask_batch(
            &TokenBatch {
                ids: &ids[..5],
                ..ok
            },
            BatchContext::default(),
        )
        .unwrap_err();
    assert_eq!(
        e,
        MaskError::BatchShape {
            field: "ids",
            expected: 6,
            got: 5,
            batch: 2,
            seq_len: 3
        }
    );
    // Length 0 is a length error; the longest allowed length is not (the empty ids are what is
    // wrong then).
    let mut empty_ids = |seq_len| {
        bm.mask_batch(
            &TokenBatch {
                seq_len,
                batch: 2,
                ids: &[],
                special_mask: &[],
                ..ok
            },
            BatchContext::default(),
        )
        .unwrap_err()
    };
    let e = empty_ids(0);
    assert!(matches!(e, MaskError::SequenceLength { len: 0, .. }), "{e}");
    let e = empty_ids(MAX_SEQ_LEN);
    assert!(
        matches!(e, MaskError::BatchShape { field: "ids", .. }),
        "{e}"
    );
}

#[test]
fn content_aware_selectors_name_missing_resources_inputs_and_bad_values() {
    use std::sync::Arc;
    let idf = base().with_selection(SelectionConfig::Idf { exponent: 1.0 });
    assert_eq!(
        build_err(idf.clone()),
        "policy `idf` needs the resource `token_stats`, which was not provided"
    );
    let stats = Arc::new(TokenStats::from_docs(100, [[5u32, 6, 7]]).unwrap());
    let res = SelectorResources {
        token_stats: Some(stats),
        ..Default::default()
    };
    let e = base()
        .with_selection(SelectionConfig::Idf { exponent: f64::NAN })
        .build_with(&res)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exponent") && e.contains("NaN"), "{e}");
    idf.build_with(&res).unwrap();
    assert_eq!(
        build_err(base().with_selection(SelectionConfig::PmiSpan { max_ngram: 4 })),
        "policy `pmi_span` needs the resource `pmi`, which was not provided"
    );
    assert_eq!(
        build_err(base().with_selection(SelectionConfig::TagWeighted {})),
        "policy `tag_weighted` needs the resource `tag_weights`, which was not provided"
    );
    let table = PmiTable::build([[5u32, 6]; 5], &PmiTableConfig::default()).unwrap();
    let res = SelectorResources {
        pmi: Some(Arc::new(table)),
        ..Default::default()
    };
    let e = base()
        .with_selection(SelectionConfig::PmiSpan { max_ngram: 0 })
        .build_with(&res)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_ngram") && e.contains('0'), "{e}");
    let e = PmiTable::build(
        [[5u32, 6]],
        &PmiTableConfig {
            top_k: 0,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("top_k"), "{e}");
    let e = TagWeights::new(vec![1.0, -2.0]).unwrap_err().to_string();
    assert!(e.contains("tag_weights") && e.contains("-2"), "{e}");
    let e = TokenStats::from_bytes(b"DMTS").unwrap_err().to_string();
    assert!(e.contains("token_stats") && e.contains("header"), "{e}");
}

#[test]
fn stateless_selectors_refuse_state_bytes() {
    let mut policy = base().build().unwrap();
    assert!(!policy.is_adaptive());
    assert_eq!(policy.selector().state_bytes(), None);
    policy.selector_mut().load_state_bytes(&[]).unwrap();
    let e = policy
        .selector_mut()
        .load_state_bytes(&[1, 2, 3])
        .unwrap_err();
    assert_eq!(
        e,
        MaskError::State {
            policy: "bernoulli",
            reason: "stateless, but 3 bytes of state were given".into()
        }
    );
    // Feedback is accepted and ignored by stateless selectors.
    policy.observe(&[5, 6], &[1], &[0.5]);
}
