//! The one training engine: [`Learner`] runs any [`TrainTask`] with AdamW, one learning-rate
//! schedule vocabulary, global-norm clipping, a non-finite guard, per-step dropout reseeding,
//! prefetching workers, periodic evaluation with early stopping, atomic checkpoints with exact
//! resume, events, and data-parallel training on several devices or nodes
//! ([`Learner::data_parallel`]).
//!
//! Why our own loop and not burn-train's `Learner`: each step's batch must come from a
//! `(seed, step)`-addressed task so that a resumed run sees the same masks; dropout must be
//! reseeded per step so that it reproduces the same losses; adaptive masking policies need the
//! per-item losses back; and the checkpoint must hold the policy's state beside the optimizer.
//! burn-train's learner owns its data loader, RNG and checkpoint format, so none of these fit.
//!
//! A checkpoint is a `mask_model` [`Container`] with the sections `learner.kind`,
//! `learner.settings`, `learner.config`, `learner.bindings`, `learner.state`, `model`,
//! `optimizer`, and the task's own (e.g. `masking.state`).

mod parallel;
mod prefetch;
mod strategy;

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use mask_model::checkpoint::{first_difference, load_record_bytes, record_bytes, Container};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::task::shard_rows;
pub use parallel::{peer_dropout_seed, NodeOptions, ParallelOptions, PeerReport};
pub use strategy::{CheckpointPolicy, EarlyStopping};

use crate::config::TrainConfig;
use crate::error::{invalid, Result, TrainError};
use crate::events::{EvalRecord, LearnerEvent, StepRecord, StepTiming};
use crate::run::{JsonlLog, RunDir};
use crate::schedule::{clip_factor, global_grad_norm, scale_gradients};
use crate::task::{Metrics, TrainTask};
use parallel::{PeerSetup, PeerStep, Session};
use prefetch::Prefetcher;

const KIND: &str = "learner.kind";
const SETTINGS: &str = "learner.settings";
const CONFIG: &str = "learner.config";
const BINDINGS: &str = "learner.bindings";
const STATE: &str = "learner.state";
const MODEL: &str = "model";
const OPTIMIZER: &str = "optimizer";

/// burn's backend random generator is process-wide: `B::seed` and every draw share one stream.
/// Learners take this lock around seeding plus parameter initialisation, so a run's initial
/// weights depend on its seed alone even when several runs start on threads of one process.
/// Dropout does not use that stream: its masks come from the counter-based stream of
/// [`mask_model::mask_attn::dropout`], keyed per step by [`dropout_seed`] on the training
/// thread.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the backend's random generator for seeding and drawing (the private `BACKEND_RNG`).
pub fn backend_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// The dropout key of `step` of a run seeded `seed` (the one formula every task uses; see
/// [`mask_model::mask_attn::dropout_scope`]).
pub fn dropout_seed(seed: u64, step: u64) -> u64 {
    mask_core::mix64(seed ^ 0xd50f_a11c_e5ee_d000 ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Progress of a run: what a checkpoint restores besides model and optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "M: serde::de::DeserializeOwned"))]
pub struct LearnerState<M> {
    /// Steps done.
    pub step: u64,
    /// Every step so far.
    pub history: Vec<StepRecord>,
    /// Every evaluation so far.
    pub evals: Vec<EvalRecord<M>>,
    /// Early-stopping bookkeeping.
    pub early: EarlyStopping,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

impl<M> Default for LearnerState<M> {
    fn default() -> Self {
        Self {
            step: 0,
            history: vec![],
            evals: vec![],
            early: EarlyStopping::default(),
            stopped_early: false,
        }
    }
}

/// Wall-clock totals of a session (not part of any results file).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SessionTiming {
    /// Steps run in this session.
    pub steps: u64,
    /// Seconds the training thread waited for host batches.
    pub wait_s: f64,
    /// Seconds spent making host batches (workers' wall time, or the training thread's).
    pub make_s: f64,
    /// Seconds of forward, backward and optimizer steps.
    pub compute_s: f64,
    /// Seconds of evaluation.
    pub eval_s: f64,
    /// Seconds of checkpoint writing.
    pub checkpoint_s: f64,
}

struct Attached {
    dir: RunDir,
    log: JsonlLog,
    policy: CheckpointPolicy,
}

/// Options of [`Learner::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResumeOptions {
    /// Accept a checkpoint whose `steps` differs, to extend (or shorten) a run: the schedule of
    /// the remaining steps follows the new `steps` (with linear or cosine decay the learning
    /// rate jumps back up; say so when you report such a run).
    pub allow_extend: bool,
}

/// A model, its optimizer, its task and the state that makes the run resumable.
///
/// A tiny masked-LM run on four steps, with checkpoints in a run directory, continued exactly
/// by [`Learner::resume`] (the same step records as one uninterrupted run):
///
/// ```
/// use std::sync::Arc;
/// use burn::backend::{Autodiff, NdArray};
/// use mask_core::{MaskingConfig, SelectorResources, VocabSpec};
/// use mask_data::{text, TextTokenizer, TokenizerConfig};
/// use mask_model::{MlmConfig, TextEncoderConfig, TransformerConfig};
/// use mask_train::tasks::mlm::{EvalSet, MlmTask};
/// use mask_train::{CheckpointPolicy, Learner, ResumeOptions, RunDir, TrainConfig};
///
/// type B = Autodiff<NdArray<f32>>;
/// let texts: Vec<String> =
///     text::austen_paragraphs()?.into_iter().take(32).map(|p| p.text).collect();
/// let tok = TextTokenizer::train(&texts, &TokenizerConfig { vocab_size: 200, ..Default::default() })?;
/// let docs = Arc::new(tok.encode_batch(&texts, 24)?);
/// let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
/// let eval = EvalSet::new(&docs[..8], MaskingConfig::new(vocab.clone()).build()?, tok.pad_id, 8, 1)?;
/// let encoder = TextEncoderConfig::new(TransformerConfig::new(16, 2, 1, 32), tok.vocab_size());
/// let task = MlmTask::new(
///     MlmConfig::new(encoder.with_max_len(24)),
///     MaskingConfig::new(vocab),
///     &SelectorResources::default(),
///     docs,
///     Arc::new(eval),
///     &tok,
/// )?;
/// let config = TrainConfig { steps: 4, batch_size: 8, warmup_steps: 1, eval_every: 0, ..Default::default() };
/// let device = Default::default();
///
/// let mut whole = Learner::<B, _>::new(task.clone(), config.clone(), &device)?;
/// whole.fit(&mut |_| {})?;
///
/// let dir = std::env::temp_dir().join(format!("mask-train-doc-{}", std::process::id()));
/// let run = RunDir::open(&dir)?;
/// let mut first = Learner::<B, _>::new(task.clone(), config.clone(), &device)?
///     .attach(run, CheckpointPolicy::new(2, 1)?)?;
/// first.fit_until(2, &mut |_| {})?; // a checkpoint at step 2, then the process could die
/// let checkpoint = first.run_dir().unwrap().latest_checkpoint()?.unwrap().path;
/// let options = ResumeOptions::default();
/// let mut rest = Learner::<B, _>::resume(task, config, &checkpoint, options, &device)?;
/// rest.fit(&mut |_| {})?;
/// // The same batches, and the steps after the checkpoint compute the same losses.
/// let digests = |l: &Learner<B, MlmTask>| -> Vec<u64> {
///     l.state().history.iter().map(|r| r.digest).collect()
/// };
/// assert_eq!(digests(&rest), digests(&whole));
/// assert_eq!(rest.state().history[2..], whole.state().history[2..]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Learner<B: AutodiffBackend, T: TrainTask<B>> {
    task: T,
    model: T::Model,
    optim: OptimizerAdaptor<AdamW, T::Model, B>,
    config: TrainConfig,
    state: LearnerState<T::Metrics>,
    device: B::Device,
    run: Option<Attached>,
    parallel: Option<DataParallel<B>>,
}

/// The other peers of a data-parallel learner and what they reported last.
struct DataParallel<B: AutodiffBackend> {
    devices: Vec<B::Device>,
    options: ParallelOptions,
    reports: Vec<PeerReport>,
}

fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    c: &TrainConfig,
) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_beta_1(c.beta_1 as f32)
        .with_beta_2(c.beta_2 as f32)
        .with_epsilon(c.epsilon as f32)
        .with_weight_decay(c.weight_decay as f32)
        .init::<B, M>()
}

/// The tail of every optimizer step (one device or data-parallel): refuses a non-finite global
/// gradient norm before anything is updated, clips to `grad_clip`, and applies AdamW at `lr`.
/// Returns the norm before clipping.
fn update<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &mut M,
    optim: &mut OptimizerAdaptor<AdamW, M, B>,
    mut grads: GradientsParams,
    lr: f64,
    grad_clip: Option<f64>,
    step: u64,
) -> Result<f64> {
    let norm = global_grad_norm::<B, M>(model, &grads);
    if !norm.is_finite() {
        return Err(TrainError::NonFinite {
            what: "gradient norm".into(),
            step,
            value: norm,
        });
    }
    if let Some(max) = grad_clip {
        let factor = clip_factor(norm, max);
        if factor != 1.0 {
            scale_gradients::<B, M>(model, &mut grads, factor);
        }
    }
    *model = optim.step(lr, model.clone(), grads);
    Ok(norm)
}

fn resume_err(path: &str, reason: impl Into<String>) -> TrainError {
    TrainError::Resume {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn json_section(c: &Container, name: &str, path: &str) -> Result<Value> {
    serde_json::from_slice(c.require(name, path)?)
        .map_err(|e| resume_err(path, format!("section `{name}` is malformed: {e}")))
}

/// Checks that a checkpoint was written by this task kind, on this data, with these settings
/// (`settings_key`: all of them, or only the `"model"` entry when just the model is loaded).
fn check_identity<B: AutodiffBackend, T: TrainTask<B>>(
    c: &Container,
    task: &T,
    path: &str,
    model_only: bool,
) -> Result<()> {
    let kind = String::from_utf8_lossy(c.require(KIND, path)?).into_owned();
    if kind != task.kind() {
        return Err(resume_err(
            path,
            format!(
                "it was written by a `{kind}` task, this run is `{}`",
                task.kind()
            ),
        ));
    }
    let stored = json_section(c, BINDINGS, path)?;
    for (name, digest) in task.bindings() {
        match stored.get(&name).and_then(Value::as_str) {
            Some(d) if d == digest => {}
            Some(d) => {
                return Err(resume_err(
                    path,
                    format!("its {name} is {d}, this run's is {digest}: the ids would not match"),
                ))
            }
            None => return Err(resume_err(path, format!("it records no {name} digest"))),
        }
    }
    let stored = json_section(c, SETTINGS, path)?;
    let expected = task.settings();
    let (found, expected) = if model_only {
        (stored["model"].clone(), expected["model"].clone())
    } else {
        (stored, expected)
    };
    if let Some((field, f, e)) = first_difference("", &found, &expected) {
        return Err(resume_err(
            path,
            format!("`{field}` is {f} in the checkpoint but {e} in this run"),
        ));
    }
    Ok(())
}

/// Loads only the model of a checkpoint written by a [`Learner`] of `task`'s kind, refusing
/// another kind, another model config or other data (tokenizer, documents): for evaluation and
/// fine-tuning, whatever masking policy trained it.
pub fn load_model<B: AutodiffBackend, T: TrainTask<B>>(
    task: &T,
    path: &Path,
    device: &B::Device,
) -> Result<T::Model> {
    let name = path.display().to_string();
    let c = Container::read(path)?;
    check_identity::<B, T>(&c, task, &name, true)?;
    let model = task.init_model(device)?;
    Ok(load_record_bytes(
        model,
        c.require(MODEL, &name)?,
        &name,
        device,
    )?)
}

impl<B: AutodiffBackend, T: TrainTask<B>> Learner<B, T> {
    /// A fresh run: validates the settings, seeds the backend with `config.seed` and builds the
    /// task's model.
    pub fn new(task: T, config: TrainConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        check_batch(&task, &config)?;
        let model = {
            let _rng = backend_rng_lock();
            B::seed(device, config.seed);
            task.init_model(device)?
        };
        Ok(Self {
            optim: adamw::<B, T::Model>(&config),
            task,
            model,
            config,
            state: LearnerState::default(),
            device: device.clone(),
            run: None,
            parallel: None,
        })
    }

    /// Resumes a run saved by [`save`](Self::save), refusing a checkpoint of another task kind,
    /// other data (tokenizer digest, ...), other task settings or another training config
    /// (the first differing field is named).
    pub fn resume(
        mut task: T,
        config: TrainConfig,
        path: &Path,
        options: ResumeOptions,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        check_batch(&task, &config)?;
        let name = path.display().to_string();
        let c = Container::read(path)?;
        check_identity::<B, T>(&c, &task, &name, false)?;
        let stored: TrainConfig = serde_json::from_value(json_section(&c, CONFIG, &name)?)
            .map_err(|e| resume_err(&name, format!("section `{CONFIG}` is malformed: {e}")))?;
        let (found, expected) = (
            stored.resume_key(options.allow_extend),
            config.resume_key(options.allow_extend),
        );
        if let Some((field, f, e)) = first_difference("train", &found, &expected) {
            let hint = if field == "train.steps" {
                " (to extend a finished run, resume with --extend)"
            } else {
                ""
            };
            return Err(resume_err(
                &name,
                format!("`{field}` is {f} in the checkpoint but {e} in this run{hint}"),
            ));
        }
        let mut state: LearnerState<T::Metrics> = serde_json::from_slice(c.require(STATE, &name)?)
            .map_err(|e| resume_err(&name, format!("training state is malformed: {e}")))?;
        if state.step > config.steps {
            return Err(resume_err(
                &name,
                format!(
                    "it is {} steps in, past this run's `steps` = {}",
                    state.step, config.steps
                ),
            ));
        }
        if options.allow_extend && stored.steps != config.steps {
            state.stopped_early = false;
        }
        let initial = {
            let _rng = backend_rng_lock();
            B::seed(device, config.seed);
            task.init_model(device)?
        };
        let model = load_record_bytes(initial, c.require(MODEL, &name)?, &name, device)?;
        let record = Recorder::<B>::load(
            &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
            c.require(OPTIMIZER, &name)?.to_vec(),
            device,
        )
        .map_err(|e| resume_err(&name, format!("cannot decode the optimizer state: {e}")))?;
        let optim = adamw::<B, T::Model>(&config).load_record(record);
        task.load_state_sections(&|s| c.get(s).map(<[u8]>::to_vec), &name)?;
        Ok(Self {
            task,
            model,
            optim,
            config,
            state,
            device: device.clone(),
            run: None,
            parallel: None,
        })
    }

    /// Attaches a run directory: its log receives every event, checkpoints go to its
    /// `checkpoints/` under `policy`, and `config.json` records the resolved settings. A fresh
    /// learner needs an empty directory; a resumed one cuts the directory's log back to its step.
    pub fn attach(mut self, dir: RunDir, policy: CheckpointPolicy) -> Result<Self> {
        let policy = CheckpointPolicy::new(policy.every, policy.keep_last)?;
        let log = if self.state.step == 0 {
            dir.ensure_empty()?;
            JsonlLog::create(&dir.log_path())?
        } else {
            JsonlLog::resume(&dir.log_path(), self.state.step)?
        };
        dir.write_config(&self.resolved_config())?;
        self.run = Some(Attached { dir, log, policy });
        Ok(self)
    }

    /// Trains data-parallel from now on: this learner is peer 0 on its own device, and `peers`
    /// are the devices of peers 1, 2, ... (CPU backends have one device: pass it again to run
    /// several peers on it). Every step's global batch is split by rows across the peers, their
    /// gradients, loss and adaptive feedback are all-reduced with burn-collective, and every
    /// peer applies the same update (see the `parallel` module docs in `learner/parallel.rs`).
    /// The task must support [`TrainTask::shard`]; `batch_size` must be at least the number of
    /// peers. Checkpoints keep the single-device format: a run may resume on any number of
    /// peers. An empty `peers` goes back to one device.
    ///
    /// With [`ParallelOptions::nodes`], several processes (nodes) train together, each with
    /// `peers.len() + 1` peers; only node 0 writes logs and checkpoints (attach a run directory
    /// there; resume every node from node 0's checkpoint).
    pub fn data_parallel(
        mut self,
        peers: Vec<B::Device>,
        options: ParallelOptions,
    ) -> Result<Self> {
        let nodes = match &options.nodes {
            None => 1,
            Some(n) => {
                if n.nodes == 0 {
                    return Err(invalid("nodes", 0, "at least 1"));
                }
                if n.node_rank >= n.nodes {
                    return Err(invalid(
                        "node_rank",
                        n.node_rank,
                        format!("below nodes ({})", n.nodes),
                    ));
                }
                if n.data_port == 0 {
                    return Err(invalid("data_port", 0, "a port number (1-65535)"));
                }
                n.nodes as usize
            }
        };
        let world = (peers.len() + 1) * nodes;
        if self.config.batch_size < world {
            return Err(invalid(
                "peers",
                world,
                format!("at most batch_size ({}) peers", self.config.batch_size),
            ));
        }
        if options.timeout.is_zero() {
            return Err(invalid("timeout", "0 s", "a positive duration"));
        }
        self.parallel = (world > 1).then(|| DataParallel {
            devices: peers,
            options,
            reports: vec![],
        });
        Ok(self)
    }

    /// Peers training together (on every node): 1 unless
    /// [`data_parallel`](Self::data_parallel).
    pub fn world_size(&self) -> usize {
        self.parallel.as_ref().map_or(1, |p| {
            (p.devices.len() + 1) * p.options.nodes.as_ref().map_or(1, |n| n.nodes as usize)
        })
    }

    /// Whether this learner writes logs and checkpoints: all but the learners of nodes 1, 2, ...
    /// of a multi-node run.
    pub fn is_primary(&self) -> bool {
        self.parallel
            .as_ref()
            .and_then(|p| p.options.nodes.as_ref())
            .is_none_or(|n| n.node_rank == 0)
    }

    /// What peers 1, 2, ... reported at the end of the last data-parallel session.
    pub fn peer_reports(&self) -> &[PeerReport] {
        self.parallel.as_ref().map_or(&[], |p| &p.reports)
    }

    /// Task kind, training config, task settings and data bindings, as `config.json` holds them.
    pub fn resolved_config(&self) -> Value {
        let bindings: serde_json::Map<String, Value> = self
            .task
            .bindings()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        json!({
            "kind": self.task.kind(),
            "train": self.config,
            "settings": self.task.settings(),
            "bindings": bindings,
        })
    }

    /// The model.
    pub fn model(&self) -> &T::Model {
        &self.model
    }

    /// The model, consuming the learner.
    pub fn into_model(self) -> T::Model {
        self.model
    }

    /// The task.
    pub fn task(&self) -> &T {
        &self.task
    }

    /// The training config.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Progress: steps, history, evaluations.
    pub fn state(&self) -> &LearnerState<T::Metrics> {
        &self.state
    }

    /// Steps done.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    /// The attached run directory, if any.
    pub fn run_dir(&self) -> Option<&RunDir> {
        self.run.as_ref().map(|r| &r.dir)
    }

    /// One optimizer step on `batch` on this learner's device: with the data-parallel step
    /// (`parallel.rs`), the only places any model of this workspace is updated.
    /// A non-finite loss or gradient norm is an error before anything is updated.
    pub fn step(&mut self, batch: &T::Batch) -> Result<StepRecord> {
        let step = self.state.step;
        // Dropout masks of this step: a function of (seed, step) on this thread alone.
        let _dropout = mask_model::mask_attn::dropout_scope(dropout_seed(self.config.seed, step));
        let info = self.task.describe(batch);
        let lr = self.config.lr_at(step);
        let (loss, grad_norm) = match self.task.forward(&self.model, batch, &self.device)? {
            None => (0.0, 0.0),
            Some(out) => {
                let loss = out.loss.clone().into_scalar().elem::<f64>();
                if !loss.is_finite() {
                    return Err(TrainError::NonFinite {
                        what: "loss".into(),
                        step,
                        value: loss,
                    });
                }
                if self.task.is_adaptive() {
                    if let Some(per_item) = out.per_item {
                        let losses: Vec<f32> = per_item
                            .into_data()
                            .convert::<f32>()
                            .to_vec()
                            .map_err(|e| invalid("per_item", format!("{e:?}"), "f32 losses"))?;
                        self.task.observe(batch, &losses)?;
                    }
                }
                let grads = GradientsParams::from_grads(out.loss.backward(), &self.model);
                let clip = self.config.grad_clip;
                let norm = update(&mut self.model, &mut self.optim, grads, lr, clip, step)?;
                (loss, norm)
            }
        };
        let record = StepRecord {
            step,
            epoch: info.epoch,
            loss,
            lr,
            grad_norm,
            items: info.items,
            tokens: info.tokens,
            digest: info.digest,
            task: info.task,
        };
        self.state.step += 1;
        self.state.history.push(record.clone());
        Ok(record)
    }

    /// Held-out metrics of the current model; a non-finite value is an error naming it.
    pub fn evaluate(&self) -> Result<T::Metrics> {
        let m = self.task.evaluate(&self.model.valid(), &self.device)?;
        if let Some((what, value)) = m.values().into_iter().find(|(_, v)| !v.is_finite()) {
            return Err(TrainError::NonFinite {
                what: what.to_string(),
                step: self.state.step,
                value,
            });
        }
        Ok(m)
    }

    /// Runs to `config.steps` (or early stop).
    pub fn fit(
        &mut self,
        on_event: &mut dyn FnMut(&LearnerEvent<'_, T::Metrics>),
    ) -> Result<SessionTiming> {
        self.fit_until(self.config.steps, on_event)
    }

    /// Runs to step `until` (at most `config.steps`): a session of a longer run that a later
    /// session continues (in this process, or after a checkpoint and [`resume`](Self::resume)).
    /// With a run directory attached, a checkpoint is written every `policy.every` steps and
    /// at the end of the session.
    pub fn fit_until(
        &mut self,
        until: u64,
        on_event: &mut dyn FnMut(&LearnerEvent<'_, T::Metrics>),
    ) -> Result<SessionTiming> {
        let until = until.min(self.config.steps);
        let mut timing = SessionTiming::default();
        let kind = self.task.kind();
        on_event(&LearnerEvent::Started {
            kind,
            step: self.state.step,
            steps: self.config.steps,
        });
        let runs = !self.state.stopped_early && self.state.step < until;
        let session = match (&self.parallel, runs) {
            (Some(p), true) => Some(self.start_session(p.devices.clone(), &p.options, until)?),
            _ => None,
        };
        let result = self.run_steps(until, &mut timing, session.as_ref(), on_event);
        if let Some(session) = session {
            let step = self.state.step;
            let reports = session.close::<B>(result, step, || {
                Ok((
                    parallel::param_bytes::<B, T::Model>(&self.model),
                    self.task.state_sections(),
                ))
            })?;
            if let Some(p) = self.parallel.as_mut() {
                p.reports = reports;
            }
        } else {
            result?;
        }
        if self.state.stopped_early {
            let best = self.state.early.best.unwrap_or(f64::INFINITY);
            on_event(&LearnerEvent::EarlyStop {
                step: self.state.step,
                best,
            });
        }
        on_event(&LearnerEvent::Finished {
            step: self.state.step,
        });
        Ok(timing)
    }

    /// The steps of [`fit_until`](Self::fit_until): batches, steps (on one device or as peer 0
    /// of `session`), logs, evaluations and checkpoints.
    fn run_steps(
        &mut self,
        until: u64,
        timing: &mut SessionTiming,
        session: Option<&Session>,
        on_event: &mut dyn FnMut(&LearnerEvent<'_, T::Metrics>),
    ) -> Result<()> {
        let (seed, batch_size) = (self.config.seed, self.config.batch_size);
        // An adaptive task's batch at step s depends on the losses of steps < s: it is made
        // here, in step order, after the previous step's feedback. Other tasks' batches are
        // prefetched by workers, each on its own clone of the task.
        let mut prefetch =
            (!self.task.is_adaptive() && !self.state.stopped_early && self.state.step < until)
                .then(|| {
                    let mut task = self.task.clone();
                    Prefetcher::spawn(
                        move |step| task.batch(seed, step, batch_size),
                        self.state.step,
                        until,
                        self.config.workers,
                        self.config.prefetch,
                    )
                });
        while self.state.step < until && !self.state.stopped_early {
            let t = Instant::now();
            let (batch, make_s) = match prefetch.as_mut() {
                Some(p) => p.next_batch().unwrap_or((
                    Err(TrainError::WorkerStopped {
                        step: self.state.step,
                    }),
                    0.0,
                )),
                None => {
                    let b = self.task.batch(seed, self.state.step, batch_size);
                    (b, t.elapsed().as_secs_f64())
                }
            };
            let batch = batch?;
            let wait_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let record = match session {
                None => self.step(&batch)?,
                Some(session) => self.step_parallel(session, &batch)?,
            };
            drop(batch);
            let step_timing = StepTiming {
                wait_s,
                make_s,
                compute_s: t.elapsed().as_secs_f64(),
            };
            timing.steps += 1;
            timing.wait_s += wait_s;
            timing.make_s += make_s;
            timing.compute_s += step_timing.compute_s;
            self.log(json!({
                "event": "step", "done": self.state.step, "record": record, "timing": step_timing
            }))?;
            on_event(&LearnerEvent::Step {
                record: &record,
                timing: step_timing,
            });
            let done = self.state.step;
            let every = self.config.eval_every;
            if (every > 0 && done.is_multiple_of(every)) || done == self.config.steps {
                let t = Instant::now();
                self.eval_now(on_event)?;
                timing.eval_s += t.elapsed().as_secs_f64();
            }
            let due = self
                .run
                .as_ref()
                .is_some_and(|r| done.is_multiple_of(r.policy.every));
            if due || done == until || self.state.stopped_early {
                let t = Instant::now();
                self.checkpoint(on_event)?;
                timing.checkpoint_s += t.elapsed().as_secs_f64();
            }
        }
        Ok(())
    }

    /// Forks the model, optimizer and task for each peer device and starts the session.
    fn start_session(
        &self,
        devices: Vec<B::Device>,
        options: &ParallelOptions,
        until: u64,
    ) -> Result<Session> {
        let optim_bytes = Recorder::<B>::record(
            &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
            self.optim.to_record(),
            (),
        )
        .map_err(|e| invalid("optimizer", format!("{e}"), "a recordable optimizer state"))?;
        let setups = devices
            .into_iter()
            .map(|device| {
                let record = Recorder::<B>::load(
                    &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
                    optim_bytes.clone(),
                    &device,
                )
                .map_err(|e| invalid("optimizer", format!("{e}"), "a loadable optimizer state"))?;
                Ok(PeerSetup {
                    task: self.task.clone(),
                    model: self.model.clone().fork(&device),
                    optim: adamw::<B, T::Model>(&self.config).load_record(record),
                    device,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Session::start(
            setups,
            &self.device,
            &self.config,
            options,
            (self.state.step, until),
        )
    }

    /// One data-parallel step as peer 0: the peers are told to run it, then this learner's
    /// share runs like theirs.
    fn step_parallel(&mut self, session: &Session, batch: &T::Batch) -> Result<StepRecord> {
        let step = self.state.step;
        session.go(step)?;
        let record = PeerStep {
            comm: &session.comm,
            task: &mut self.task,
            model: &mut self.model,
            optim: &mut self.optim,
            config: &self.config,
            device: &self.device,
        }
        .run(step, batch)?;
        self.state.step += 1;
        self.state.history.push(record.clone());
        Ok(record)
    }

    fn eval_now(&mut self, on_event: &mut dyn FnMut(&LearnerEvent<'_, T::Metrics>)) -> Result<()> {
        let metrics = self.evaluate()?;
        let record = EvalRecord {
            step: self.state.step,
            score: metrics.score(),
            metrics,
        };
        if self
            .state
            .early
            .update(record.score, self.config.early_stopping_patience)
        {
            self.state.stopped_early = true;
        }
        self.state.evals.push(record.clone());
        self.log(json!({"event": "eval", "done": self.state.step, "record": record}))?;
        on_event(&LearnerEvent::Eval(&record));
        Ok(())
    }

    fn checkpoint(
        &mut self,
        on_event: &mut dyn FnMut(&LearnerEvent<'_, T::Metrics>),
    ) -> Result<()> {
        let Some(path) = self
            .run
            .as_ref()
            .filter(|_| self.is_primary())
            .map(|r| r.dir.checkpoint_path(self.state.step))
        else {
            return Ok(());
        };
        self.save(&path)?;
        let run = self.run.as_ref().expect("attached");
        run.dir.prune(run.policy.keep_last)?;
        self.log(json!({
            "event": "checkpoint", "done": self.state.step, "path": path.display().to_string()
        }))?;
        on_event(&LearnerEvent::Checkpoint {
            step: self.state.step,
            path: &path,
        });
        Ok(())
    }

    fn log(&mut self, value: Value) -> Result<()> {
        if !self.is_primary() {
            return Ok(());
        }
        match self.run.as_mut() {
            Some(r) => r.log.write(&value),
            None => Ok(()),
        }
    }

    /// Writes model, optimizer, learner state and task state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let name = path.display().to_string();
        let mut c = Container::new();
        c.insert(KIND, self.task.kind().as_bytes().to_vec());
        let to_vec = |v: &Value| serde_json::to_vec(v).expect("JSON serialises");
        c.insert(SETTINGS, to_vec(&self.task.settings()));
        c.insert(
            CONFIG,
            to_vec(&serde_json::to_value(&self.config).expect("serialises")),
        );
        c.insert(BINDINGS, to_vec(&self.resolved_config()["bindings"]));
        c.insert(
            STATE,
            serde_json::to_vec(&self.state)
                .map_err(|e| resume_err(&name, format!("cannot serialise the state: {e}")))?,
        );
        mask_model::materialize(&self.model);
        c.insert(MODEL, record_bytes(self.model.clone())?);
        let optim = Recorder::<B>::record(
            &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
            self.optim.to_record(),
            (),
        )
        .map_err(|e| resume_err(&name, format!("cannot record the optimizer: {e}")))?;
        c.insert(OPTIMIZER, optim);
        for (section, bytes) in self.task.state_sections() {
            c.insert(&section, bytes);
        }
        c.write(path)?;
        Ok(())
    }
}

fn check_batch<B: AutodiffBackend, T: TrainTask<B>>(task: &T, config: &TrainConfig) -> Result<()> {
    let n = task.num_examples();
    if config.batch_size > n {
        return Err(invalid(
            "batch_size",
            config.batch_size,
            format!("at most the {n} training examples"),
        ));
    }
    Ok(())
}
