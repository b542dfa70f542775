//! What the learner reports as it goes. Libraries never print: a binary renders these events
//! (progress bar, tracing), and the run directory's JSONL log records them.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One optimizer step, as logged. Holds no wall-clock figure: the same seed gives the same
/// records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step index (0-based).
    pub step: u64,
    /// Epoch of the step's batch.
    pub epoch: u64,
    /// Mean loss over the batch's items (0 when the batch had none: nothing was updated).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping (0 when nothing was updated).
    pub grad_norm: f64,
    /// Items the loss averages over (masked tokens, patches, examples).
    pub items: usize,
    /// Positions the model saw (real tokens, patches, items).
    pub tokens: usize,
    /// Digest of the batch's inputs and targets: equal digests mean identical batches (how the
    /// resume tests and readers of the logs compare runs).
    pub digest: u64,
    /// The objective of a multi-task run this step trained (its index in the task list);
    /// absent for a single-task run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u32>,
}

/// One evaluation, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord<M> {
    /// Steps done when evaluated.
    pub step: u64,
    /// The task's score (lower is better).
    pub score: f64,
    /// The task's metrics.
    pub metrics: M,
}

/// Wall-clock figures of one step (not part of any results file).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepTiming {
    /// Seconds the training thread waited for the step's host batch.
    pub wait_s: f64,
    /// Seconds a data worker (or the training thread, for adaptive tasks) spent making it.
    pub make_s: f64,
    /// Seconds of forward, backward and optimizer step.
    pub compute_s: f64,
}

/// An event of a [`Learner`](crate::Learner) run.
#[derive(Debug, Clone, Copy)]
pub enum LearnerEvent<'a, M> {
    /// A run (or a resumed session of one) starts at `step` of `steps`.
    Started {
        /// The task's kind.
        kind: &'a str,
        /// Steps already done.
        step: u64,
        /// Total steps of the run.
        steps: u64,
    },
    /// A step finished.
    Step {
        /// Its record.
        record: &'a StepRecord,
        /// Its wall-clock figures.
        timing: StepTiming,
    },
    /// An evaluation finished.
    Eval(&'a EvalRecord<M>),
    /// A checkpoint was written.
    Checkpoint {
        /// Steps done.
        step: u64,
        /// Its path.
        path: &'a Path,
    },
    /// Early stopping ended the run.
    EarlyStop {
        /// Steps done.
        step: u64,
        /// The best score seen.
        best: f64,
    },
    /// The session ended normally.
    Finished {
        /// Steps done.
        step: u64,
    },
}
