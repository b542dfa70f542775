//! Fine-tuning an encoder for sequence classification (BERT section 4.1) and evaluating it with
//! accuracy, per-class and macro precision / recall / F1 and the confusion matrix.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_model::mask_attn::KeyPadding;
use mask_model::{ids_tensor, token_cross_entropy, ClassifierConfig, ClassifierModel, TextEncoder};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::metrics::ConfusionMatrix;
use crate::pipeline::{pad_docs, EpochOrder};
use crate::schedule::{clip_global_norm, lr_at, Decay};
use crate::tokenizer::Encoded;

/// Fine-tuning settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Passes over the training set. Default: 2
    pub epochs: u64,
    /// Examples per batch. Default: 32
    pub batch_size: usize,
    /// Peak learning rate. Default: 1e-3
    pub lr: f64,
    /// Warm-up as a fraction of all steps. Default: 0.1
    pub warmup_ratio: f64,
    /// AdamW weight decay. Default: 0.01
    pub weight_decay: f64,
    /// Global gradient-norm clip. Default: 1.0
    pub grad_clip: f64,
    /// Seed of order and dropout. Default: 0
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            batch_size: 32,
            lr: 1e-3,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 0,
        }
    }
}

/// A labelled, tokenized example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledDoc {
    /// Tokens.
    pub doc: Encoded,
    /// Class index.
    pub label: usize,
}

/// Fine-tunes `encoder` with a fresh head from `config` on `train`; returns the model.
pub fn finetune<B: AutodiffBackend>(
    encoder: TextEncoder<B>,
    config: &ClassifierConfig,
    train: &[LabeledDoc],
    ft: &FinetuneConfig,
    device: &B::Device,
) -> Result<ClassifierModel<B>> {
    if ft.batch_size == 0 || train.len() < ft.batch_size {
        return Err(invalid(
            "batch_size",
            ft.batch_size,
            format!("1..={} (the training examples)", train.len()),
        ));
    }
    if let Some(d) = train.iter().find(|d| d.label >= config.n_classes) {
        return Err(invalid(
            "label",
            d.label,
            format!("a class index < n_classes = {}", config.n_classes),
        ));
    }
    B::seed(device, ft.seed);
    let mut model = config.init_with_encoder(encoder, device)?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(ft.weight_decay as f32)
        .with_epsilon(1e-6)
        .init::<B, ClassifierModel<B>>();
    let per_epoch = (train.len() / ft.batch_size) as u64;
    let steps = per_epoch * ft.epochs;
    let warmup = (steps as f64 * ft.warmup_ratio).round() as u64;
    let vocab = config.encoder.vocab_size;
    let mut orders = EpochOrder::default();
    for step in 0..steps {
        let epoch = step / per_epoch;
        let within = (step % per_epoch) as usize;
        let order = orders.get(train.len(), ft.seed, epoch);
        let rows: Vec<&LabeledDoc> = order[within * ft.batch_size..(within + 1) * ft.batch_size]
            .iter()
            .map(|&i| &train[i])
            .collect();
        B::seed(
            device,
            mask_core::mix64(ft.seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        let docs: Vec<&Encoded> = rows.iter().map(|r| &r.doc).collect();
        let (ids, lengths, seq) = pad_docs(&docs, 0);
        let x = ids_tensor::<B>("input_ids", &ids, rows.len(), vocab, device)?;
        let mask = KeyPadding::from_lengths(&lengths, seq).map_err(mask_model::ModelError::from)?;
        let logits = model.forward(x, &mask, Some(&lengths))?;
        let labels: Vec<i64> = rows.iter().map(|r| r.label as i64).collect();
        let t = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [rows.len()]), device);
        let loss = token_cross_entropy(logits, t).mean();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        clip_global_norm::<B, _>(&model, &mut grads, ft.grad_clip);
        let lr = lr_at(step, steps, ft.lr, warmup, Decay::Linear, 0.0);
        model = optim.step(lr, model, grads);
    }
    Ok(model)
}

/// Predictions of a classifier on `docs`, tallied into a confusion matrix.
pub fn evaluate_classifier<B: Backend>(
    model: &ClassifierModel<B>,
    docs: &[LabeledDoc],
    n_classes: usize,
    batch_size: usize,
    device: &B::Device,
) -> Result<ConfusionMatrix> {
    let vocab = model.encoder.vocab_size;
    let mut matrix = ConfusionMatrix::new(n_classes);
    for chunk in docs.chunks(batch_size.max(1)) {
        let rows: Vec<&Encoded> = chunk.iter().map(|r| &r.doc).collect();
        let (ids, lengths, seq) = pad_docs(&rows, 0);
        let x = ids_tensor::<B>("input_ids", &ids, rows.len(), vocab, device)?;
        let mask = KeyPadding::from_lengths(&lengths, seq).map_err(mask_model::ModelError::from)?;
        let predicted = model
            .forward(x, &mask, Some(&lengths))?
            .argmax(1)
            .reshape([rows.len()]);
        let predicted: Vec<i64> = predicted
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("i64");
        for (r, p) in chunk.iter().zip(predicted) {
            matrix.add(r.label, p as usize);
        }
    }
    Ok(matrix)
}

/// Fine-tunes and evaluates in one call: the confusion matrix on `test`.
pub fn finetune_and_evaluate<B: AutodiffBackend>(
    encoder: TextEncoder<B>,
    config: &ClassifierConfig,
    train: &[LabeledDoc],
    test: &[LabeledDoc],
    ft: &FinetuneConfig,
    device: &B::Device,
) -> Result<ConfusionMatrix> {
    let model = finetune(encoder, config, train, ft, device)?;
    evaluate_classifier(
        &model.valid(),
        test,
        config.n_classes,
        ft.batch_size,
        device,
    )
}
