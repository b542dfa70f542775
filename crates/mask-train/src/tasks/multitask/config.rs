//! The settings of a multi-task run: what each task predicts, its prefix rule, the schedule
//! between tasks, and the data each task reads.

use std::sync::Arc;

use mask_core::MaskingConfig;
use mask_data::Encoded;
use mask_model::mask_attn::AttnMaskConfig;
use mask_model::TextEncoderConfig;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

/// What a task predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// Cloze: the tokens the task's masking policy selected, at their own positions (BERT's
    /// MLM; UniLM's bidirectional objective under no attention mask).
    Mlm {},
    /// Next token: position `t` predicts token `t + 1`, for every `t + 1` past the row's
    /// prefix (left-to-right LM with no prefix, UniLM's sequence-to-sequence objective with
    /// one). Needs an attention mask that hides each target from the position predicting it.
    NextToken {
        /// How long each row's prefix is (its tokens are context, not targets; `prefix_lm`
        /// attention reads the same lengths). Default: none
        #[serde(default)]
        prefix: PrefixRule,
    },
    /// A class per word, read at its first word piece (POS tagging); the data must be tagged.
    Tagging {
        /// Number of classes C.
        n_classes: usize,
    },
}

/// The prefix of each row of a [`Objective::NextToken`] task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixRule {
    /// No prefix: every next token is a target.
    #[default]
    None,
    /// The first half of the row (`floor(len / 2)` tokens).
    Half,
    /// Uniform in `1..len` per row and step in training (seeded); the first half in
    /// evaluation.
    Uniform,
}

impl PrefixRule {
    /// The prefix of a row of `len` tokens: in training (`draw` is a fresh uniform draw), or in
    /// evaluation (`draw` is `None`).
    pub fn prefix(self, len: usize, draw: Option<u64>) -> usize {
        match (self, draw) {
            (PrefixRule::None, _) => 0,
            (PrefixRule::Uniform, Some(u)) if len >= 2 => 1 + (u % (len as u64 - 1)) as usize,
            _ => len / 2,
        }
    }
}

/// How each step picks its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSchedule {
    /// Task `k` with probability proportional to its number of training examples.
    Proportional {},
    /// Probability proportional to `n_k ^ (1 / temperature)` (temperature 1: proportional;
    /// large: uniform; as in multilingual and T5 mixtures).
    Temperature {
        /// Temperature, > 0.
        temperature: f64,
    },
    /// Tasks in turn: step `s` trains task `s mod K`.
    RoundRobin {},
    /// Task `k` with probability `shares[k] / sum(shares)`.
    Fixed {
        /// One non-negative share per task.
        shares: Vec<f64>,
    },
}

fn one() -> f64 {
    1.0
}

fn no_attention_mask() -> AttnMaskConfig {
    AttnMaskConfig::None {}
}

/// One task of a multi-task run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Name (logs and metrics).
    pub name: String,
    /// What it predicts.
    pub objective: Objective,
    /// Factor on its loss. Default: 1
    #[serde(default = "one")]
    pub weight: f64,
    /// Its attention mask, intersected with key padding. Default: none (bidirectional)
    #[serde(default = "no_attention_mask")]
    pub attention: AttnMaskConfig,
    /// Its token-masking policy: the targets of an `mlm` task (required there), input
    /// corruption only (word dropout) for the others. Default: none
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<MaskingConfig>,
}

/// A multi-task run's model and tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultiTaskConfig {
    /// The shared encoder.
    pub encoder: TextEncoderConfig,
    /// The tasks, in order (task 0 draws with the run seed itself).
    pub tasks: Vec<TaskSpec>,
    /// How steps pick tasks.
    pub schedule: TaskSchedule,
    /// Every vocabulary objective uses one prediction head (UniLM: all parameters shared),
    /// else one each.
    pub share_lm_head: bool,
    /// Dropout before each token classifier (BERT: 0.1).
    pub tagger_dropout: f64,
}

/// The training and evaluation documents of one task.
#[derive(Debug, Clone)]
pub struct TaskData {
    /// Training documents (tagged for a tagging task).
    pub train: Arc<Vec<Encoded>>,
    /// Held-out documents.
    pub eval: Arc<Vec<Encoded>>,
}

/// The probability of each task under `schedule` (round robin: proportional, unused by the
/// draw), refusing bad shares and temperatures.
pub(crate) fn schedule_probs(schedule: &TaskSchedule, data: &[TaskData]) -> Result<Vec<f64>> {
    let n: Vec<f64> = data.iter().map(|d| d.train.len() as f64).collect();
    let raw: Vec<f64> = match schedule {
        TaskSchedule::Proportional {} | TaskSchedule::RoundRobin {} => n,
        TaskSchedule::Temperature { temperature } => {
            if !(temperature.is_finite() && *temperature > 0.0) {
                return Err(invalid(
                    "schedule.temperature",
                    temperature,
                    "a positive number",
                ));
            }
            n.iter().map(|x| x.powf(1.0 / temperature)).collect()
        }
        TaskSchedule::Fixed { shares } => {
            if shares.len() != data.len() {
                return Err(invalid(
                    "schedule.shares",
                    format!("{} shares", shares.len()),
                    format!("one per task ({})", data.len()),
                ));
            }
            if let Some(s) = shares.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
                return Err(invalid("schedule.shares", s, "non-negative numbers"));
            }
            shares.clone()
        }
    };
    let total: f64 = raw.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return Err(invalid(
            "schedule.shares",
            format!("{raw:?}"),
            "a positive sum",
        ));
    }
    Ok(raw.iter().map(|x| x / total).collect())
}
