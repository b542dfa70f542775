//! Checkpoints (round trip, refusal of mismatched or corrupt files, atomic writes) and the
//! safetensors export with HF BERT names.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use burn::prelude::Backend;
use mask_attn::{AllowAll, KeyPadding};
use mask_model::checkpoint::{write_atomic, Container};
use mask_model::*;
use safetensors::SafeTensors;

use crate::common::*;
use crate::shapes::{images, keep_lists, small_mae};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mask-model-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mlm_config() -> MlmConfig {
    MlmConfig::new(tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.1))
}

#[test]
fn mlm_checkpoint_round_trip_reproduces_outputs_exactly() {
    let dir = temp_dir("mlm");
    let config = mlm_config();
    let model = config.init::<B>(&dev()).unwrap();
    let x = ids::<B>(&[seq(9, 1), seq(9, 2)], &dev());
    let mask = KeyPadding::from_lengths(&[9, 5], 9).unwrap();
    let before = values(model.forward(x.clone(), &mask).unwrap());
    let path = dir.join("mlm.ckpt");
    save_checkpoint::<B, _>(&model, &config, &path).unwrap();
    let loaded = load_checkpoint::<B, _>(&config, &path, &dev()).unwrap();
    let after = values(loaded.forward(x, &mask).unwrap());
    assert_eq!(before, after);
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("mlm.ckpt")]);
}

#[test]
fn other_models_round_trip() {
    let dir = temp_dir("others");
    let mae_config = small_mae();
    let mae = mae_config.init::<B>(&dev()).unwrap();
    let before = values(mae.classify(images::<B>(2, &dev())).unwrap());
    save_checkpoint::<B, _>(&mae, &mae_config, &dir.join("mae")).unwrap();
    let loaded = load_checkpoint::<B, _>(&mae_config, &dir.join("mae"), &dev()).unwrap();
    assert_eq!(
        before,
        values(loaded.classify(images::<B>(2, &dev())).unwrap())
    );
    let idx = MaeIndices::<B>::from_keep(&keep_lists(2, 49, 10), 49, &dev()).unwrap();
    assert_eq!(
        values(mae.forward_mae(images::<B>(2, &dev()), &idx).unwrap().pred),
        values(
            loaded
                .forward_mae(images::<B>(2, &dev()), &idx)
                .unwrap()
                .pred
        )
    );

    let rec_config = Bert4RecConfig::new(20)
        .with_max_len(8)
        .with_d_model(16)
        .with_d_ff(32);
    let rec = rec_config.init::<B>(&dev()).unwrap();
    let x = ids::<B>(&[vec![1, 2, 3, 21]], &dev());
    let before = values(rec.forward(x.clone(), &AllowAll).unwrap());
    save_checkpoint::<B, _>(&rec, &rec_config, &dir.join("rec")).unwrap();
    let loaded = load_checkpoint::<B, _>(&rec_config, &dir.join("rec"), &dev()).unwrap();
    assert_eq!(before, values(loaded.forward(x, &AllowAll).unwrap()));
}

#[test]
fn mismatched_config_or_kind_is_refused_by_name() {
    let dir = temp_dir("mismatch");
    let config = mlm_config();
    let model = config.init::<B>(&dev()).unwrap();
    let path = dir.join("mlm.ckpt");
    save_checkpoint::<B, _>(&model, &config, &path).unwrap();

    let mut other = config.clone();
    other.encoder.transformer.d_model = 64;
    let err = load_checkpoint::<B, _>(&other, &path, &dev()).unwrap_err();
    match &err {
        ModelError::ConfigMismatch {
            field,
            found,
            expected,
            ..
        } => {
            assert_eq!(
                (field.as_str(), found.as_str(), expected.as_str()),
                ("encoder.transformer.d_model", "32", "64")
            );
        }
        e => panic!("expected a config mismatch, got {e}"),
    }
    assert!(
        err.to_string()
            .contains("`encoder.transformer.d_model` is 32 in the checkpoint but 64"),
        "{err}"
    );

    let other = MlmConfig::new(
        config
            .encoder
            .clone()
            .with_position(PositionEncoding::Rotary),
    );
    let err = load_checkpoint::<B, _>(&other, &path, &dev()).unwrap_err();
    assert!(
        err.to_string()
            .contains("`encoder.position` is \"learned\""),
        "{err}"
    );

    let clf = ClassifierConfig::new(config.encoder.clone(), 2);
    let err = load_checkpoint::<B, _>(&clf, &path, &dev()).unwrap_err();
    assert!(
        err.to_string()
            .contains("`kind` is mlm in the checkpoint but classifier"),
        "{err}"
    );
}

#[test]
fn corrupt_truncated_and_missing_files_are_refused() {
    let dir = temp_dir("corrupt");
    let config = mlm_config();
    let model = config.init::<B>(&dev()).unwrap();
    let path = dir.join("mlm.ckpt");
    save_checkpoint::<B, _>(&model, &config, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    std::fs::write(dir.join("flipped"), &flipped).unwrap();
    let err = load_checkpoint::<B, _>(&config, &dir.join("flipped"), &dev()).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");

    std::fs::write(dir.join("short"), &bytes[..bytes.len() / 3]).unwrap();
    let err = load_checkpoint::<B, _>(&config, &dir.join("short"), &dev()).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");

    std::fs::write(dir.join("other"), b"{\"not\": \"a checkpoint\"}").unwrap();
    let err = load_checkpoint::<B, _>(&config, &dir.join("other"), &dev()).unwrap_err();
    assert!(
        err.to_string().contains("not a dynmask checkpoint"),
        "{err}"
    );

    let err = load_checkpoint::<B, _>(&config, &dir.join("absent"), &dev()).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");

    // A container without the model section.
    let mut c = Container::read(&path).unwrap();
    c.insert("model", vec![1, 2, 3]);
    c.write(&dir.join("garbage-model")).unwrap();
    let err = load_checkpoint::<B, _>(&config, &dir.join("garbage-model"), &dev()).unwrap_err();
    assert!(
        err.to_string().contains("cannot decode the parameters"),
        "{err}"
    );
}

/// Child half of the crash test below: saves a *different* model over `DYNMASK_CRASH_PATH`
/// with the fault hook set, so the process aborts between the temp write and the rename (what
/// a `kill -9` at that moment leaves). A no-op when run as an ordinary test.
#[test]
fn crash_child_saves_and_dies() {
    let Some(path) = std::env::var_os("DYNMASK_CRASH_PATH") else {
        return;
    };
    let config = mlm_config();
    B::seed(&dev(), 99);
    let other = config.init::<B>(&dev()).unwrap();
    save_checkpoint::<B, _>(&other, &config, std::path::Path::new(&path)).unwrap();
    unreachable!("the fault hook should have aborted the process");
}

/// A real interrupted write: a child process dies between writing the temp file and renaming
/// it. The previous checkpoint must be byte-for-byte untouched and load to the same outputs, the
/// dead child's temp file must be the only litter, and the sweep must remove it.
#[test]
fn interrupted_write_leaves_the_previous_checkpoint_loadable() {
    let dir = temp_dir("atomic");
    let config = mlm_config();
    let model = config.init::<B>(&dev()).unwrap();
    let path = dir.join("mlm.ckpt");
    save_checkpoint::<B, _>(&model, &config, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "persistence::crash_child_saves_and_dies",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DYNMASK_CRASH_PATH", &path)
        .env(mask_attn::mask_core::io::FAULT_BEFORE_RENAME, "1")
        .output()
        .unwrap();
    assert!(
        !child.status.success(),
        "the fault hook should have killed the child"
    );
    let names = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let litter: Vec<String> = names().into_iter().filter(|n| n != "mlm.ckpt").collect();
    assert!(
        litter.len() == 1 && litter[0].starts_with(".mlm.ckpt.tmp."),
        "expected one temp file of the dead child: {litter:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the checkpoint was touched"
    );
    let loaded = load_checkpoint::<B, _>(&config, &path, &dev()).unwrap();
    let ids = ids_tensor::<B>("ids", &[2, 5, 7, 3], 1, config.encoder.vocab_size, &dev()).unwrap();
    let (a, b) = (
        model.forward(ids.clone(), &AllowAll).unwrap(),
        loaded.forward(ids, &AllowAll).unwrap(),
    );
    assert_eq!(a.into_data(), b.into_data(), "the loaded model differs");
    // The dead child's temp file is swept; a later successful write replaces the file whole.
    let swept = mask_attn::mask_core::io::sweep_stale_temp_files(&dir).unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(names(), vec!["mlm.ckpt".to_string()]);
    write_atomic(&dir.join("plain"), b"one").unwrap();
    write_atomic(&dir.join("plain"), b"two").unwrap();
    assert_eq!(std::fs::read(dir.join("plain")).unwrap(), b"two");
}

/// The documented HF names (docs/model.md) for a 2-layer post-LN BERT with learned positions.
fn hf_names(layers: usize) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for i in 0..layers {
        for s in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ] {
            for p in ["weight", "bias"] {
                names.insert(format!("bert.encoder.layer.{i}.{s}.{p}"));
            }
        }
    }
    names
}

#[test]
fn safetensors_export_has_hf_names_shapes_and_values() {
    let config = mlm_config();
    let model = config.init::<B>(&dev()).unwrap();
    let named = NamedTensors::bert_mlm(&model);
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = named.to_safetensors(meta).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    assert_eq!(names, hf_names(2));
    let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
    assert_eq!(
        shape("bert.embeddings.word_embeddings.weight"),
        vec![VOCAB, 32]
    );
    assert_eq!(
        shape("bert.embeddings.position_embeddings.weight"),
        vec![32, 32]
    );
    assert_eq!(
        shape("bert.encoder.layer.1.intermediate.dense.weight"),
        vec![64, 32]
    ); // [out, in]
    assert_eq!(
        shape("bert.encoder.layer.1.output.dense.weight"),
        vec![32, 64]
    );
    assert_eq!(shape("cls.predictions.bias"), vec![VOCAB]);
    // Linear weights are transposed to torch's [out, in]: element (o, i) = burn's (i, o).
    let burn_w = values(model.encoder.transformer.blocks[1].ff_in.weight.val()); // [32, 64]
    let t = st
        .tensor("bert.encoder.layer.1.intermediate.dense.weight")
        .unwrap();
    let hf: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (o, i) in [(0, 0), (5, 17), (63, 31)] {
        assert_eq!(hf[o * 32 + i], burn_w[i * 64 + o]);
    }
    assert_eq!(
        st.tensor("bert.embeddings.token_type_embeddings.weight")
            .unwrap()
            .data(),
        &[0u8; 2 * 32 * 4][..]
    );

    // Export -> import into a fresh model reproduces the logits exactly.
    let fresh = config.init::<B>(&dev()).unwrap();
    let imported = import_hf_bert_mlm(fresh, &bytes, "<memory>", &dev()).unwrap();
    let x = ids::<B>(&[seq(11, 7)], &dev());
    assert_eq!(
        values(model.forward(x.clone(), &AllowAll).unwrap()),
        values(imported.forward(x, &AllowAll).unwrap())
    );

    // A missing tensor is named.
    let mut partial = named.clone();
    partial
        .0
        .retain(|(n, _, _)| n != "bert.encoder.layer.1.output.dense.bias");
    let bytes = partial.to_safetensors(HashMap::new()).unwrap();
    let err = import_hf_bert_mlm(
        config.init::<B>(&dev()).unwrap(),
        &bytes,
        "x.safetensors",
        &dev(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "safetensors `x.safetensors`: tensor `bert.encoder.layer.1.output.dense.bias` is missing"
    );
}

#[test]
fn classifier_and_generic_exports() {
    let clf = ClassifierConfig::new(
        tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.1),
        3,
    )
    .init::<B>(&dev())
    .unwrap();
    let named = NamedTensors::bert_classifier(&clf);
    let find = |n: &str| {
        named
            .0
            .iter()
            .find(|(name, _, _)| name == n)
            .map(|(_, s, _)| s.clone())
    };
    assert_eq!(find("bert.pooler.dense.weight"), Some(vec![32, 32]));
    assert_eq!(find("classifier.weight"), Some(vec![3, 32]));
    assert_eq!(find("classifier.bias"), Some(vec![3]));

    let mae = small_mae().init::<B>(&dev()).unwrap();
    let named = NamedTensors::by_path(&mae);
    let find = |n: &str| {
        named
            .0
            .iter()
            .find(|(name, _, _)| name == n)
            .map(|(_, s, _)| s.clone())
    };
    assert_eq!(find("patch_embed.weight"), Some(vec![32, 16])); // [out, in]
    assert_eq!(find("mask_token"), Some(vec![1, 1, 16]));
    assert_eq!(
        find("encoder.blocks.0.attn.query.weight"),
        Some(vec![32, 32])
    );
    assert_eq!(find("encoder.final_norm.weight"), Some(vec![32])); // LayerNorm gamma, torch name
    let bytes = named.to_safetensors(HashMap::new()).unwrap();
    assert_eq!(
        SafeTensors::deserialize(&bytes).unwrap().len(),
        named.0.len()
    );
}

/// Export against PyTorch's own file: HF's weights (tests/data/make_bert_reference.py) imported
/// and exported again give back every tensor of the file bit for bit, under the same names,
/// except the segment table: HF's row 0 is folded into the positions on import, so the export
/// holds `positions + token_types[0]` and zero segment rows (equal outputs for
/// `token_type_ids = 0`, the only ids our models see).
#[test]
fn export_reproduces_the_pytorch_fixture() {
    let model = mlm_config().init::<B>(&dev()).unwrap();
    let model = import_hf_bert_mlm(
        model,
        crate::hf_reference::REFERENCE,
        "bert_reference",
        &dev(),
    )
    .unwrap();
    let exported = NamedTensors::bert_mlm(&model);
    let st = SafeTensors::deserialize(crate::hf_reference::REFERENCE).unwrap();
    let hf: BTreeSet<String> = st
        .names()
        .into_iter()
        .filter(|n| n.starts_with("bert.") || n.starts_with("cls."))
        .map(String::from)
        .collect();
    let ours: BTreeSet<String> = exported.0.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(ours, hf);
    let fixture = |n: &str| crate::hf_reference::floats(&st, n);
    let d = 32;
    let token_types = fixture("bert.embeddings.token_type_embeddings.weight");
    for (name, shape, got) in &exported.0 {
        assert_eq!(shape, &st.tensor(name).unwrap().shape().to_vec(), "{name}");
        let want: Vec<f32> = match name.as_str() {
            "bert.embeddings.token_type_embeddings.weight" => vec![0.0; 2 * d],
            "bert.embeddings.position_embeddings.weight" => fixture(name)
                .iter()
                .enumerate()
                .map(|(i, p)| p + token_types[i % d])
                .collect(),
            _ => fixture(name),
        };
        assert_eq!(got, &want, "{name}");
    }
}

/// HF BERT's config for a BERT-shaped model; a model it cannot represent is refused by field.
#[test]
fn hf_config_names_what_hf_bert_cannot_represent() {
    let config = hf_bert_config(&mlm_config().encoder, 0).unwrap();
    assert_eq!(config["hidden_size"], 32);
    assert_eq!(config["layer_norm_eps"], 1e-12);
    assert_eq!(config["hidden_act"], "gelu");
    let rotary = tiny(PositionEncoding::Rotary, NormPlacement::PostLn, 0.1);
    let err = hf_bert_config(&rotary, 0).unwrap_err().to_string();
    assert!(err.starts_with("`position` = rotary is invalid"), "{err}");
    let pre_ln = tiny(PositionEncoding::Learned, NormPlacement::PreLn, 0.1);
    let err = hf_bert_config(&pre_ln, 0).unwrap_err().to_string();
    assert!(err.starts_with("`norm` = pre_ln is invalid"), "{err}");
}
