//! Model-aware masking in the learner loop (NdArray): loss-aware and learned policies get the
//! per-token losses of every step, their learned state goes into the checkpoint, and a resumed
//! run continues exactly (same masks, same losses, same policy state). Also: the masking-study
//! configs parse, and every arm of the study trains end to end on a quick version.

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use mask_core::{MaskingConfig, SelectionConfig, SelectorResources, TokenStats, VocabSpec};
use mask_model::checkpoint::Container;
use mask_model::{MlmConfig, TextEncoderConfig, TransformerConfig};
use mask_train::experiment::{load_study, results_table, run_study};
use mask_train::trainer::MASKING_STATE;
use mask_train::{Encoded, MlmTrainer, TextTokenizer, TrainConfig, TrainError};

type B = Autodiff<NdArray<f32>>;

/// burn's NdArray RNG is one per process: tests that train hold this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mask-adaptive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn setup(n_docs: usize, max_len: usize) -> (TextTokenizer, Arc<Vec<Encoded>>, VocabSpec) {
    let texts: Vec<String> = mask_train::data::austen_paragraphs()
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .filter(|t| t.split_whitespace().count() >= 8)
        .take(n_docs)
        .collect();
    let tok = TextTokenizer::train(&texts, 300).unwrap();
    let docs = tok.encode_batch(&texts, max_len).unwrap();
    let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
    (tok, Arc::new(docs), vocab)
}

fn tiny_model(vocab: usize) -> MlmConfig {
    MlmConfig::new(
        TextEncoderConfig::new(
            TransformerConfig::new(32, 2, 1, 64)
                .with_dropout(0.1)
                .with_attn_dropout(0.1),
            vocab,
        )
        .with_max_len(32),
    )
}

fn tiny_train(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 8,
        lr: 5e-3,
        warmup_steps: 2,
        eval_every: 0,
        seed: 5,
        ..TrainConfig::default()
    }
}

fn adaptive_selections() -> [(&'static str, SelectionConfig); 2] {
    [
        (
            "loss_aware",
            SelectionConfig::LossAware {
                ema_decay: 0.9,
                temperature: 1.0,
                uniform_mix: 0.2,
            },
        ),
        (
            "learned",
            SelectionConfig::Learned {
                embed_dim: 8,
                hidden: 16,
                learning_rate: 0.05,
                temperature: 1.0,
                uniform_mix: 0.2,
                init_seed: 3,
            },
        ),
    ]
}

#[test]
fn adaptive_policies_learn_from_losses_and_resume_exactly() {
    let _serial = serial();
    let (tok, docs, vocab) = setup(64, 24);
    let model = tiny_model(tok.vocab_size());
    let device = Default::default();
    let stats = TokenStats::from_docs(vocab.vocab_size, docs.iter().map(|d| d.ids.as_slice()));
    let res = SelectorResources {
        token_stats: Some(Arc::new(stats.unwrap())),
        ..SelectorResources::default()
    };
    let plain = {
        let mut t = MlmTrainer::<B>::new(
            model.clone(),
            tiny_train(16),
            MaskingConfig::new(vocab.clone()),
            &device,
        )
        .unwrap();
        t.run(Arc::clone(&docs), tok.pad_id, None, &mut |_| {})
            .unwrap();
        t.history
    };
    for (name, selection) in adaptive_selections() {
        let masking = MaskingConfig::new(vocab.clone()).with_selection(selection);
        let new = || {
            MlmTrainer::<B>::new_with(
                model.clone(),
                tiny_train(16),
                masking.clone(),
                &res,
                &device,
            )
            .unwrap()
        };
        let dir = temp_dir(name);
        // Uninterrupted.
        let mut a = new();
        a.run(Arc::clone(&docs), tok.pad_id, None, &mut |_| {})
            .unwrap();
        let end_a = dir.join("a.dynmask");
        a.save(&end_a).unwrap();
        // Interrupted after 7 steps, checkpointed, resumed in a fresh trainer.
        let mut b = new();
        let fresh = dir.join("fresh.dynmask");
        b.save(&fresh).unwrap();
        b.run_until(7, Arc::clone(&docs), tok.pad_id, None, &mut |_| {})
            .unwrap();
        let mid = dir.join("mid.dynmask");
        b.save(&mid).unwrap();
        drop(b);
        let mut c = MlmTrainer::<B>::resume_with(
            &mid,
            model.clone(),
            tiny_train(16),
            masking.clone(),
            &res,
            &device,
        )
        .unwrap();
        assert_eq!(c.step, 7);
        c.run(Arc::clone(&docs), tok.pad_id, None, &mut |_| {})
            .unwrap();
        let end_c = dir.join("c.dynmask");
        c.save(&end_c).unwrap();
        assert_eq!(c.history.len(), 16);
        for (x, y) in a.history.iter().zip(&c.history) {
            assert_eq!(x.mask_digest, y.mask_digest, "{name} step {}", x.step);
            assert!(
                (x.loss - y.loss).abs() <= 1e-5,
                "{name} step {}: {} vs {}",
                x.step,
                x.loss,
                y.loss
            );
        }
        let state = |p: &PathBuf| {
            Container::read(p)
                .unwrap()
                .get(MASKING_STATE)
                .unwrap_or_else(|| panic!("{name}: no {MASKING_STATE} in {}", p.display()))
                .to_vec()
        };
        // The policy learned something (its state moved) and the resumed run ends in the same
        // state, bit for bit.
        assert_ne!(state(&fresh), state(&end_a), "{name}: state never changed");
        assert_eq!(
            state(&end_a),
            state(&end_c),
            "{name}: state differs after resume"
        );
        // Adaptive masks are not the plain Bernoulli masks once the policy has feedback.
        let differ = a
            .history
            .iter()
            .zip(&plain)
            .filter(|(x, y)| x.mask_digest != y.mask_digest)
            .count();
        assert!(differ >= 8, "{name}: only {differ} of 16 steps differ");
        // Rate held: masked / maskable stays near 15% (CLS/SEP are 2 special tokens per row).
        let (masked, maskable): (usize, usize) = a
            .history
            .iter()
            .fold((0, 0), |(m, n), r| (m + r.masked, n + r.tokens - 2 * 8));
        let rate = masked as f64 / maskable as f64;
        let sd = (0.15 * 0.85 / maskable as f64).sqrt();
        assert!((rate - 0.15).abs() < 6.0 * sd + 0.01, "{name}: rate {rate}");
    }
}

#[test]
fn resume_refuses_an_adaptive_checkpoint_without_its_state() {
    let _serial = serial();
    let (tok, docs, vocab) = setup(32, 16);
    let model = tiny_model(tok.vocab_size());
    let device = Default::default();
    let (_, selection) = adaptive_selections()[0];
    let masking = MaskingConfig::new(vocab.clone()).with_selection(selection);
    let res = SelectorResources::default();
    let mut t =
        MlmTrainer::<B>::new_with(model.clone(), tiny_train(3), masking.clone(), &res, &device)
            .unwrap();
    t.run(docs, tok.pad_id, None, &mut |_| {}).unwrap();
    let dir = temp_dir("nostate");
    let path = dir.join("ckpt");
    t.save(&path).unwrap();
    // Rewrite the checkpoint without the policy state.
    let full = Container::read(&path).unwrap();
    let mut stripped = Container::default();
    for name in full.names() {
        if name != MASKING_STATE {
            stripped.insert(name, full.get(name).unwrap().to_vec());
        }
    }
    let bad = dir.join("stripped");
    stripped.write(&bad).unwrap();
    let resume = |p: &PathBuf| {
        MlmTrainer::<B>::resume_with(
            p,
            model.clone(),
            tiny_train(3),
            masking.clone(),
            &res,
            &device,
        )
    };
    let err = resume(&bad).err().unwrap();
    assert!(matches!(err, TrainError::Resume { .. }), "{err}");
    assert!(err.to_string().contains(MASKING_STATE), "{err}");
    // A corrupt state is refused with the policy's reason, not a panic.
    let mut corrupt = Container::default();
    for name in full.names() {
        let mut bytes = full.get(name).unwrap().to_vec();
        if name == MASKING_STATE {
            bytes.truncate(bytes.len() / 2);
        }
        corrupt.insert(name, bytes);
    }
    let bad = dir.join("corrupt");
    corrupt.write(&bad).unwrap();
    let err = resume(&bad).err().unwrap();
    assert!(err.to_string().contains("masking state"), "{err}");
    assert!(resume(&path).is_ok());
}

#[test]
fn masking_study_configs_parse_and_every_arm_trains() {
    let _serial = serial();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let full = load_study(&root.join("configs/masking_study.toml")).unwrap();
    let reduced = load_study(&root.join("configs/masking_study_reduced.toml")).unwrap();
    for config in [&full, &reduced] {
        config.validate().unwrap();
        assert_eq!(config.seeds.len(), 3, "{}", config.name);
        let names: Vec<&str> = config.arms.iter().map(|a| a.name.as_str()).collect();
        for want in [
            "static k=1",
            "static k=10",
            "dynamic 15%",
            "dynamic 40%",
            "decay 30%->15%",
            "whole-word",
            "span",
            "PMI-span",
            "loss-aware",
            "learned",
        ] {
            assert!(names.contains(&want), "{}: no arm {want}", config.name);
        }
    }
    // Same arms and budget in both, only sizes differ.
    assert_eq!(full.arms.len(), reduced.arms.len());

    let mut quick = reduced.quick();
    quick.seeds = vec![0];
    quick.train.steps = 48;
    quick.out_dir = temp_dir("study").join("quick").display().to_string();
    let results = run_study::<B>(&quick, &Default::default()).unwrap();
    assert_eq!(results.runs.len(), quick.arms.len());
    let rate = |arm: &str| {
        let run = results.runs.iter().find(|r| r.arm == arm).unwrap();
        let eval = run.evals.last().unwrap();
        assert!(eval.mlm_loss.is_finite(), "{arm}: {}", eval.mlm_loss);
        assert_eq!(run.history.len() as u64, quick.train.steps, "{arm}");
        let (m, t) = run
            .history
            .iter()
            .fold((0, 0), |(m, t), r| (m + r.masked, t + r.tokens));
        m as f64 / t as f64
    };
    for arm in &quick.arms {
        rate(&arm.name);
    }
    assert!(rate("dynamic 40%") > 2.0 * rate("dynamic 15%"));
    assert!(rate("decay 30%->15%") > rate("dynamic 15%"));
    assert!(std::path::Path::new(&quick.out_dir)
        .join("pmi-table.json")
        .exists());
    let table = results_table(&results);
    assert_eq!(table.lines().count(), 2 + quick.arms.len(), "{table}");
}
