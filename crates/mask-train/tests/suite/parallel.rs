//! Data-parallel training on burn-collective: two peers (threads on the one CPU device) against
//! one device with the full batch, resume of a two-peer run, identical adaptive state on every
//! peer, and a peer that dies or hangs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{MaskingConfig, SelectionConfig, SelectorResources, TokenStats};
use mask_model::config::NormPlacement;
use mask_model::{CausalLmConfig, MlmConfig, TextEncoderConfig, TransformerConfig};
use mask_train::tasks::causal_lm::CausalLmTask;
use mask_train::tasks::mlm::{EvalSet, MlmTask};
use mask_train::{
    BatchInfo, CheckpointPolicy, Learner, Metrics, ParallelOptions, ResumeOptions, RunDir,
    TaskOutput, TrainConfig, TrainError, TrainTask,
};
use serde::{Deserialize, Serialize};

use crate::common::*;

/// A one-block encoder of width 32 without dropout (two peers draw other dropout masks than
/// one device: equality needs none).
fn encoder(vocab: usize, norm: NormPlacement) -> TextEncoderConfig {
    TextEncoderConfig::new(
        TransformerConfig::new(32, 2, 1, 64)
            .with_norm(norm)
            .with_dropout(0.0)
            .with_attn_dropout(0.0),
        vocab,
    )
    .with_max_len(32)
}

fn mlm(masking: impl FnOnce(MaskingConfig) -> MaskingConfig, res: &SelectorResources) -> MlmTask {
    let (tok, docs, vocab) = text_setup(64, 24);
    let eval_policy = MaskingConfig::new(vocab.clone()).build().unwrap();
    let eval = EvalSet::new(&docs[..16], eval_policy, tok.pad_id, 8, 1).unwrap();
    MlmTask::new(
        MlmConfig::new(encoder(tok.vocab_size(), NormPlacement::PostLn)),
        masking(MaskingConfig::new(vocab)),
        res,
        docs,
        Arc::new(eval),
        &tok,
    )
    .unwrap()
}

fn causal_lm() -> CausalLmTask {
    let (tok, docs, _) = text_setup(80, 24);
    CausalLmTask::new(
        CausalLmConfig::new(encoder(tok.vocab_size(), NormPlacement::PreLn)),
        Arc::new(docs[..64].to_vec()),
        Arc::new(docs[64..].to_vec()),
        &tok,
    )
    .unwrap()
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        eval_every: 4,
        grad_clip: Some(1.0),
        ..tiny_train(steps)
    }
}

fn checked() -> ParallelOptions {
    ParallelOptions {
        verify_replicas: true,
        ..ParallelOptions::default()
    }
}

/// One device with the full batch against two peers with half each, over 12 steps: the same
/// batches, losses, gradient norms and evaluations within 1e-5, parameters within 1e-5, and
/// the two replicas bit-identical at the end.
fn assert_two_peers_match_one<T: TrainTask<B>>(task: T) {
    let device = Default::default();
    let mut one = Learner::<B, T>::new(task.clone(), config(12), &device).unwrap();
    one.fit(&mut |_| {}).unwrap();
    let mut two = Learner::<B, T>::new(task, config(12), &device)
        .unwrap()
        .data_parallel(vec![device], checked())
        .unwrap();
    assert_eq!(two.world_size(), 2);
    two.fit(&mut |_| {}).unwrap();
    let kind = one.task().kind();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1.0);
    let (h1, h2) = (&one.state().history, &two.state().history);
    assert_eq!(h1.len(), 12);
    assert_eq!(h1.len(), h2.len());
    for (a, b) in h1.iter().zip(h2) {
        assert_eq!(
            (a.digest, a.items),
            (b.digest, b.items),
            "{kind} step {}",
            a.step
        );
        assert!(
            close(a.loss, b.loss),
            "{kind} step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
        assert!(close(a.grad_norm, b.grad_norm), "{kind} step {}", a.step);
    }
    assert!(h1[0].loss > 0.0 && h1[0].grad_norm > 0.0);
    let (e1, e2) = (&one.state().evals, &two.state().evals);
    assert_eq!(e1.len(), 3);
    for (a, b) in e1.iter().zip(e2) {
        assert!(
            close(a.score, b.score),
            "{kind}: {} vs {}",
            a.score,
            b.score
        );
    }
    let (p1, p2) = (param_bytes(one.model()), param_bytes(two.model()));
    let worst = p1
        .iter()
        .zip(&p2)
        .map(|(x, y)| (f32::from_bits(*x) - f32::from_bits(*y)).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{kind}: parameters differ by {worst:e}");
    let start = param_bytes(
        &Learner::<B, T>::new(one.task().clone(), config(12), &device)
            .unwrap()
            .into_model(),
    );
    assert_ne!(p2, start, "{kind}: training moved nothing");
    let reports = two.peer_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].rank, reports[0].steps), (1, 12));
}

#[test]
fn two_peers_equal_one_device_for_mlm_and_causal_lm() {
    let _s = serial();
    assert_two_peers_match_one(mlm(|m| m, &SelectorResources::default()));
    assert_two_peers_match_one(causal_lm());
}

/// A two-peer run saved at step 4 and resumed (again on two peers) repeats the uninterrupted
/// two-peer run bit for bit; the checkpoint also resumes on one device.
#[test]
fn a_two_peer_run_resumes_exactly() {
    let _s = serial();
    let dir = temp_dir("parallel-resume");
    let device = Default::default();
    let task = mlm(|m| m, &SelectorResources::default());
    let two = |l: Learner<B, MlmTask>| l.data_parallel(vec![device], checked()).unwrap();
    let mut whole = two(Learner::new(task.clone(), config(10), &device).unwrap());
    whole.fit(&mut |_| {}).unwrap();
    let mut first = two(Learner::new(task.clone(), config(10), &device).unwrap());
    first.fit_until(4, &mut |_| {}).unwrap();
    let path = dir.join("at-4.dynmask");
    first.save(&path).unwrap();
    drop(first);
    let resume = || {
        Learner::<B, MlmTask>::resume(
            task.clone(),
            config(10),
            &path,
            ResumeOptions::default(),
            &device,
        )
        .unwrap()
    };
    let mut rest = two(resume());
    rest.fit(&mut |_| {}).unwrap();
    assert_eq!(rest.state().history, whole.state().history);
    assert_eq!(rest.state().evals.len(), whole.state().evals.len());
    for (a, b) in rest.state().evals.iter().zip(&whole.state().evals) {
        assert_eq!(a.score, b.score);
    }
    assert_eq!(param_bytes(rest.model()), param_bytes(whole.model()));
    // The same checkpoint on one device: the same batches.
    let mut single = resume();
    single.fit(&mut |_| {}).unwrap();
    let digests = |l: &Learner<B, MlmTask>| -> Vec<u64> {
        l.state().history.iter().map(|r| r.digest).collect()
    };
    assert_eq!(digests(&single), digests(&whole));
    std::fs::remove_dir_all(&dir).ok();
}

/// Loss-aware masking on two peers: after 10 steps each peer's policy state (and model) is
/// byte-identical to peer 0's, and the state has moved from its initial value. The masks of
/// every step equal those of one device with the full batch: from step 1 on they depend on the
/// fed-back losses, so losses put back in the wrong order would change them.
#[test]
fn adaptive_state_is_identical_on_every_peer() {
    let _s = serial();
    let device = Default::default();
    let (_, docs, vocab) = text_setup(64, 24);
    let stats = TokenStats::from_docs(vocab.vocab_size, docs.iter().map(|d| d.ids.as_slice()));
    let res = SelectorResources {
        token_stats: Some(Arc::new(stats.unwrap())),
        ..SelectorResources::default()
    };
    let task = mlm(
        |m| {
            m.with_selection(SelectionConfig::LossAware {
                ema_decay: 0.9,
                temperature: 1.0,
                uniform_mix: 0.2,
            })
        },
        &res,
    );
    assert!(TrainTask::<B>::is_adaptive(&task));
    let initial = TrainTask::<B>::state_sections(&task);
    let mut one = Learner::<B, MlmTask>::new(task.clone(), config(10), &device).unwrap();
    one.fit(&mut |_| {}).unwrap();
    let mut l = Learner::<B, MlmTask>::new(task, config(10), &device)
        .unwrap()
        .data_parallel(vec![device], checked())
        .unwrap();
    l.fit(&mut |_| {}).unwrap();
    let state = TrainTask::<B>::state_sections(l.task());
    assert_eq!(state.len(), 1);
    assert_ne!(state, initial, "no feedback reached the policy");
    let peer = &l.peer_reports()[0];
    assert_eq!(peer.task_state, state);
    assert!(peer.model.is_some());
    let digests = |l: &Learner<B, MlmTask>| -> Vec<u64> {
        l.state().history.iter().map(|r| r.digest).collect()
    };
    assert_eq!(digests(&l), digests(&one));
}

#[test]
fn peers_are_refused_beyond_the_batch_and_for_tasks_that_cannot_split() {
    let _s = serial();
    let device = Default::default();
    let e = Learner::<B, Line>::new(Line::default(), line_config(4), &device)
        .unwrap()
        .data_parallel(vec![device; 8], ParallelOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("`peers` = 9"), "{e}");
    let mut l = Learner::<B, Line>::new(
        Line {
            splits: false,
            ..Line::default()
        },
        line_config(4),
        &device,
    )
    .unwrap()
    .data_parallel(vec![device], ParallelOptions::default())
    .unwrap();
    let e = l.fit(&mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("cannot be split by rows"), "{e}");
    assert_eq!(l.step_count(), 0);
}

/// Peer 1 panics at step 5 of 12 (checkpoints every 2 steps): peer 0 fails promptly naming
/// peer 1 and its message, the newest checkpoint is step 4's and resumes.
#[test]
fn a_dead_peer_stops_the_run_and_leaves_the_last_checkpoint_intact() {
    let _s = serial();
    let device = Default::default();
    let dir = temp_dir("parallel-dead-peer");
    let task = Line {
        fail: Some((1, 5, Failure::Panic)),
        ..Line::default()
    };
    let mut l = Learner::<B, Line>::new(task.clone(), line_config(12), &device)
        .unwrap()
        .attach(
            RunDir::open(&dir).unwrap(),
            CheckpointPolicy::new(2, 10).unwrap(),
        )
        .unwrap()
        .data_parallel(vec![device], ParallelOptions::default())
        .unwrap();
    let t = Instant::now();
    let e = l.fit(&mut |_| {}).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    match &e {
        TrainError::PeerLost { rank, step, reason } => {
            assert_eq!((*rank, *step), (1, 5), "{e}");
            assert!(reason.contains("peer 1 lost at step 5"), "{e}");
        }
        other => panic!("expected PeerLost, got {other}"),
    }
    assert_eq!(l.step_count(), 5, "steps 0-4 done, step 5 not applied");
    let run = RunDir::open(&dir).unwrap();
    let last = run.latest_checkpoint().unwrap().unwrap();
    assert_eq!(last.step, 4);
    let mut resumed = Learner::<B, Line>::resume(
        Line::default(),
        line_config(12),
        &last.path,
        ResumeOptions::default(),
        &device,
    )
    .unwrap();
    assert_eq!(resumed.step_count(), 4);
    resumed.fit(&mut |_| {}).unwrap();
    assert_eq!(resumed.step_count(), 12);
    std::fs::remove_dir_all(&dir).ok();
}

/// Peer 1 stops answering at step 3 (it sleeps 3 s); with a 0.3 s timeout peer 0 gives up
/// well before the sleep ends, with a collective error naming the step.
#[test]
fn a_hanging_peer_is_given_up_after_the_timeout() {
    let _s = serial();
    let device = Default::default();
    let sleep = Duration::from_secs(3);
    let task = Line {
        fail: Some((1, 3, Failure::Hang(sleep))),
        ..Line::default()
    };
    let options = ParallelOptions {
        timeout: Duration::from_millis(300),
        ..ParallelOptions::default()
    };
    let mut l = Learner::<B, Line>::new(task, line_config(12), &device)
        .unwrap()
        .data_parallel(vec![device], options)
        .unwrap();
    let t = Instant::now();
    let e = l.fit(&mut |_| {}).unwrap_err();
    let waited = t.elapsed();
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    match &e {
        TrainError::Collective {
            rank, step, reason, ..
        } => {
            assert_eq!((*rank, *step), (0, 3), "{e}");
            assert!(reason.contains("within 300ms"), "{e}");
        }
        other => panic!("expected Collective, got {other}"),
    }
    assert_eq!(l.step_count(), 3);
    // Let the sleeping peer wake and leave before the next test registers peers.
    std::thread::sleep(sleep.saturating_sub(waited) + Duration::from_millis(500));
}

// ---- a toy task with a peer that fails on purpose ----

#[derive(Clone, Copy, Debug)]
enum Failure {
    Panic,
    Hang(Duration),
}

/// `y = 3x + 1` with one linear layer (the `TrainTask` doc example), split by rows; peer
/// `fail.0` fails at step `fail.1`.
#[derive(Clone, Debug)]
struct Line {
    splits: bool,
    fail: Option<(usize, u64, Failure)>,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            splits: true,
            fail: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Mse(f64);

impl Metrics for Mse {
    fn score(&self) -> f64 {
        self.0
    }
    fn values(&self) -> Vec<(&'static str, f64)> {
        vec![("mse", self.0)]
    }
}

fn line_config(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 8,
        lr: 0.05,
        warmup_steps: 2,
        weight_decay: 0.0,
        eval_every: 0,
        ..TrainConfig::default()
    }
}

fn points(step: u64, n: usize) -> Vec<[f32; 2]> {
    (0..n)
        .map(|i| (step as usize * n + i) % 17)
        .map(|j| j as f32 / 17.0 - 0.5)
        .map(|x| [x, 3.0 * x + 1.0])
        .collect()
}

fn mse<Bk: Backend>(model: &Linear<Bk>, batch: &[[f32; 2]], device: &Bk::Device) -> Tensor<Bk, 1> {
    let column = |c: usize| {
        let v: Vec<f32> = batch.iter().map(|p| p[c]).collect();
        Tensor::<Bk, 2>::from_data(TensorData::new(v, [batch.len(), 1]), device)
    };
    (model.forward(column(0)) - column(1)).powi_scalar(2).mean()
}

impl<Bk: AutodiffBackend> TrainTask<Bk> for Line {
    type Model = Linear<Bk>;
    type Batch = (u64, Vec<[f32; 2]>);
    type Metrics = Mse;

    fn kind(&self) -> &'static str {
        "line"
    }
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "slope": 3.0 })
    }
    fn num_examples(&self) -> usize {
        17
    }
    fn init_model(&self, device: &Bk::Device) -> mask_train::Result<Linear<Bk>> {
        Ok(LinearConfig::new(1, 1).init(device))
    }
    fn batch(&mut self, _seed: u64, step: u64, n: usize) -> mask_train::Result<Self::Batch> {
        Ok((step, points(step, n)))
    }
    fn describe(&self, b: &Self::Batch) -> BatchInfo {
        let n = b.1.len();
        BatchInfo {
            examples: n,
            tokens: n,
            items: n,
            ..BatchInfo::default()
        }
    }
    fn shard(&self, b: &Self::Batch, rank: usize, world: usize) -> Option<Self::Batch> {
        if let Some((r, s, failure)) = self.fail {
            if r == rank && s == b.0 {
                match failure {
                    Failure::Panic => panic!("peer {rank} lost at step {s}"),
                    Failure::Hang(d) => std::thread::sleep(d),
                }
            }
        }
        let rows = mask_train::learner::shard_rows(b.1.len(), rank, world);
        self.splits
            .then(|| (b.0, rows.into_iter().map(|r| b.1[r]).collect()))
    }
    fn forward(
        &self,
        model: &Linear<Bk>,
        b: &Self::Batch,
        device: &Bk::Device,
    ) -> mask_train::Result<Option<TaskOutput<Bk>>> {
        Ok(Some(TaskOutput {
            loss: mse(model, &b.1, device),
            per_item: None,
        }))
    }
    fn evaluate(
        &self,
        model: &Linear<Bk::InnerBackend>,
        device: &Bk::Device,
    ) -> mask_train::Result<Mse> {
        Ok(Mse(mse(model, &points(0, 17), device).into_scalar().elem()))
    }
}
