//! The multi-task study (`kind = "multitask"`): arms that train one shared encoder on several
//! objectives (`mask_train::tasks::multitask`), each with its own head, loss weight, token
//! masking and attention mask, and the same scoring for every arm whatever it trained:
//!
//! - held-out MLM: the text study's protocol (fixed masks, `[MASK]` positions, unigram
//!   baseline) through the first MLM task's head (or the first vocabulary head);
//! - causal-LM loss and perplexity on the held-out paragraphs: every next token, under a
//!   causal mask, through the first left-to-right task's head (or the first vocabulary head:
//!   an arm that never trained left to right is scored as it is), beside the unigram model;
//! - prefix-LM continuation loss: the second half of each held-out paragraph given the first,
//!   under a prefix-LM mask, through the first prefix task's head (or as above);
//! - the frozen-encoder POS probe of the text protocol (`studies::probe`).
//!
//! Paired t-intervals over seeds of each metric per declared contrast, Holm-corrected per
//! metric (the science issue's protocol).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use mask_core::{CorruptionConfig, RateSchedule, Regime, SelectionConfig};
use mask_data::Encoded;
use mask_model::mask_attn::AttnMaskConfig;
use mask_model::SharedEncoderModel;
use mask_train::tasks::multitask::{
    eval_rows, score_rows, Head, MultiEval, MultiTask, MultiTaskConfig, Objective, PrefixRule,
    TaskData, TaskSchedule, TaskSpec,
};
use mask_train::{CheckpointPolicy, EvalRecord, Learner, StepRecord, TrainConfig};
use serde::{Deserialize, Serialize};

use super::arm::{
    check_unique_slugs, finished_result, reuse, run_dir, seed_major, train_run, RunSpec,
};
use super::plot::{arm_curves, plot_panels, smoothed, Panel};
use super::probe::{probe_run, PosProbeConfig, PosProbeResult};
use super::report::{as_written, fmt_mean_std, write_json, write_text};
use super::stats::{metric_contrasts, MetricContrast};
use super::text::{heldout_protocol, ArmConfig, HeldoutResult, ModelSize, TextData, TextStudy};
use super::{invalid, run_parallel, Existing, Result, Sink, StudyEvent};

/// A task's token masking (the vocabulary comes from the tokenizer): the targets of an `mlm`
/// task, input corruption (word dropout) of the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenMasking {
    /// Selection. Default: bernoulli
    #[serde(default)]
    pub selection: SelectionConfig,
    /// Rate schedule. Default: constant 0.15
    #[serde(default)]
    pub rate: RateSchedule,
    /// Corruption. Default: 80/10/10
    #[serde(default)]
    pub corruption: CorruptionConfig,
    /// Static or dynamic. Default: dynamic
    #[serde(default)]
    pub regime: Regime,
}

/// Where a task's documents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The pretraining corpus (held-out paragraphs for evaluation).
    #[default]
    Corpus,
    /// The POS probe's tagged Brown sentences (its test split for evaluation).
    Pos,
}

fn one() -> f64 {
    1.0
}

fn no_mask() -> AttnMaskConfig {
    AttnMaskConfig::None {}
}

fn yes() -> bool {
    true
}

fn round_robin() -> TaskSchedule {
    TaskSchedule::RoundRobin {}
}

fn tagger_dropout() -> f64 {
    0.1
}

/// One task of an arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Name (unique within the arm).
    pub name: String,
    /// What it predicts.
    pub objective: Objective,
    /// Its documents. Default: corpus
    #[serde(default)]
    pub data: DataSource,
    /// Factor on its loss. Default: 1
    #[serde(default = "one")]
    pub weight: f64,
    /// Its attention mask (with key padding). Default: none (bidirectional)
    #[serde(default = "no_mask")]
    pub attention: AttnMaskConfig,
    /// Its token masking. Default: none
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<TokenMasking>,
}

/// One arm: a set of tasks on one encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiArm {
    /// Row name (its slug names the run directory).
    pub name: String,
    /// How steps pick tasks. Default: round_robin
    #[serde(default = "round_robin")]
    pub schedule: TaskSchedule,
    /// One prediction head for every vocabulary objective (UniLM). Default: true
    #[serde(default = "yes")]
    pub share_lm_head: bool,
    /// Dropout before token classifiers. Default: 0.1
    #[serde(default = "tagger_dropout")]
    pub tagger_dropout: f64,
    /// The tasks.
    pub tasks: Vec<TaskConfig>,
}

/// A multi-task study (`kind = "multitask"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultitaskStudy {
    /// The study kind: `"multitask"`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Output directory.
    pub out_dir: String,
    /// WordPiece vocabulary size. Default: 2048
    #[serde(default = "vocab_size")]
    pub vocab_size: usize,
    /// Tokens per pretraining document. Default: 64
    #[serde(default = "max_len")]
    pub max_len: usize,
    /// Every n-th paragraph is held out. Default: 20
    #[serde(default = "heldout_every")]
    pub heldout_every: usize,
    /// At most this many training paragraphs, or `"all"`. Default: 1536
    #[serde(default = "train_docs", with = "super::count_or_all")]
    pub train_docs: Option<usize>,
    /// At most this many held-out paragraphs, or `"all"`. Default: 256
    #[serde(default = "eval_docs", with = "super::count_or_all")]
    pub eval_docs: Option<usize>,
    /// Encoder size. Default: the text study's (rotary, 4 heads, no dropout)
    #[serde(default = "model")]
    pub model: ModelSize,
    /// Learner settings (`seed` replaced by each of `seeds`). Default: the text study's
    #[serde(default = "train")]
    pub train: TrainConfig,
    /// Seeds. Default: [0, 1, 2]
    #[serde(default = "seeds")]
    pub seeds: Vec<u64>,
    /// Checkpoint every this many steps. Default: 96
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: u64,
    /// Fixed mask seeds of the held-out MLM protocol. Default: 5
    #[serde(default = "eval_mask_seeds")]
    pub eval_mask_seeds: u64,
    /// The POS probe (also the data of `pos` tasks). Default: enabled, as the text study's
    #[serde(default)]
    pub pos_probe: PosProbeConfig,
    /// The arms.
    pub arms: Vec<MultiArm>,
    /// Paired contrasts `[a, b]`; empty: every pair (later - earlier).
    #[serde(default)]
    pub contrasts: Vec<[String; 2]>,
    /// Runs trained at once. Default: 1
    #[serde(default = "jobs")]
    pub jobs: usize,
}

fn base() -> TextStudy {
    TextStudy::default()
}
fn vocab_size() -> usize {
    base().vocab_size
}
fn max_len() -> usize {
    base().max_len
}
fn heldout_every() -> usize {
    base().heldout_every
}
fn train_docs() -> Option<usize> {
    base().train_docs
}
fn eval_docs() -> Option<usize> {
    base().eval_docs
}
fn model() -> ModelSize {
    base().model
}
fn train() -> TrainConfig {
    base().train
}
fn seeds() -> Vec<u64> {
    base().seeds
}
fn checkpoint_every() -> u64 {
    base().checkpoint_every
}
fn eval_mask_seeds() -> u64 {
    base().eval_mask_seeds
}
fn jobs() -> usize {
    1
}

impl MultiArm {
    fn masking_arms(&self) -> Vec<ArmConfig> {
        self.tasks
            .iter()
            .filter_map(|t| {
                let m = t.masking.as_ref()?;
                Some(ArmConfig {
                    name: format!("{} / {}", self.name, t.name),
                    selection: m.selection,
                    rate: m.rate,
                    corruption: m.corruption,
                    regime: m.regime,
                    steps_factor: 1.0,
                })
            })
            .collect()
    }
}

impl MultitaskStudy {
    /// The text study whose data, protocol and probe this study shares: its arms are the
    /// tasks' masking policies (validated as the text study validates arms).
    pub fn text_study(&self) -> TextStudy {
        let mut arms: Vec<ArmConfig> = self.arms.iter().flat_map(|a| a.masking_arms()).collect();
        if arms.is_empty() {
            // The text study needs an arm; this one only names the default policy.
            arms.push(base().arms.pop().expect("the default text study has arms"));
        }
        TextStudy {
            kind: "text".into(),
            name: self.name.clone(),
            out_dir: self.out_dir.clone(),
            vocab_size: self.vocab_size,
            max_len: self.max_len,
            heldout_every: self.heldout_every,
            train_docs: self.train_docs,
            eval_docs: self.eval_docs,
            model: self.model.clone(),
            train: self.train.clone(),
            seeds: self.seeds.clone(),
            checkpoint_every: self.checkpoint_every,
            eval_mask_seeds: self.eval_mask_seeds,
            pos_probe: PosProbeConfig {
                enabled: true,
                ..self.pos_probe.clone()
            },
            arms,
            contrasts: vec![],
            jobs: self.jobs,
            ..base()
        }
    }

    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        super::check_kind(&self.kind, "multitask")?;
        if self.arms.is_empty() {
            return Err(invalid("arms", "[]", "at least one arm"));
        }
        check_unique_slugs(self.arms.iter().map(|a| a.name.as_str()))?;
        for arm in &self.arms {
            if arm.tasks.is_empty() {
                return Err(invalid(
                    "arms.tasks",
                    format!("[] in arm `{}`", arm.name),
                    "at least one task",
                ));
            }
            check_unique_slugs(arm.tasks.iter().map(|t| t.name.as_str()))?;
            for t in &arm.tasks {
                let wants_tags = matches!(t.objective, Objective::Tagging { .. });
                if wants_tags != (t.data == DataSource::Pos) {
                    return Err(invalid(
                        "arms.tasks.data",
                        format!("{:?} for task `{}` of arm `{}`", t.data, t.name, arm.name),
                        "pos for a tagging task and corpus for the others",
                    ));
                }
            }
        }
        super::arm::check_contrasts(&self.contrasts, &self.arms, |a| &a.name)?;
        self.text_study().validate()
    }

    /// The smoke version: the text study's quick sizes.
    pub fn quick(mut self) -> Self {
        let q = self.text_study().quick();
        self.train_docs = q.train_docs;
        self.eval_docs = q.eval_docs;
        self.max_len = q.max_len;
        self.model = q.model;
        self.train = q.train;
        self.checkpoint_every = q.checkpoint_every;
        self.pos_probe = q.pos_probe;
        self.eval_mask_seeds = q.eval_mask_seeds;
        self.seeds = q.seeds;
        self.out_dir = q.out_dir;
        self
    }

    /// The contrasts to test.
    pub fn contrast_pairs(&self) -> Vec<[String; 2]> {
        let names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        super::stats::contrast_pairs(&self.contrasts, &names)
    }
}

/// A next-token score beside the unigram model on the same targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LmScore {
    /// Mean cross-entropy per predicted token (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Share of tokens predicted exactly.
    pub accuracy: f64,
    /// The training split's unigram model on the same tokens (nats).
    pub unigram_loss: f64,
    /// Tokens predicted.
    pub tokens: u64,
}

/// The result of one arm and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiRunResult {
    /// Arm.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Every step (with the task it trained).
    pub history: Vec<StepRecord>,
    /// Held-out evaluations of every task during training.
    pub evals: Vec<EvalRecord<MultiEval>>,
    /// Steps each task trained, in task order.
    pub steps_per_task: Vec<u64>,
    /// The held-out MLM protocol.
    pub mlm: HeldoutResult,
    /// Left-to-right LM on the held-out paragraphs.
    pub causal: LmScore,
    /// Continuation of the held-out paragraphs given their first half.
    pub prefix: LmScore,
    /// The frozen-encoder POS probe.
    pub pos_probe: PosProbeResult,
    /// Wall time in this session, seconds (not reproducible).
    pub seconds: f64,
}

/// The contrasts of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricContrasts {
    /// The metric.
    pub metric: String,
    /// Its contrasts (Holm across them).
    pub contrasts: Vec<MetricContrast>,
}

/// Everything a multi-task study produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiResults {
    /// The study as run.
    pub study: MultitaskStudy,
    /// Tokenizer digest.
    pub tokenizer_digest: String,
    /// Every run.
    pub runs: Vec<MultiRunResult>,
    /// Paired contrasts per metric.
    pub contrasts: Vec<MetricContrasts>,
}

/// The multi-task config of `arm` on `data`.
pub fn task_of(data: &TextData, arm: &MultiArm) -> Result<MultiTask> {
    let pos = data
        .pos
        .as_ref()
        .ok_or_else(|| invalid("pos_probe.enabled", false, "true (pos tasks use its data)"))?;
    let tasks = arm
        .tasks
        .iter()
        .map(|t| TaskSpec {
            name: t.name.clone(),
            objective: t.objective.clone(),
            weight: t.weight,
            attention: t.attention.clone(),
            masking: t.masking.as_ref().map(|m| {
                ArmConfig {
                    name: t.name.clone(),
                    selection: m.selection,
                    rate: m.rate,
                    corruption: m.corruption,
                    regime: m.regime,
                    steps_factor: 1.0,
                }
                .masking(data.vocab.clone())
            }),
        })
        .collect();
    let sets = arm
        .tasks
        .iter()
        .map(|t| match t.data {
            DataSource::Corpus => TaskData {
                train: Arc::clone(&data.train_docs),
                eval: Arc::clone(&data.eval_docs),
            },
            DataSource::Pos => TaskData {
                train: Arc::clone(&pos.train),
                eval: Arc::clone(&pos.test),
            },
        })
        .collect();
    let config = MultiTaskConfig {
        encoder: data.model.encoder.clone(),
        tasks,
        schedule: arm.schedule.clone(),
        share_lm_head: arm.share_lm_head,
        tagger_dropout: arm.tagger_dropout,
    };
    Ok(MultiTask::new(
        config,
        sets,
        &data.resources,
        &data.tokenizer,
    )?)
}

/// The vocabulary head that scores `want` (the first task it selects), else the first one.
fn lm_head(task: &MultiTask, want: impl Fn(&Objective) -> bool) -> Option<usize> {
    let heads = task.heads();
    let lm = |k: usize| match heads[k] {
        Head::Lm(i) => Some(i),
        Head::Tagger(_) => None,
    };
    let specs = &task.config().tasks;
    (0..specs.len())
        .filter(|&k| want(&specs[k].objective))
        .find_map(lm)
        .or_else(|| (0..specs.len()).find_map(lm))
}

/// Next-token score of `model`'s head `head` on `docs` under `attention` and `prefix`.
fn lm_score<B: Backend>(
    model: &SharedEncoderModel<B>,
    (head, heads): (usize, usize),
    (attention, prefix): (AttnMaskConfig, PrefixRule),
    docs: &[Encoded],
    data: &TextData,
    device: &B::Device,
) -> Result<LmScore> {
    let rows = eval_rows(
        &Objective::NextToken { prefix },
        docs,
        None,
        data.tokenizer.pad_id,
    )?;
    let s = score_rows(model, (Head::Lm(head), heads), &attention, &rows, device)?;
    let targets: Vec<u32> = rows
        .iter()
        .flat_map(|r| r.targets.iter().map(|&t| t as u32))
        .collect();
    let unigram =
        targets.iter().map(|&t| data.unigram.loss(t)).sum::<f64>() / targets.len().max(1) as f64;
    Ok(LmScore {
        loss: s.loss(),
        perplexity: s.loss().exp(),
        accuracy: s.accuracy(),
        unigram_loss: unigram,
        tokens: s.items,
    })
}

/// Runs every arm over every seed, then writes `results.json`, `report.md` and `curves.svg`.
pub fn run_study<B: AutodiffBackend>(
    study: &MultitaskStudy,
    existing: Existing,
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<MultiResults> {
    let text = study.text_study();
    let data = TextData::prepare(&text, sink)?;
    let pos = data
        .pos
        .clone()
        .ok_or_else(|| invalid("pos_probe", "disabled", "enabled"))?;
    let out = PathBuf::from(&study.out_dir);
    let policy = CheckpointPolicy::new(study.checkpoint_every, 1)?;
    let heads = study.model.n_heads;
    let items = seed_major(&study.seeds, &study.arms);
    let runs = run_parallel(study.jobs, items, sink, |(seed, arm), sink| {
        let dir = run_dir(&out, &arm.name, seed);
        let label = format!("{} / seed {seed}", arm.name);
        let mut finished = finished_result::<MultiRunResult>(&dir, existing)?;
        if let Some(r) = reuse(&mut finished, existing, &label, sink) {
            return Ok(r);
        }
        let started = Instant::now();
        let spec = RunSpec::existing(seed, existing, policy);
        let task = task_of(&data, arm)?;
        let config = TrainConfig {
            seed,
            ..study.train.clone()
        };
        let learner: Learner<B, MultiTask> = train_run(
            &dir,
            task.clone(),
            config,
            &spec,
            &label,
            (device, &[]),
            sink,
        )?;
        let model = learner.model().valid();
        let mlm_head = lm_head(&task, |o| matches!(o, Objective::Mlm {}));
        let causal_head = lm_head(&task, |o| {
            matches!(
                o,
                Objective::NextToken {
                    prefix: PrefixRule::None
                }
            )
        });
        let prefix_head = lm_head(
            &task,
            |o| matches!(o, Objective::NextToken { prefix } if *prefix != PrefixRule::None),
        );
        let (Some(mlm_head), Some(causal_head), Some(prefix_head)) =
            (mlm_head, causal_head, prefix_head)
        else {
            return Err(invalid(
                "arms.tasks",
                format!("arm `{}` has no vocabulary objective", arm.name),
                "at least one mlm or next_token task (the study scores MLM and LM losses)",
            ));
        };
        let mlm = heldout_protocol(&text, &data, &model.mlm_model(mlm_head)?, device)?;
        let causal = lm_score(
            &model,
            (causal_head, heads),
            (AttnMaskConfig::Causal {}, PrefixRule::None),
            &data.eval_docs,
            &data,
            device,
        )?;
        let prefix = lm_score(
            &model,
            (prefix_head, heads),
            (
                AttnMaskConfig::PrefixLm { prefix_len: None },
                PrefixRule::Half,
            ),
            &data.eval_docs,
            &data,
            device,
        )?;
        let pos_probe = probe_run::<B>(
            &text.pos_probe,
            &pos,
            &data.model,
            learner.model().encoder.clone(),
            (seed, &label),
            device,
            sink,
        )?;
        let mut steps_per_task = vec![0u64; arm.tasks.len()];
        for h in &learner.state().history {
            if let Some(k) = h.task {
                steps_per_task[k as usize] += 1;
            }
        }
        let result = MultiRunResult {
            arm: arm.name.clone(),
            seed,
            history: learner.state().history.clone(),
            evals: learner.state().evals.clone(),
            steps_per_task,
            mlm,
            causal,
            prefix,
            pos_probe,
            seconds: started.elapsed().as_secs_f64(),
        };
        write_json(&dir.join("result.json"), &result)?;
        sink(StudyEvent::RunFinished {
            run: &label,
            reused: false,
        });
        as_written(result)
    })?;
    let results = MultiResults {
        study: study.clone(),
        tokenizer_digest: data.tokenizer.digest().to_string(),
        contrasts: contrasts(study, &runs),
        runs,
    };
    write_outputs(&results, &out)?;
    Ok(results)
}

/// The metrics contrasted, each read from a run.
type Metric = (&'static str, fn(&MultiRunResult) -> f64);

const METRICS: [Metric; 4] = [
    ("MLM [MASK] loss", |r| r.mlm.mask_token_loss),
    ("causal LM loss", |r| r.causal.loss),
    ("prefix-LM continuation loss", |r| r.prefix.loss),
    ("POS probe accuracy", |r| r.pos_probe.accuracy),
];

/// Paired t-intervals of every metric per declared contrast, Holm per metric.
pub fn contrasts(study: &MultitaskStudy, runs: &[MultiRunResult]) -> Vec<MetricContrasts> {
    let pairs = study.contrast_pairs();
    METRICS
        .iter()
        .map(|(name, get)| {
            let rows: Vec<(&str, u64, f64)> = runs
                .iter()
                .map(|r| (r.arm.as_str(), r.seed, get(r)))
                .collect();
            MetricContrasts {
                metric: name.to_string(),
                contrasts: metric_contrasts(&pairs, &rows, name),
            }
        })
        .collect()
}

/// Writes `results.json`, `report.md` and `curves.svg`.
pub fn write_outputs(results: &MultiResults, out: &Path) -> Result<()> {
    write_json(&out.join("results.json"), results)?;
    write_text(&out.join("report.md"), &results_table(results))?;
    plot_panels(&out.join("curves.svg"), &panels(results))
}

/// Training loss of every step (16-step mean, whatever task it trained) and the held-out
/// score, one line per arm.
pub fn panels(results: &MultiResults) -> Vec<Panel> {
    let arms: Vec<&str> = results.study.arms.iter().map(|a| a.name.as_str()).collect();
    let loss =
        |r: &MultiRunResult| smoothed(&r.history.iter().map(|h| h.loss).collect::<Vec<_>>(), 16);
    let eval = |r: &MultiRunResult| r.evals.iter().map(|e| (e.step as f64, e.score)).collect();
    vec![
        Panel {
            title: "training loss, any task (16-step mean)".into(),
            x_label: "step".into(),
            y_label: "loss (nats)".into(),
            curves: arm_curves(&arms, &results.runs, |r| &r.arm, loss),
        },
        Panel {
            title: "held-out score (tasks' losses, weighted mean)".into(),
            x_label: "step".into(),
            y_label: "loss (nats)".into(),
            curves: arm_curves(&arms, &results.runs, |r| &r.arm, eval),
        },
    ]
}

/// The report: every metric beside its baseline (mean ± std over seeds), then the contrasts.
pub fn results_table(results: &MultiResults) -> String {
    let mut s = String::new();
    let col = |runs: &[&MultiRunResult], f: &dyn Fn(&MultiRunResult) -> f64, k: f64, d: usize| {
        fmt_mean_std(&runs.iter().map(|r| f(r)).collect::<Vec<_>>(), k, d)
    };
    s.push_str(&format!(
        "Study `{}`: every arm scored the same way whatever it trained (held-out MLM at [MASK] \
         inputs; every next token under a causal mask; the second half of each paragraph given \
         the first under a prefix-LM mask; the frozen-encoder POS probe), each beside its \
         baseline; mean ± std over seeds.\n\n| arm | seeds | steps per task | MLM [MASK] loss | unigram | causal LM loss | \
         causal ppl | unigram | prefix-LM continuation loss | unigram | POS probe acc % | \
         initial encoder % | first-piece lookup % |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        results.study.name
    ));
    for arm in &results.study.arms {
        let runs: Vec<&MultiRunResult> =
            results.runs.iter().filter(|r| r.arm == arm.name).collect();
        if runs.is_empty() {
            continue;
        }
        let steps: Vec<String> = arm
            .tasks
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let n: u64 = runs.iter().map(|r| r.steps_per_task[k]).sum();
                format!("{} {}", t.name, n / runs.len() as u64)
            })
            .collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            arm.name,
            runs.len(),
            steps.join(", "),
            col(&runs, &|r| r.mlm.mask_token_loss, 1.0, 3),
            col(&runs, &|r| r.mlm.unigram_loss, 1.0, 3),
            col(&runs, &|r| r.causal.loss, 1.0, 3),
            col(&runs, &|r| r.causal.perplexity, 1.0, 1),
            col(&runs, &|r| r.causal.unigram_loss, 1.0, 3),
            col(&runs, &|r| r.prefix.loss, 1.0, 3),
            col(&runs, &|r| r.prefix.unigram_loss, 1.0, 3),
            col(&runs, &|r| r.pos_probe.accuracy, 100.0, 1),
            col(&runs, &|r| r.pos_probe.initial_encoder_accuracy, 100.0, 1),
            col(&runs, &|r| r.pos_probe.baselines.first_piece, 100.0, 1),
        ));
    }
    s.push_str(
        "\nPaired over seeds (a - b), 95% t-interval, Holm-adjusted across each metric's \
         contrasts:\n\n| metric | a | b | mean diff | 95% CI | Holm p | reading |\n|---|---|---|---|---|---|---|\n",
    );
    for m in &results.contrasts {
        let k = if m.metric.contains("accuracy") {
            100.0
        } else {
            1.0
        };
        for c in &m.contrasts {
            s.push_str(&format!(
                "| {} | {} | {} | {:+.3} | [{:+.3}, {:+.3}] | {:.3} | {} |\n",
                m.metric,
                c.a,
                c.b,
                c.seeds.mean * k,
                c.seeds.lo * k,
                c.seeds.hi * k,
                c.holm_p,
                c.verdict
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::studies::Study;

    fn shipped(name: &str) -> MultitaskStudy {
        let path = format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"));
        match Study::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap() {
            Study::Multitask(s) => s,
            other => panic!("{name} is not a multitask study: {other:?}"),
        }
    }

    #[test]
    fn shipped_configs_validate_and_quick_keeps_their_arms() {
        for name in ["multitask.toml", "unilm.toml"] {
            let s = shipped(name);
            s.validate().unwrap();
            let q = s.clone().quick();
            q.validate().unwrap();
            assert_eq!(q.arms, s.arms);
            assert!(q.train.steps < s.train.steps && q.out_dir.ends_with("-quick"));
        }
        // The text study it shares data with carries every task's masking policy as an arm.
        let names: Vec<String> = shipped("multitask.toml")
            .text_study()
            .arms
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(
            names,
            [
                "MLM alone / mlm",
                "MLM + POS / mlm",
                "MLM + POS / pos",
                "UniLM / bidirectional"
            ]
        );
    }

    #[test]
    fn bad_arms_are_refused_naming_the_field() {
        let base = shipped("multitask.toml");
        let refuse = |edit: &dyn Fn(&mut MultitaskStudy), want: &str| {
            let mut s = base.clone();
            edit(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should name {want}");
        };
        refuse(
            &|s| s.arms[1].tasks[1].data = DataSource::Corpus,
            "arms.tasks.data",
        );
        refuse(
            &|s| s.arms[0].tasks[0].data = DataSource::Pos,
            "arms.tasks.data",
        );
        refuse(&|s| s.arms[2].tasks.clear(), "arms.tasks");
        refuse(
            &|s| s.arms[2].tasks[1].name = "bidirectional".into(),
            "bidirectional",
        );
        refuse(&|s| s.arms.clear(), "arms");
        refuse(
            &|s| s.contrasts = vec![["UniLM".into(), "nobody".into()]],
            "nobody",
        );
        refuse(&|s| s.kind = "text".into(), "kind");
    }
}
