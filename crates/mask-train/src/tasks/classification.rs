//! Sequence classification (BERT section 4.1): fine-tuning an encoder with a fresh head
//! ([`SequenceClassificationTask`]), optionally with the encoder frozen, and the linear probe
//! ([`LinearProbeTask`]): logistic regression on standardised features of a frozen encoder,
//! computed once (MAE section 4.1 puts a parameter-free BatchNorm before the linear layer: the
//! same thing).
//!
//! Legend: B examples, T padded length, d features, C classes.

use std::sync::Arc;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_data::collate::{pad, Fnv};
use mask_data::{BatchSchedule, Encoded, EpochOrder, TextTokenizer};
use mask_model::mask_attn::KeyPadding;
use mask_model::{ids_tensor, token_cross_entropy, ClassifierConfig, ClassifierModel, TextEncoder};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{invalid, Result};
use crate::metrics::{ClassificationReport, ConfusionMatrix};
use crate::task::{BatchInfo, Metrics, TaskOutput, TrainTask};
use crate::tasks::{docs_digest, encoder_states, text_bindings};

/// A labelled, tokenized example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledDoc {
    /// Tokens.
    pub doc: Encoded,
    /// Class index.
    pub label: usize,
}

/// Held-out classification metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationEval {
    /// Accuracy, per-class and macro precision / recall / F1.
    pub report: ClassificationReport,
    /// Confusion matrix, rows true class, columns predicted.
    pub confusion: Vec<Vec<u64>>,
}

impl From<ConfusionMatrix> for ClassificationEval {
    fn from(m: ConfusionMatrix) -> Self {
        Self {
            report: m.report(),
            confusion: m.rows(),
        }
    }
}

impl Metrics for ClassificationEval {
    /// The error rate.
    fn score(&self) -> f64 {
        1.0 - self.report.accuracy
    }
    fn values(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("accuracy", self.report.accuracy),
            ("macro_precision", self.report.macro_precision),
            ("macro_recall", self.report.macro_recall),
            ("macro_f1", self.report.macro_f1),
        ]
    }
}

/// A batch of labelled documents.
#[derive(Debug, Clone)]
pub struct DocBatch {
    /// Epoch.
    pub epoch: u64,
    /// Padded ids `[B * T]`.
    pub ids: Vec<u32>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
    /// Padded length T.
    pub seq_len: usize,
    /// Class of each row.
    pub labels: Vec<usize>,
}

/// Fine-tuning an encoder for sequence classification.
#[derive(Debug, Clone)]
pub struct SequenceClassificationTask<B: Backend> {
    config: ClassifierConfig,
    encoder: Option<TextEncoder<B>>,
    freeze_encoder: bool,
    train: Arc<Vec<LabeledDoc>>,
    test: Arc<Vec<LabeledDoc>>,
    eval_batch_size: usize,
    pad_id: u32,
    tokenizer: String,
    data: String,
    order: EpochOrder,
}

impl<B: Backend> SequenceClassificationTask<B> {
    /// Trains `config`'s classifier on `train` (evaluated on `test`), starting from `encoder`
    /// (a pretrained one; `None`: fresh), all of it or (`freeze_encoder`) the head only.
    pub fn new(
        config: ClassifierConfig,
        encoder: Option<TextEncoder<B>>,
        freeze_encoder: bool,
        train: Arc<Vec<LabeledDoc>>,
        test: Arc<Vec<LabeledDoc>>,
        tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        for (what, set) in [("train", &train), ("test", &test)] {
            if set.is_empty() {
                return Err(invalid("examples", format!("0 {what}"), "at least one"));
            }
            if let Some(d) = set.iter().find(|d| d.label >= config.n_classes) {
                return Err(invalid(
                    "label",
                    d.label,
                    format!("a class index < n_classes = {}", config.n_classes),
                ));
            }
        }
        Ok(Self {
            data: docs_digest(train.iter().chain(test.iter()).map(|d| &d.doc)),
            config,
            encoder,
            freeze_encoder,
            train,
            test,
            eval_batch_size: 64,
            pad_id: tokenizer.pad_id,
            tokenizer: tokenizer.digest().to_string(),
            order: EpochOrder::default(),
        })
    }

    /// Steps per epoch at `batch_size`.
    pub fn steps_per_epoch(&self, batch_size: usize) -> u64 {
        (self.train.len() / batch_size.max(1)) as u64
    }
}

fn doc_batch(docs: &[&LabeledDoc], pad_id: u32, epoch: u64) -> DocBatch {
    let encoded: Vec<&Encoded> = docs.iter().map(|d| &d.doc).collect();
    let (ids, lengths, seq_len) = pad(&encoded, pad_id);
    DocBatch {
        epoch,
        ids,
        lengths,
        seq_len,
        labels: docs.iter().map(|d| d.label).collect(),
    }
}

/// The confusion matrix of a classifier on `docs`.
pub fn evaluate_classifier<B: Backend>(
    model: &ClassifierModel<B>,
    docs: &[LabeledDoc],
    n_classes: usize,
    pad_id: u32,
    batch_size: usize,
    device: &B::Device,
) -> Result<ConfusionMatrix> {
    let vocab = model.encoder.vocab_size;
    let mut matrix = ConfusionMatrix::new(n_classes);
    for chunk in docs.chunks(batch_size.max(1)) {
        let rows: Vec<&LabeledDoc> = chunk.iter().collect();
        let b = doc_batch(&rows, pad_id, 0);
        let x = ids_tensor::<B>("input_ids", &b.ids, rows.len(), vocab, device)?;
        let mask = KeyPadding::from_lengths(&b.lengths, b.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let predicted = predictions(model.forward(x, &mask, Some(&b.lengths))?)?;
        for (r, p) in chunk.iter().zip(predicted) {
            matrix.add(r.label, p as usize);
        }
    }
    Ok(matrix)
}

fn predictions<B: Backend>(logits: Tensor<B, 2>) -> Result<Vec<i64>> {
    let [n, _] = logits.dims();
    logits
        .argmax(1)
        .reshape([n])
        .into_data()
        .convert::<i64>()
        .to_vec()
        .map_err(|e| invalid("predictions", format!("{e:?}"), "an int tensor"))
}

fn labels_tensor<B: Backend>(labels: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

impl<B: AutodiffBackend> TrainTask<B> for SequenceClassificationTask<B> {
    type Model = ClassifierModel<B>;
    type Batch = DocBatch;
    type Metrics = ClassificationEval;

    fn kind(&self) -> &'static str {
        "sequence_classification"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "model": self.config,
            "pretrained_encoder": self.encoder.is_some(),
            "freeze_encoder": self.freeze_encoder,
            "train_examples": self.train.len(),
            "test_examples": self.test.len(),
        })
    }

    fn bindings(&self) -> Vec<(String, String)> {
        text_bindings(&self.tokenizer, self.data.clone())
    }

    fn num_examples(&self) -> usize {
        self.train.len()
    }

    fn init_model(&self, device: &B::Device) -> Result<ClassifierModel<B>> {
        Ok(match &self.encoder {
            Some(e) => self.config.init_with_encoder(e.clone(), device)?,
            None => self.config.init(device)?,
        })
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<DocBatch> {
        let schedule = BatchSchedule::new(self.train.len(), batch_size, seed)?;
        let rows = schedule.rows_at(&self.train, step, &mut self.order);
        Ok(doc_batch(&rows, self.pad_id, schedule.epoch_of(step)))
    }

    fn describe(&self, b: &DocBatch) -> BatchInfo {
        let mut h = Fnv::default();
        b.ids.iter().for_each(|&i| h.eat(i));
        b.labels.iter().for_each(|&l| h.eat(l as u32));
        BatchInfo {
            epoch: b.epoch,
            examples: b.labels.len(),
            tokens: b.lengths.iter().sum(),
            items: b.labels.len(),
            digest: h.0,
            task: None,
        }
    }

    fn shard(&self, b: &DocBatch, rank: usize, world: usize) -> Option<DocBatch> {
        let rows = crate::task::shard_rows(b.labels.len(), rank, world);
        Some(DocBatch {
            epoch: b.epoch,
            ids: super::pick_rows(&b.ids, b.seq_len, &rows),
            lengths: rows.iter().map(|&r| b.lengths[r]).collect(),
            seq_len: b.seq_len,
            labels: rows.iter().map(|&r| b.labels[r]).collect(),
        })
    }

    fn forward(
        &self,
        model: &ClassifierModel<B>,
        b: &DocBatch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        let rows = b.labels.len();
        let mask = KeyPadding::from_lengths(&b.lengths, b.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let hidden = encoder_states(
            &model.encoder,
            &b.ids,
            rows,
            &mask,
            self.freeze_encoder,
            device,
        )?;
        let logits = model.head(hidden, Some(&b.lengths))?; // [B, C]
        let per_example = token_cross_entropy(logits, labels_tensor::<B>(&b.labels, device));
        Ok(Some(TaskOutput {
            loss: per_example.mean(),
            per_item: None,
        }))
    }

    fn evaluate(
        &self,
        model: &ClassifierModel<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<ClassificationEval> {
        Ok(evaluate_classifier(
            model,
            &self.test,
            self.config.n_classes,
            self.pad_id,
            self.eval_batch_size,
            device,
        )?
        .into())
    }
}

/// Features of examples: `[n, d]` rows with a class each.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `n * d` values, row-major.
    pub x: Vec<f32>,
    /// Feature width d.
    pub d: usize,
    /// Class of each row.
    pub labels: Vec<usize>,
}

impl Features {
    /// Rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.d == 0 || self.x.len() != self.d * self.labels.len() {
            return Err(invalid(
                "features",
                format!(
                    "{what}: {} values for {} rows of width {}",
                    self.x.len(),
                    self.labels.len(),
                    self.d
                ),
                "rows * d values, d >= 1",
            ));
        }
        Ok(())
    }
}

/// A batch of feature rows.
#[derive(Debug, Clone)]
pub struct FeatureBatch {
    /// Epoch.
    pub epoch: u64,
    /// `[B * d]`.
    pub x: Vec<f32>,
    /// Classes.
    pub labels: Vec<usize>,
}

/// The linear probe: logistic regression on standardised features of a frozen encoder.
#[derive(Debug, Clone)]
pub struct LinearProbeTask {
    train: Arc<Features>,
    test: Arc<Features>,
    n_classes: usize,
    order: EpochOrder,
}

impl LinearProbeTask {
    /// Standardises both sets with the training features' mean and standard deviation (+1e-6
    /// in the variance) and checks shapes and classes.
    pub fn new(mut train: Features, mut test: Features, n_classes: usize) -> Result<Self> {
        train.check("train")?;
        test.check("test")?;
        if train.is_empty() || test.is_empty() || train.d != test.d {
            return Err(invalid(
                "features",
                format!(
                    "{} x {} train, {} x {} test",
                    train.len(),
                    train.d,
                    test.len(),
                    test.d
                ),
                "non-empty sets of the same width",
            ));
        }
        if let Some(&l) = train
            .labels
            .iter()
            .chain(&test.labels)
            .find(|&&l| l >= n_classes)
        {
            return Err(invalid("label", l, format!("a class < {n_classes}")));
        }
        let d = train.d;
        let n = train.len() as f64;
        let (mut mean, mut sq) = (vec![0.0f64; d], vec![0.0f64; d]);
        for row in train.x.chunks(d) {
            for (k, &v) in row.iter().enumerate() {
                mean[k] += v as f64;
                sq[k] += (v as f64).powi(2);
            }
        }
        let stats: Vec<(f32, f32)> = (0..d)
            .map(|k| {
                let m = mean[k] / n;
                let var = (sq[k] / n - m * m).max(0.0);
                (m as f32, (var + 1e-6).sqrt() as f32)
            })
            .collect();
        for set in [&mut train, &mut test] {
            for (i, v) in set.x.iter_mut().enumerate() {
                let (m, s) = stats[i % d];
                *v = (*v - m) / s;
            }
        }
        Ok(Self {
            train: Arc::new(train),
            test: Arc::new(test),
            n_classes,
            order: EpochOrder::default(),
        })
    }

    /// Steps per epoch at `batch_size`.
    pub fn steps_per_epoch(&self, batch_size: usize) -> u64 {
        (self.train.len() / batch_size.max(1)) as u64
    }
}

impl<B: AutodiffBackend> TrainTask<B> for LinearProbeTask {
    type Model = Linear<B>;
    type Batch = FeatureBatch;
    type Metrics = ClassificationEval;

    fn kind(&self) -> &'static str {
        "linear_probe"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "d": self.train.d,
            "n_classes": self.n_classes,
            "train_examples": self.train.len(),
            "test_examples": self.test.len(),
        })
    }

    fn num_examples(&self) -> usize {
        self.train.len()
    }

    fn init_model(&self, device: &B::Device) -> Result<Linear<B>> {
        Ok(LinearConfig::new(self.train.d, self.n_classes).init(device))
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<FeatureBatch> {
        let schedule = BatchSchedule::new(self.train.len(), batch_size, seed)?;
        let d = self.train.d;
        let rows = schedule.indices_at_cached(step, &mut self.order);
        let mut x = Vec::with_capacity(rows.len() * d);
        for &r in &rows {
            x.extend_from_slice(&self.train.x[r * d..(r + 1) * d]);
        }
        Ok(FeatureBatch {
            epoch: schedule.epoch_of(step),
            x,
            labels: rows.iter().map(|&r| self.train.labels[r]).collect(),
        })
    }

    fn describe(&self, b: &FeatureBatch) -> BatchInfo {
        let mut h = Fnv::default();
        b.x.iter().for_each(|v| h.eat(v.to_bits()));
        b.labels.iter().for_each(|&l| h.eat(l as u32));
        BatchInfo {
            epoch: b.epoch,
            examples: b.labels.len(),
            tokens: b.labels.len(),
            items: b.labels.len(),
            digest: h.0,
            task: None,
        }
    }

    fn forward(
        &self,
        model: &Linear<B>,
        b: &FeatureBatch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        let n = b.labels.len();
        let x = Tensor::<B, 2>::from_data(TensorData::new(b.x.clone(), [n, self.train.d]), device);
        let per_example =
            token_cross_entropy(model.forward(x), labels_tensor::<B>(&b.labels, device));
        Ok(Some(TaskOutput {
            loss: per_example.mean(),
            per_item: None,
        }))
    }

    fn evaluate(
        &self,
        model: &Linear<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<ClassificationEval> {
        let (n, d) = (self.test.len(), self.test.d);
        let x = Tensor::<B::InnerBackend, 2>::from_data(
            TensorData::new(self.test.x.clone(), [n, d]),
            device,
        );
        let mut matrix = ConfusionMatrix::new(self.n_classes);
        for (&label, p) in self.test.labels.iter().zip(predictions(model.forward(x))?) {
            matrix.add(label, p as usize);
        }
        Ok(matrix.into())
    }
}
