//! Multi-task training around one shared encoder, and UniLM (Dong et al. 2019) as a special
//! case: every objective is "predict something at some positions", and what separates
//! bidirectional cloze, left-to-right LM and sequence-to-sequence (prefix-LM) is only the
//! self-attention mask each batch runs under.
//!
//! Each task of a [`MultiTask`] has its own data, head (a prediction head over the vocabulary
//! or a token classifier, see [`SharedEncoderModel`]), loss weight, token-masking policy (the
//! MLM targets, or input corruption such as word dropout for the other objectives) and
//! attention mask (any `mask-attn` config, always intersected with key padding). Every step
//! trains one task, picked by the [`TaskSchedule`]:
//!
//! - which task step `s` trains is a pure function of `(seed, s)`, and task `k`'s `j`-th batch
//!   is a pure function of `(seed, k, j)`, where `j` counts the earlier steps that drew `k`.
//!   The schedule's state is therefore recomputed on resume, never stored, and resume is exact
//!   by construction (the multi-task resume test compares every step's task and batch digest);
//! - task 0 uses the run seed itself, so a one-task run draws exactly the batches of the
//!   single-task [`MlmTask`](crate::tasks::mlm::MlmTask) (tested: same losses, bit for bit).
//!
//! Loss weights multiply a task's loss on the steps that train it. Under AdamW a constant
//! factor on every gradient would cancel; here the tasks share the moment estimates and the
//! clipping threshold, so a weight shifts how large each task's updates are relative to the
//! others', not linearly. The schedule's shares are the direct lever.
//!
//! Legend: B rows, T padded length, N scored positions, V vocabulary, C classes.

mod config;
mod rows;

pub use config::{MultiTaskConfig, Objective, PrefixRule, TaskData, TaskSchedule, TaskSpec};
pub use rows::{
    attention_mask, eval_rows, score_rows, Head, MultiEval, Rows, Score, TaskEval, EVAL_MASK_SEED,
};

use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use mask_core::{BatchContext, BatchMasker, MaskRng, Selector, SelectorResources, TokenMasker};
use mask_data::{collate, BatchSchedule, Encoded, EpochOrder, TextTokenizer};
use mask_model::{token_cross_entropy, SharedEncoderConfig, SharedEncoderModel, TextEncoderConfig};
use serde_json::json;

use crate::error::{invalid, Result};
use crate::task::{BatchInfo, TaskOutput, TrainTask};
use crate::tasks::mlm::feed_back;
use crate::tasks::{docs_digest, text_bindings};
use config::schedule_probs;
use rows::logits;

/// Stream of the schedule's draws (which task a step trains).
const STREAM_SCHEDULE: u64 = 0x5c4e_d01e;
/// Stream of the prefix lengths of `uniform` prefix rules.
const STREAM_PREFIX: u64 = 0x9ef1_0000;

/// Which task each step trains, and how many batches each task drew before it: recomputed
/// from `(seed, step)`, advanced incrementally (workers ask for increasing steps).
#[derive(Debug, Clone, Default)]
struct Cursor {
    seed: u64,
    step: u64,
    counts: Vec<u64>,
}

/// The seed of task `k`'s data order and masks (task 0: the run seed).
pub fn task_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        seed
    } else {
        mask_core::mix64(seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// Several objectives on one shared encoder (see the module docs).
#[derive(Debug, Clone)]
pub struct MultiTask {
    config: MultiTaskConfig,
    heads: Vec<Head>,
    lm_heads: usize,
    taggers: Vec<usize>,
    maskers: Vec<Option<BatchMasker<TokenMasker>>>,
    data: Vec<TaskData>,
    eval: Arc<Vec<Vec<Rows>>>,
    probs: Vec<f64>,
    cursor: Cursor,
    orders: Vec<EpochOrder>,
    pad_id: u32,
    tokenizer: String,
    digest: String,
}

impl MultiTask {
    /// The tasks of `config`, task `k` trained on `data[k]`; masking policies are built with
    /// `resources`. Every setting is checked here, naming the task and field.
    pub fn new(
        config: MultiTaskConfig,
        data: Vec<TaskData>,
        resources: &SelectorResources,
        tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        let k = config.tasks.len();
        if k == 0 {
            return Err(invalid("tasks", 0, "at least one task"));
        }
        if data.len() != k {
            return Err(invalid(
                "data",
                data.len(),
                format!("one data set per task ({k})"),
            ));
        }
        let vocab = config.encoder.vocab_size;
        if vocab != tokenizer.vocab_size() {
            return Err(invalid(
                "vocab_size",
                vocab,
                format!("the tokenizer's ({})", tokenizer.vocab_size()),
            ));
        }
        let (mut heads, mut lm_heads, mut taggers, mut maskers) = (vec![], 0, vec![], vec![]);
        for (spec, d) in config.tasks.iter().zip(&data) {
            check_task(spec, d, &config.encoder)?;
            heads.push(match spec.objective {
                Objective::Tagging { n_classes } => {
                    taggers.push(n_classes);
                    Head::Tagger(taggers.len() - 1)
                }
                _ if config.share_lm_head && lm_heads > 0 => Head::Lm(0),
                _ => {
                    lm_heads += 1;
                    Head::Lm(lm_heads - 1)
                }
            });
            let masker = match &spec.masking {
                Some(m) => {
                    let policy = m.build_with(resources)?;
                    if policy.is_adaptive() && !matches!(spec.objective, Objective::Mlm {}) {
                        return Err(invalid(
                            "masking",
                            format!("task `{}`: {}", spec.name, policy.selector().name()),
                            "a policy that needs no feedback (only mlm tasks feed losses back)",
                        ));
                    }
                    Some(BatchMasker::new(policy))
                }
                None => None,
            };
            maskers.push(masker);
        }
        let probs = schedule_probs(&config.schedule, &data)?;
        let eval = config
            .tasks
            .iter()
            .zip(&data)
            .enumerate()
            .map(|(i, (spec, d))| {
                let v = spec.masking.as_ref().map(|m| &m.vocab);
                let mut rows = eval_rows(&spec.objective, &d.eval, v, tokenizer.pad_id)?;
                rows.iter_mut().for_each(|r| r.task = i);
                if rows.iter().all(|r| r.positions.is_empty()) {
                    return Err(invalid(
                        "eval",
                        format!("task `{}`: {} documents", spec.name, d.eval.len()),
                        "held-out documents with at least one scored position",
                    ));
                }
                Ok(rows)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            digest: docs_digest(
                data.iter()
                    .flat_map(|d| d.train.iter().chain(d.eval.iter())),
            ),
            orders: vec![EpochOrder::default(); k],
            cursor: Cursor::default(),
            heads,
            lm_heads,
            taggers,
            maskers,
            data,
            eval: Arc::new(eval),
            probs,
            pad_id: tokenizer.pad_id,
            tokenizer: tokenizer.digest().to_string(),
            config,
        })
    }

    /// The config.
    pub fn config(&self) -> &MultiTaskConfig {
        &self.config
    }

    /// The head each task trains, in task order.
    pub fn heads(&self) -> &[Head] {
        &self.heads
    }

    /// The model config.
    pub fn model_config(&self) -> SharedEncoderConfig {
        SharedEncoderConfig::new(
            self.config.encoder.clone(),
            self.lm_heads,
            self.taggers.clone(),
        )
        .with_tagger_dropout(self.config.tagger_dropout)
    }

    /// The task step `step` trains under `seed`.
    pub fn task_at(&self, seed: u64, step: u64) -> usize {
        match self.config.schedule {
            TaskSchedule::RoundRobin {} => (step % self.probs.len() as u64) as usize,
            _ => {
                let u = MaskRng::for_example(seed, 0, step, STREAM_SCHEDULE).next_f64();
                let mut acc = 0.0;
                for (k, p) in self.probs.iter().enumerate() {
                    acc += p;
                    if u < acc {
                        return k;
                    }
                }
                // Rounding: the last task with a positive share.
                self.probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
            }
        }
    }

    /// `(task, its batch index)` of step `step`.
    fn locate(&mut self, seed: u64, step: u64) -> (usize, u64) {
        let c = &mut self.cursor;
        if c.seed != seed || c.step > step || c.counts.len() != self.probs.len() {
            *c = Cursor {
                seed,
                step: 0,
                counts: vec![0; self.probs.len()],
            };
        }
        while self.cursor.step < step {
            let k = self.task_at(seed, self.cursor.step);
            self.cursor.counts[k] += 1;
            self.cursor.step += 1;
        }
        let k = self.task_at(seed, step);
        (k, self.cursor.counts[k])
    }
}

fn check_task(spec: &TaskSpec, d: &TaskData, encoder: &TextEncoderConfig) -> Result<()> {
    let named = |what: String| format!("task `{}`: {what}", spec.name);
    if !(spec.weight.is_finite() && spec.weight > 0.0) {
        return Err(invalid(
            "weight",
            named(spec.weight.to_string()),
            "a positive number",
        ));
    }
    if d.train.is_empty() || d.eval.is_empty() {
        return Err(invalid(
            "data",
            named(format!(
                "{} train / {} eval documents",
                d.train.len(),
                d.eval.len()
            )),
            "at least one of each",
        ));
    }
    if let Some(doc) = d
        .train
        .iter()
        .chain(d.eval.iter())
        .find(|x| x.ids.len() > encoder.max_len)
    {
        return Err(invalid(
            "max_len",
            encoder.max_len,
            named(format!(
                "at least the longest document ({} tokens)",
                doc.ids.len()
            )),
        ));
    }
    if let Some(m) = &spec.masking {
        if m.vocab.vocab_size as usize != encoder.vocab_size {
            return Err(invalid(
                "masking.vocab.vocab_size",
                named(m.vocab.vocab_size.to_string()),
                format!("the model's vocab_size ({})", encoder.vocab_size),
            ));
        }
    }
    match spec.objective {
        Objective::Mlm {} if spec.masking.is_none() => {
            return Err(invalid(
                "masking",
                named("none".into()),
                "a masking policy (mlm targets)",
            ))
        }
        Objective::Tagging { n_classes } => {
            for doc in d.train.iter().chain(d.eval.iter()) {
                let Some(tags) = &doc.tags else {
                    return Err(invalid(
                        "tags",
                        named("an untagged document".into()),
                        "tags on every document",
                    ));
                };
                if let Some(&t) = tags.iter().find(|&&t| t as usize >= n_classes) {
                    return Err(invalid(
                        "tags",
                        named(t.to_string()),
                        format!("a class < n_classes = {n_classes}"),
                    ));
                }
            }
        }
        _ => {}
    }
    check_attention(spec, encoder.transformer.n_heads)
}

/// Builds the task's mask on a probe row of 8 tokens and, for a next-token task, checks that
/// no predicting position sees its target.
fn check_attention(spec: &TaskSpec, heads: usize) -> Result<()> {
    let t = 8;
    let prefix = match spec.objective {
        Objective::NextToken { prefix } => vec![prefix.prefix(t, None)],
        _ => vec![],
    };
    let probe = Rows {
        task: 0,
        epoch: 0,
        seq_len: t,
        input_ids: vec![0; t],
        lengths: vec![t],
        prefix: prefix.clone(),
        positions: vec![],
        targets: vec![],
        mask_seed: 0,
        text: None,
    };
    let mask = attention_mask(&spec.attention, &probe, heads).map_err(|e| {
        invalid(
            "attention",
            format!("task `{}`", spec.name),
            format!("a mask this task can build: {e}"),
        )
    })?;
    if let Some(&p) = prefix.first() {
        for q in p.max(1) - 1..t - 1 {
            if (0..heads).any(|h| mask.allows(0, h, q, q + 1)) {
                return Err(invalid(
                    "attention",
                    format!("task `{}`: {}", spec.name, mask.name()),
                    format!(
                        "a mask that hides each predicted token from the position predicting \
                         it (causal, or prefix_lm with the task's prefix): position {q} sees {}",
                        q + 1
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl<B: AutodiffBackend> TrainTask<B> for MultiTask {
    type Model = SharedEncoderModel<B>;
    type Batch = Rows;
    type Metrics = MultiEval;

    fn kind(&self) -> &'static str {
        "multitask"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "config": self.config,
            "train_docs": self.data.iter().map(|d| d.train.len()).collect::<Vec<_>>(),
            "eval_docs": self.data.iter().map(|d| d.eval.len()).collect::<Vec<_>>(),
        })
    }

    fn bindings(&self) -> Vec<(String, String)> {
        text_bindings(&self.tokenizer, self.digest.clone())
    }

    fn num_examples(&self) -> usize {
        self.data.iter().map(|d| d.train.len()).min().unwrap_or(0)
    }

    fn init_model(&self, device: &B::Device) -> Result<SharedEncoderModel<B>> {
        Ok(self.model_config().init::<B>(device)?)
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<Rows> {
        let (k, count) = self.locate(seed, step);
        let seed_k = task_seed(seed, k);
        let docs = &self.data[k].train;
        let schedule = BatchSchedule::new(docs.len(), batch_size, seed_k)?;
        let indices = schedule.indices_at_cached(count, &mut self.orders[k]);
        let ctx = BatchContext {
            seed: seed_k,
            epoch: schedule.epoch_of(count),
            step: count,
        };
        let masked = match self.maskers[k].as_mut() {
            Some(m) => Some(collate(m, docs, &indices, self.pad_id, ctx)?),
            None => None,
        };
        let draws: Vec<u64> = (0..indices.len())
            .map(|r| MaskRng::for_example(seed_k, count, r as u64, STREAM_PREFIX).next_u64())
            .collect();
        let rows: Vec<&Encoded> = indices.iter().map(|&i| &docs[i]).collect();
        let objective = &self.config.tasks[k].objective;
        // The targets of next-token and tagging tasks are the documents' own tokens and tags,
        // never the corrupted input.
        let mut out = Rows::build(k, objective, &rows, self.pad_id, masked, Some(&draws))?;
        out.epoch = ctx.epoch;
        out.mask_seed = mask_core::mix64(seed_k ^ count);
        Ok(out)
    }

    fn describe(&self, b: &Rows) -> BatchInfo {
        BatchInfo {
            epoch: b.epoch,
            examples: b.rows(),
            tokens: b.lengths.iter().sum(),
            items: b.positions.len(),
            digest: b.digest(),
            task: Some(b.task as u32),
        }
    }

    fn forward(
        &self,
        model: &SharedEncoderModel<B>,
        b: &Rows,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        if b.positions.is_empty() {
            return Ok(None);
        }
        let spec = &self.config.tasks[b.task];
        let heads = self.config.encoder.transformer.n_heads;
        let (logits, targets) = logits(
            model,
            (self.heads[b.task], heads),
            &spec.attention,
            b,
            device,
        )?;
        let per_item = token_cross_entropy(logits, targets); // [N]
        let mut loss = per_item.clone().mean();
        if spec.weight != 1.0 {
            loss = loss * spec.weight;
        }
        Ok(Some(TaskOutput {
            loss,
            per_item: b.text.is_some().then_some(per_item),
        }))
    }

    fn is_adaptive(&self) -> bool {
        self.maskers
            .iter()
            .flatten()
            .any(|m| m.policy().is_adaptive())
    }

    fn observe(&mut self, b: &Rows, per_item: &[f32]) -> Result<()> {
        let (Some(text), Some(masker)) = (&b.text, self.maskers[b.task].as_mut()) else {
            return Ok(());
        };
        if !masker.policy().is_adaptive() {
            return Ok(());
        }
        if per_item.len() != b.positions.len() {
            return Err(invalid(
                "per_item",
                per_item.len(),
                format!("one loss per masked position ({})", b.positions.len()),
            ));
        }
        let policy = masker.policy_mut();
        feed_back(text, &b.positions, per_item, |ids, pos, losses| {
            policy.observe(ids, pos, losses)
        });
        Ok(())
    }

    fn evaluate(
        &self,
        model: &SharedEncoderModel<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<MultiEval> {
        let mut tasks = vec![];
        let (mut weighted, mut weights) = (0.0, 0.0);
        for (k, spec) in self.config.tasks.iter().enumerate() {
            let heads = (self.heads[k], self.config.encoder.transformer.n_heads);
            let s = score_rows(model, heads, &spec.attention, &self.eval[k], device)?;
            weighted += spec.weight * s.loss();
            weights += spec.weight;
            tasks.push(TaskEval {
                task: spec.name.clone(),
                loss: s.loss(),
                accuracy: s.accuracy(),
                items: s.items,
            });
        }
        Ok(MultiEval {
            score: weighted / weights,
            tasks,
        })
    }

    fn state_sections(&self) -> Vec<(String, Vec<u8>)> {
        // Adaptive policies' learned state, one section per mlm task that has one.
        self.maskers
            .iter()
            .enumerate()
            .filter_map(|(k, m)| {
                let bytes = m.as_ref()?.policy().selector().state_bytes()?;
                Some((format!("{}.{k}", crate::tasks::mlm::MASKING_STATE), bytes))
            })
            .collect()
    }

    fn load_state_sections(
        &mut self,
        section: &dyn Fn(&str) -> Option<Vec<u8>>,
        path: &str,
    ) -> Result<()> {
        for (k, m) in self.maskers.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else { continue };
            let policy = m.policy_mut();
            if !policy.is_adaptive() {
                continue;
            }
            let name = format!("{}.{k}", crate::tasks::mlm::MASKING_STATE);
            let err = |reason: String| crate::TrainError::Resume {
                path: path.to_string(),
                reason,
            };
            let bytes = section(&name).ok_or_else(|| {
                err(format!(
                    "task {k} learns from feedback but the checkpoint has no `{name}` section"
                ))
            })?;
            policy
                .selector_mut()
                .load_state_bytes(&bytes)
                .map_err(|e| err(format!("masking state of task {k}: {e}")))?;
        }
        Ok(())
    }
}
