//! The learner's guarantees: batches independent of the number of workers, early stopping,
//! events and logs, refusals on resume, the non-finite guard, and crash safety (a kill between
//! steps, in the middle of a log line, or between a checkpoint's write and rename).

use std::path::Path;

use crate::common::*;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{MaskingConfig, Regime};
use mask_train::run::{FAULT_KILL_AFTER_STEP, FAULT_TORN_LOG_AT_STEP};
use mask_train::tasks::mlm::MlmTask;
use mask_train::{
    BatchInfo, CheckpointPolicy, Learner, LearnerEvent, ResumeOptions, RunDir, TaskOutput,
    TrainConfig, TrainError, TrainTask,
};

fn plain_mlm() -> MlmTask {
    let (tok, docs, vocab) = text_setup(64, 24);
    mlm_task(&tok, &docs, MaskingConfig::new(vocab), &Default::default())
}

#[test]
fn batches_and_losses_do_not_depend_on_the_number_of_workers() {
    let _s = serial();
    let task = plain_mlm();
    let run = |workers| {
        let config = TrainConfig {
            workers,
            prefetch: 2,
            ..tiny_train(12)
        };
        let mut l = Learner::<B, _>::new(task.clone(), config, &Default::default()).unwrap();
        l.fit(&mut |_| {}).unwrap();
        l.state().history.clone()
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(one, three);
    // Epochs reshuffle and (dynamic) remask: no two steps share a batch.
    let mut digests: Vec<u64> = one.iter().map(|h| h.digest).collect();
    digests.sort_unstable();
    digests.dedup();
    assert_eq!(digests.len(), one.len());
}

#[test]
fn static_masks_repeat_across_epochs_and_dynamic_ones_do_not() {
    let _s = serial();
    let (tok, docs, vocab) = text_setup(64, 24);
    // Batch of step s and step s + steps_per_epoch differ in documents (reshuffle), so compare
    // per-document masks through the task's batches at a full-batch size.
    let mask_of = |regime: Regime, epoch: u64| {
        let mut task = mlm_task(
            &tok,
            &docs,
            MaskingConfig::new(vocab.clone()).with_regime(regime),
            &Default::default(),
        );
        let b = <MlmTask as TrainTask<B>>::batch(&mut task, 7, epoch, 64).unwrap();
        let mut rows: Vec<(u64, Vec<i32>)> = (0..b.batch)
            .map(|r| {
                let row = b.labels[r * b.seq_len..r * b.seq_len + b.lengths[r]].to_vec();
                (b.example_indices[r], row)
            })
            .collect();
        rows.sort();
        rows
    };
    let fixed = Regime::Static { dupe_factor: 1 };
    assert_eq!(mask_of(fixed, 0), mask_of(fixed, 5));
    assert_ne!(
        mask_of(Regime::Dynamic {}, 0),
        mask_of(Regime::Dynamic {}, 5)
    );
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let _s = serial();
    // A learning rate too small to move any f32 weight: the evaluation loss never improves.
    let config = TrainConfig {
        lr: 1e-12,
        eval_every: 2,
        early_stopping_patience: Some(2),
        ..tiny_train(20)
    };
    let mut l = Learner::<B, _>::new(plain_mlm(), config, &Default::default()).unwrap();
    let mut stopped = None;
    l.fit(&mut |e| {
        if let LearnerEvent::EarlyStop { step, .. } = e {
            stopped = Some(*step);
        }
    })
    .unwrap();
    // Evaluations at steps 2 (best), 4 (stale 1), 6 (stale 2 -> stop).
    assert_eq!((l.step_count(), stopped), (6, Some(6)));
    let evals = &l.state().evals;
    assert_eq!(evals.len(), 3);
    assert_eq!(evals[0].score, evals[2].score);
}

#[test]
fn a_run_directory_gets_events_logs_checkpoints_and_its_config() {
    let _s = serial();
    let dir = temp_dir("events");
    let run = RunDir::open(dir.join("dynamic/seed-0")).unwrap();
    let config = TrainConfig {
        eval_every: 4,
        ..tiny_train(10)
    };
    let mut l = Learner::<B, _>::new(plain_mlm(), config, &Default::default())
        .unwrap()
        .attach(run.clone(), CheckpointPolicy::new(4, 2).unwrap())
        .unwrap();
    let mut kinds = vec![];
    l.fit(&mut |e| {
        kinds.push(match e {
            LearnerEvent::Started { .. } => "started",
            LearnerEvent::Step { .. } => "step",
            LearnerEvent::Eval(_) => "eval",
            LearnerEvent::Checkpoint { .. } => "checkpoint",
            LearnerEvent::EarlyStop { .. } => "early",
            LearnerEvent::Finished { .. } => "finished",
        })
    })
    .unwrap();
    let count = |k| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"finished"));
    assert_eq!(
        (count("step"), count("eval"), count("checkpoint")),
        (10, 3, 3)
    );
    // Checkpoints at 4, 8 and 10; keep-last 2 removed the first.
    let steps: Vec<u64> = run.checkpoints().unwrap().iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![8, 10]);
    let log = std::fs::read_to_string(run.log_path()).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10 + 3 + 3);
    assert!(lines.iter().all(|v| v["done"].as_u64().is_some()));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.config_path()).unwrap()).unwrap();
    assert_eq!(config["kind"], "mlm");
    assert_eq!(config["train"]["steps"], 10);
    assert_eq!(config["bindings"]["tokenizer"].as_str().unwrap().len(), 64);
    // A fresh run over this state is refused; the state is untouched.
    let again = Learner::<B, _>::new(plain_mlm(), tiny_train(10), &Default::default())
        .unwrap()
        .attach(
            RunDir::open(run.root()).unwrap(),
            CheckpointPolicy::default(),
        );
    let err = again.err().unwrap().to_string();
    assert!(
        err.contains("checkpoints up to step 10") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(run.checkpoints().unwrap().len(), 2);
}

#[test]
fn resume_refuses_other_settings_data_and_kinds_and_extends_on_request() {
    let _s = serial();
    let (tok, docs, vocab) = text_setup(64, 24);
    let task = mlm_task(
        &tok,
        &docs,
        MaskingConfig::new(vocab.clone()),
        &Default::default(),
    );
    let device = Default::default();
    let mut l = Learner::<B, _>::new(task.clone(), tiny_train(4), &device).unwrap();
    l.fit(&mut |_| {}).unwrap();
    let path = temp_dir("refuse").join("ckpt.dynmask");
    l.save(&path).unwrap();
    let opts = ResumeOptions::default();
    let err = |r: Result<Learner<B, MlmTask>, TrainError>| r.err().unwrap().to_string();
    let lr = TrainConfig {
        lr: 1e-4,
        ..tiny_train(4)
    };
    let e = err(Learner::resume(task.clone(), lr, &path, opts, &device));
    assert!(
        e.contains("`train.lr` is 0.005 in the checkpoint but 0.0001"),
        "{e}"
    );
    let other_mask = mlm_task(
        &tok,
        &docs,
        MaskingConfig::new(vocab.clone()).with_regime(Regime::Static { dupe_factor: 4 }),
        &Default::default(),
    );
    let e = err(Learner::resume(
        other_mask,
        tiny_train(4),
        &path,
        opts,
        &device,
    ));
    assert!(e.contains("`masking.regime"), "{e}");
    // Regression (run-state issue, finding 2): a checkpoint trained with other token ids was
    // accepted. A tokenizer trained on other text has another digest: refused, both named.
    let (tok2, docs2, vocab2) = {
        let texts = corpus(80)[16..].to_vec();
        let t = mask_data::TextTokenizer::train(
            &texts,
            &mask_data::TokenizerConfig {
                vocab_size: 300,
                ..Default::default()
            },
        )
        .unwrap();
        let d = t.encode_batch(&texts[..64], 24).unwrap();
        let v = mask_core::VocabSpec::new(t.vocab_size() as u32, t.mask_id, t.special_ids());
        (t, std::sync::Arc::new(d), v)
    };
    let other_tok = mlm_task(
        &tok2,
        &docs2,
        MaskingConfig::new(vocab2),
        &Default::default(),
    );
    let e = err(Learner::resume(
        other_tok.clone(),
        tiny_train(4),
        &path,
        opts,
        &device,
    ));
    assert!(e.contains(tok.digest()) && e.contains(tok2.digest()), "{e}");
    let e = mask_train::load_model::<B, _>(&other_tok, &path, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer"), "{e}");
    // Another task kind.
    let e = Learner::<B, _>::resume(causal_lm_task(), tiny_train(4), &path, opts, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("written by a `mlm` task, this run is `causal_lm`"),
        "{e}"
    );
    // Regression (run-state issue, finding 8): a finished run could not be extended.
    let longer = tiny_train(6);
    let e = err(Learner::resume(
        task.clone(),
        longer.clone(),
        &path,
        opts,
        &device,
    ));
    assert!(e.contains("train.steps") && e.contains("--extend"), "{e}");
    let extend = ResumeOptions { allow_extend: true };
    let mut x = Learner::<B, _>::resume(task, longer, &path, extend, &device).unwrap();
    x.fit(&mut |_| {}).unwrap();
    assert_eq!(x.step_count(), 6);
    assert_eq!(x.state().history.len(), 6);
}

/// A task whose loss becomes NaN from step `at` on (the non-finite guard's test).
#[derive(Debug, Clone)]
struct NanFrom<T> {
    inner: T,
    at: u64,
}

impl<BK: AutodiffBackend, T: TrainTask<BK>> TrainTask<BK> for NanFrom<T> {
    type Model = T::Model;
    type Batch = (u64, T::Batch);
    type Metrics = T::Metrics;
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn settings(&self) -> serde_json::Value {
        self.inner.settings()
    }
    fn num_examples(&self) -> usize {
        self.inner.num_examples()
    }
    fn init_model(&self, device: &BK::Device) -> mask_train::Result<T::Model> {
        self.inner.init_model(device)
    }
    fn batch(
        &mut self,
        seed: u64,
        step: u64,
        batch_size: usize,
    ) -> mask_train::Result<Self::Batch> {
        Ok((step, self.inner.batch(seed, step, batch_size)?))
    }
    fn describe(&self, b: &Self::Batch) -> BatchInfo {
        self.inner.describe(&b.1)
    }
    fn forward(
        &self,
        model: &T::Model,
        b: &Self::Batch,
        device: &BK::Device,
    ) -> mask_train::Result<Option<TaskOutput<BK>>> {
        let out = self.inner.forward(model, &b.1, device)?;
        Ok(out.map(|o| TaskOutput {
            loss: if b.0 >= self.at {
                o.loss.mul_scalar(f32::NAN)
            } else {
                o.loss
            },
            per_item: o.per_item,
        }))
    }
    fn evaluate(
        &self,
        model: &<T::Model as burn::module::AutodiffModule<BK>>::InnerModule,
        device: &BK::Device,
    ) -> mask_train::Result<T::Metrics> {
        self.inner.evaluate(model, device)
    }
}

/// Regression (run-state issue, finding 4): a NaN loss ran on and exited 0. Now the step is
/// named, nothing is updated, and the last checkpoint stays byte-identical.
#[test]
fn a_nan_loss_stops_the_run_naming_the_step_and_leaves_the_checkpoint_intact() {
    let _s = serial();
    let dir = temp_dir("nan");
    let run = RunDir::open(dir.join("run")).unwrap();
    let task = NanFrom {
        inner: plain_mlm(),
        at: 5,
    };
    let policy = CheckpointPolicy::new(2, 3).unwrap();
    let mut l = Learner::<B, _>::new(task, tiny_train(10), &Default::default())
        .unwrap()
        .attach(run.clone(), policy)
        .unwrap();
    l.fit_until(4, &mut |_| {}).unwrap();
    let last = run.latest_checkpoint().unwrap().unwrap();
    assert_eq!(last.step, 4);
    let before = std::fs::read(&last.path).unwrap();
    let params = param_bytes(l.model());
    let err = l.fit(&mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, TrainError::NonFinite { step: 5, what, value } if what == "loss" && value.is_nan()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("non-finite loss at step 5"),
        "{err}"
    );
    assert_eq!(l.step_count(), 5, "step 4 ran, step 5 did not count");
    assert!(param_bytes(l.model()) != params, "step 4 updated the model");
    let steps: Vec<u64> = run.checkpoints().unwrap().iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![2, 4]);
    assert_eq!(std::fs::read(&last.path).unwrap(), before);
    let litter = std::fs::read_dir(run.checkpoint_dir()).unwrap().count();
    assert_eq!(litter, 2, "no temp files");
    for line in std::fs::read_to_string(run.log_path()).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["done"].as_u64().unwrap() <= 5, "{line}");
    }
}

/// Regression (run-state issue, finding 4): `lr = 1e6` reported NaN and exited 0.
#[test]
fn an_exploding_learning_rate_is_a_typed_error() {
    let _s = serial();
    let config = TrainConfig {
        lr: 1e6,
        warmup_steps: 0,
        grad_clip: None,
        ..tiny_train(30)
    };
    let mut l = Learner::<B, _>::new(plain_mlm(), config, &Default::default()).unwrap();
    match l.fit(&mut |_| {}) {
        Err(TrainError::NonFinite { what, step, .. }) => {
            assert!(what == "loss" || what == "gradient norm", "{what}");
            assert!(step < 30);
        }
        other => panic!("expected a non-finite error, got {other:?}"),
    }
}

/// Child half of the fault tests: runs 12 MLM steps in `DYNMASK_TEST_RUN`, checkpointing every
/// 3, with whatever fault hook the parent set. Does nothing in a normal test run.
#[test]
fn fault_child() {
    let Some(dir) = std::env::var_os("DYNMASK_TEST_RUN") else {
        return;
    };
    let run = RunDir::open(Path::new(&dir)).unwrap();
    let device = Default::default();
    let mut l = match run.latest_checkpoint().unwrap() {
        None => Learner::<B, _>::new(plain_mlm(), tiny_train(12), &device).unwrap(),
        Some(c) => Learner::<B, _>::resume(
            plain_mlm(),
            tiny_train(12),
            &c.path,
            ResumeOptions::default(),
            &device,
        )
        .unwrap(),
    };
    l = l.attach(run, CheckpointPolicy::new(3, 2).unwrap()).unwrap();
    l.fit(&mut |_| {}).unwrap();
}

fn child(dir: &Path, env: &[(&str, String)]) -> bool {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "learner::fault_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("DYNMASK_TEST_RUN", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap().status.success()
}

/// Regression (run-state issue, finding 3): after a late `kill -9` the log held a spliced,
/// unparsable line and duplicate steps. Killed between steps or in the middle of a log line,
/// then resumed: every line parses, every step is logged once, and the run ends as an
/// uninterrupted one does.
#[test]
fn killed_between_steps_or_mid_write_resumes_with_a_clean_log() {
    let _s = serial();
    let base = temp_dir("kill");
    assert!(child(&base.join("straight"), &[]));
    let straight = RunDir::open(base.join("straight")).unwrap();
    let final_log = |run: &RunDir| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.log_path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    };
    let step_records = |lines: &[serde_json::Value]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|v| v["event"] == "step")
            .map(|v| v["record"].clone())
            .collect()
    };
    let reference = step_records(&final_log(&straight));
    assert_eq!(reference.len(), 12);
    for (name, var, at) in [
        ("between", FAULT_KILL_AFTER_STEP, 5),
        ("torn", FAULT_TORN_LOG_AT_STEP, 8),
        ("late", FAULT_KILL_AFTER_STEP, 11),
    ] {
        let dir = base.join(name);
        assert!(
            !child(&dir, &[(var, at.to_string())]),
            "{name}: the fault hook should kill"
        );
        let run = RunDir::open(&dir).unwrap();
        let raw = std::fs::read_to_string(run.log_path()).unwrap();
        if var == FAULT_TORN_LOG_AT_STEP {
            assert!(!raw.ends_with('\n'), "{name}: the kill left a torn line");
        }
        assert!(child(&dir, &[]), "{name}: resume failed");
        let lines = final_log(&run);
        let dones: Vec<u64> = lines
            .iter()
            .filter(|v| v["event"] == "step")
            .map(|v| v["done"].as_u64().unwrap())
            .collect();
        assert_eq!(
            dones,
            (1..=12).collect::<Vec<_>>(),
            "{name}: each step once, in order"
        );
        let records = step_records(&lines);
        for (a, b) in reference.iter().zip(&records) {
            assert_eq!(a["digest"], b["digest"], "{name}");
            let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-6 * x.abs(), "{name}: {x} vs {y}");
        }
    }
}

/// Child half of the rename-crash test: saves over `DYNMASK_CRASH_PATH` with the fault hook
/// set, so the process aborts between the temp write and the rename.
#[test]
fn crash_child_writes_and_dies() {
    let Some(path) = std::env::var_os("DYNMASK_CRASH_PATH") else {
        return;
    };
    let mut l = Learner::<B, _>::new(plain_mlm(), tiny_train(3), &Default::default()).unwrap();
    l.fit(&mut |_| {}).unwrap();
    l.save(Path::new(&path)).unwrap();
    unreachable!("the fault hook should have aborted the process");
}

#[test]
fn killed_between_temp_write_and_rename_leaves_the_previous_checkpoint() {
    let _s = serial();
    let device = Default::default();
    let mut l = Learner::<B, _>::new(plain_mlm(), tiny_train(3), &device).unwrap();
    l.fit_until(1, &mut |_| {}).unwrap();
    let dir = temp_dir("crash");
    let path = dir.join("ckpt");
    l.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "learner::crash_child_writes_and_dies",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DYNMASK_CRASH_PATH", &path)
        .env(mask_core::io::FAULT_BEFORE_RENAME, "1")
        .output()
        .unwrap();
    assert!(
        !status.status.success(),
        "the fault hook should have killed the child"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with(".ckpt.tmp.")),
        "{names:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the previous checkpoint was touched"
    );
    let resumed = Learner::<B, _>::resume(
        plain_mlm(),
        tiny_train(3),
        &path,
        ResumeOptions::default(),
        &device,
    )
    .unwrap();
    assert_eq!(resumed.step_count(), 1);
    // Opening the directory as a run sweeps the dead child's temp file.
    RunDir::open(&dir).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp.")), "{names:?}");
}
