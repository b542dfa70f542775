//! Serde: every config round-trips through JSON and TOML; unknown or wrong variants and fields
//! are refused with a message naming them.

use mask_core::*;

fn vocab() -> VocabSpec {
    VocabSpec::new(30522, 103, vec![0, 100, 101, 102])
}

fn all_configs() -> Vec<MaskingConfig> {
    let selections = [
        SelectionConfig::Bernoulli {},
        SelectionConfig::FixedCount {
            max_predictions: 20,
        },
        SelectionConfig::WholeWord {},
        SelectionConfig::Span {
            geometric_p: 0.2,
            min_span: 1,
            max_span: 10,
            anchor: SpanAnchor::Word,
        },
        SelectionConfig::Span {
            geometric_p: 0.5,
            min_span: 2,
            max_span: 3,
            anchor: SpanAnchor::Token,
        },
    ];
    let rates = [
        RateSchedule::constant(0.15),
        RateSchedule::linear(0.3, 0.15, 10_000),
        RateSchedule::Cosine {
            start: 0.4,
            end: 0.15,
            decay_steps: 500,
            warmup_steps: 50,
            warmup_start: Some(0.1),
        },
    ];
    let regimes = [
        Regime::Dynamic {},
        Regime::fully_static(),
        Regime::Static { dupe_factor: 10 },
    ];
    let mut out = vec![];
    for (i, s) in selections.iter().enumerate() {
        for (j, r) in rates.iter().enumerate() {
            let corruption = CorruptionConfig {
                mask_replace_prob: 0.7,
                random_replace_prob: 0.2,
                per_unit: (i + j) % 2 == 0,
                predict_prob: if i == 0 { 1.0 } else { 0.375 },
            };
            out.push(
                MaskingConfig::new(vocab())
                    .with_selection(*s)
                    .with_rate(*r)
                    .with_corruption(corruption)
                    .with_regime(regimes[(i + j) % 3]),
            );
        }
    }
    out
}

#[test]
fn every_config_round_trips_through_json_and_toml() {
    for cfg in all_configs() {
        let json = serde_json::to_string(&cfg).unwrap();
        let back: MaskingConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg, "json: {json}");
        let toml_text = toml::to_string(&cfg).unwrap();
        let back: MaskingConfig = toml::from_str(&toml_text).unwrap();
        assert_eq!(back, cfg, "toml: {toml_text}");
        back.build().unwrap();
    }
}

#[test]
fn defaults_fill_in_a_minimal_config() {
    let cfg: MaskingConfig =
        toml::from_str("vocab = { vocab_size = 100, mask_token_id = 4 }\n").unwrap();
    assert_eq!(cfg.selection, SelectionConfig::Bernoulli {});
    assert_eq!(cfg.rate, RateSchedule::constant(0.15));
    assert_eq!(cfg.corruption, CorruptionConfig::default());
    assert_eq!(cfg.regime, Regime::Dynamic {});
    let span: SelectionConfig = serde_json::from_str(r#"{"type": "span"}"#).unwrap();
    assert_eq!(
        span,
        SelectionConfig::Span {
            geometric_p: 0.2,
            min_span: 1,
            max_span: 10,
            anchor: SpanAnchor::Token
        }
    );
}

#[test]
fn the_documented_example_parses() {
    let text = r#"
vocab = { vocab_size = 30522, mask_token_id = 103, special_ids = [0, 100, 101, 102] }
selection = { type = "span", geometric_p = 0.2, max_span = 10, anchor = "word" }
rate = { type = "linear", start = 0.3, end = 0.15, decay_steps = 10000 }
corruption = { mask_replace_prob = 0.8, random_replace_prob = 0.1, per_unit = true }
regime = { type = "static", dupe_factor = 10 }
"#;
    let cfg: MaskingConfig = toml::from_str(text).unwrap();
    assert_eq!(cfg.regime, Regime::Static { dupe_factor: 10 });
    cfg.build().unwrap();
}

fn refuse<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str, needle: &str) {
    let err = serde_json::from_str::<T>(json).unwrap_err().to_string();
    assert!(err.contains(needle), "error for {json} was {err:?}");
}

#[test]
fn unknown_and_wrong_variants_are_refused() {
    refuse::<SelectionConfig>(r#"{"type": "bogus"}"#, "bogus");
    refuse::<SelectionConfig>(r#"{"max_predictions": 3}"#, "type");
    // A field of another variant.
    refuse::<SelectionConfig>(
        r#"{"type": "bernoulli", "max_predictions": 3}"#,
        "max_predictions",
    );
    refuse::<SelectionConfig>(r#"{"type": "fixed_count"}"#, "max_predictions");
    refuse::<RateSchedule>(
        r#"{"type": "exponential", "mask_prob": 0.1}"#,
        "exponential",
    );
    refuse::<RateSchedule>(r#"{"type": "constant", "start": 0.1}"#, "start");
    refuse::<Regime>(r#"{"type": "static"}"#, "dupe_factor");
    refuse::<Regime>(r#"{"type": "dynamic", "dupe_factor": 3}"#, "dupe_factor");
    refuse::<CorruptionConfig>(r#"{"mask_prob": 0.8}"#, "mask_prob");
    refuse::<MaskingConfig>(r#"{"vocab": {"vocab_size": 10}}"#, "mask_token_id");
    refuse::<MaskingConfig>(
        r#"{"vocab": {"vocab_size": 10, "mask_token_id": 1}, "extra": 1}"#,
        "extra",
    );
    refuse::<SelectionConfig>(r#"{"type": "span", "anchor": "sentence"}"#, "sentence");
}

#[test]
fn content_aware_selections_round_trip_with_defaults() {
    for s in [
        SelectionConfig::Idf { exponent: 0.5 },
        SelectionConfig::TagWeighted {},
        SelectionConfig::PmiSpan { max_ngram: 3 },
    ] {
        let cfg = MaskingConfig::new(vocab()).with_selection(s);
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<MaskingConfig>(&json).unwrap(), cfg);
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(
            toml::from_str::<MaskingConfig>(&text).unwrap(),
            cfg,
            "{text}"
        );
    }
    let idf: SelectionConfig = serde_json::from_str(r#"{"type": "idf"}"#).unwrap();
    assert_eq!(idf, SelectionConfig::Idf { exponent: 1.0 });
    let pmi: SelectionConfig = toml::from_str(r#"type = "pmi_span""#).unwrap();
    assert_eq!(pmi, SelectionConfig::PmiSpan { max_ngram: 4 });
    let tag: SelectionConfig = serde_json::from_str(r#"{"type": "tag_weighted"}"#).unwrap();
    assert_eq!(tag, SelectionConfig::TagWeighted {});

    let table: PmiTableConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(table, PmiTableConfig::default());
    assert_eq!(
        (table.max_ngram, table.min_count, table.top_k),
        (4, 5, 2000)
    );
    assert!(table.special_ids.is_empty());
    let custom = PmiTableConfig {
        max_ngram: 3,
        min_count: 2,
        top_k: 10,
        special_ids: vec![0, 101, 102],
    };
    let text = toml::to_string(&custom).unwrap();
    assert_eq!(toml::from_str::<PmiTableConfig>(&text).unwrap(), custom);
}

#[test]
fn content_aware_selections_refuse_unknown_fields_and_wrong_variants() {
    refuse::<SelectionConfig>(r#"{"type": "idf", "exponent": 1.0, "power": 2}"#, "power");
    refuse::<SelectionConfig>(r#"{"type": "tag_weighted", "exponent": 2.0}"#, "exponent");
    refuse::<SelectionConfig>(r#"{"type": "pmi_span", "geometric_p": 0.2}"#, "geometric_p");
    refuse::<SelectionConfig>(r#"{"type": "idf", "exponent": "high"}"#, "high");
    refuse::<SelectionConfig>(r#"{"type": "pmi"}"#, "pmi");
    refuse::<PmiTableConfig>(r#"{"max_ngrams": 3}"#, "max_ngrams");
}
