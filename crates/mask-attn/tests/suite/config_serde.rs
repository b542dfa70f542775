//! Attention-mask configs: TOML/JSON round trips, refusal of unknown or wrong variants, and
//! building from per-batch inputs.

use mask_attn::*;

fn all() -> Vec<AttnMaskConfig> {
    vec![
        AttnMaskConfig::None {},
        AttnMaskConfig::KeyPadding {},
        AttnMaskConfig::Causal {},
        AttnMaskConfig::SlidingWindow {
            window: 128,
            causal: false,
        },
        AttnMaskConfig::Document {},
        AttnMaskConfig::PrefixLm {
            prefix_len: Some(3),
        },
        AttnMaskConfig::TokenExclusion {},
        AttnMaskConfig::RandomKeyDrop {
            drop_prob: 0.5,
            per_head: true,
        },
        AttnMaskConfig::And {
            masks: vec![AttnMaskConfig::KeyPadding {}, AttnMaskConfig::Causal {}],
        },
        AttnMaskConfig::Or {
            masks: vec![AttnMaskConfig::Document {}, AttnMaskConfig::Causal {}],
        },
        AttnMaskConfig::Not {
            mask: Box::new(AttnMaskConfig::Causal {}),
        },
    ]
}

#[test]
fn configs_round_trip_and_build() {
    let lengths = [3, 5];
    let doc_ids = [0, 0, 1, 1, 1, 0, 0, 0, 1, 1];
    let excluded = [
        false, true, false, false, false, false, false, true, false, false,
    ];
    let inputs = MaskInputs {
        batch: 2,
        heads: 2,
        seq_len: 5,
        lengths: Some(&lengths),
        doc_ids: Some(&doc_ids),
        excluded: Some(&excluded),
        ..Default::default()
    };
    for cfg in all() {
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            serde_json::from_str::<AttnMaskConfig>(&json).unwrap(),
            cfg,
            "{json}"
        );
        let mask = cfg.build(&inputs).unwrap();
        TileMap::build(&*mask, 2, 2, 5, 5, 2, 2).unwrap();
    }
    // Every config, including a prefix-LM that reads its lengths from the inputs, writes as
    // TOML (which has no null) and JSON without nulls, and reads back unchanged.
    let mut every = all();
    every.push(AttnMaskConfig::PrefixLm { prefix_len: None });
    for cfg in every {
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(
            toml::from_str::<AttnMaskConfig>(&text).unwrap(),
            cfg,
            "{text}"
        );
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(!json.contains("null"), "{json}");
    }
    let toml_text = "type = \"and\"\nmasks = [{ type = \"key_padding\" }, { type = \"sliding_window\", window = 128 }]\n";
    let cfg: AttnMaskConfig = toml::from_str(toml_text).unwrap();
    assert_eq!(
        cfg,
        AttnMaskConfig::And {
            masks: vec![
                AttnMaskConfig::KeyPadding {},
                AttnMaskConfig::SlidingWindow {
                    window: 128,
                    causal: true
                }
            ]
        }
    );
}

#[test]
fn bad_configs_are_refused() {
    for (json, needle) in [
        (r#"{"type": "flex"}"#, "flex"),
        (r#"{"type": "causal", "window": 3}"#, "window"),
        (r#"{"type": "sliding_window"}"#, "window"),
    ] {
        let err = serde_json::from_str::<AttnMaskConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
    let inputs = MaskInputs {
        batch: 1,
        heads: 1,
        seq_len: 4,
        ..Default::default()
    };
    let err = AttnMaskConfig::Document {}.build(&inputs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attention mask `document` needs `doc_ids` in the mask inputs"
    );
    let err = AttnMaskConfig::SlidingWindow {
        window: 0,
        causal: true,
    }
    .build(&inputs)
    .unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
}
