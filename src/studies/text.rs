//! The text study: pretrain a small BERT on the embedded Austen paragraphs (or a user corpus)
//! under several masking arms with the same steps, seeds and data order; score held-out MLM
//! loss and accuracy under one fixed evaluation mask; fine-tune each encoder on the fine-food
//! reviews (or a user TSV) and report accuracy, macro precision, recall and F1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use mask_core::{
    CorruptionConfig, MaskingConfig, PmiTable, PmiTableConfig, RateSchedule, Regime,
    SelectionConfig, SelectorResources, TokenStats, VocabSpec,
};
use mask_data::{text, Encoded, TextTokenizer, TokenizerConfig};
use mask_model::{
    ClassifierConfig, MlmConfig, MlmModel, PositionEncoding, TextEncoderConfig, TransformerConfig,
};
use mask_train::tasks::classification::{
    ClassificationEval, LabeledDoc, SequenceClassificationTask,
};
use mask_train::tasks::mlm::{EvalSet, MlmEval, MlmTask};
use mask_train::{CheckpointPolicy, Decay, EvalRecord, Learner, StepRecord, TrainConfig};
use serde::{Deserialize, Serialize};
use tracing::info_span;

use super::arm::{check_unique_slugs, plan_run, run_dir, train_run, RunPlan, RunSpec, Start};
use super::plot::{arm_curves, plot_panels, smoothed, Panel};
use super::report::{fmt_mean_std, mean_std, write_json, write_text};
use super::{
    check_fits, forward, invalid, transformer_step_bytes, Existing, Result, Sink, StudyError,
    StudyEvent,
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
}

impl ArmConfig {
    /// The masking config of this arm over `vocab`.
    pub fn masking(&self, vocab: VocabSpec) -> MaskingConfig {
        MaskingConfig::new(vocab)
            .with_selection(self.selection)
            .with_rate(self.rate)
            .with_corruption(self.corruption)
            .with_regime(self.regime)
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
}

impl Default for ModelSize {
    fn default() -> Self {
        Self {
            d_model: 128,
            n_heads: 2,
            n_layers: 2,
            d_ff: 512,
            dropout: 0.1,
        }
    }
}

/// Fine-tuning settings: the learner's vocabulary, with `epochs` for `steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
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
    /// WordPiece vocabulary size. Default: 4096
    pub vocab_size: usize,
    /// Tokens per pretraining document (truncated). Default: 64
    pub max_len: usize,
    /// Every n-th paragraph is held out for evaluation. Default: 20
    pub heldout_every: usize,
    /// Use at most this many training paragraphs, or `"all"`. Default: 1024
    #[serde(with = "super::count_or_all")]
    pub train_docs: Option<usize>,
    /// Use at most this many held-out paragraphs, or `"all"`. Default: 256
    #[serde(with = "super::count_or_all")]
    pub eval_docs: Option<usize>,
    /// Encoder size.
    pub model: ModelSize,
    /// Pretraining settings (`seed` is replaced by each of `seeds`).
    pub train: TrainConfig,
    /// Fine-tuning settings.
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
    /// Seeds (one run per arm and seed). Default: [0]
    pub seeds: Vec<u64>,
    /// The PMI n-gram table of `pmi_span` arms (built from the training split).
    pub pmi: PmiTableConfig,
    /// Write a checkpoint every this many pretraining steps (and at the end). Default: 128
    pub checkpoint_every: u64,
    /// Masking arms. Default: static k=1, static k=4, dynamic (Bernoulli 15%, 80/10/10)
    pub arms: Vec<ArmConfig>,
}

impl Default for TextStudy {
    fn default() -> Self {
        let arm = |name: &str, regime| ArmConfig {
            name: name.into(),
            selection: SelectionConfig::Bernoulli {},
            rate: RateSchedule::default(),
            corruption: CorruptionConfig::default(),
            regime,
        };
        Self {
            kind: "text".into(),
            name: "static_vs_dynamic".into(),
            out_dir: "runs/static_vs_dynamic".into(),
            vocab_size: 4096,
            max_len: 64,
            heldout_every: 20,
            train_docs: Some(1024),
            eval_docs: Some(256),
            model: ModelSize::default(),
            train: TrainConfig {
                steps: 512,
                batch_size: 32,
                lr: 1.5e-3,
                warmup_steps: 32,
                eval_every: 64,
                ..TrainConfig::default()
            },
            finetune: FinetuneConfig::default(),
            finetune_max_len: 96,
            finetune_train_docs: Some(1000),
            finetune_test_docs: Some(500),
            tokenizer: None,
            corpus: None,
            classification: None,
            seeds: vec![0],
            pmi: PmiTableConfig::default(),
            checkpoint_every: 128,
            arms: vec![
                arm("static k=1", Regime::Static { dupe_factor: 1 }),
                arm("static k=4", Regime::Static { dupe_factor: 4 }),
                arm("dynamic", Regime::Dynamic {}),
            ],
        }
    }
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
            dropout: 0.1,
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
        if self.checkpoint_every == 0 {
            return Err(invalid("checkpoint_every", 0, "at least 1"));
        }
        // Each arm's policy must build (a placeholder vocabulary stands in for the tokenizer's),
        // and mask something: an MLM arm at rate 0 has no loss.
        let vocab = VocabSpec::new(self.vocab_size as u32, 4, vec![0, 1, 2, 3, 4]);
        for arm in &self.arms {
            arm.rate.validate()?;
            arm.regime.validate()?;
            arm.corruption.build(&vocab)?;
            match arm.selection.build() {
                Ok(_) | Err(mask_core::MaskError::MissingResource { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let (r0, r1) = (arm.rate.rate_at(0), arm.rate.rate_at(self.train.steps));
            if r0 <= 0.0 || r1 <= 0.0 {
                return Err(invalid(
                    "arms.rate",
                    format!("{} in arm `{}`", r0.min(r1), arm.name),
                    "a masking rate > 0 at every step (an MLM arm that masks nothing has no loss)",
                ));
            }
        }
        Ok(())
    }

    /// The arm named `name`.
    pub fn arm(&self, name: &str) -> Result<&ArmConfig> {
        super::arm::find_arm(&self.arms, name, |a| &a.name)
    }

    /// The pretraining config of a run with `seed`.
    pub fn train_config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            seed,
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
    /// Corpus statistics (IDF) and, when an arm needs it, the PMI table.
    pub resources: SelectorResources,
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
        train_texts.truncate(study.train_docs.unwrap_or(usize::MAX));
        eval_texts.truncate(study.eval_docs.unwrap_or(usize::MAX));
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
                .with_attn_dropout(m.dropout),
            tokenizer.vocab_size(),
        )
        .with_max_len(study.max_len.max(study.finetune_max_len))
        .with_position(PositionEncoding::Learned);
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

/// Token statistics of the training split, and the PMI table when an arm masks PMI spans (built
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
        .any(|a| matches!(a.selection, SelectionConfig::PmiSpan { .. }));
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

/// Result of one arm and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextRunResult {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Pretraining steps.
    pub history: Vec<StepRecord>,
    /// Held-out evaluations (fixed mask).
    pub evals: Vec<EvalRecord<MlmEval>>,
    /// Classification test scores after fine-tuning.
    pub finetune: ClassificationEval,
    /// Wall time of pretraining + fine-tuning in this session, seconds (not reproducible).
    pub seconds: f64,
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
}

/// Pretrains one arm with `spec.seed` in `<out_dir>/<arm>/seed-<seed>`.
pub fn pretrain<B: AutodiffBackend>(
    study: &TextStudy,
    data: &TextData,
    arm: &ArmConfig,
    spec: &RunSpec,
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<Learner<B, MlmTask>> {
    let dir = run_dir(Path::new(&study.out_dir), &arm.name, spec.seed);
    let label = format!("{} / seed {}", arm.name, spec.seed);
    let config = study.train_config(spec.seed);
    train_run(
        &dir,
        data.mlm_task(arm)?,
        config,
        spec,
        &label,
        device,
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
    let mut runs = vec![];
    for &seed in &study.seeds {
        for arm in &study.arms {
            let dir = run_dir(&out, &arm.name, seed);
            let label = format!("{} / seed {seed}", arm.name);
            if existing == Existing::Resume {
                if let RunPlan::Finished(_, r) = plan_run::<TextRunResult>(&dir, existing)? {
                    sink(StudyEvent::RunFinished {
                        run: &label,
                        reused: true,
                    });
                    runs.push(r);
                    continue;
                }
            }
            let started = Instant::now();
            let spec = RunSpec {
                seed,
                start: Start::Existing(existing),
                policy,
            };
            let learner = pretrain::<B>(study, &data, arm, &spec, device, sink)?;
            let finetune = finetune::<B>(study, &data, learner.model(), seed, device, sink)?;
            let result = TextRunResult {
                arm: arm.name.clone(),
                seed,
                history: learner.state().history.clone(),
                evals: learner.state().evals.clone(),
                finetune,
                seconds: started.elapsed().as_secs_f64(),
            };
            write_json(&dir.join("result.json"), &result)?;
            sink(StudyEvent::RunFinished {
                run: &label,
                reused: false,
            });
            runs.push(result);
        }
    }
    let results = TextResults {
        study: study.clone(),
        classes: data.classes.clone(),
        tokenizer_digest: data.tokenizer.digest().to_string(),
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

/// The results table (Markdown): one row per arm, mean ± std over seeds.
pub fn results_table(results: &TextResults) -> String {
    let mut out = String::from(
        "| arm | held-out MLM loss | held-out MLM acc (%) | fine-tune acc (%) | precision (macro, %) | recall (macro, %) | F1 (macro, %) | s / run |\n|---|---|---|---|---|---|---|---|\n",
    );
    for arm in &results.study.arms {
        let runs: Vec<&TextRunResult> = results.runs.iter().filter(|r| r.arm == arm.name).collect();
        if runs.is_empty() {
            continue;
        }
        let last = |f: fn(&MlmEval) -> f64| {
            runs.iter()
                .filter_map(|r| r.evals.last().map(|e| f(&e.metrics)))
                .collect::<Vec<_>>()
        };
        let ft = |f: fn(&ClassificationEval) -> f64| {
            runs.iter().map(|r| f(&r.finetune)).collect::<Vec<_>>()
        };
        let seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            arm.name,
            fmt_mean_std(&last(|e| e.mlm_loss), 1.0, 3),
            fmt_mean_std(&last(|e| e.mlm_acc), 100.0, 2),
            fmt_mean_std(&ft(|c| c.report.accuracy), 100.0, 1),
            fmt_mean_std(&ft(|c| c.report.macro_precision), 100.0, 1),
            fmt_mean_std(&ft(|c| c.report.macro_recall), 100.0, 1),
            fmt_mean_std(&ft(|c| c.report.macro_f1), 100.0, 1),
            mean_std(&seconds).0,
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
        let bad = text.replace("steps = 512", "steps = \"many\"");
        let err = Study::from_toml(&bad).unwrap_err();
        assert!(err.contains("line 31") && err.contains("many"), "{err}");
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
        bad(
            |s| s.train.early_stopping_patience = Some(0),
            "early_stopping_patience",
        );
        let mut s = TextStudy::default();
        s.arms[1].name = "static k_1".into();
        assert!(s.validate().unwrap_err().to_string().contains("static-k-1"));
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
