//! The MLM learner loop, generic over `B: AutodiffBackend`: AdamW, warm-up + decay, global-norm
//! clipping, evaluation on fixed masks, exact resume.
//!
//! Why our own loop and not burn-train's `Learner`: the loop must (a) draw each step's batch from
//! a `(seed, step)`-addressed pipeline so a resumed run sees the same masks, (b) reseed dropout
//! per step so a resumed run reproduces the same losses, (c) hand per-token losses back to
//! model-aware masking policies, and (d) checkpoint policy and pipeline state next to the
//! optimizer. `Learner` owns its data loader, RNG and checkpoint format, so none of these fit.

use std::path::Path;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use mask_core::{
    BatchMasker, MaskingConfig, Selector, SelectorResources, TokenMasker, IGNORE_INDEX,
};
use mask_model::checkpoint::{first_difference, model_container, model_from_container, Container};
use mask_model::mask_attn::KeyPadding;
use mask_model::{ids_tensor, token_cross_entropy, MaskedTargets, MlmConfig, MlmModel};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result, TrainError};
use crate::metrics::MlmMetrics;
use crate::pipeline::{
    batch_at_cached, make_batch, BatchSchedule, EpochOrder, Prefetcher, TrainBatch,
};
use crate::schedule::{clip_global_norm, lr_at, Decay};
use crate::tokenizer::Encoded;

/// Settings of a training run (everything that decides the numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps. Default: 1000
    pub steps: u64,
    /// Documents per batch. Default: 32
    pub batch_size: usize,
    /// Peak learning rate. Default: 5e-4
    pub lr: f64,
    /// Linear warm-up steps. Default: 100
    pub warmup_steps: u64,
    /// Decay after warm-up. Default: linear
    pub decay: Decay,
    /// Final learning rate as a fraction of `lr`. Default: 0.0
    pub min_lr_ratio: f64,
    /// AdamW weight decay. Default: 0.01
    pub weight_decay: f64,
    /// Global gradient-norm clip (`None`: off). Default: 1.0
    pub grad_clip: Option<f64>,
    /// Evaluate every N steps (0: only at the end). Default: 100
    pub eval_every: u64,
    /// Seed of data order, masks and dropout. Default: 0
    pub seed: u64,
    /// Data worker threads (results do not depend on it). Default: 1
    pub workers: usize,
    /// Batches each worker prepares ahead. Default: 4
    pub prefetch: usize,
    /// Stop after this many evaluations without improvement (`None`: never). Default: None
    pub early_stopping_patience: Option<u32>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 32,
            lr: 5e-4,
            warmup_steps: 100,
            decay: Decay::Linear,
            min_lr_ratio: 0.0,
            weight_decay: 0.01,
            grad_clip: Some(1.0),
            eval_every: 100,
            seed: 0,
            workers: 1,
            prefetch: 4,
            early_stopping_patience: None,
        }
    }
}

impl TrainConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(invalid("steps", 0, "at least 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("lr", self.lr, "a finite value > 0"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(invalid("min_lr_ratio", self.min_lr_ratio, "in [0, 1]"));
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return Err(invalid("weight_decay", self.weight_decay, "in [0, 1)"));
        }
        if let Some(c) = self.grad_clip.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return Err(invalid("grad_clip", c, "a finite value > 0 (or absent)"));
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(invalid("workers", self.workers, "1..=64"));
        }
        Ok(())
    }

    /// Learning rate at `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        lr_at(
            step,
            self.steps,
            self.lr,
            self.warmup_steps,
            self.decay,
            self.min_lr_ratio,
        )
    }
}

/// One optimizer step, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step index (0-based).
    pub step: u64,
    /// Epoch of the step's batch.
    pub epoch: u64,
    /// Mean MLM loss over the batch's masked positions.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Masked positions.
    pub masked: usize,
    /// Real (non-pad) tokens.
    pub tokens: usize,
    /// FNV-1a digest of the batch's corrupted ids and labels: equal digests mean bit-identical
    /// masks (how the resume test and a reader of the logs compare runs).
    pub mask_digest: u64,
}

/// FNV-1a over a batch's input ids and labels.
pub fn mask_digest(batch: &TrainBatch) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u32| {
        for b in x.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    batch.input_ids.iter().for_each(|&i| eat(i));
    batch.labels.iter().for_each(|&l| eat(l as u32));
    h
}

/// One evaluation, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Steps done when evaluated.
    pub step: u64,
    /// Mean loss over masked evaluation tokens.
    pub mlm_loss: f64,
    /// Accuracy over masked evaluation tokens.
    pub mlm_acc: f64,
    /// `exp(mlm_loss)`.
    pub perplexity: f64,
}

/// What the loop reports as it goes.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A step finished.
    Step(&'a StepRecord),
    /// An evaluation finished.
    Eval(&'a EvalRecord),
}

/// Held-out documents masked once with a fixed policy and context, identical for every run
/// that builds it from the same documents (BERT-style 15%, 80/10/10, `seed`, epoch 0).
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// The masked batches.
    pub batches: Vec<TrainBatch>,
}

impl EvalSet {
    /// Masks `docs` in batches of `batch_size` with `policy` at `(seed, epoch 0, step 0)`.
    pub fn new(
        docs: &[Encoded],
        policy: TokenMasker,
        pad_id: u32,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self> {
        let mut masker = BatchMasker::new(policy);
        let indices: Vec<usize> = (0..docs.len()).collect();
        let batches = indices
            .chunks(batch_size.max(1))
            .map(|chunk| {
                let ctx = mask_core::BatchContext {
                    seed,
                    epoch: 0,
                    step: 0,
                };
                make_batch(&mut masker, docs, chunk, pad_id, ctx)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { batches })
    }
}

/// Training state written next to the model and optimizer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    train: TrainConfig,
    masking: MaskingConfig,
    history: Vec<StepRecord>,
    evals: Vec<EvalRecord>,
    best: Option<f64>,
    stale_evals: u32,
}

/// An MLM model with its optimizer and the state that makes a run resumable.
pub struct MlmTrainer<B: AutodiffBackend> {
    /// The model being trained.
    pub model: MlmModel<B>,
    optim: OptimizerAdaptor<AdamW, MlmModel<B>, B>,
    /// Its config.
    pub model_config: MlmConfig,
    /// Run settings.
    pub train: TrainConfig,
    /// Masking policy config.
    pub masking: MaskingConfig,
    /// The policy; adaptive ones (loss-aware, learned) learn from each step's per-token losses.
    masker: BatchMasker<TokenMasker>,
    /// Steps done.
    pub step: u64,
    /// Per-step log.
    pub history: Vec<StepRecord>,
    /// Evaluations.
    pub evals: Vec<EvalRecord>,
    best: Option<f64>,
    stale_evals: u32,
    device: B::Device,
}

fn optimizer<B: AutodiffBackend>(train: &TrainConfig) -> OptimizerAdaptor<AdamW, MlmModel<B>, B> {
    AdamWConfig::new()
        .with_weight_decay(train.weight_decay as f32)
        .with_epsilon(1e-6)
        .init::<B, MlmModel<B>>()
}

/// Mixes a run seed and a step into a dropout seed.
fn dropout_seed(seed: u64, step: u64) -> u64 {
    mask_core::mix64(seed ^ 0xd50f_a11c_e5ee_d000 ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl<B: AutodiffBackend> MlmTrainer<B> {
    /// A fresh run with a policy that needs no corpus resources.
    pub fn new(
        model_config: MlmConfig,
        train: TrainConfig,
        masking: MaskingConfig,
        device: &B::Device,
    ) -> Result<Self> {
        Self::new_with(
            model_config,
            train,
            masking,
            &SelectorResources::default(),
            device,
        )
    }

    /// A fresh run; `resources` holds what content-aware policies need (IDF statistics, the
    /// PMI table, tag weights).
    pub fn new_with(
        model_config: MlmConfig,
        train: TrainConfig,
        masking: MaskingConfig,
        resources: &SelectorResources,
        device: &B::Device,
    ) -> Result<Self> {
        train.validate()?;
        let policy = masking.build_with(resources)?;
        if masking.vocab.vocab_size as usize != model_config.encoder.vocab_size {
            return Err(invalid(
                "masking.vocab.vocab_size",
                masking.vocab.vocab_size,
                format!(
                    "the model's vocab_size ({})",
                    model_config.encoder.vocab_size
                ),
            ));
        }
        B::seed(device, train.seed);
        let model = model_config.init::<B>(device)?;
        Ok(Self {
            model,
            optim: optimizer::<B>(&train),
            model_config,
            train,
            masking,
            masker: BatchMasker::new(policy),
            step: 0,
            history: vec![],
            evals: vec![],
            best: None,
            stale_evals: 0,
            device: device.clone(),
        })
    }

    /// One optimizer step on `batch`.
    pub fn train_step(&mut self, batch: &TrainBatch) -> Result<StepRecord> {
        B::seed(&self.device, dropout_seed(self.train.seed, self.step));
        let vocab = self.model_config.encoder.vocab_size;
        let targets = MaskedTargets::from_labels(&batch.labels, vocab)?;
        let lr = self.train.lr_at(self.step);
        let tokens = batch.lengths.iter().sum();
        if targets.is_empty() {
            // Nothing masked (tiny batches at low rates): no update, the step still counts.
            let rec = StepRecord {
                step: self.step,
                epoch: batch.epoch,
                loss: f64::NAN,
                lr,
                grad_norm: 0.0,
                masked: 0,
                tokens,
                mask_digest: mask_digest(batch),
            };
            self.step += 1;
            self.history.push(rec.clone());
            return Ok(rec);
        }
        let x = ids_tensor::<B>(
            "input_ids",
            &batch.input_ids,
            batch.batch,
            vocab,
            &self.device,
        )?;
        let mask = KeyPadding::from_lengths(&batch.lengths, batch.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let (positions, t) = targets.to_tensors::<B>(&self.device);
        let logits = self.model.forward_at(x, &mask, positions)?;
        let per_token = token_cross_entropy(logits, t); // [N]
        if self.masker.policy().is_adaptive() {
            let losses: Vec<f32> = per_token
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32");
            feed_back(self.masker.policy_mut(), batch, &targets.positions, &losses);
        }
        let loss = per_token.mean();
        let loss_value = loss.clone().into_scalar().elem::<f64>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let grad_norm = match self.train.grad_clip {
            Some(max) => clip_global_norm::<B, _>(&self.model, &mut grads, max),
            None => crate::schedule::global_grad_norm::<B, _>(&self.model, &grads),
        };
        self.model = self.optim.step(lr, self.model.clone(), grads);
        let rec = StepRecord {
            step: self.step,
            epoch: batch.epoch,
            loss: loss_value,
            lr,
            grad_norm,
            masked: targets.len(),
            tokens,
            mask_digest: mask_digest(batch),
        };
        self.step += 1;
        self.history.push(rec.clone());
        Ok(rec)
    }

    /// MLM loss / accuracy over the evaluation set (no dropout, no autodiff).
    pub fn evaluate(&self, eval: &EvalSet) -> Result<MlmMetrics> {
        evaluate_mlm(&self.model.valid(), eval, &self.device)
    }

    /// Runs steps until `self.train.steps` (or early stop), reporting to `on_event`.
    pub fn run(
        &mut self,
        docs: Arc<Vec<Encoded>>,
        pad_id: u32,
        eval: Option<&EvalSet>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<()> {
        self.run_until(self.train.steps, docs, pad_id, eval, on_event)
    }

    /// Runs steps until `until` (at most `self.train.steps`): a session of a longer run, which
    /// a later session continues (in this process or after [`save`](Self::save) / `resume`).
    pub fn run_until(
        &mut self,
        until: u64,
        docs: Arc<Vec<Encoded>>,
        pad_id: u32,
        eval: Option<&EvalSet>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<()> {
        let until = until.min(self.train.steps);
        let schedule = BatchSchedule::new(docs.len(), self.train.batch_size, self.train.seed)?;
        // An adaptive policy's mask at step s depends on the losses of steps < s, so its batches
        // are made here, in step order, after the previous step's feedback. Static policies are
        // prefetched by worker threads (their masks depend on (seed, epoch, index, step) only).
        let adaptive = self.masker.policy().is_adaptive();
        let mut prefetch = (!adaptive).then(|| {
            Prefetcher::spawn(
                Arc::clone(&docs),
                self.masker.policy().clone(),
                schedule,
                pad_id,
                self.step,
                until,
                self.train.workers,
                self.train.prefetch,
            )
        });
        let mut order = EpochOrder::default();
        while self.step < until {
            let batch = match prefetch.as_mut() {
                Some(p) => match p.next_batch() {
                    Some(b) => b?,
                    None => break,
                },
                None => batch_at_cached(
                    &mut self.masker,
                    &docs,
                    &schedule,
                    pad_id,
                    self.step,
                    &mut order,
                )?,
            };
            let rec = self.train_step(&batch)?;
            on_event(Event::Step(&rec));
            let due = self.train.eval_every > 0 && self.step.is_multiple_of(self.train.eval_every);
            if let Some(eval) = eval.filter(|_| due || self.step == self.train.steps) {
                let m = self.evaluate(eval)?;
                let rec = EvalRecord {
                    step: self.step,
                    mlm_loss: m.mlm_loss(),
                    mlm_acc: m.mlm_acc(),
                    perplexity: m.perplexity(),
                };
                self.evals.push(rec.clone());
                on_event(Event::Eval(&rec));
                if self.best.is_none_or(|b| rec.mlm_loss < b) {
                    self.best = Some(rec.mlm_loss);
                    self.stale_evals = 0;
                } else {
                    self.stale_evals += 1;
                }
                if self
                    .train
                    .early_stopping_patience
                    .is_some_and(|p| self.stale_evals >= p)
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Writes model, optimizer and training state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut c: Container = model_container::<B, MlmConfig>(&self.model, &self.model_config)?;
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let optim = Recorder::<B>::record(&recorder, self.optim.to_record(), ()).map_err(|e| {
            TrainError::Resume {
                path: path.display().to_string(),
                reason: format!("cannot record the optimizer: {e}"),
            }
        })?;
        c.insert("optimizer", optim);
        let state = TrainState {
            step: self.step,
            train: self.train.clone(),
            masking: self.masking.clone(),
            history: self.history.clone(),
            evals: self.evals.clone(),
            best: self.best,
            stale_evals: self.stale_evals,
        };
        c.insert(
            "train.state",
            serde_json::to_vec(&state).expect("state serialises"),
        );
        if let Some(bytes) = self.masker.policy().selector().state_bytes() {
            c.insert(MASKING_STATE, bytes);
        }
        c.write(path)?;
        Ok(())
    }

    /// Resumes a run saved by [`save`](Self::save), refusing a checkpoint written with another
    /// model, training or masking config (the first differing field is named).
    pub fn resume(
        path: &Path,
        model_config: MlmConfig,
        train: TrainConfig,
        masking: MaskingConfig,
        device: &B::Device,
    ) -> Result<Self> {
        Self::resume_with(
            path,
            model_config,
            train,
            masking,
            &SelectorResources::default(),
            device,
        )
    }

    /// [`resume`](Self::resume) for policies that need corpus resources; an adaptive policy's
    /// learned state is restored from the checkpoint's `masking.state` section.
    pub fn resume_with(
        path: &Path,
        model_config: MlmConfig,
        train: TrainConfig,
        masking: MaskingConfig,
        resources: &SelectorResources,
        device: &B::Device,
    ) -> Result<Self> {
        let name = path.display().to_string();
        let c = Container::read(path)?;
        let model = model_from_container::<B, MlmConfig>(&c, &model_config, &name, device)?;
        let resume_err = |reason: String| TrainError::Resume {
            path: name.clone(),
            reason,
        };
        let state: TrainState = serde_json::from_slice(c.require("train.state", &name)?)
            .map_err(|e| resume_err(format!("training state is malformed: {e}")))?;
        for (what, found, expected) in [
            (
                "train",
                serde_json::to_value(&state.train),
                serde_json::to_value(&train),
            ),
            (
                "masking",
                serde_json::to_value(&state.masking),
                serde_json::to_value(&masking),
            ),
        ] {
            let (found, expected) = (found.expect("serialises"), expected.expect("serialises"));
            if let Some((field, f, e)) = first_difference(what, &found, &expected) {
                return Err(resume_err(format!(
                    "`{field}` is {f} in the checkpoint but {e} in this run"
                )));
            }
        }
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let record =
            Recorder::<B>::load(&recorder, c.require("optimizer", &name)?.to_vec(), device)
                .map_err(|e| resume_err(format!("cannot decode the optimizer state: {e}")))?;
        let optim = optimizer::<B>(&train).load_record(record);
        let mut policy = masking.build_with(resources)?;
        match (c.get(MASKING_STATE), policy.is_adaptive()) {
            (Some(bytes), true) => policy
                .selector_mut()
                .load_state_bytes(bytes)
                .map_err(|e| resume_err(format!("masking state: {e}")))?,
            (None, true) => {
                return Err(resume_err(format!(
                    "the policy `{}` learns from feedback but the checkpoint has no `{MASKING_STATE}` section",
                    policy.selector().name()
                )))
            }
            _ => {}
        }
        Ok(Self {
            model,
            optim,
            model_config,
            train,
            masking,
            masker: BatchMasker::new(policy),
            step: state.step,
            history: state.history,
            evals: state.evals,
            best: state.best,
            stale_evals: state.stale_evals,
            device: device.clone(),
        })
    }
}

/// Checkpoint section holding an adaptive policy's learned state (exact bytes).
pub const MASKING_STATE: &str = "masking.state";

/// Hands the per-token losses of one step back to the policy, one example at a time: the
/// example's original ids (the labels restore the corrupted positions), its masked positions
/// and their losses. `flat_positions` index the `[B * T]` batch, ascending (as
/// [`MaskedTargets::from_labels`] produces them).
pub fn feed_back(
    policy: &mut TokenMasker,
    batch: &TrainBatch,
    flat_positions: &[i64],
    losses: &[f32],
) {
    let t = batch.seq_len;
    let mut k = 0;
    let (mut positions, mut row_losses) = (Vec::new(), Vec::new());
    for r in 0..batch.batch {
        let row = r * t..r * t + batch.lengths[r];
        let ids: Vec<u32> = batch.input_ids[row.clone()]
            .iter()
            .zip(&batch.labels[row.clone()])
            .map(|(&id, &l)| if l == IGNORE_INDEX { id } else { l as u32 })
            .collect();
        positions.clear();
        row_losses.clear();
        while k < flat_positions.len() && (flat_positions[k] as usize) < (r + 1) * t {
            positions.push((flat_positions[k] as usize - r * t) as u32);
            row_losses.push(losses[k]);
            k += 1;
        }
        if !positions.is_empty() {
            policy.observe(&ids, &positions, &row_losses);
        }
    }
}

/// MLM metrics of `model` over an evaluation set.
pub fn evaluate_mlm<B: Backend>(
    model: &MlmModel<B>,
    eval: &EvalSet,
    device: &B::Device,
) -> Result<MlmMetrics> {
    let vocab = model.encoder.vocab_size;
    let mut metrics = MlmMetrics::default();
    for batch in &eval.batches {
        let targets = MaskedTargets::from_labels(&batch.labels, vocab)?;
        if targets.is_empty() {
            continue;
        }
        let x = ids_tensor::<B>("input_ids", &batch.input_ids, batch.batch, vocab, device)?;
        let mask = KeyPadding::from_lengths(&batch.lengths, batch.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let (positions, t) = targets.to_tensors::<B>(device);
        let logits = model.forward_at(x, &mask, positions)?;
        let predicted = logits.clone().argmax(1).reshape([targets.len()]);
        let losses: Vec<f32> = token_cross_entropy(logits, t)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        let predicted: Vec<i64> = predicted
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("i64");
        let correct: Vec<bool> = predicted
            .iter()
            .zip(&targets.targets)
            .map(|(p, t)| p == t)
            .collect();
        metrics.add(&losses, &correct);
    }
    Ok(metrics)
}
