//! End-to-end tests of mask-train on NdArray: tokenizer, pipeline reproducibility, a tiny
//! training run whose loss falls, exact resume (same masks, losses to 1e-5), crash safety of
//! checkpoint writes, refusal of mismatched resumes, and the quick study.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use mask_core::{BatchMasker, MaskingConfig, Regime, VocabSpec};
use mask_model::{MlmConfig, TextEncoderConfig, TransformerConfig};
use mask_train::experiment::{results_table, run_study, StudyConfig};
use mask_train::pipeline::{batch_at, BatchSchedule, Prefetcher};
use mask_train::{Encoded, MlmTrainer, TextTokenizer, TrainConfig, TrainError};

type B = Autodiff<NdArray<f32>>;

/// burn's NdArray RNG (parameter init, dropout) is one per process: trainings in parallel test
/// threads would draw from each other's streams. Tests that train hold this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mask-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small real corpus: the first Austen paragraphs.
fn corpus(n: usize) -> Vec<String> {
    mask_train::data::austen_paragraphs()
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .filter(|t| t.split_whitespace().count() >= 8)
        .take(n)
        .collect()
}

fn setup(n_docs: usize, max_len: usize) -> (TextTokenizer, Arc<Vec<Encoded>>, VocabSpec) {
    let texts = corpus(n_docs);
    let tok = TextTokenizer::train(&texts, 300).unwrap();
    let docs = tok.encode_batch(&texts, max_len).unwrap();
    let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
    (tok, Arc::new(docs), vocab)
}

#[test]
fn tokenizer_trains_saves_and_reloads() {
    let texts = corpus(200);
    let tok = TextTokenizer::train(&texts, 300).unwrap();
    assert!(
        tok.vocab_size() <= 300 && tok.vocab_size() > 100,
        "{}",
        tok.vocab_size()
    );
    assert_eq!(
        (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id),
        (0, 2, 3, 4)
    );
    let enc = tok.encode_batch(&texts[..3], 16).unwrap();
    for e in &enc {
        assert!(e.ids.len() <= 16);
        assert_eq!((e.ids[0], *e.ids.last().unwrap()), (tok.cls_id, tok.sep_id));
        assert!(e.special_mask[0] && *e.special_mask.last().unwrap());
        assert!(!e.special_mask[1]);
        assert_eq!((e.word_ids[0], e.word_ids[1]), (None, Some(0)));
    }
    let dir = temp_dir("tok");
    let path = dir.join("tokenizer.json");
    let cached = TextTokenizer::load_or_train(&path, &texts, 300).unwrap();
    assert!(path.exists());
    let reloaded = TextTokenizer::load_or_train(&path, &["unused"], 300).unwrap();
    assert_eq!(
        cached.encode_batch(&texts[..5], 32).unwrap(),
        reloaded.encode_batch(&texts[..5], 32).unwrap()
    );
    assert!(TextTokenizer::train(&texts, 10)
        .unwrap_err()
        .to_string()
        .contains("`vocab_size` = 10"));
    let err = TextTokenizer::load(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot load `/nonexistent/tokenizer.json`"),
        "{err}"
    );
}

#[test]
fn batches_do_not_depend_on_workers_and_static_masks_repeat() {
    let (tok, docs, vocab) = setup(64, 24);
    let schedule = BatchSchedule::new(docs.len(), 8, 7).unwrap();
    let policy = MaskingConfig::new(vocab.clone()).build().unwrap();
    let collect = |workers| {
        let mut p = Prefetcher::spawn(
            Arc::clone(&docs),
            policy.clone(),
            schedule,
            tok.pad_id,
            3,
            27,
            workers,
            2,
        );
        std::iter::from_fn(|| p.next_batch())
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    let one = collect(1);
    assert_eq!(one.len(), 24);
    assert_eq!(one, collect(3));
    let mut masker = BatchMasker::new(policy);
    assert_eq!(
        one[5],
        batch_at(&mut masker, &docs, &schedule, tok.pad_id, 8).unwrap()
    );
    // Epochs reshuffle: step 0 and step 8 (epoch 1) see different documents.
    assert_ne!(schedule.docs_at(0), schedule.docs_at(8));

    // Static k = 1: a document gets the same mask in every epoch; dynamic: a fresh one.
    let row_mask = |regime: Regime, epoch: u64| {
        let policy = MaskingConfig::new(vocab.clone())
            .with_regime(regime)
            .build()
            .unwrap();
        let mut masker = BatchMasker::new(policy);
        let ctx = mask_core::BatchContext {
            seed: 7,
            epoch,
            step: epoch * 8,
        };
        let b =
            mask_train::pipeline::make_batch(&mut masker, &docs, &[0, 1, 2, 3], tok.pad_id, ctx)
                .unwrap();
        b.labels
    };
    assert_eq!(
        row_mask(Regime::Static { dupe_factor: 1 }, 0),
        row_mask(Regime::Static { dupe_factor: 1 }, 5)
    );
    assert_ne!(
        row_mask(Regime::Dynamic {}, 0),
        row_mask(Regime::Dynamic {}, 5)
    );
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
        seed: 11,
        ..TrainConfig::default()
    }
}

#[test]
fn training_reduces_the_loss_and_resume_is_exact() {
    let _serial = serial();
    let (tok, docs, vocab) = setup(64, 24);
    let masking = MaskingConfig::new(vocab.clone());
    let model = tiny_model(tok.vocab_size());
    let device = Default::default();

    // Uninterrupted: 24 steps (3 epochs).
    let mut a =
        MlmTrainer::<B>::new(model.clone(), tiny_train(24), masking.clone(), &device).unwrap();
    a.run(Arc::clone(&docs), tok.pad_id, None, &mut |_| {})
        .unwrap();
    assert_eq!(a.history.len(), 24);
    let first: f64 = a.history[..4].iter().map(|r| r.loss).sum::<f64>() / 4.0;
    let last: f64 = a.history[20..].iter().map(|r| r.loss).sum::<f64>() / 4.0;
    assert!(last < first - 0.2, "loss did not fall: {first} -> {last}");

    // Interrupted after 7 steps, checkpointed, resumed in a fresh trainer.
    let dir = temp_dir("resume");
    let path = dir.join("ckpt.dynmask");
    let mut b =
        MlmTrainer::<B>::new(model.clone(), tiny_train(24), masking.clone(), &device).unwrap();
    b.run_until(7, Arc::clone(&docs), tok.pad_id, None, &mut |_| {})
        .unwrap();
    b.save(&path).unwrap();
    drop(b);
    let mut c = MlmTrainer::<B>::resume(&path, model, tiny_train(24), masking, &device).unwrap();
    assert_eq!(c.step, 7);
    c.run(Arc::clone(&docs), tok.pad_id, None, &mut |_| {})
        .unwrap();
    assert_eq!(c.history.len(), 24);
    for (x, y) in a.history.iter().zip(&c.history) {
        assert_eq!(
            x.mask_digest, y.mask_digest,
            "step {}: masks differ after resume",
            x.step
        );
        assert!(
            (x.loss - y.loss).abs() <= 1e-5,
            "step {}: loss {} vs {} after resume",
            x.step,
            x.loss,
            y.loss
        );
    }
}

#[test]
fn resume_refuses_another_config_by_field() {
    let _serial = serial();
    let (tok, docs, vocab) = setup(32, 16);
    let masking = MaskingConfig::new(vocab.clone());
    let model = tiny_model(tok.vocab_size());
    let device = Default::default();
    let mut t =
        MlmTrainer::<B>::new(model.clone(), tiny_train(2), masking.clone(), &device).unwrap();
    t.run(docs, tok.pad_id, None, &mut |_| {}).unwrap();
    let path = temp_dir("refuse").join("ckpt");
    t.save(&path).unwrap();
    let other = TrainConfig {
        lr: 1e-4,
        ..tiny_train(2)
    };
    let err = MlmTrainer::<B>::resume(&path, model.clone(), other, masking.clone(), &device)
        .err()
        .unwrap();
    assert!(matches!(err, TrainError::Resume { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`train.lr` is 0.005 in the checkpoint but 0.0001"),
        "{err}"
    );
    let other_mask = masking
        .clone()
        .with_regime(Regime::Static { dupe_factor: 4 });
    let err = MlmTrainer::<B>::resume(&path, model, tiny_train(2), other_mask, &device)
        .err()
        .unwrap();
    assert!(err.to_string().contains("`masking.regime"), "{err}");
}

/// Child half of the crash test: saves over `DYNMASK_CRASH_PATH` with the fault hook set, so
/// the process aborts between the temp write and the rename. Does nothing in a normal run.
#[test]
fn crash_child_writes_and_dies() {
    let Some(path) = std::env::var_os("DYNMASK_CRASH_PATH") else {
        return;
    };
    let (tok, docs, vocab) = setup(32, 16);
    let model = tiny_model(tok.vocab_size());
    let mut t = MlmTrainer::<B>::new(
        model,
        tiny_train(3),
        MaskingConfig::new(vocab),
        &Default::default(),
    )
    .unwrap();
    t.run(docs, tok.pad_id, None, &mut |_| {}).unwrap();
    t.save(Path::new(&path)).unwrap();
    unreachable!("the fault hook should have aborted the process");
}

#[test]
fn killed_between_temp_write_and_rename_leaves_the_previous_checkpoint() {
    let _serial = serial();
    let (tok, docs, vocab) = setup(32, 16);
    let model = tiny_model(tok.vocab_size());
    let masking = MaskingConfig::new(vocab);
    let device = Default::default();
    let mut t =
        MlmTrainer::<B>::new(model.clone(), tiny_train(3), masking.clone(), &device).unwrap();
    t.run_until(1, docs, tok.pad_id, None, &mut |_| {}).unwrap();
    let dir = temp_dir("crash");
    let path = dir.join("ckpt");
    t.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();

    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writes_and_dies",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DYNMASK_CRASH_PATH", &path)
        .env("DYNMASK_FAULT_BEFORE_RENAME", "1")
        .output()
        .unwrap();
    assert!(
        !status.status.success(),
        "the child should have been killed by the fault hook"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .any(|n| n.to_string_lossy().starts_with(".ckpt.tmp.")),
        "{leftovers:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the previous checkpoint was touched"
    );
    let resumed = MlmTrainer::<B>::resume(&path, model, tiny_train(3), masking, &device).unwrap();
    assert_eq!(resumed.step, 1);
}

#[test]
fn quick_study_runs_end_to_end() {
    let _serial = serial();
    let mut config = StudyConfig::default().quick();
    config.out_dir = temp_dir("study").join("quick").display().to_string();
    let results = run_study::<B>(&config, &Default::default()).unwrap();
    assert_eq!(results.runs.len(), 3);
    for run in &results.runs {
        assert_eq!(run.history.len() as u64, config.train.steps);
        let eval = run.evals.last().unwrap();
        assert!(eval.mlm_loss.is_finite() && eval.mlm_acc >= 0.0);
        assert_eq!(run.confusion.total(), 128);
        // Pretraining helps: held-out loss below the uniform-guess loss ln(V).
        assert!(
            eval.mlm_loss < (config.vocab_size as f64).ln(),
            "{}",
            eval.mlm_loss
        );
    }
    // Static k=1 and dynamic see different masks after the first epoch.
    let digests = |arm: &str| {
        results
            .runs
            .iter()
            .find(|r| r.arm == arm)
            .unwrap()
            .history
            .iter()
            .map(|h| h.mask_digest)
            .collect::<Vec<_>>()
    };
    let (s1, dy) = (digests("static k=1"), digests("dynamic"));
    let per_epoch = 256 / config.train.batch_size;
    assert_eq!(
        s1[..per_epoch],
        dy[..per_epoch],
        "epoch 0 masks are shared by construction"
    );
    assert_ne!(s1[per_epoch..], dy[per_epoch..]);
    let table = results_table(&results);
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
    assert!(Path::new(&config.out_dir).join("results.json").exists());
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let _serial = serial();
    let (tok, docs, vocab) = setup(64, 24);
    let model = tiny_model(tok.vocab_size());
    // A learning rate too small to move any f32 weight: the evaluation loss never improves.
    let train = TrainConfig {
        lr: 1e-12,
        eval_every: 2,
        early_stopping_patience: Some(2),
        ..tiny_train(20)
    };
    let mut t = MlmTrainer::<B>::new(
        model,
        train,
        MaskingConfig::new(vocab.clone()),
        &Default::default(),
    )
    .unwrap();
    let eval_policy = MaskingConfig::new(vocab).build().unwrap();
    let eval = mask_train::EvalSet::new(&docs[..16], eval_policy, tok.pad_id, 8, 1).unwrap();
    t.run(Arc::clone(&docs), tok.pad_id, Some(&eval), &mut |_| {})
        .unwrap();
    // Evaluations at steps 2 (best), 4 (stale 1), 6 (stale 2 -> stop).
    assert_eq!(t.step, 6);
    assert_eq!(t.evals.len(), 3);
    assert_eq!(t.evals[0].mlm_loss, t.evals[2].mlm_loss);
}
