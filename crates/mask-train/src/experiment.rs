//! The static-vs-dynamic experiment: pretrain a small encoder on the embedded Austen corpus
//! under several masking arms (same steps, seeds and data order), evaluate held-out MLM loss and
//! accuracy on one fixed evaluation mask, fine-tune each on the fine-food reviews and report
//! accuracy / precision / recall / F1 (mean ± std over seeds).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use mask_core::{
    CorruptionConfig, MaskingConfig, PmiTable, PmiTableConfig, RateSchedule, Regime,
    SelectionConfig, SelectorResources, TokenStats, VocabSpec,
};
use mask_model::{
    ClassifierConfig, MlmConfig, PositionEncoding, TextEncoderConfig, TransformerConfig,
};
use serde::{Deserialize, Serialize};

use crate::data::{austen_paragraphs, finefood};
use crate::error::{invalid, io_error, Result};
use crate::finetune::{finetune_and_evaluate, FinetuneConfig, LabeledDoc};
use crate::metrics::{ClassificationReport, ConfusionMatrix};
use crate::progress::Progress;
use crate::tokenizer::{Encoded, TextTokenizer};
use crate::trainer::{EvalRecord, EvalSet, Event, MlmTrainer, StepRecord, TrainConfig};

/// One masking arm of a study (the vocabulary comes from the tokenizer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// Row name in the results.
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
    fn masking(&self, vocab: VocabSpec) -> MaskingConfig {
        MaskingConfig::new(vocab)
            .with_selection(self.selection)
            .with_rate(self.rate)
            .with_corruption(self.corruption)
            .with_regime(self.regime)
    }
}

/// Encoder size of a study.
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

/// A whole study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudyConfig {
    /// Name (used for files). Default: static_vs_dynamic
    pub name: String,
    /// Output directory (tokenizer cache, logs, results). Default: runs/static_vs_dynamic
    pub out_dir: String,
    /// WordPiece vocabulary size. Default: 4096
    pub vocab_size: usize,
    /// Tokens per pretraining document (truncated). Default: 64
    pub max_len: usize,
    /// Every n-th paragraph is held out for evaluation. Default: 20
    pub heldout_every: usize,
    /// Use at most this many training paragraphs (`None`: all 9,783). Default: 1024
    pub train_docs: Option<usize>,
    /// Use at most this many held-out paragraphs (`None`: all 515). Default: 256
    pub eval_docs: Option<usize>,
    /// Encoder size.
    pub model: ModelSize,
    /// Pretraining settings (its `seed` is replaced by each of `seeds`).
    pub train: TrainConfig,
    /// Fine-tuning settings.
    pub finetune: FinetuneConfig,
    /// Tokens per fine-tuning review. Default: 96
    pub finetune_max_len: usize,
    /// Use at most this many fine-food training reviews (`None`: all 4,000). Default: 1000
    pub finetune_train_docs: Option<usize>,
    /// Use at most this many fine-food test reviews (`None`: all 1,000). Default: 500
    pub finetune_test_docs: Option<usize>,
    /// A `tokenizer.json` to use instead of training one on the corpus. Default: None
    pub tokenizer: Option<String>,
    /// Pretraining corpus: a text file, one document per line (`None`: the embedded Austen
    /// paragraphs). Default: None
    pub corpus: Option<String>,
    /// Fine-tuning data: TSV files with a header and `label` / `text` columns, `[train, test]`
    /// (`None`: the embedded fine-food reviews). Default: None
    pub classification: Option<[String; 2]>,
    /// Seeds (one full run per arm and seed). Default: [0]
    pub seeds: Vec<u64>,
    /// The PMI n-gram table of `pmi_span` arms, built once from the training split and saved
    /// as `out_dir/pmi-table.json` (its `special_ids` are the tokenizer's). Default: n <= 4,
    /// count >= 5, top 2000
    pub pmi: PmiTableConfig,
    /// Masking arms. Default: static k=1, static k=4, dynamic (Bernoulli 15%, 80/10/10)
    pub arms: Vec<ArmConfig>,
}

impl Default for StudyConfig {
    fn default() -> Self {
        let arm = |name: &str, regime| ArmConfig {
            name: name.into(),
            selection: SelectionConfig::Bernoulli {},
            rate: RateSchedule::default(),
            corruption: CorruptionConfig::default(),
            regime,
        };
        Self {
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
            finetune: FinetuneConfig {
                epochs: 4,
                lr: 2e-3,
                ..FinetuneConfig::default()
            },
            finetune_max_len: 96,
            finetune_train_docs: Some(1000),
            finetune_test_docs: Some(500),
            tokenizer: None,
            corpus: None,
            classification: None,
            seeds: vec![0],
            pmi: PmiTableConfig::default(),
            arms: vec![
                arm("static k=1", Regime::Static { dupe_factor: 1 }),
                arm("static k=4", Regime::Static { dupe_factor: 4 }),
                arm("dynamic", Regime::Dynamic {}),
            ],
        }
    }
}

impl StudyConfig {
    /// The ≤ 2-minute smoke version of a study (same arms, tiny data and step counts).
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
        self.finetune_max_len = 48;
        self.finetune_train_docs = Some(256);
        self.finetune_test_docs = Some(128);
        self.out_dir = format!("{}-quick", self.out_dir);
        self
    }

    /// Checks the study-level fields (run-level ones are checked when each run starts).
    pub fn validate(&self) -> Result<()> {
        if self.arms.is_empty() {
            return Err(invalid("arms", "[]", "at least one masking arm"));
        }
        if self.seeds.is_empty() {
            return Err(invalid("seeds", "[]", "at least one seed"));
        }
        if self.heldout_every < 2 {
            return Err(invalid("heldout_every", self.heldout_every, "at least 2"));
        }
        self.train.validate()
    }
}

/// Result of one arm and seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Pretraining steps.
    pub history: Vec<StepRecord>,
    /// Held-out evaluations (fixed masks).
    pub evals: Vec<EvalRecord>,
    /// Fine-food test scores.
    pub finefood: ClassificationReport,
    /// Fine-tuning confusion matrix (rows true, columns predicted; classes sorted by name, so
    /// `great`, `other` for the fine-food reviews).
    pub confusion: ConfusionMatrix,
    /// Wall time of pretraining + fine-tuning, seconds.
    pub seconds: f64,
}

/// Everything a study produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyResults {
    /// The config that ran.
    pub config: StudyConfig,
    /// One result per arm and seed.
    pub runs: Vec<RunResult>,
}

fn labeled(
    tok: &TextTokenizer,
    rows: &[crate::data::LabeledText],
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

/// Everything a study's runs share: tokenizer, tokenized corpora, the fixed evaluation set,
/// the fine-food splits and the model configs.
pub struct StudyData {
    /// The tokenizer (trained on the training paragraphs, cached in `out_dir`).
    pub tokenizer: TextTokenizer,
    /// Tokenized training paragraphs.
    pub train_docs: Arc<Vec<Encoded>>,
    /// Held-out paragraphs under the fixed evaluation mask.
    pub eval: EvalSet,
    /// Fine-food training reviews.
    pub ff_train: Vec<LabeledDoc>,
    /// Fine-food test reviews.
    pub ff_test: Vec<LabeledDoc>,
    /// Vocabulary of the masking policies.
    pub vocab: VocabSpec,
    /// Pretraining model.
    pub model_config: MlmConfig,
    /// Fine-tuning model (mean pooling).
    pub clf_config: ClassifierConfig,
    /// Class names, sorted; the class index is the position (fine-food: `great`, `other`).
    pub classes: Vec<String>,
    /// Corpus statistics of the training split (IDF) and, when an arm needs it, the PMI table.
    pub resources: SelectorResources,
}

impl StudyData {
    /// Prepares the data of `config` (creating `out_dir`).
    pub fn prepare(config: &StudyConfig) -> Result<Self> {
        config.validate()?;
        let out = PathBuf::from(&config.out_dir);
        std::fs::create_dir_all(&out).map_err(io_error(&out))?;
        // Held-out split by paragraph; the tokenizer sees the training split only.
        let paragraphs: Vec<String> = match &config.corpus {
            Some(path) => crate::data::read_lines_corpus(Path::new(path))?,
            None => austen_paragraphs()?.into_iter().map(|p| p.text).collect(),
        };
        let (mut train_texts, mut eval_texts) = (vec![], vec![]);
        for (i, p) in paragraphs.iter().enumerate() {
            if i % config.heldout_every == 0 {
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
                    config.heldout_every + 1,
                    config.heldout_every
                ),
            ));
        }
        train_texts.truncate(config.train_docs.unwrap_or(usize::MAX));
        eval_texts.truncate(config.eval_docs.unwrap_or(usize::MAX));
        let tok_path = out.join(format!("tokenizer-{}.json", config.vocab_size));
        let tok = match &config.tokenizer {
            Some(path) => TextTokenizer::load(Path::new(path))?,
            None => TextTokenizer::load_or_train(&tok_path, &train_texts, config.vocab_size)?,
        };
        let train_docs = Arc::new(tok.encode_batch(&train_texts, config.max_len)?);
        let eval_docs = tok.encode_batch(&eval_texts, config.max_len)?;
        let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
        let resources = corpus_resources(config, &train_docs, &vocab, &out)?;
        let eval_policy = MaskingConfig::new(vocab.clone()).build()?;
        let eval = EvalSet::new(&eval_docs, eval_policy, tok.pad_id, 64, 20_261_128)?;
        let (ff_train, ff_test) = match &config.classification {
            Some([train, test]) => (
                crate::data::read_labeled_tsv(Path::new(train))?,
                crate::data::read_labeled_tsv(Path::new(test))?,
            ),
            None => finefood()?,
        };
        let mut classes: Vec<String> = ff_train.iter().map(|r| r.label.clone()).collect();
        classes.sort();
        classes.dedup();
        if classes.len() < 2 {
            return Err(invalid(
                "classification",
                format!("{classes:?}"),
                "at least two labels in the training TSV",
            ));
        }
        let ff_train = labeled(
            &tok,
            &ff_train,
            &classes,
            config.finetune_max_len,
            config.finetune_train_docs,
        )?;
        let ff_test = labeled(
            &tok,
            &ff_test,
            &classes,
            config.finetune_max_len,
            config.finetune_test_docs,
        )?;
        let m = &config.model;
        let encoder = TextEncoderConfig::new(
            TransformerConfig::new(m.d_model, m.n_heads, m.n_layers, m.d_ff)
                .with_dropout(m.dropout)
                .with_attn_dropout(m.dropout),
            tok.vocab_size(),
        )
        .with_max_len(config.max_len.max(config.finetune_max_len))
        .with_position(PositionEncoding::Learned);
        let model_config = MlmConfig::new(encoder.clone());
        // Mean pooling: a small encoder pretrained briefly has no trained [CLS] summary (no NSP).
        let clf_config =
            ClassifierConfig::new(encoder, classes.len()).with_pooling(mask_model::Pooling::Mean);
        Ok(Self {
            classes,
            tokenizer: tok,
            train_docs,
            eval,
            ff_train,
            ff_test,
            vocab,
            model_config,
            clf_config,
            resources,
        })
    }

    /// The arm of `config` named `name`.
    pub fn arm<'a>(config: &'a StudyConfig, name: &str) -> Result<&'a ArmConfig> {
        config.arms.iter().find(|a| a.name == name).ok_or_else(|| {
            let known: Vec<&str> = config.arms.iter().map(|a| a.name.as_str()).collect();
            invalid(
                "arm",
                name,
                format!("one of the study's arms: {}", known.join(", ")),
            )
        })
    }
}

/// Token statistics of the training split, and the PMI table when an arm masks PMI spans (built
/// from the training split, saved to `out/pmi-table.json` for inspection and reuse).
fn corpus_resources(
    config: &StudyConfig,
    train_docs: &[Encoded],
    vocab: &VocabSpec,
    out: &Path,
) -> Result<SelectorResources> {
    let ids = || train_docs.iter().map(|d| d.ids.as_slice());
    let token_stats = Arc::new(TokenStats::from_docs(vocab.vocab_size, ids())?);
    let needs_pmi = config
        .arms
        .iter()
        .any(|a| matches!(a.selection, SelectionConfig::PmiSpan { .. }));
    let pmi = if needs_pmi {
        let cfg = PmiTableConfig {
            special_ids: vocab.special_ids.clone(),
            ..config.pmi.clone()
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

/// Periodic checkpoints of a pretraining run.
#[derive(Debug, Clone)]
pub struct CheckpointPlan {
    /// Directory of `ckpt-<step>.dynmask` files.
    pub dir: PathBuf,
    /// Save every this many steps (and at the end).
    pub every: u64,
    /// Keep the newest N checkpoints.
    pub keep_last: usize,
    /// Resume from this checkpoint.
    pub resume: Option<PathBuf>,
}

fn log_path(out: &Path, arm: &ArmConfig, seed: u64) -> PathBuf {
    let slug: String = arm
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    out.join(format!("{slug}-seed{seed}.jsonl"))
}

fn append_jsonl(out: &Path, arm: &ArmConfig, seed: u64, value: &serde_json::Value) -> Result<()> {
    let path = log_path(out, arm, seed);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    writeln!(f, "{value}").map_err(io_error(&path))
}

/// Keeps the newest `keep` `ckpt-*.dynmask` files of `dir`.
fn prune_checkpoints(dir: &Path, keep: usize) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ckpt-") && n.ends_with(".dynmask"))
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep.max(1));
    for old in &files[..excess] {
        std::fs::remove_file(old).map_err(io_error(old))?;
    }
    Ok(())
}

/// Pretrains one arm with one seed (optionally checkpointing / resuming), logging JSONL to
/// `out_dir/<arm>-seed<seed>.jsonl`.
pub fn pretrain_arm<B: AutodiffBackend>(
    config: &StudyConfig,
    data: &StudyData,
    arm: &ArmConfig,
    seed: u64,
    plan: Option<&CheckpointPlan>,
    device: &B::Device,
) -> Result<MlmTrainer<B>> {
    let train = TrainConfig {
        seed,
        ..config.train.clone()
    };
    let masking = arm.masking(data.vocab.clone());
    let (model, res) = (data.model_config.clone(), &data.resources);
    let mut trainer = match plan.and_then(|p| p.resume.as_ref()) {
        Some(path) => MlmTrainer::<B>::resume_with(path, model, train, masking, res, device)?,
        None => MlmTrainer::<B>::new_with(model, train, masking, res, device)?,
    };
    let out = PathBuf::from(&config.out_dir);
    let log_path = log_path(&out, arm, seed);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(trainer.step > 0)
        .write(true)
        .truncate(trainer.step == 0)
        .open(&log_path)
        .map_err(io_error(&log_path))?;
    let mut log = std::io::BufWriter::new(file);
    let total = config.train.steps;
    let mut progress = Progress::new(&format!("{} seed {seed}", arm.name), total, trainer.step);
    let every = plan.map_or(total, |p| p.every.max(1));
    while trainer.step < total {
        let until = (trainer.step + every).min(total);
        let before = trainer.step;
        trainer.run_until(until, Arc::clone(&data.train_docs), data.tokenizer.pad_id, Some(&data.eval), &mut |e| {
            let line = match e {
                Event::Step(r) => {
                    progress.step(r.step + 1, r.tokens, r.loss);
                    serde_json::json!({ "type": "step", "arm": arm.name, "seed": seed, "record": r })
                }
                Event::Eval(r) => serde_json::json!({ "type": "eval", "arm": arm.name, "seed": seed, "record": r }),
            };
            let _ = writeln!(log, "{line}");
        })?;
        let _ = log.flush();
        if let Some(p) = plan {
            std::fs::create_dir_all(&p.dir).map_err(io_error(&p.dir))?;
            trainer.save(&p.dir.join(format!("ckpt-{:08}.dynmask", trainer.step)))?;
            prune_checkpoints(&p.dir, p.keep_last)?;
        }
        if trainer.step == before || trainer.step < until {
            break; // early stopping
        }
    }
    Ok(trainer)
}

/// Fine-tunes `encoder` on the study's classification data with seed `seed` and returns the
/// test confusion matrix.
pub fn finetune_encoder<B: AutodiffBackend>(
    config: &StudyConfig,
    data: &StudyData,
    encoder: mask_model::TextEncoder<B>,
    seed: u64,
    device: &B::Device,
) -> Result<ConfusionMatrix> {
    let ft = FinetuneConfig {
        seed,
        ..config.finetune.clone()
    };
    finetune_and_evaluate::<B>(
        encoder,
        &data.clf_config,
        &data.ff_train,
        &data.ff_test,
        &ft,
        device,
    )
}

/// Runs a study on backend `B`, logging JSONL per run under `out_dir` and progress on stderr.
pub fn run_study<B: AutodiffBackend>(
    config: &StudyConfig,
    device: &B::Device,
) -> Result<StudyResults> {
    let data = StudyData::prepare(config)?;
    let out = PathBuf::from(&config.out_dir);
    let mut runs = vec![];
    for &seed in &config.seeds {
        for arm in &config.arms {
            let started = std::time::Instant::now();
            let trainer = pretrain_arm::<B>(config, &data, arm, seed, None, device)?;
            let confusion =
                finetune_encoder::<B>(config, &data, trainer.model.encoder.clone(), seed, device)?;
            let finefood = confusion.report();
            append_jsonl(
                &out,
                arm,
                seed,
                &serde_json::json!({ "type": "finefood", "arm": arm.name, "seed": seed, "report": finefood, "confusion": confusion.rows() }),
            )?;
            runs.push(RunResult {
                arm: arm.name.clone(),
                seed,
                history: trainer.history.clone(),
                evals: trainer.evals.clone(),
                finefood,
                confusion,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    let results = StudyResults {
        config: config.clone(),
        runs,
    };
    let path = out.join("results.json");
    mask_model::checkpoint::write_atomic(
        &path,
        serde_json::to_string_pretty(&results)
            .expect("serialises")
            .as_bytes(),
    )?;
    crate::plot::plot_study(&results, &out.join("curves.svg"))?;
    Ok(results)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The results table (Markdown): one row per arm, mean ± std over seeds.
pub fn results_table(results: &StudyResults) -> String {
    let mut out = String::from(
        "| arm | held-out MLM loss | held-out MLM acc | fine-food acc | precision (macro) | recall (macro) | F1 (macro) | s / run |\n|---|---|---|---|---|---|---|---|\n",
    );
    let fmt = |v: &[f64], pct: bool| {
        let (m, s) = mean_std(v);
        let k = if pct { 100.0 } else { 1.0 };
        if v.len() > 1 {
            format!("{:.3} ± {:.3}", m * k, s * k)
        } else {
            format!("{:.3}", m * k)
        }
    };
    for arm in &results.config.arms {
        let runs: Vec<&RunResult> = results.runs.iter().filter(|r| r.arm == arm.name).collect();
        let last = |f: fn(&EvalRecord) -> f64| {
            runs.iter()
                .filter_map(|r| r.evals.last().map(f))
                .collect::<Vec<_>>()
        };
        let ff = |f: fn(&ClassificationReport) -> f64| {
            runs.iter().map(|r| f(&r.finefood)).collect::<Vec<_>>()
        };
        let seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        out += &format!(
            "| {} | {} | {}% | {}% | {}% | {}% | {}% | {:.0} |\n",
            arm.name,
            fmt(&last(|e| e.mlm_loss), false),
            fmt(&last(|e| e.mlm_acc), true),
            fmt(&ff(|r| r.accuracy), true),
            fmt(&ff(|r| r.macro_precision), true),
            fmt(&ff(|r| r.macro_recall), true),
            fmt(&ff(|r| r.macro_f1), true),
            mean_std(&seconds).0,
        );
    }
    out
}

/// Reads a finished study's `results.json`.
pub fn load_results(path: &Path) -> Result<StudyResults> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| {
        invalid(
            "results",
            path.display(),
            format!("a study's results.json: {e}"),
        )
    })
}

/// Reads a study config from TOML.
pub fn load_study(path: &Path) -> Result<StudyConfig> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    toml::from_str(&text)
        .map_err(|e| invalid("config", path.display(), format!("a valid study TOML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_the_default_and_typos_are_refused() {
        let text = include_str!("../../../configs/static_vs_dynamic.toml");
        let parsed: StudyConfig = toml::from_str(text).unwrap();
        assert_eq!(parsed, StudyConfig::default());
        let typo = text.replace("warmup_steps", "warmup_stpes");
        let err = toml::from_str::<StudyConfig>(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `warmup_stpes`"), "{err}");
        let wrong = text.replace("type = \"dynamic\"", "type = \"sometimes\"");
        assert!(toml::from_str::<StudyConfig>(&wrong).is_err());
    }

    #[test]
    fn study_validation_names_the_field() {
        let mut c = StudyConfig::default();
        c.arms.clear();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("`arms` = []"));
        let mut c = StudyConfig::default();
        c.train.lr = -1.0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("`lr` = -1"));
        let err = load_study(Path::new("/nonexistent/study.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/study.toml"), "{err}");
    }

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12 && (s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[7.0]), (7.0, 0.0));
    }
}
