//! The text study: pretrain a small BERT on the embedded Austen paragraphs (or a user corpus)
//! under several masking arms with the same steps, seeds and data order; score held-out MLM
//! loss and accuracy under one fixed evaluation mask; fine-tune each encoder on the fine-food
//! reviews (or a user TSV) and report accuracy, macro precision, recall and F1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use mask_core::{
    CorruptionConfig, Example, MaskContext, MaskPolicy, MaskingConfig, PmiSpanSelector, PmiTable,
    PmiTableConfig, RateSchedule, Regime, SelectionConfig, SelectorResources, TokenStats,
    VocabSpec,
};
use mask_data::{text, Encoded, TextTokenizer, TokenizerConfig};
use mask_model::{
    ClassifierConfig, MlmConfig, MlmModel, NormPlacement, PositionEncoding, TextEncoderConfig,
    TransformerConfig,
};
use mask_train::heldout::{
    breakdown, check_bucket_edges, Breakdown, DocSums, HeldoutStats, Unigram,
};
use mask_train::tasks::classification::{
    ClassificationEval, LabeledDoc, SequenceClassificationTask,
};
use mask_train::tasks::mlm::{score_mlm, EvalSet, MlmEval, MlmTask};
use mask_train::{CheckpointPolicy, Decay, EvalRecord, Learner, StepRecord, TrainConfig};
use serde::{Deserialize, Serialize};
use tracing::info_span;

use super::arm::{
    check_unique_slugs, finished_result, reuse, run_dir, seed_major, train_run, RunSpec,
};
use super::plot::{arm_curves, plot_panels, smoothed, Panel};
use super::probe::{probe_run, PosData, PosProbeConfig, PosProbeResult};
use super::report::{as_written, fmt_mean_std, mean_std, write_json, write_text};
use super::stats::{
    holm, metric_contrasts, paired_bootstrap, paired_t, verdict, MetricContrast, PairedT,
};
use super::{
    check_fits, forward, invalid, run_parallel, transformer_step_bytes, Existing, Result, Sink,
    StudyError, StudyEvent,
};

/// Seed of the fixed evaluation mask (the same for every arm and run).
pub const EVAL_MASK_SEED: u64 = 20_261_128;

/// One masking arm (the vocabulary comes from the tokenizer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// Row name in the results (its slug names the run directory).
    pub name: String,
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
    /// This arm trains `round(train.steps * steps_factor)` steps, its learning-rate schedule
    /// stretched to them (Wettig et al.'s "15% trained 2.7x longer" control: 8/3). Default: 1
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub steps_factor: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl ArmConfig {
    /// Training steps of this arm when the study trains `steps`.
    pub fn steps(&self, steps: u64) -> u64 {
        (steps as f64 * self.steps_factor).round() as u64
    }

    /// The masking config of this arm over `vocab`.
    pub fn masking(&self, vocab: VocabSpec) -> MaskingConfig {
        MaskingConfig::new(vocab)
            .with_selection(self.selection)
            .with_rate(self.rate)
            .with_corruption(self.corruption)
            .with_regime(self.regime)
    }
}

/// One evaluation mask of the held-out protocol: every run is scored under each, averaged over
/// `eval_mask_seeds` fixed mask seeds (the same masks for every arm and run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalMaskConfig {
    /// Name in the results.
    pub name: String,
    /// Selection. Default: bernoulli
    #[serde(default)]
    pub selection: SelectionConfig,
    /// Masking rate. Default: 0.15
    #[serde(default = "default_mask_prob")]
    pub mask_prob: f64,
    /// Corruption. Default: 80/10/10
    #[serde(default)]
    pub corruption: CorruptionConfig,
}

fn default_mask_prob() -> f64 {
    0.15
}

impl EvalMaskConfig {
    fn new(name: &str, selection: SelectionConfig, mask_prob: f64, mask_only: bool) -> Self {
        let corruption = if mask_only {
            CorruptionConfig {
                mask_replace_prob: 1.0,
                random_replace_prob: 0.0,
                ..CorruptionConfig::default()
            }
        } else {
            CorruptionConfig::default()
        };
        Self {
            name: name.into(),
            selection,
            mask_prob,
            corruption,
        }
    }

    /// The default protocol: BERT's 15% with 80/10/10 first (its `[MASK]` positions give the
    /// headline `mask_token_loss`), then `[MASK]`-only 15% and 40%, SpanBERT spans and PMI
    /// units at 15%.
    pub fn protocol() -> Vec<Self> {
        use SelectionConfig as S;
        vec![
            Self::new("BERT 15%", S::Bernoulli {}, 0.15, false),
            Self::new("[MASK] 15%", S::Bernoulli {}, 0.15, true),
            Self::new("[MASK] 40%", S::Bernoulli {}, 0.40, true),
            Self::new(
                "span 15%",
                S::Span {
                    geometric_p: 0.2,
                    min_span: 1,
                    max_span: 10,
                    anchor: Default::default(),
                },
                0.15,
                true,
            ),
            Self::new("PMI 15%", S::PmiSpan { max_ngram: 4 }, 0.15, true),
        ]
    }

    /// The masking config of this evaluation mask over `vocab` (dynamic: each mask seed draws
    /// its own mask).
    pub fn masking(&self, vocab: VocabSpec) -> MaskingConfig {
        MaskingConfig::new(vocab)
            .with_selection(self.selection)
            .with_rate(RateSchedule::Constant {
                mask_prob: self.mask_prob,
            })
            .with_corruption(self.corruption)
    }
}

/// Encoder size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSize {
    /// Width. Default: 128
    pub d_model: usize,
    /// Heads. Default: 2
    pub n_heads: usize,
    /// Blocks. Default: 2
    pub n_layers: usize,
    /// Feed-forward width. Default: 512
    pub d_ff: usize,
    /// Dropout. Default: 0.1
    pub dropout: f64,
    /// How positions enter the model. Default: learned
    pub position: PositionEncoding,
    /// Layer-norm placement. Default: post_ln
    pub norm: NormPlacement,
}

impl Default for ModelSize {
    fn default() -> Self {
        Self {
            d_model: 128,
            n_heads: 2,
            n_layers: 2,
            d_ff: 512,
            dropout: 0.1,
            position: PositionEncoding::Learned,
            norm: NormPlacement::PostLn,
        }
    }
}

/// Fine-tuning settings: the learner's vocabulary, with `epochs` for `steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Fine-tune every pretrained run in `compare` (`dynmask finetune` runs either way).
    /// Default: true
    pub enabled: bool,
    /// Passes over the training set. Default: 4
    pub epochs: u64,
    /// Examples per step. Default: 32
    pub batch_size: usize,
    /// Peak learning rate. Default: 2e-3
    pub lr: f64,
    /// Linear warm-up steps. Default: 12
    pub warmup_steps: u64,
    /// Decay after warm-up. Default: linear
    pub decay: Decay,
    /// AdamW weight decay. Default: 0.01
    pub weight_decay: f64,
    /// Global gradient-norm clip, or `"off"`. Default: 1.0
    #[serde(with = "mask_train::config::number_or_off")]
    pub grad_clip: Option<f64>,
    /// Train the head only, on a frozen encoder. Default: false
    pub freeze_encoder: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            epochs: 4,
            batch_size: 32,
            lr: 2e-3,
            warmup_steps: 12,
            decay: Decay::Linear,
            weight_decay: 0.01,
            grad_clip: Some(1.0),
            freeze_encoder: false,
        }
    }
}

impl FinetuneConfig {
    /// The learner config for `steps_per_epoch` and run seed `seed`.
    pub fn train_config(&self, steps_per_epoch: u64, seed: u64) -> TrainConfig {
        TrainConfig {
            steps: self.epochs * steps_per_epoch,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            decay: self.decay,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            eval_every: 0,
            seed,
            ..TrainConfig::default()
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(invalid("finetune.epochs", 0, "at least 1"));
        }
        Ok(self.train_config(1, 0).validate()?)
    }
}

/// A text study (`kind = "text"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextStudy {
    /// The study kind: `"text"`.
    pub kind: String,
    /// Name. Default: static_vs_dynamic
    pub name: String,
    /// Output directory. Default: runs/static_vs_dynamic
    pub out_dir: String,
    /// WordPiece vocabulary size. Default: 2048
    pub vocab_size: usize,
    /// Tokens per pretraining document (truncated). Default: 64
    pub max_len: usize,
    /// Every n-th paragraph is held out for evaluation. Default: 20
    pub heldout_every: usize,
    /// Use at most this many training paragraphs (spread evenly over the corpus), or `"all"`.
    /// Default: 1536
    #[serde(with = "super::count_or_all")]
    pub train_docs: Option<usize>,
    /// Use at most this many held-out paragraphs (spread evenly), or `"all"`. Default: 256
    #[serde(with = "super::count_or_all")]
    pub eval_docs: Option<usize>,
    /// Encoder size. Default: [`ModelSize::default`] with 4 heads, rotary positions and no
    /// dropout
    pub model: ModelSize,
    /// Pretraining settings (`seed` is replaced by each of `seeds`). Default: 384 steps of 32,
    /// lr 2e-3, 24 warm-up steps, linear decay, evaluation every 96 steps
    pub train: TrainConfig,
    /// Fine-tuning settings. Default: [`FinetuneConfig::default`], not enabled
    pub finetune: FinetuneConfig,
    /// Tokens per fine-tuning review. Default: 96
    pub finetune_max_len: usize,
    /// Use at most this many classification training examples, or `"all"`. Default: 1000
    #[serde(with = "super::count_or_all")]
    pub finetune_train_docs: Option<usize>,
    /// Use at most this many classification test examples, or `"all"`. Default: 500
    #[serde(with = "super::count_or_all")]
    pub finetune_test_docs: Option<usize>,
    /// A `tokenizer.json` to use instead of training one. Default: none
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Pretraining corpus, one document per line (absent: the embedded Austen paragraphs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
    /// Classification data `[train.tsv, test.tsv]` with `label` and `text` columns (absent: the
    /// embedded fine-food reviews).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<[String; 2]>,
    /// Seeds (one run per arm and seed). Default: [0, 1, 2]
    pub seeds: Vec<u64>,
    /// The PMI n-gram table of `pmi_span` arms (built from the training split).
    pub pmi: PmiTableConfig,
    /// Write a checkpoint every this many pretraining steps (and at the end). Default: 96
    pub checkpoint_every: u64,
    /// Masking arms. Default: static k=1, static k=4, dynamic (Bernoulli 15%, 80/10/10)
    pub arms: Vec<ArmConfig>,
    /// The held-out protocol's evaluation masks; the first one's `[MASK]` positions give the
    /// headline `mask_token_loss`. Default: [`EvalMaskConfig::protocol`]
    pub eval_masks: Vec<EvalMaskConfig>,
    /// Fixed mask seeds each evaluation mask is averaged over. Default: 5
    pub eval_mask_seeds: u64,
    /// Training-frequency rank boundaries of the held-out breakdown. Default: [100, 1000]
    pub frequency_buckets: Vec<usize>,
    /// Paired contrasts `[a, b]` (arm names), each tested on `mask_token_loss` (a - b) and
    /// Holm-corrected together. Default: empty, meaning every pair (later arm - earlier arm)
    pub contrasts: Vec<[String; 2]>,
    /// Runs trained at once, one thread each (results do not depend on it). Default: 1 when a study file omits it (the built-in main
    /// job, `TextStudy::default()`, uses 3)
    #[serde(default = "one_job")]
    pub jobs: usize,
    /// The frozen-encoder POS probe run after pretraining (see `studies::probe`). Default:
    /// [`PosProbeConfig::default`] (enabled)
    pub pos_probe: PosProbeConfig,
}

impl Default for TextStudy {
    fn default() -> Self {
        let arm = |name: &str, regime| ArmConfig {
            name: name.into(),
            selection: SelectionConfig::Bernoulli {},
            rate: RateSchedule::default(),
            corruption: CorruptionConfig::default(),
            regime,
            steps_factor: 1.0,
        };
        Self {
            kind: "text".into(),
            name: "static_vs_dynamic".into(),
            out_dir: "runs/static_vs_dynamic".into(),
            vocab_size: 2048,
            max_len: 64,
            heldout_every: 20,
            train_docs: Some(1536),
            eval_docs: Some(256),
            model: ModelSize {
                n_heads: 4,
                dropout: 0.0,
                position: PositionEncoding::Rotary,
                ..ModelSize::default()
            },
            train: TrainConfig {
                steps: 384,
                batch_size: 32,
                lr: 2e-3,
                warmup_steps: 24,
                eval_every: 96,
                ..TrainConfig::default()
            },
            finetune: FinetuneConfig {
                enabled: false,
                ..FinetuneConfig::default()
            },
            finetune_max_len: 96,
            finetune_train_docs: Some(1000),
            finetune_test_docs: Some(500),
            tokenizer: None,
            corpus: None,
            classification: None,
            seeds: vec![0, 1, 2],
            pmi: PmiTableConfig::default(),
            checkpoint_every: 96,
            arms: vec![
                arm("static k=1", Regime::Static { dupe_factor: 1 }),
                arm("static k=4", Regime::Static { dupe_factor: 4 }),
                arm("dynamic", Regime::Dynamic {}),
            ],
            eval_masks: EvalMaskConfig::protocol(),
            eval_mask_seeds: 5,
            frequency_buckets: vec![100, 1000],
            contrasts: vec![],
            jobs: 3,
            pos_probe: PosProbeConfig::default(),
        }
    }
}

fn one_job() -> usize {
    1
}

fn at_least(field: &'static str, v: usize, min: usize) -> Result<()> {
    if v < min {
        return Err(invalid(field, v, format!("at least {min}")));
    }
    Ok(())
}

impl TextStudy {
    /// The smoke version (seconds): same arms, tiny data, model and step counts. Validate first:
    /// it replaces sizes, so it must not hide a bad setting.
    pub fn quick(mut self) -> Self {
        self.train_docs = Some(256);
        self.eval_docs = Some(64);
        self.max_len = 32;
        self.vocab_size = 2048;
        self.model = ModelSize {
            d_model: 64,
            n_heads: 2,
            n_layers: 1,
            d_ff: 128,
            ..self.model
        };
        self.train.steps = 96;
        self.train.batch_size = 16;
        self.train.warmup_steps = 4;
        self.train.eval_every = 16;
        self.finetune.epochs = 1;
        self.finetune.batch_size = 16;
        self.finetune.warmup_steps = 2;
        self.finetune_max_len = 48;
        self.finetune_train_docs = Some(256);
        self.finetune_test_docs = Some(128);
        self.checkpoint_every = 48;
        self.pos_probe.train_sentences = 128;
        self.pos_probe.test_sentences = 64;
        self.pos_probe.max_len = 32;
        self.pos_probe.steps = 16;
        self.pos_probe.batch_size = 16;
        self.pos_probe.warmup_steps = 2;
        self.eval_mask_seeds = self.eval_mask_seeds.min(2);
        self.seeds.truncate(2);
        self.out_dir = format!("{}-quick", self.out_dir);
        self
    }

    /// Checks every setting of every section, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        super::check_kind(&self.kind, "text")?;
        if self.arms.is_empty() {
            return Err(invalid("arms", "[]", "at least one masking arm"));
        }
        check_unique_slugs(self.arms.iter().map(|a| a.name.as_str()))?;
        if self.seeds.is_empty() {
            return Err(invalid("seeds", "[]", "at least one seed"));
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != self.seeds.len() {
            return Err(invalid(
                "seeds",
                format!("{:?}", self.seeds),
                "distinct seeds",
            ));
        }
        at_least("heldout_every", self.heldout_every, 2)?;
        at_least("vocab_size", self.vocab_size, 64)?;
        at_least("max_len", self.max_len, 3)?;
        at_least("finetune_max_len", self.finetune_max_len, 3)?;
        for (f, v) in [
            ("train_docs", self.train_docs),
            ("eval_docs", self.eval_docs),
            ("finetune_train_docs", self.finetune_train_docs),
            ("finetune_test_docs", self.finetune_test_docs),
        ] {
            if v == Some(0) {
                return Err(invalid(f, 0, "at least 1 (or \"all\")"));
            }
        }
        let m = &self.model;
        for (f, v) in [
            ("model.d_model", m.d_model),
            ("model.n_heads", m.n_heads),
            ("model.n_layers", m.n_layers),
            ("model.d_ff", m.d_ff),
        ] {
            at_least(f, v, 1)?;
        }
        if !m.d_model.is_multiple_of(m.n_heads) {
            return Err(invalid(
                "model.d_model",
                m.d_model,
                format!("a multiple of n_heads ({})", m.n_heads),
            ));
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return Err(invalid("model.dropout", m.dropout, "in [0, 1)"));
        }
        self.train.validate()?;
        self.finetune.validate()?;
        if self.pos_probe.enabled {
            self.pos_probe
                .validate(self.max_len.max(self.finetune_max_len))?;
        }
        if self.checkpoint_every == 0 {
            return Err(invalid("checkpoint_every", 0, "at least 1"));
        }
        // Each arm's policy must build (a placeholder vocabulary stands in for the tokenizer's),
        // and mask something: an MLM arm at rate 0 has no loss.
        let vocab = VocabSpec::new(self.vocab_size as u32, 4, vec![0, 1, 2, 3, 4]);
        for arm in &self.arms {
            if !(arm.steps_factor.is_finite() && arm.steps_factor > 0.0)
                || arm.steps(self.train.steps) == 0
            {
                return Err(invalid(
                    "arms.steps_factor",
                    format!("{} in arm `{}`", arm.steps_factor, arm.name),
                    "> 0, leaving at least one step",
                ));
            }
            arm.rate.validate()?;
            arm.regime.validate()?;
            arm.corruption.build(&vocab)?;
            match arm.selection.build() {
                Ok(_) | Err(mask_core::MaskError::MissingResource { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let last = arm.steps(self.train.steps);
            let (r0, r1) = (arm.rate.rate_at(0), arm.rate.rate_at(last));
            if r0 <= 0.0 || r1 <= 0.0 {
                return Err(invalid(
                    "arms.rate",
                    format!("{} in arm `{}`", r0.min(r1), arm.name),
                    "a masking rate > 0 at every step (an MLM arm that masks nothing has no loss)",
                ));
            }
        }
        self.validate_protocol(&vocab)
    }

    /// The contrasts to test: `contrasts`, or every pair (later arm, earlier arm) when empty.
    pub fn contrast_pairs(&self) -> Vec<[String; 2]> {
        let names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        super::stats::contrast_pairs(&self.contrasts, &names)
    }

    fn validate_protocol(&self, vocab: &VocabSpec) -> Result<()> {
        if self.eval_masks.is_empty() {
            return Err(invalid("eval_masks", "[]", "at least one evaluation mask"));
        }
        check_unique_slugs(self.eval_masks.iter().map(|m| m.name.as_str()))?;
        let first = &self.eval_masks[0];
        if first.corruption.mask_replace_prob <= 0.0 {
            return Err(invalid(
                "eval_masks.corruption.mask_replace_prob",
                format!("{} in `{}`", first.corruption.mask_replace_prob, first.name),
                "> 0 for the first evaluation mask (its [MASK] positions are the headline)",
            ));
        }
        for m in &self.eval_masks {
            if !(m.mask_prob > 0.0 && m.mask_prob <= 1.0) {
                return Err(invalid(
                    "eval_masks.mask_prob",
                    format!("{} in `{}`", m.mask_prob, m.name),
                    "in (0, 1]",
                ));
            }
            m.corruption.build(vocab)?;
            match m.selection.build() {
                Ok(_) | Err(mask_core::MaskError::MissingResource { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.eval_mask_seeds == 0 {
            return Err(invalid("eval_mask_seeds", 0, "at least 1"));
        }
        check_bucket_edges(&self.frequency_buckets)?;
        super::arm::check_contrasts(&self.contrasts, &self.arms, |a| &a.name)?;
        if self.jobs == 0 {
            return Err(invalid("jobs", 0, "at least 1"));
        }
        Ok(())
    }

    /// The arm named `name`.
    pub fn arm(&self, name: &str) -> Result<&ArmConfig> {
        super::arm::find_arm(&self.arms, name, |a| &a.name)
    }

    /// The pretraining config of `arm`'s run with `seed` (its steps scaled by `steps_factor`).
    pub fn train_config(&self, arm: &ArmConfig, seed: u64) -> TrainConfig {
        TrainConfig {
            seed,
            steps: arm.steps(self.train.steps),
            ..self.train.clone()
        }
    }
}

/// Everything the runs of a text study share.
pub struct TextData {
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
    /// Where it is cached.
    pub tokenizer_path: PathBuf,
    /// Tokenized training paragraphs.
    pub train_docs: Arc<Vec<Encoded>>,
    /// Held-out paragraphs under the fixed evaluation mask.
    pub eval: Arc<EvalSet>,
    /// Classification training examples.
    pub clf_train: Arc<Vec<LabeledDoc>>,
    /// Classification test examples.
    pub clf_test: Arc<Vec<LabeledDoc>>,
    /// Class names, sorted; the class index is the position.
    pub classes: Vec<String>,
    /// Vocabulary of the masking policies.
    pub vocab: VocabSpec,
    /// Pretraining model.
    pub model: MlmConfig,
    /// Fine-tuning model (mean pooling).
    pub classifier: ClassifierConfig,
    /// Corpus statistics (IDF) and, when an arm or evaluation mask needs it, the PMI table.
    pub resources: SelectorResources,
    /// The unigram model of the training split (the held-out baseline).
    pub unigram: Arc<Unigram>,
    /// The held-out documents under each evaluation mask of the protocol and each mask seed.
    pub protocol: Arc<Vec<ProtocolMask>>,
    /// Held-out documents.
    pub eval_doc_count: usize,
    /// The held-out documents themselves (unmasked).
    pub eval_docs: Arc<Vec<Encoded>>,
    /// The POS probe's sentences and baselines (when `pos_probe.enabled`).
    pub pos: Option<Arc<PosData>>,
}

/// One evaluation mask of the protocol, drawn under each of its seeds.
#[derive(Debug, Clone)]
pub struct ProtocolMask {
    /// The mask's name.
    pub name: String,
    /// One masked copy of the held-out documents per mask seed.
    pub sets: Vec<EvalSet>,
}

fn labeled(
    tok: &TextTokenizer,
    rows: &[text::LabeledText],
    classes: &[String],
    max_len: usize,
    limit: Option<usize>,
) -> Result<Vec<LabeledDoc>> {
    let rows = &rows[..limit.unwrap_or(rows.len()).min(rows.len())];
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let docs = tok.encode_batch(&texts, max_len)?;
    docs.into_iter()
        .zip(rows)
        .map(|(doc, r)| {
            let label = classes.iter().position(|c| *c == r.label).ok_or_else(|| {
                invalid(
                    "label",
                    &r.label,
                    format!("one of the training labels {classes:?}"),
                )
            })?;
            Ok(LabeledDoc { doc, label })
        })
        .collect()
}

/// At most `limit` items of `items`, evenly spaced (item `i * len / limit` for `i < limit`), in
/// their order; all of them when `limit` is `None` or not below their number.
pub fn spread<T>(items: Vec<T>, limit: Option<usize>) -> Vec<T> {
    let len = items.len();
    match limit {
        Some(n) if n < len => {
            let keep: Vec<usize> = (0..n).map(|i| i * len / n).collect();
            let mut k = 0;
            items
                .into_iter()
                .enumerate()
                .filter_map(|(j, x)| {
                    (k < keep.len() && keep[k] == j).then(|| {
                        k += 1;
                        x
                    })
                })
                .collect()
        }
        _ => items,
    }
}

impl TextData {
    /// Prepares the data of `study` (creating `out_dir`).
    pub fn prepare(study: &TextStudy, sink: Sink<'_>) -> Result<Self> {
        study.validate()?;
        let out = PathBuf::from(&study.out_dir);
        std::fs::create_dir_all(&out).map_err(|e| StudyError::Output {
            path: out.display().to_string(),
            reason: e.to_string(),
        })?;
        let _span = info_span!("prepare text data", study = %study.name).entered();
        let paragraphs: Vec<String> = match &study.corpus {
            Some(path) => text::read_lines_corpus(Path::new(path))?,
            None => text::austen_paragraphs()?
                .into_iter()
                .map(|p| p.text)
                .collect(),
        };
        let (mut train_texts, mut eval_texts) = (vec![], vec![]);
        for (i, p) in paragraphs.iter().enumerate() {
            if i % study.heldout_every == 0 {
                eval_texts.push(p.as_str())
            } else {
                train_texts.push(p.as_str())
            }
        }
        if train_texts.is_empty() || eval_texts.is_empty() {
            return Err(invalid(
                "corpus",
                format!("{} documents", paragraphs.len()),
                format!(
                    "at least {} documents (one held out every {})",
                    study.heldout_every + 1,
                    study.heldout_every
                ),
            ));
        }
        // Subsets are spread evenly over the corpus, not its first documents: the first 1,024
        // training paragraphs are all from one novel while held-out text comes from all of
        // them, a shift between training and evaluation text.
        let train_texts = spread(train_texts, study.train_docs);
        let eval_texts = spread(eval_texts, study.eval_docs);
        let (tokenizer, tokenizer_path) = match &study.tokenizer {
            Some(path) => (TextTokenizer::load(Path::new(path))?, PathBuf::from(path)),
            None => {
                let _s = info_span!("tokenizer").entered();
                let config = TokenizerConfig {
                    vocab_size: study.vocab_size,
                    ..TokenizerConfig::default()
                };
                TextTokenizer::load_or_train(&out, &train_texts, &config)?
            }
        };
        sink(StudyEvent::Note(&format!(
            "tokenizer {} ({} tokens, sha256 {})",
            tokenizer_path.display(),
            tokenizer.vocab_size(),
            &tokenizer.digest()[..12]
        )));
        let train_docs = Arc::new(tokenizer.encode_batch(&train_texts, study.max_len)?);
        let eval_docs = tokenizer.encode_batch(&eval_texts, study.max_len)?;
        let longest = train_docs
            .iter()
            .chain(&eval_docs)
            .map(|d| d.ids.len())
            .max()
            .unwrap_or(0);
        let m = &study.model;
        check_fits(
            "a pretraining step",
            transformer_step_bytes(
                study.train.batch_size,
                longest,
                m.d_model,
                m.n_heads,
                m.n_layers,
                m.d_ff,
                tokenizer.vocab_size(),
            ),
            "lower max_len, train.batch_size or the model size",
        )?;
        let vocab = VocabSpec::new(
            tokenizer.vocab_size() as u32,
            tokenizer.mask_id,
            tokenizer.special_ids(),
        );
        let resources = corpus_resources(study, &train_docs, &vocab, &out)?;
        let eval_policy = MaskingConfig::new(vocab.clone()).build()?;
        let eval = EvalSet::new(
            &eval_docs,
            eval_policy,
            tokenizer.pad_id,
            64,
            EVAL_MASK_SEED,
        )?;
        let unigram = Unigram::fit(
            train_docs.iter().map(|d| d.ids.as_slice()),
            tokenizer.vocab_size(),
            &vocab.special_ids,
        )?;
        let protocol = study
            .eval_masks
            .iter()
            .map(|m| {
                let sets = (0..study.eval_mask_seeds)
                    .map(|k| {
                        let policy = m.masking(vocab.clone()).build_with(&resources)?;
                        Ok(EvalSet::new(
                            &eval_docs,
                            policy,
                            tokenizer.pad_id,
                            64,
                            EVAL_MASK_SEED + 1 + k,
                        )?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(ProtocolMask {
                    name: m.name.clone(),
                    sets,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (clf_train, clf_test) = match &study.classification {
            Some([train, test]) => (
                text::read_labeled_tsv(Path::new(train))?,
                text::read_labeled_tsv(Path::new(test))?,
            ),
            None => text::finefood()?,
        };
        let mut classes: Vec<String> = clf_train.iter().map(|r| r.label.clone()).collect();
        classes.sort();
        classes.dedup();
        if classes.len() < 2 {
            return Err(invalid(
                "classification",
                format!("{classes:?}"),
                "at least two labels in the training TSV",
            ));
        }
        let clf_train = labeled(
            &tokenizer,
            &clf_train,
            &classes,
            study.finetune_max_len,
            study.finetune_train_docs,
        )?;
        let clf_test = labeled(
            &tokenizer,
            &clf_test,
            &classes,
            study.finetune_max_len,
            study.finetune_test_docs,
        )?;
        let encoder = TextEncoderConfig::new(
            TransformerConfig::new(m.d_model, m.n_heads, m.n_layers, m.d_ff)
                .with_dropout(m.dropout)
                .with_attn_dropout(m.dropout)
                .with_norm(m.norm),
            tokenizer.vocab_size(),
        )
        .with_max_len(study.max_len.max(study.finetune_max_len))
        .with_position(m.position);
        let pos = if study.pos_probe.enabled {
            Some(Arc::new(PosData::prepare(&study.pos_probe, &tokenizer)?))
        } else {
            None
        };
        // Mean pooling: a small encoder pretrained briefly has no trained [CLS] summary (no NSP).
        let classifier = ClassifierConfig::new(encoder.clone(), classes.len())
            .with_pooling(mask_model::Pooling::Mean);
        Ok(Self {
            model: MlmConfig::new(encoder),
            classifier,
            classes,
            tokenizer,
            tokenizer_path,
            train_docs,
            eval: Arc::new(eval),
            clf_train: Arc::new(clf_train),
            clf_test: Arc::new(clf_test),
            vocab,
            resources,
            unigram: Arc::new(unigram),
            protocol: Arc::new(protocol),
            eval_doc_count: eval_docs.len(),
            eval_docs: Arc::new(eval_docs),
            pos,
        })
    }

    /// The MLM task of `arm`.
    pub fn mlm_task(&self, arm: &ArmConfig) -> Result<MlmTask> {
        Ok(MlmTask::new(
            self.model.clone(),
            arm.masking(self.vocab.clone()),
            &self.resources,
            Arc::clone(&self.train_docs),
            Arc::clone(&self.eval),
            &self.tokenizer,
        )?)
    }
}

/// Token statistics of the training split, and the PMI table when an arm or an evaluation mask
/// masks PMI spans (built
/// from the training split, saved to `out/pmi-table.json` for inspection).
fn corpus_resources(
    study: &TextStudy,
    train_docs: &[Encoded],
    vocab: &VocabSpec,
    out: &Path,
) -> Result<SelectorResources> {
    let ids = || train_docs.iter().map(|d| d.ids.as_slice());
    let token_stats = Arc::new(TokenStats::from_docs(vocab.vocab_size, ids())?);
    let needs_pmi = study
        .arms
        .iter()
        .map(|a| &a.selection)
        .chain(study.eval_masks.iter().map(|m| &m.selection))
        .any(|s| matches!(s, SelectionConfig::PmiSpan { .. }));
    let pmi = if needs_pmi {
        let _s = info_span!("pmi table").entered();
        let cfg = PmiTableConfig {
            special_ids: vocab.special_ids.clone(),
            ..study.pmi.clone()
        };
        let table = PmiTable::build(ids(), &cfg)?;
        table.save(out.join("pmi-table.json"))?;
        Some(Arc::new(table))
    } else {
        None
    };
    Ok(SelectorResources {
        token_stats: Some(token_stats),
        pmi,
        tag_weights: None,
    })
}

/// One evaluation mask's held-out scores, over its mask seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskScores {
    /// The evaluation mask.
    pub name: String,
    /// Mask seeds pooled.
    pub seeds: u64,
    /// Scores by corruption kind and frequency bucket, each beside the unigram baseline.
    pub breakdown: Breakdown,
}

/// The held-out protocol's scores of one trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutResult {
    /// Loss at the positions whose input is `[MASK]` under the first evaluation mask (the
    /// headline: the model must infer these from context).
    pub mask_token_loss: f64,
    /// Accuracy at those positions.
    pub mask_token_acc: f64,
    /// The unigram baseline's loss at those positions.
    pub unigram_loss: f64,
    /// Loss over every masked position of the first evaluation mask.
    pub masked_loss: f64,
    /// The unigram baseline's loss over those positions.
    pub masked_unigram_loss: f64,
    /// Every evaluation mask, in the study's order.
    pub masks: Vec<MaskScores>,
    /// Per held-out document, the first mask's `[MASK]` positions summed over its seeds (for
    /// the paired bootstrap).
    pub docs: DocSums,
}

/// Scores `model` (inference: no dropout) under every evaluation mask of the study.
pub fn heldout_protocol<B: Backend>(
    study: &TextStudy,
    data: &TextData,
    model: &MlmModel<B>,
    device: &B::Device,
) -> Result<HeldoutResult> {
    let mut masks = vec![];
    let mut docs = DocSums::new(data.eval_doc_count);
    for (i, pm) in data.protocol.iter().enumerate() {
        let mut tokens = vec![];
        for set in &pm.sets {
            let scored = score_mlm(model, set, data.tokenizer.mask_id, device)?;
            if i == 0 {
                docs.add(&scored)?;
            }
            tokens.extend(scored);
        }
        masks.push(MaskScores {
            name: pm.name.clone(),
            seeds: pm.sets.len() as u64,
            breakdown: breakdown(&tokens, &data.unigram, &study.frequency_buckets)?,
        });
    }
    let first = &masks[0].breakdown;
    if first.mask.tokens == 0 {
        return Err(invalid(
            "eval_masks",
            &masks[0].name,
            "a first evaluation mask that puts [MASK] at some held-out position",
        ));
    }
    Ok(HeldoutResult {
        mask_token_loss: first.mask.loss,
        mask_token_acc: first.mask.acc,
        unigram_loss: first.mask.unigram_loss,
        masked_loss: first.all.loss,
        masked_unigram_loss: first.all.unigram_loss,
        masks,
        docs,
    })
}

/// Result of one arm and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextRunResult {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Pretraining steps.
    pub history: Vec<StepRecord>,
    /// Held-out evaluations during training (one fixed mask).
    pub evals: Vec<EvalRecord<MlmEval>>,
    /// The held-out protocol after training.
    pub heldout: HeldoutResult,
    /// Classification test scores after fine-tuning (when `finetune.enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<ClassificationEval>,
    /// The frozen-encoder POS probe (when `pos_probe.enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos_probe: Option<PosProbeResult>,
    /// Wall time of this run in this session, seconds (not reproducible).
    pub seconds: f64,
}

/// One paired contrast of `mask_token_loss`, arm `a` minus arm `b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contrast {
    /// First arm.
    pub a: String,
    /// Second arm.
    pub b: String,
    /// The per-seed paired differences' t-interval.
    pub seeds: PairedT,
    /// Holm-adjusted p-value across the study's contrasts.
    pub holm_p: f64,
    /// 95% paired bootstrap interval over held-out documents (seed-averaged).
    pub bootstrap: [f64; 2],
    /// The reading: which arm is lower, or inconclusive.
    pub verdict: String,
}

/// Bootstrap replicates of a contrast.
pub const BOOTSTRAP_REPLICATES: usize = 2000;
/// Seed of the bootstrap's document draws.
pub const BOOTSTRAP_SEED: u64 = 20_261_130;

/// The study's contrasts ([`TextStudy::contrast_pairs`]) over the seeds both arms ran.
pub fn contrasts(study: &TextStudy, runs: &[TextRunResult]) -> Vec<Contrast> {
    let mut found = vec![];
    for [a, b] in study.contrast_pairs() {
        let (mut diffs, mut da, mut db) = (vec![], vec![], vec![]);
        for ra in runs.iter().filter(|r| r.arm == a) {
            if let Some(rb) = runs.iter().find(|r| r.arm == b && r.seed == ra.seed) {
                diffs.push(ra.heldout.mask_token_loss - rb.heldout.mask_token_loss);
                da.push((&ra.heldout.docs.loss[..], &ra.heldout.docs.count[..]));
                db.push((&rb.heldout.docs.loss[..], &rb.heldout.docs.count[..]));
            }
        }
        if diffs.is_empty() {
            continue;
        }
        let boot = paired_bootstrap(&da, &db, BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED)
            .map_or([f64::NAN; 2], |(lo, hi)| [lo, hi]);
        found.push((a, b, paired_t(&diffs), boot));
    }
    let adjusted = holm(&found.iter().map(|f| f.2.p).collect::<Vec<_>>());
    found
        .into_iter()
        .zip(adjusted)
        .map(|((a, b, t, bootstrap), holm_p)| Contrast {
            verdict: verdict(&t, holm_p, &a, &b),
            a,
            b,
            seeds: t,
            holm_p,
            bootstrap,
        })
        .collect()
}

/// A paired contrast of the POS probe's test accuracy between two arms (a - b, higher is
/// better), over the seeds both ran; Holm-corrected across the study's contrasts.
pub type ProbeContrast = MetricContrast;

/// The study's contrasts ([`TextStudy::contrast_pairs`]) of POS probe accuracy, over the seeds
/// both arms were probed; empty when no run was.
pub fn probe_contrasts(study: &TextStudy, runs: &[TextRunResult]) -> Vec<ProbeContrast> {
    let probed: Vec<(&str, u64, f64)> = runs
        .iter()
        .filter_map(|r| Some((r.arm.as_str(), r.seed, r.pos_probe.as_ref()?.accuracy)))
        .collect();
    metric_contrasts(&study.contrast_pairs(), &probed, "accuracy")
}

/// Everything a text study produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextResults {
    /// The study that ran.
    pub study: TextStudy,
    /// Class names of the classification task, by index.
    pub classes: Vec<String>,
    /// SHA-256 of the tokenizer.
    pub tokenizer_digest: String,
    /// One result per arm and seed.
    pub runs: Vec<TextRunResult>,
    /// The paired contrasts of `mask_token_loss`.
    pub contrasts: Vec<Contrast>,
    /// The same contrasts of the POS probe's accuracy (when probed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_contrasts: Vec<ProbeContrast>,
    /// How much of each arm's masking falls inside multi-token PMI units (when the study built
    /// a PMI table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmi_units: Option<PmiUnitShares>,
}

/// Paragraphs [`pmi_unit_shares`] masks.
pub const PMI_SHARE_DOCS: usize = 1000;

/// The share of masked tokens that lie inside multi-token units of the study's PMI
/// segmentation (greedy longest match against its table, as `pmi_span` masking cuts units).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PmiUnitShares {
    /// Training paragraphs masked (the first ones, once: seed 0, epoch 0, step 0).
    pub docs: u64,
    /// Share of all maskable tokens inside such units: what uniform masking hits on average.
    pub tokens: f64,
    /// Per arm, in the study's order.
    pub arms: Vec<ArmUnitShare>,
}

/// One arm's masking against the PMI units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmUnitShare {
    /// The arm.
    pub arm: String,
    /// Tokens it masked.
    pub masked: u64,
    /// The share of them inside multi-token PMI units.
    pub share: f64,
}

/// [`PmiUnitShares`] of every arm over the first [`PMI_SHARE_DOCS`] training paragraphs;
/// `None` without a PMI table.
pub fn pmi_unit_shares(study: &TextStudy, data: &TextData) -> Result<Option<PmiUnitShares>> {
    let Some(table) = data.resources.pmi.clone() else {
        return Ok(None);
    };
    let max_ngram = table.config().max_ngram;
    let cutter = PmiSpanSelector::new(table, max_ngram)?;
    let docs = &data.train_docs[..data.train_docs.len().min(PMI_SHARE_DOCS)];
    // Per paragraph: which tokens lie inside a unit of two or more tokens.
    let mut units = vec![];
    let inside: Vec<Vec<bool>> = docs
        .iter()
        .map(|d| {
            cutter.units(&Example::new(&d.ids, &d.special_mask), &mut units);
            let mut inside = vec![false; d.ids.len()];
            for u in units.iter().filter(|u| u.len >= 2) {
                inside[u.start as usize..(u.start + u.len) as usize].fill(true);
            }
            inside
        })
        .collect();
    let eligible: usize = docs
        .iter()
        .map(|d| d.special_mask.iter().filter(|&&s| !s).count())
        .sum();
    let in_units: usize = inside.iter().flatten().filter(|&&x| x).count();
    let mut arms = vec![];
    for arm in &study.arms {
        let policy = arm
            .masking(data.vocab.clone())
            .build_with(&data.resources)?;
        let (mut masked, mut hit) = (0u64, 0u64);
        for (i, (d, inside)) in docs.iter().zip(&inside).enumerate() {
            let ex = Example::new(&d.ids, &d.special_mask).with_word_ids(&d.word_ids);
            let m = policy.mask(&ex, &MaskContext::new(0, 0, i as u64, 0))?;
            for (&label, &x) in m.labels.iter().zip(inside) {
                if label >= 0 {
                    masked += 1;
                    hit += u64::from(x);
                }
            }
        }
        arms.push(ArmUnitShare {
            arm: arm.name.clone(),
            masked,
            share: hit as f64 / masked.max(1) as f64,
        });
    }
    Ok(Some(PmiUnitShares {
        docs: docs.len() as u64,
        tokens: in_units as f64 / eligible.max(1) as f64,
        arms,
    }))
}

/// Pretrains one arm with `spec.seed` in `<out_dir>/<arm>/seed-<seed>`, on `device`
/// (data-parallel with `peers` too, when any; see `Learner::data_parallel`).
pub fn pretrain<B: AutodiffBackend>(
    study: &TextStudy,
    data: &TextData,
    arm: &ArmConfig,
    spec: &RunSpec,
    (device, peers): (&B::Device, &[B::Device]),
    sink: Sink<'_>,
) -> Result<Learner<B, MlmTask>> {
    let dir = run_dir(Path::new(&study.out_dir), &arm.name, spec.seed);
    let label = format!("{} / seed {}", arm.name, spec.seed);
    let config = study.train_config(arm, spec.seed);
    train_run(
        &dir,
        data.mlm_task(arm)?,
        config,
        spec,
        &label,
        (device, peers),
        sink,
    )
}

/// Fine-tunes `encoder` (a pretrained MLM's) on the study's classification data with `seed`.
pub fn finetune<B: AutodiffBackend>(
    study: &TextStudy,
    data: &TextData,
    model: &MlmModel<B>,
    seed: u64,
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<ClassificationEval> {
    let task = SequenceClassificationTask::new(
        data.classifier.clone(),
        Some(model.encoder.clone()),
        study.finetune.freeze_encoder,
        Arc::clone(&data.clf_train),
        Arc::clone(&data.clf_test),
        &data.tokenizer,
    )?;
    let per_epoch = task.steps_per_epoch(study.finetune.batch_size);
    if per_epoch == 0 {
        return Err(invalid(
            "finetune.batch_size",
            study.finetune.batch_size,
            format!(
                "at most the {} classification examples",
                data.clf_train.len()
            ),
        ));
    }
    let mut learner = Learner::new(task, study.finetune.train_config(per_epoch, seed), device)?;
    let label = format!("fine-tune / seed {seed}");
    learner.fit(&mut forward(&label, sink))?;
    learner
        .state()
        .evals
        .last()
        .map(|e| e.metrics.clone())
        .ok_or_else(|| {
            invalid(
                "finetune.epochs",
                study.finetune.epochs,
                "at least one step",
            )
        })
}

/// Runs every arm over every seed (`existing` decides what happens to runs already on disk),
/// then writes `results.json`, `report.md` and `curves.svg` to `out_dir`.
pub fn run_study<B: AutodiffBackend>(
    study: &TextStudy,
    existing: Existing,
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<TextResults> {
    let data = TextData::prepare(study, sink)?;
    let out = PathBuf::from(&study.out_dir);
    let policy = CheckpointPolicy::new(study.checkpoint_every, 1)?;
    let items = seed_major(&study.seeds, &study.arms);
    let runs = run_parallel(study.jobs, items, sink, |(seed, arm), sink| {
        let dir = run_dir(&out, &arm.name, seed);
        let label = format!("{} / seed {seed}", arm.name);
        // A finished run: reused as it is (`Resume`), or scored again from its newest
        // checkpoint with the rest of its record kept (`Rescore`).
        let mut finished = finished_result::<TextRunResult>(&dir, existing)?;
        if let Some(r) = reuse(&mut finished, existing, &label, sink) {
            return Ok(r);
        }
        let started = Instant::now();
        let spec = RunSpec::existing(seed, existing, policy);
        // Fitting a finished run again does no step.
        let learner = pretrain::<B>(study, &data, arm, &spec, (device, &[]), sink)?;
        let heldout = heldout_protocol(study, &data, &learner.model().valid(), device)?;
        let pos_probe = match &data.pos {
            Some(pos) => Some(probe_run::<B>(
                &study.pos_probe,
                pos,
                &data.model,
                learner.model().encoder.clone(),
                (seed, &label),
                device,
                sink,
            )?),
            None => None,
        };
        let result = match finished {
            Some(r) => TextRunResult {
                heldout,
                pos_probe,
                ..r
            },
            None => TextRunResult {
                arm: arm.name.clone(),
                seed,
                history: learner.state().history.clone(),
                evals: learner.state().evals.clone(),
                heldout,
                pos_probe,
                finetune: if study.finetune.enabled {
                    Some(finetune::<B>(
                        study,
                        &data,
                        learner.model(),
                        seed,
                        device,
                        sink,
                    )?)
                } else {
                    None
                },
                seconds: started.elapsed().as_secs_f64(),
            },
        };
        write_json(&dir.join("result.json"), &result)?;
        sink(StudyEvent::RunFinished {
            run: &label,
            reused: false,
        });
        as_written(result)
    })?;
    let results = TextResults {
        study: study.clone(),
        classes: data.classes.clone(),
        tokenizer_digest: data.tokenizer.digest().to_string(),
        contrasts: contrasts(study, &runs),
        probe_contrasts: probe_contrasts(study, &runs),
        pmi_units: pmi_unit_shares(study, &data)?,
        runs,
    };
    write_outputs(&results, &out)?;
    Ok(results)
}

/// Writes `results.json`, `report.md` and `curves.svg` of `results` to `out`.
pub fn write_outputs(results: &TextResults, out: &Path) -> Result<()> {
    write_json(&out.join("results.json"), results)?;
    write_text(&out.join("report.md"), &results_table(results))?;
    plot_panels(&out.join("curves.svg"), &panels(results))
}

/// The learning curves: held-out MLM loss and smoothed training loss, one line per arm (mean
/// over its seeds).
pub fn panels(results: &TextResults) -> Vec<Panel> {
    let arms: Vec<&str> = results.study.arms.iter().map(|a| a.name.as_str()).collect();
    let eval = |r: &TextRunResult| {
        r.evals
            .iter()
            .map(|e| (e.step as f64, e.metrics.mlm_loss))
            .collect()
    };
    let loss =
        |r: &TextRunResult| smoothed(&r.history.iter().map(|h| h.loss).collect::<Vec<_>>(), 16);
    vec![
        Panel {
            title: "held-out MLM loss (fixed mask)".into(),
            x_label: "step".into(),
            y_label: "loss (nats)".into(),
            curves: arm_curves(&arms, &results.runs, |r| &r.arm, eval),
        },
        Panel {
            title: "training MLM loss (16-step mean)".into(),
            x_label: "step".into(),
            y_label: "loss (nats)".into(),
            curves: arm_curves(&arms, &results.runs, |r| &r.arm, loss),
        },
    ]
}

/// The report (Markdown): the headline table, the breakdown of the first evaluation mask, every
/// evaluation mask, and the paired contrasts; every figure beside its unigram baseline, mean ±
/// std over seeds. `dynmask report results.json` prints it.
pub fn results_table(results: &TextResults) -> String {
    let arms: Vec<(&str, Vec<&TextRunResult>)> = results
        .study
        .arms
        .iter()
        .map(|a| {
            let runs = results.runs.iter().filter(|r| r.arm == a.name).collect();
            (a.name.as_str(), runs)
        })
        .filter(|(_, runs): &(&str, Vec<&TextRunResult>)| !runs.is_empty())
        .collect();
    let col = |runs: &[&TextRunResult], f: &dyn Fn(&TextRunResult) -> f64| -> Vec<f64> {
        runs.iter().map(|r| f(r)).collect()
    };
    let with_ft = results.runs.iter().any(|r| r.finetune.is_some());
    let mut out = String::from(
        "Held-out MLM at the positions whose input is [MASK] (first evaluation mask, pooled over \
         its mask seeds), beside a unigram model of the training split scored on the same \
         positions; mean ± std over seeds.\n\n| arm | seeds | [MASK] loss | unigram | gain (nats) \
         | [MASK] acc (%) | all masked: loss | all masked: unigram |",
    );
    if with_ft {
        out += " fine-tune acc (%) | majority class (%) | F1 (macro, %) |";
    }
    out += " s / run |\n|---|---|---|---|---|---|---|---|";
    if with_ft {
        out += "---|---|---|";
    }
    out += "---|\n";
    for (name, runs) in &arms {
        let h = |f: fn(&HeldoutResult) -> f64| col(runs, &|r| f(&r.heldout));
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            fmt_mean_std(&h(|h| h.mask_token_loss), 1.0, 3),
            fmt_mean_std(&h(|h| h.unigram_loss), 1.0, 3),
            fmt_mean_std(&h(|h| h.unigram_loss - h.mask_token_loss), 1.0, 3),
            fmt_mean_std(&h(|h| h.mask_token_acc), 100.0, 2),
            fmt_mean_std(&h(|h| h.masked_loss), 1.0, 3),
            fmt_mean_std(&h(|h| h.masked_unigram_loss), 1.0, 3),
        );
        if with_ft {
            let ft: Vec<&ClassificationEval> =
                runs.iter().filter_map(|r| r.finetune.as_ref()).collect();
            let f = |g: fn(&ClassificationEval) -> f64| ft.iter().map(|c| g(c)).collect::<Vec<_>>();
            out += &format!(
                " {} | {} | {} |",
                fmt_mean_std(&f(|c| c.report.accuracy), 100.0, 1),
                fmt_mean_std(&f(majority_share), 100.0, 1),
                fmt_mean_std(&f(|c| c.report.macro_f1), 100.0, 1),
            );
        }
        out += &format!(" {:.0} |\n", mean_std(&col(runs, &|r| r.seconds)).0);
    }
    // The first mask by corruption kind and frequency bucket.
    let Some(first) = results.runs.first().map(|r| &r.heldout.masks[0]) else {
        return out;
    };
    let buckets: Vec<String> = first
        .breakdown
        .buckets
        .iter()
        .map(|b| format!("ranks {}-{}", b.from, b.to - 1))
        .collect();
    out += &format!(
        "\nHeld-out loss under `{}` by what the input showed and by the training-frequency rank of \
         the target: model / unigram (nats), mean over seeds.\n\n| arm | [MASK] | random | kept | {} |\n|---|---|---|---|{}\n",
        first.name,
        buckets.join(" | "),
        "---|".repeat(buckets.len()),
    );
    let pair = |runs: &[&TextRunResult], f: &dyn Fn(&Breakdown) -> HeldoutStats| {
        let m = |g: fn(&HeldoutStats) -> f64| {
            mean_std(&col(runs, &|r| g(&f(&r.heldout.masks[0].breakdown)))).0
        };
        format!("{:.3} / {:.3}", m(|s| s.loss), m(|s| s.unigram_loss))
    };
    for (name, runs) in &arms {
        out += &format!(
            "| {name} | {} | {} | {} |",
            pair(runs, &|b| b.mask),
            pair(runs, &|b| b.random),
            pair(runs, &|b| b.kept),
        );
        for i in 0..buckets.len() {
            out += &format!(" {} |", pair(runs, &|b| b.buckets[i].stats));
        }
        out += "\n";
    }
    // Every evaluation mask: loss over all its masked positions.
    let names: Vec<&str> = first_run_masks(results);
    out += &format!(
        "\nHeld-out loss over all masked positions under each evaluation mask (mean ± std over \
         seeds); the last row is the unigram baseline.\n\n| arm | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (name, runs) in &arms {
        out += &format!("| {name} |");
        for i in 0..names.len() {
            out += &format!(
                " {} |",
                fmt_mean_std(
                    &col(runs, &|r| r.heldout.masks[i].breakdown.all.loss),
                    1.0,
                    3
                )
            );
        }
        out += "\n";
    }
    out += "| unigram |";
    for i in 0..names.len() {
        let u = results.runs[0].heldout.masks[i].breakdown.all.unigram_loss;
        out += &format!(" {u:.3} |");
    }
    out += "\n";
    out += &contrasts_table(&results.contrasts);
    out += &probe_table(&arms);
    out += &probe_contrasts_table(&results.probe_contrasts);
    if let Some(p) = &results.pmi_units {
        out += &format!(
            "\nShare of masked tokens inside multi-token PMI units (the first {} training \
             paragraphs, masked once at step 0; {:.1}% of all maskable tokens lie in such units):",
            p.docs,
            100.0 * p.tokens
        );
        for a in &p.arms {
            out += &format!(" {} {:.1}%;", a.arm, 100.0 * a.share);
        }
        out.pop();
        out += ".\n";
    }
    out
}

/// The POS probe per arm beside its baselines (Markdown); empty when no run was probed.
fn probe_table(arms: &[(&str, Vec<&TextRunResult>)]) -> String {
    let probed: Vec<(&str, Vec<&PosProbeResult>)> = arms
        .iter()
        .map(|(name, runs)| {
            (
                *name,
                runs.iter().filter_map(|r| r.pos_probe.as_ref()).collect(),
            )
        })
        .filter(|(_, p): &(&str, Vec<&PosProbeResult>)| !p.is_empty())
        .collect();
    let Some(b) = probed.first().map(|(_, p)| p[0].baselines) else {
        return String::new();
    };
    let mut out = format!(
        "\nFrozen-encoder POS probe: a linear head on the frozen encoder tags {} held-out Brown \
         words (7 coarse classes), beside the same probe on the encoder each run started from \
         and three baselines on the same words: the majority class ({:.1}%), the most frequent \
         training class of the word's first word piece, the token the probe reads ({:.1}%), and of \
         the whole word ({:.1}%); accuracy in %, mean ± std over seeds.\n\n| arm | seeds | probe \
         acc | macro F1 | initial encoder | gain over initial |\n|---|---|---|---|---|---|\n",
        b.words,
        100.0 * b.majority,
        100.0 * b.first_piece,
        100.0 * b.word_type,
    );
    for (name, ps) in &probed {
        let f = |g: fn(&PosProbeResult) -> f64| ps.iter().map(|p| g(p)).collect::<Vec<_>>();
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            ps.len(),
            fmt_mean_std(&f(|p| p.accuracy), 100.0, 2),
            fmt_mean_std(&f(|p| p.macro_f1), 100.0, 2),
            fmt_mean_std(&f(|p| p.initial_encoder_accuracy), 100.0, 2),
            fmt_mean_std(&f(|p| p.accuracy - p.initial_encoder_accuracy), 100.0, 2),
        );
    }
    out
}

/// The probe's contrasts table (Markdown).
fn probe_contrasts_table(contrasts: &[ProbeContrast]) -> String {
    if contrasts.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nPaired contrasts of POS probe accuracy, a - b in points (positive: a is better): mean \
         over seeds with its 95% t-interval, two-sided p and Holm-adjusted p.\n\n| a - b | seeds \
         | mean | 95% t-interval | p | Holm p | reading |\n|---|---|---|---|---|---|---|\n",
    );
    for c in contrasts {
        let interval = t_interval(&c.seeds, 100.0, 2);
        out += &format!(
            "| {} - {} | {} | {:+.2} | {interval} | {:.3} | {:.3} | {} |\n",
            c.a,
            c.b,
            c.seeds.n,
            100.0 * c.seeds.mean,
            c.seeds.p,
            c.holm_p,
            c.verdict
        );
    }
    out
}

fn first_run_masks(results: &TextResults) -> Vec<&str> {
    results.runs[0]
        .heldout
        .masks
        .iter()
        .map(|m| m.name.as_str())
        .collect()
}

/// The majority class's share of the test set (the trivial baseline of fine-tuning accuracy).
pub fn majority_share(c: &ClassificationEval) -> f64 {
    let total: u64 = c.report.support.iter().sum();
    c.report.support.iter().copied().max().unwrap_or(0) as f64 / total.max(1) as f64
}

/// A contrast's 95% t-interval, times `scale`, with `digits` decimals; "n/a" for one seed.
fn t_interval(t: &PairedT, scale: f64, digits: usize) -> String {
    if t.n > 1 {
        format!(
            "[{:+.digits$}, {:+.digits$}]",
            scale * t.lo,
            scale * t.hi,
            digits = digits
        )
    } else {
        "n/a".into()
    }
}

/// The contrasts table (Markdown).
pub fn contrasts_table(contrasts: &[Contrast]) -> String {
    if contrasts.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nPaired contrasts of the [MASK]-position loss, a - b (negative: a is better): mean over \
         seeds with its 95% t-interval, two-sided p and Holm-adjusted p across these contrasts, \
         and a 95% paired bootstrap over held-out documents (2,000 replicates).\n\n| a - b | seeds \
         | mean | 95% t-interval | p | Holm p | bootstrap 95% | reading |\n|---|---|---|---|---|---|---|---|\n",
    );
    for c in contrasts {
        let interval = t_interval(&c.seeds, 1.0, 3);
        out += &format!(
            "| {} - {} | {} | {:+.3} | {interval} | {:.3} | {:.3} | [{:+.3}, {:+.3}] | {} |\n",
            c.a,
            c.b,
            c.seeds.n,
            c.seeds.mean,
            c.seeds.p,
            c.holm_p,
            c.bootstrap[0],
            c.bootstrap[1],
            c.verdict
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_the_default_and_typos_are_refused() {
        let text = include_str!("../../configs/static_vs_dynamic.toml");
        use super::super::Study;
        let parsed = Study::from_toml(text).unwrap();
        assert_eq!(parsed, Study::Text(TextStudy::default()));
        let typo = text.replace("warmup_steps", "warmup_stpes");
        let err = Study::from_toml(&typo).unwrap_err();
        assert!(
            err.contains("unknown field `warmup_stpes`") && err.contains("line"),
            "{err}"
        );
        let wrong = text.replace("type = \"dynamic\"", "type = \"sometimes\"");
        assert!(Study::from_toml(&wrong).is_err());
        let bad = text.replace("steps = 384", "steps = \"many\"");
        let err = Study::from_toml(&bad).unwrap_err();
        assert!(err.contains("line 41") && err.contains("many"), "{err}");
    }

    /// `steps_factor` scales one arm's steps (rounded; the others keep the study's) and its
    /// decaying rate is checked at its own last step; a factor leaving no step is refused.
    #[test]
    fn an_arm_can_train_longer_than_the_study() {
        let mut s = TextStudy::default();
        s.arms[2].steps_factor = 8.0 / 3.0;
        assert_eq!(s.train_config(&s.arms[2], 5).steps, 1024); // 384 x 8/3
        assert_eq!(s.train_config(&s.arms[2], 5).seed, 5);
        assert_eq!(s.train_config(&s.arms[0], 5).steps, 384);
        s.arms[2].steps_factor = 0.5 / 384.0 * 0.9; // rounds to 0 steps
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("steps_factor") && err.contains("dynamic"),
            "{err}"
        );
        s.arms[2].steps_factor = f64::NAN;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("steps_factor"));
        // Serialized only when it is not 1: older results files compare equal.
        let json = serde_json::to_string(&TextStudy::default().arms[0]).unwrap();
        assert!(!json.contains("steps_factor"), "{json}");
    }

    /// Regression (run-state issue, findings 4 and 5): `mask_prob = 0`, `eval_docs = 0` and the
    /// `[finetune]` section were never validated (NaN results, negated gradients, an untrained
    /// head scored).
    #[test]
    fn every_section_is_validated_by_name() {
        let bad = |f: fn(&mut TextStudy), field: &str| {
            let mut s = TextStudy::default();
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}` = ")), "{field}: {e}");
        };
        bad(
            |s| s.arms[0].rate = RateSchedule::Constant { mask_prob: 0.0 },
            "arms.rate",
        );
        bad(|s| s.eval_docs = Some(0), "eval_docs");
        bad(|s| s.finetune.lr = f64::NAN, "lr");
        bad(|s| s.finetune.grad_clip = Some(-1.0), "grad_clip");
        bad(|s| s.finetune.epochs = 0, "finetune.epochs");
        bad(|s| s.train.lr = -1.0, "lr");
        bad(|s| s.model.d_model = 127, "model.d_model");
        bad(|s| s.model.dropout = 1.0, "model.dropout");
        bad(|s| s.seeds = vec![1, 1], "seeds");
        bad(|s| s.arms.clear(), "arms");
        // The probe reads at most the encoder's longest input (max(max_len, finetune_max_len)).
        bad(|s| s.pos_probe.max_len = 97, "pos_probe.max_len");
        bad(
            |s| s.pos_probe.test_sentences = 0,
            "pos_probe.test_sentences",
        );
        let mut off = TextStudy::default();
        off.pos_probe.enabled = false;
        off.pos_probe.max_len = 97;
        assert!(off.validate().is_ok(), "a disabled probe is not checked");
        bad(
            |s| s.train.early_stopping_patience = Some(0),
            "early_stopping_patience",
        );
        let mut s = TextStudy::default();
        s.arms[1].name = "static k_1".into();
        assert!(s.validate().unwrap_err().to_string().contains("static-k-1"));
    }

    /// Regression (science issue, "honest data"): subsets were the corpus's first documents.
    /// By hand: a - b = [0.10, 0.11, 0.12] over seeds 0-2 (seed 3 of `a` has no partner):
    /// mean 0.11, sd 0.01, 95% t-interval 0.11 +- 4.302653 * 0.01 / sqrt 3; one contrast, so
    /// Holm p = p; `a` reads higher. The reverse pair reads lower; a pair without a common
    /// seed is left out.
    #[test]
    fn probe_contrasts_by_hand() {
        let probed = [
            ("a", 0, 0.80),
            ("a", 1, 0.82),
            ("a", 2, 0.84),
            ("a", 3, 0.99),
            ("b", 0, 0.70),
            ("b", 1, 0.71),
            ("b", 2, 0.72),
            ("c", 7, 0.5),
        ];
        let pair = |a: &str, b: &str| [a.to_string(), b.to_string()];
        let c = metric_contrasts(&[pair("a", "b")], &probed, "accuracy");
        assert_eq!(c.len(), 1);
        let half = 4.302653 * 0.01 / 3f64.sqrt();
        assert_eq!(c[0].seeds.n, 3);
        assert!((c[0].seeds.mean - 0.11).abs() < 1e-12, "{:?}", c[0]);
        assert!((c[0].seeds.lo - (0.11 - half)).abs() < 1e-6, "{:?}", c[0]);
        assert!((c[0].seeds.hi - (0.11 + half)).abs() < 1e-6, "{:?}", c[0]);
        assert_eq!(c[0].holm_p, c[0].seeds.p);
        assert_eq!(c[0].verdict, "a higher accuracy");
        let c = metric_contrasts(&[pair("b", "a"), pair("a", "c")], &probed, "accuracy");
        assert_eq!(c.len(), 1, "no seed in common with c");
        assert_eq!(c[0].verdict, "b lower accuracy");
        assert!((c[0].seeds.mean + 0.11).abs() < 1e-12);
    }

    #[test]
    fn subsets_are_spread_evenly_over_the_corpus() {
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(spread(items.clone(), Some(4)), vec![0, 2, 5, 7]);
        assert_eq!(spread(items.clone(), Some(1)), vec![0]);
        assert_eq!(spread(items.clone(), Some(10)), items);
        assert_eq!(spread(items.clone(), Some(99)), items);
        assert_eq!(spread(items.clone(), None), items);
        let big: Vec<u32> = (0..9000).collect();
        let s = spread(big, Some(2048));
        assert_eq!(s.len(), 2048);
        assert!(s.windows(2).all(|w| w[1] - w[0] >= 4 && w[1] - w[0] <= 5));
        assert!(*s.last().unwrap() >= 8995);
    }

    /// Regression (run-state issue, finding 8): `--quick` silently replaced a bad batch_size.
    /// Studies are validated as written, before `quick` resizes them.
    #[test]
    fn quick_keeps_validation_meaningful() {
        let mut s = TextStudy::default();
        s.train.batch_size = 0;
        assert!(s.validate().is_err());
        assert!(
            s.clone().quick().validate().is_ok(),
            "quick alone would hide it"
        );
    }
}
