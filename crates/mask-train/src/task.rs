//! [`TrainTask`]: what a training objective supplies to the [`Learner`](crate::Learner), in the
//! role of burn-train's `TrainStep` / `InferenceStep`.
//!
//! A task owns its data and its masking policy and knows its model; the learner owns everything
//! tasks share (optimizer, schedule, clipping, guards, dropout seeds, prefetching, evaluation
//! cadence, checkpoints, events). The contract that makes resume exact and prefetching safe:
//!
//! - [`TrainTask::batch`] is a pure function of `(seed, step, batch_size)` and, for an adaptive
//!   task, of the losses observed before `step`. The learner calls it on clones of the task in
//!   worker threads when the task is not adaptive, and in step order on the task itself when
//!   it is.
//! - Every random draw of the forward pass (dropout) comes from the counter-based stream of
//!   [`mask_model::mask_attn::dropout_scope`], which the learner keys per step (and per peer
//!   in data-parallel training).
//! - [`TrainTask::settings`] captures everything else that decides the numbers; a checkpoint
//!   whose settings differ is refused, naming the first differing field.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;

/// Held-out metrics of a task.
pub trait Metrics: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + 'static {
    /// The value early stopping and "best so far" watch; lower is better.
    fn score(&self) -> f64;
    /// Every reported value with its name; the learner refuses non-finite ones.
    fn values(&self) -> Vec<(&'static str, f64)>;
}

/// What the logs record about a host batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchInfo {
    /// Epoch of the batch's examples.
    pub epoch: u64,
    /// Examples (rows) in the batch.
    pub examples: usize,
    /// Positions the model sees (real tokens, patches, items).
    pub tokens: usize,
    /// Items the loss is averaged over (masked tokens, masked patches, labelled examples).
    pub items: usize,
    /// A digest of the batch's inputs and targets (equal digests: identical batches).
    pub digest: u64,
    /// Which objective of a multi-task run the batch trains (its index in the run's task
    /// list); `None` for a single-task run.
    pub task: Option<u32>,
}

/// The loss of one batch.
#[derive(Debug)]
pub struct TaskOutput<B: Backend> {
    /// Mean loss over the batch's items, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Loss of each item, `[N]`, in the order [`TrainTask::observe`] expects; only needed
    /// (and read) when the task is adaptive.
    pub per_item: Option<Tensor<B, 1>>,
}

/// The rows of a `rows`-row global batch that peer `rank` of `world` trains on: `rank`,
/// `rank + world`, `rank + 2 * world`, ...
pub fn shard_rows(rows: usize, rank: usize, world: usize) -> Vec<usize> {
    (rank..rows).step_by(world.max(1)).collect()
}

/// A training objective: model, host batches, loss, feedback, evaluation and extra state.
///
/// The smallest task there is, fitting `y = 3x + 1` with one linear layer, and the
/// [`Learner`](crate::Learner) running it (`examples/custom_task.rs` and `docs/architecture.md`
/// walk through a real one, ELECTRA-style replaced-token detection):
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn::prelude::*;
/// use burn::tensor::backend::AutodiffBackend;
/// use mask_train::{BatchInfo, Learner, Metrics, Result, TaskOutput, TrainConfig, TrainTask};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone)]
/// struct Line;
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct Mse(f64);
///
/// impl Metrics for Mse {
///     fn score(&self) -> f64 {
///         self.0
///     }
///     fn values(&self) -> Vec<(&'static str, f64)> {
///         vec![("mse", self.0)]
///     }
/// }
///
/// /// The batch of `step`: a pure function of the step, as the learner requires.
/// fn points(step: u64, n: usize) -> Vec<[f32; 2]> {
///     (0..n)
///         .map(|i| (step as usize * n + i) % 17)
///         .map(|j| j as f32 / 17.0 - 0.5)
///         .map(|x| [x, 3.0 * x + 1.0])
///         .collect()
/// }
///
/// fn mse<B: Backend>(model: &Linear<B>, batch: &[[f32; 2]], device: &B::Device) -> Tensor<B, 1> {
///     let column = |c: usize| {
///         let v: Vec<f32> = batch.iter().map(|p| p[c]).collect();
///         Tensor::<B, 2>::from_data(TensorData::new(v, [batch.len(), 1]), device)
///     };
///     (model.forward(column(0)) - column(1)).powi_scalar(2).mean()
/// }
///
/// impl<B: AutodiffBackend> TrainTask<B> for Line {
///     type Model = Linear<B>;
///     type Batch = Vec<[f32; 2]>;
///     type Metrics = Mse;
///
///     fn kind(&self) -> &'static str {
///         "line"
///     }
///     fn settings(&self) -> serde_json::Value {
///         serde_json::json!({ "slope": 3.0, "intercept": 1.0 })
///     }
///     fn num_examples(&self) -> usize {
///         17
///     }
///     fn init_model(&self, device: &B::Device) -> Result<Linear<B>> {
///         Ok(LinearConfig::new(1, 1).init(device))
///     }
///     fn batch(&mut self, _seed: u64, step: u64, batch_size: usize) -> Result<Self::Batch> {
///         Ok(points(step, batch_size))
///     }
///     fn describe(&self, batch: &Self::Batch) -> BatchInfo {
///         let n = batch.len();
///         BatchInfo { examples: n, tokens: n, items: n, ..BatchInfo::default() }
///     }
///     fn forward(
///         &self,
///         model: &Linear<B>,
///         batch: &Self::Batch,
///         device: &B::Device,
///     ) -> Result<Option<TaskOutput<B>>> {
///         Ok(Some(TaskOutput { loss: mse(model, batch, device), per_item: None }))
///     }
///     fn evaluate(&self, model: &Linear<B::InnerBackend>, device: &B::Device) -> Result<Mse> {
///         Ok(Mse(mse(model, &points(0, 17), device).into_scalar().elem()))
///     }
/// }
///
/// let config = TrainConfig {
///     steps: 300,
///     batch_size: 8,
///     lr: 0.05,
///     warmup_steps: 10,
///     weight_decay: 0.0,
///     eval_every: 0,
///     ..TrainConfig::default()
/// };
/// let mut learner = Learner::<Autodiff<NdArray<f32>>, _>::new(Line, config, &Default::default())?;
/// let before = learner.evaluate()?.0;
/// learner.fit(&mut |_event| {})?;
/// let after = learner.evaluate()?.0;
/// assert!(after < 1e-3 && after < before / 100.0, "{before} -> {after}");
/// # Ok::<(), mask_train::TrainError>(())
/// ```
pub trait TrainTask<B: AutodiffBackend>: Clone + Send + 'static {
    /// The model trained.
    type Model: AutodiffModule<B> + 'static;
    /// A host-side batch (plain data, made on worker threads).
    type Batch: Send + 'static;
    /// Held-out metrics.
    type Metrics: Metrics;

    /// Short name of the task, stored in checkpoints (`"mlm"`, `"mae"`, ...).
    fn kind(&self) -> &'static str;

    /// Everything besides the [`TrainConfig`](crate::TrainConfig) that decides the numbers
    /// (model config, data sizes, masking policy), as JSON: stored in checkpoints and compared
    /// on resume.
    fn settings(&self) -> serde_json::Value;

    /// Digests of the data the run is bound to, e.g. `("tokenizer", "<sha256>")`: resume,
    /// evaluation and fine-tuning refuse a checkpoint whose digests differ, naming both.
    fn bindings(&self) -> Vec<(String, String)> {
        vec![]
    }

    /// Number of training examples (the learner checks that a batch fits).
    fn num_examples(&self) -> usize;

    /// A freshly initialised model; the learner has seeded the backend with the run seed.
    fn init_model(&self, device: &B::Device) -> Result<Self::Model>;

    /// The host batch of `step` (see the module docs for the contract).
    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<Self::Batch>;

    /// What the logs record about `batch`.
    fn describe(&self, batch: &Self::Batch) -> BatchInfo;

    /// The loss of `batch` (training mode: dropout on). `None` when the batch has nothing to
    /// learn from (no masked position): the step counts but updates nothing.
    fn forward(
        &self,
        model: &Self::Model,
        batch: &Self::Batch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>>;

    /// Whether the task learns from per-item losses ([`observe`](Self::observe)); then its
    /// batches are made in step order, after the previous step's feedback.
    fn is_adaptive(&self) -> bool {
        false
    }

    /// Feeds the per-item losses of `batch` back (adaptive masking policies).
    fn observe(&mut self, batch: &Self::Batch, per_item: &[f32]) -> Result<()> {
        let _ = (batch, per_item);
        Ok(())
    }

    /// The rows `rank`, `rank + world`, `rank + 2 * world`, ... of `batch` (as
    /// [`shard_rows`] lists them) as a batch of their own: peer
    /// `rank`'s share of a global batch in data-parallel training. `None` (the default) when
    /// the task cannot be split by rows; the learner then refuses more than one peer.
    ///
    /// The data-parallel learner weighs each peer's loss by its share of
    /// [`BatchInfo::items`], so the sum over peers equals the global batch's loss when the loss
    /// is a mean over items (every built-in task's is).
    fn shard(&self, batch: &Self::Batch, rank: usize, world: usize) -> Option<Self::Batch> {
        let _ = (batch, rank, world);
        None
    }

    /// How many per-item losses each row of `batch` contributes, in row order (the order of
    /// [`observe`](Self::observe)'s losses, row by row). A data-parallel learner uses it to put
    /// the peers' losses back in global order; only adaptive tasks on more than one peer need
    /// it.
    fn items_per_row(&self, batch: &Self::Batch) -> Option<Vec<usize>> {
        let _ = batch;
        None
    }

    /// Held-out metrics of `model` (inference mode, no autodiff).
    fn evaluate(
        &self,
        model: &<Self::Model as AutodiffModule<B>>::InnerModule,
        device: &B::Device,
    ) -> Result<Self::Metrics>;

    /// Extra checkpoint sections of task state (e.g. an adaptive policy's `masking.state`).
    fn state_sections(&self) -> Vec<(String, Vec<u8>)> {
        vec![]
    }

    /// Restores the sections written by [`state_sections`](Self::state_sections); `section`
    /// returns a section's bytes by name. `path` names the checkpoint in errors.
    fn load_state_sections(
        &mut self,
        section: &dyn Fn(&str) -> Option<Vec<u8>>,
        path: &str,
    ) -> Result<()> {
        let _ = (section, path);
        Ok(())
    }
}
