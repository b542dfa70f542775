//! A new objective in one `TrainTask`: ELECTRA-style replaced-token detection, simplified (no
//! generator network): 15% of the tokens are replaced by random ids, and a tagger says for every
//! token whether it was replaced. The learner supplies everything else: AdamW and its schedule,
//! clipping, the non-finite guard, dropout seeds, prefetching, evaluation, checkpoints, events.
//! `docs/architecture.md` walks through it.
//!
//! ```sh
//! cargo run --release --example custom_task -- --steps 200
//! ```

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use dynmask::backend::{dispatch, BackendKind, WithBackend};
use mask_core::{
    BatchContext, BatchMasker, CorruptionConfig, MaskingConfig, TokenMasker, VocabSpec,
    IGNORE_INDEX,
};
use mask_data::{collate, text, BatchSchedule, Encoded, TextBatch, TextTokenizer, TokenizerConfig};
use mask_model::mask_attn::KeyPadding;
use mask_model::{
    ids_tensor, token_cross_entropy, TextEncoderConfig, TokenClassifierConfig,
    TokenClassifierModel, TransformerConfig,
};
use mask_train::tasks::classification::ClassificationEval;
use mask_train::{BatchInfo, ConfusionMatrix, Learner, Result, TaskOutput, TrainConfig, TrainTask};

// --8<-- [start:task]
/// Replaced-token detection: which tokens did the policy replace by random ids?
#[derive(Clone)]
struct ReplacedTokens {
    model: TokenClassifierConfig, // 2 classes: kept, replaced
    masker: BatchMasker<TokenMasker>,
    docs: Arc<Vec<Encoded>>,
    held_out: Arc<Vec<Encoded>>,
    pad_id: u32,
}

impl ReplacedTokens {
    /// Flat positions of every real token, and whether it was replaced (1) or not (0).
    fn targets(b: &TextBatch) -> (Vec<i64>, Vec<i64>) {
        (0..b.batch)
            .flat_map(|r| (0..b.lengths[r]).map(move |k| r * b.seq_len + k))
            .map(|i| (i as i64, i64::from(b.labels[i] != IGNORE_INDEX)))
            .unzip()
    }

    fn logits<B: Backend>(
        m: &TokenClassifierModel<B>,
        b: &TextBatch,
        d: &B::Device,
    ) -> Result<(Tensor<B, 2>, Vec<i64>)> {
        let (at, classes) = Self::targets(b);
        let x = ids_tensor::<B>("input_ids", &b.input_ids, b.batch, m.encoder.vocab_size, d)?;
        let mask = KeyPadding::from_lengths(&b.lengths, b.seq_len)
            .map_err(mask_model::ModelError::from)?;
        let at = Tensor::from_data(TensorData::new(at, [classes.len()]), d);
        Ok((m.forward_at(x, &mask, at)?, classes))
    }
}

impl<B: AutodiffBackend> TrainTask<B> for ReplacedTokens {
    type Model = TokenClassifierModel<B>;
    type Batch = TextBatch;
    type Metrics = ClassificationEval;

    fn kind(&self) -> &'static str {
        "replaced_tokens"
    }
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "model": self.model, "docs": self.docs.len() })
    }
    fn num_examples(&self) -> usize {
        self.docs.len()
    }
    fn init_model(&self, device: &B::Device) -> Result<Self::Model> {
        Ok(self.model.init(device)?)
    }
    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<TextBatch> {
        let s = BatchSchedule::new(self.docs.len(), batch_size, seed)?;
        let ctx = BatchContext {
            seed,
            epoch: s.epoch_of(step),
            step,
        };
        Ok(collate(
            &mut self.masker,
            &self.docs,
            &s.indices_at(step),
            self.pad_id,
            ctx,
        )?)
    }
    fn describe(&self, b: &TextBatch) -> BatchInfo {
        let tokens = b.lengths.iter().sum();
        BatchInfo {
            epoch: b.epoch,
            examples: b.batch,
            tokens,
            items: tokens,
            digest: b.digest(),
            task: None,
        }
    }
    fn forward(
        &self,
        m: &Self::Model,
        b: &TextBatch,
        d: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        let (logits, classes) = Self::logits(m, b, d)?;
        let t = Tensor::from_data(TensorData::new(classes.clone(), [classes.len()]), d);
        Ok(Some(TaskOutput {
            loss: token_cross_entropy(logits, t).mean(),
            per_item: None,
        }))
    }
    fn evaluate(
        &self,
        m: &TokenClassifierModel<B::InnerBackend>,
        d: &B::Device,
    ) -> Result<ClassificationEval> {
        let mut masker = self.masker.clone(); // fixed masks: seed 1, epoch 0
        let rows: Vec<usize> = (0..self.held_out.len()).collect();
        let b = collate(
            &mut masker,
            &self.held_out,
            &rows,
            self.pad_id,
            BatchContext {
                seed: 1,
                ..Default::default()
            },
        )?;
        let (logits, classes) = Self::logits(m, &b, d)?;
        let predicted: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap_or_default();
        let mut matrix = ConfusionMatrix::new(2);
        classes.iter().zip(predicted).for_each(|(&c, p)| {
            matrix.add(c as usize, p as usize);
        });
        Ok(matrix.into())
    }
}
// --8<-- [end:task]

/// Replaced-token detection on Jane Austen.
#[derive(Parser)]
struct Args {
    /// Training steps.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// Backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
    /// Device index.
    #[arg(long)]
    device: Option<usize>,
}

struct Job(u64);

impl WithBackend for Job {
    type Output = std::result::Result<(), Box<dyn std::error::Error>>;
    fn run<B: AutodiffBackend>(self, _: BackendKind, device: B::Device) -> Self::Output {
        let texts: Vec<String> = text::austen_paragraphs()?
            .into_iter()
            .map(|p| p.text)
            .take(2200)
            .collect();
        let tok = TextTokenizer::train(
            &texts,
            &TokenizerConfig {
                vocab_size: 2048,
                ..Default::default()
            },
        )?;
        let docs = tok.encode_batch(&texts, 48)?;
        let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
        let all_random = CorruptionConfig {
            mask_replace_prob: 0.0,
            random_replace_prob: 1.0,
            ..CorruptionConfig::default()
        };
        let task = ReplacedTokens {
            model: TokenClassifierConfig::new(
                TextEncoderConfig::new(TransformerConfig::new(64, 2, 2, 256), tok.vocab_size())
                    .with_max_len(48),
                2,
            ),
            masker: BatchMasker::new(
                MaskingConfig::new(vocab)
                    .with_corruption(all_random)
                    .build()?,
            ),
            docs: Arc::new(docs[200..].to_vec()),
            held_out: Arc::new(docs[..200].to_vec()),
            pad_id: tok.pad_id,
        };
        let config = TrainConfig {
            steps: self.0,
            lr: 1e-3,
            warmup_steps: 20,
            eval_every: self.0 / 4,
            ..TrainConfig::default()
        };
        let mut learner = Learner::<B, _>::new(task, config, &device)?;
        learner.fit(&mut |e| {
            if let mask_train::LearnerEvent::Eval(r) = e {
                println!(
                    "step {:>4}: held-out accuracy {:.3}, macro F1 {:.3} (replaced: 15% of tokens)",
                    r.step, r.metrics.report.accuracy, r.metrics.report.macro_f1
                );
            }
        })?;
        Ok(())
    }
}

fn main() {
    let args = Args::parse();
    let r = dispatch(args.backend, args.device, Job(args.steps))
        .map_err(|e| e.into())
        .and_then(|r| r);
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
