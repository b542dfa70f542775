//! Configs: presets, validation messages, JSON round trips and refusal of unknown variants.

use mask_attn::AttnKernel;
use mask_model::*;

use crate::common::*;

#[test]
fn presets_have_the_documented_sizes() {
    let peer = TextEncoderConfig::preset("bert-small-peer").unwrap();
    let t = &peer.transformer;
    assert_eq!(
        (
            peer.vocab_size,
            t.d_model,
            t.n_layers,
            t.n_heads,
            t.d_ff,
            peer.max_len
        ),
        (8192, 256, 4, 4, 1024, 512)
    );
    let tiny = TextEncoderConfig::preset("bert-tiny").unwrap();
    assert_eq!(
        (tiny.transformer.n_layers, tiny.transformer.d_model),
        (2, 128)
    );
    for name in PRESETS {
        TextEncoderConfig::preset(name).unwrap().validate().unwrap();
    }
    let err = TextEncoderConfig::preset("bert-huge").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unknown preset `bert-huge`; known presets: {}",
            PRESETS.join(", ")
        )
    );
}

#[test]
fn invalid_fields_are_named() {
    let base = || tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.1);
    let with_t = |f: &dyn Fn(&mut TransformerConfig)| {
        let mut c = base();
        f(&mut c.transformer);
        c
    };
    let cases: Vec<(TextEncoderConfig, &str)> = vec![
        (
            TextEncoderConfig {
                vocab_size: 0,
                ..base()
            },
            "`vocab_size` = 0",
        ),
        (base().with_max_len(0), "`max_len` = 0"),
        (with_t(&|t| t.n_heads = 5), "`n_heads` = 5"),
        (with_t(&|t| t.dropout = 1.0), "`dropout` = 1"),
        (with_t(&|t| t.attn_dropout = -0.1), "`attn_dropout` = -0.1"),
        (with_t(&|t| t.n_layers = 0), "`n_layers` = 0"),
        (with_t(&|t| t.layer_norm_eps = 0.0), "`layer_norm_eps` = 0"),
        // head dim 32 / 32 = 1 is odd: rotary cannot pair it
        (
            with_t(&|t| t.n_heads = 32).with_position(PositionEncoding::Rotary),
            "`n_heads` = 32",
        ),
    ];
    for (config, want) in cases {
        let err = config.init::<B>(&dev()).unwrap_err();
        assert!(
            err.to_string().starts_with(want),
            "{err} should start with {want}"
        );
    }
    let err = ClassifierConfig::new(base(), 1)
        .init::<B>(&dev())
        .unwrap_err();
    assert!(err.to_string().starts_with("`n_classes` = 1"), "{err}");
    let mut mae = VitMaeConfig::tiny();
    mae.patch_size = 5;
    let err = mae.init::<B>(&dev()).unwrap_err();
    assert!(err.to_string().starts_with("`patch_size` = 5"), "{err}");
    let err = Bert4RecConfig::new(0).init::<B>(&dev()).unwrap_err();
    assert!(err.to_string().starts_with("`n_items` = 0"), "{err}");
    let err = SharedEncoderConfig::new(base(), 0, vec![])
        .init::<B>(&dev())
        .unwrap_err();
    assert!(err.to_string().starts_with("`lm_heads` = 0"), "{err}");
    let err = SharedEncoderConfig::new(base(), 1, vec![7, 1])
        .init::<B>(&dev())
        .unwrap_err();
    assert!(err.to_string().starts_with("`taggers` = 1"), "{err}");
    // A head that does not exist is an error naming it, not a panic.
    let model = SharedEncoderConfig::new(base(), 1, vec![3])
        .init::<B>(&dev())
        .unwrap();
    assert_eq!((model.lm_heads.len(), model.taggers.len()), (1, 1));
    let hidden = burn::tensor::Tensor::<B, 3>::zeros([1, 2, base().transformer.d_model], &dev());
    let at = burn::tensor::Tensor::<B, 1, burn::tensor::Int>::from_ints([1], &dev());
    let err = model.lm_at(1, hidden.clone(), at.clone()).unwrap_err();
    assert!(err.to_string().starts_with("`lm_head` = 1"), "{err}");
    let err = model.tag_at(1, hidden.clone(), at).unwrap_err();
    assert!(err.to_string().starts_with("`tagger` = 1"), "{err}");
    let none = burn::tensor::Tensor::<B, 1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(Vec::<i64>::new(), [0]),
        &dev(),
    );
    let err = model.tag_at(0, hidden, none).unwrap_err();
    assert!(err.to_string().contains("tagged positions"), "{err}");
}

#[test]
fn configs_round_trip_through_json() {
    let mut enc = tiny(PositionEncoding::Rotary, NormPlacement::PreLn, 0.2);
    enc.transformer.kernel = AttnKernel::Reference;
    let config = MlmConfig::new(enc);
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"position\":\"rotary\""), "{json}");
    assert!(json.contains("\"norm\":\"pre_ln\""), "{json}");
    assert!(json.contains("\"kernel\":\"reference\""), "{json}");
    let back: MlmConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);

    let wrong = json.replace("\"rotary\"", "\"alibi\"");
    let err = serde_json::from_str::<MlmConfig>(&wrong).unwrap_err();
    assert!(err.to_string().contains("unknown variant `alibi`"), "{err}");
    let wrong = json.replace("\"pre_ln\"", "\"sandwich\"");
    assert!(serde_json::from_str::<MlmConfig>(&wrong).is_err());

    for config in [
        serde_json::to_string(&VitMaeConfig::tiny()).unwrap(),
        serde_json::to_string(&Bert4RecConfig::new(10)).unwrap(),
        serde_json::to_string(&CausalLmConfig::new(
            TextEncoderConfig::preset("gpt-tiny").unwrap(),
        ))
        .unwrap(),
    ] {
        let v: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert!(v.is_object());
    }
}
