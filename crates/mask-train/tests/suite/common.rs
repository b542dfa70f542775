//! Shared fixtures of the learner tests: tiny real data and tiny models for each task, and the
//! resume-exactness check every task must pass.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use burn::backend::{Autodiff, NdArray};
use mask_core::{
    ItemMaskingConfig, MaskingConfig, PatchMaskingConfig, PatchSelectionConfig, SelectorResources,
    VocabSpec,
};
use mask_data::image::fashion_mnist_subset;
use mask_data::movielens::{
    last_items, leave_one_out, parse_movielens, sample_negatives, synthetic_u_data,
};
use mask_data::{pos, text, Encoded, TextTokenizer, TokenizerConfig};
use mask_model::config::NormPlacement;
use mask_model::{
    Bert4RecConfig, CausalLmConfig, ClassifierConfig, MlmConfig, TextEncoderConfig,
    TokenClassifierConfig, TransformerConfig, VitMaeConfig,
};
use mask_train::tasks::bert4rec::{Bert4RecTask, RankingEval};
use mask_train::tasks::causal_lm::CausalLmTask;
use mask_train::tasks::classification::{LabeledDoc, SequenceClassificationTask};
use mask_train::tasks::mae::MaeTask;
use mask_train::tasks::mlm::{EvalSet, MlmTask};
use mask_train::tasks::token_classification::TokenClassificationTask;
use mask_train::{Learner, ResumeOptions, TrainConfig, TrainTask};

/// The backend of the exactness tests.
pub type B = Autodiff<NdArray<f32>>;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises tests that train (two cores; and `B::seed` is process-global).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mask-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first Austen paragraphs with at least 8 words.
pub fn corpus(n: usize) -> Vec<String> {
    text::austen_paragraphs()
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .filter(|t| t.split_whitespace().count() >= 8)
        .take(n)
        .collect()
}

/// A 300-token WordPiece tokenizer trained on `texts`.
pub fn tokenizer<S: AsRef<str>>(texts: &[S]) -> TextTokenizer {
    let config = TokenizerConfig {
        vocab_size: 300,
        ..TokenizerConfig::default()
    };
    TextTokenizer::train(texts, &config).unwrap()
}

/// A 300-token tokenizer and `n_docs` tokenized paragraphs of at most `max_len` tokens.
pub fn text_setup(n_docs: usize, max_len: usize) -> (TextTokenizer, Arc<Vec<Encoded>>, VocabSpec) {
    let texts = corpus(n_docs);
    let tok = tokenizer(&texts);
    let docs = tok.encode_batch(&texts, max_len).unwrap();
    let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
    (tok, Arc::new(docs), vocab)
}

/// A one-block encoder of width 32 with dropout 0.1.
pub fn tiny_encoder(vocab: usize) -> TextEncoderConfig {
    TextEncoderConfig::new(
        TransformerConfig::new(32, 2, 1, 64)
            .with_dropout(0.1)
            .with_attn_dropout(0.1),
        vocab,
    )
    .with_max_len(32)
}

/// Learner settings of the tiny runs.
pub fn tiny_train(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 8,
        lr: 5e-3,
        warmup_steps: 2,
        eval_every: 0,
        seed: 11,
        ..TrainConfig::default()
    }
}

/// The MLM task on `docs` with `masking`, evaluated on the first 16 documents.
pub fn mlm_task(
    tok: &TextTokenizer,
    docs: &Arc<Vec<Encoded>>,
    masking: MaskingConfig,
    resources: &SelectorResources,
) -> MlmTask {
    let eval_policy = MaskingConfig::new(masking.vocab.clone()).build().unwrap();
    let eval = EvalSet::new(&docs[..16], eval_policy, tok.pad_id, 8, 1).unwrap();
    MlmTask::new(
        MlmConfig::new(tiny_encoder(tok.vocab_size())),
        masking,
        resources,
        Arc::clone(docs),
        Arc::new(eval),
        tok,
    )
    .unwrap()
}

/// Sequence classification of 64 fine-food reviews (a fresh encoder).
pub fn classification_task() -> SequenceClassificationTask<B> {
    let (train, test) = text::finefood().unwrap();
    let texts: Vec<&str> = train.iter().take(64).map(|r| r.text.as_str()).collect();
    let tok = tokenizer(&texts);
    let label = |l: &str| usize::from(l == "other");
    let docs = |rows: &[text::LabeledText]| -> Vec<LabeledDoc> {
        let t: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        tok.encode_batch(&t, 32)
            .unwrap()
            .into_iter()
            .zip(rows)
            .map(|(doc, r)| LabeledDoc {
                doc,
                label: label(&r.label),
            })
            .collect()
    };
    SequenceClassificationTask::new(
        ClassifierConfig::new(tiny_encoder(tok.vocab_size()), 2)
            .with_pooling(mask_model::Pooling::Mean),
        None,
        false,
        Arc::new(docs(&train[..64])),
        Arc::new(docs(&test[..32])),
        &tok,
    )
    .unwrap()
}

/// POS tagging of 64 Brown sentences (a fresh encoder, or frozen when `freeze`).
pub fn tagging_task(freeze: bool) -> TokenClassificationTask<B> {
    let sents: Vec<(Vec<String>, Vec<u16>)> = pos::sentences()
        .unwrap()
        .into_iter()
        .take(96)
        .map(|s| (s.words, s.classes))
        .collect();
    let texts: Vec<String> = sents.iter().map(|(w, _)| w.join(" ")).collect();
    let tok = tokenizer(&texts);
    let other = pos::CLASSES.len() as u16 - 1;
    let docs = tok.encode_tagged(&sents, other, 32).unwrap();
    TokenClassificationTask::new(
        TokenClassifierConfig::new(tiny_encoder(tok.vocab_size()), pos::CLASSES.len()),
        None,
        freeze,
        Arc::new(docs[..64].to_vec()),
        Arc::new(docs[64..].to_vec()),
        &tok,
    )
    .unwrap()
}

/// MAE on 64 Fashion-MNIST images (7x7 patches, a width-16 ViT), evaluated on 32.
pub fn mae_task() -> MaeTask {
    let (train, test) = fashion_mnist_subset().unwrap();
    let blocks = |d, heads, layers, ff| {
        TransformerConfig::new(d, heads, layers, ff)
            .with_norm(NormPlacement::PreLn)
            .with_dropout(0.0)
            .with_attn_dropout(0.0)
    };
    let config = VitMaeConfig::new(blocks(16, 2, 1, 32), blocks(16, 2, 1, 32))
        .with_image_size(28)
        .with_patch_size(7)
        .with_channels(1)
        .with_n_classes(10)
        .with_norm_pix_loss(true);
    MaeTask::new(
        config,
        PatchMaskingConfig::new(4, 4, PatchSelectionConfig::default()),
        Arc::new(train.take(64)),
        Arc::new(test.take(32)),
        5,
    )
    .unwrap()
}

/// BERT4Rec on the synthetic MovieLens-shaped file.
pub fn bert4rec_task() -> Bert4RecTask {
    let data = parse_movielens(&synthetic_u_data(), "synthetic").unwrap();
    let split = leave_one_out(&data);
    let negatives = sample_negatives(&data, &split, 20, 3);
    let samples: Vec<Vec<u32>> = split
        .users
        .iter()
        .map(|u| last_items(&u.train, 16).to_vec())
        .collect();
    let eval = RankingEval {
        histories: split.users.iter().map(|u| u.train.clone()).collect(),
        candidates: split
            .users
            .iter()
            .zip(&negatives)
            .map(|(u, n)| std::iter::once(u.valid).chain(n.iter().copied()).collect())
            .collect(),
        k: 10,
    };
    let config = Bert4RecConfig::new(data.n_items)
        .with_max_len(16)
        .with_d_model(16)
        .with_n_layers(1)
        .with_d_ff(32);
    let masking = ItemMaskingConfig::new(data.n_items as u32).with_mask_prob(0.2);
    Bert4RecTask::new(config, masking, Arc::new(samples), Arc::new(eval), 32).unwrap()
}

/// Causal LM on 64 Austen paragraphs (a pre-LN decoder), evaluated on 16 others.
pub fn causal_lm_task() -> CausalLmTask {
    let (tok, docs, _) = text_setup(80, 24);
    let encoder = TextEncoderConfig::new(
        TransformerConfig::new(32, 2, 1, 64)
            .with_norm(NormPlacement::PreLn)
            .with_dropout(0.1)
            .with_attn_dropout(0.1),
        tok.vocab_size(),
    )
    .with_max_len(32);
    CausalLmTask::new(
        CausalLmConfig::new(encoder),
        Arc::new(docs[..64].to_vec()),
        Arc::new(docs[64..].to_vec()),
        &tok,
    )
    .unwrap()
}

/// Every parameter value of a model as raw bits, in module order (equal vectors: bit-identical
/// parameters; burn's records would also hold the random parameter ids).
pub fn param_bytes<M: burn::module::Module<B>>(model: &M) -> Vec<u32> {
    struct Collect(Vec<u32>);
    impl burn::module::ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let v: Vec<f32> = param.val().into_data().convert::<f32>().to_vec().unwrap();
            self.0.extend(v.iter().map(|x| x.to_bits()));
        }
    }
    let mut c = Collect(vec![]);
    model.visit(&mut c);
    assert!(!c.0.is_empty());
    c.0
}

/// N steps straight against `k` steps + save + resume + the rest: equal batch digests, losses
/// equal within 1e-6 relative, equal evaluations, bit-identical final parameters. Returns the
/// uninterrupted run's losses.
pub fn assert_resume_exact<T: TrainTask<B>>(
    task: T,
    config: TrainConfig,
    k: u64,
    dir: &Path,
) -> Vec<f64> {
    let device = Default::default();
    let mut a = Learner::<B, T>::new(task.clone(), config.clone(), &device).unwrap();
    a.fit(&mut |_| {}).unwrap();
    let mut b = Learner::<B, T>::new(task.clone(), config.clone(), &device).unwrap();
    b.fit_until(k, &mut |_| {}).unwrap();
    assert_eq!(b.step_count(), k);
    let path = dir.join(format!("resume-{}.dynmask", a.task().kind()));
    b.save(&path).unwrap();
    drop(b);
    let mut c = Learner::<B, T>::resume(
        task,
        config.clone(),
        &path,
        ResumeOptions::default(),
        &device,
    )
    .unwrap();
    assert_eq!(c.step_count(), k);
    c.fit(&mut |_| {}).unwrap();
    let (ha, hc) = (&a.state().history, &c.state().history);
    assert_eq!(ha.len() as u64, config.steps);
    assert_eq!(ha.len(), hc.len());
    for (x, y) in ha.iter().zip(hc) {
        assert_eq!(
            x.digest, y.digest,
            "step {}: batches differ after resume",
            x.step
        );
        assert!(
            (x.loss - y.loss).abs() <= 1e-6 * x.loss.abs().max(1e-12),
            "step {}: loss {} vs {} after resume",
            x.step,
            x.loss,
            y.loss
        );
    }
    let (ea, ec) = (&a.state().evals, &c.state().evals);
    assert_eq!(ea.len(), ec.len());
    for (x, y) in ea.iter().zip(ec) {
        assert!(
            (x.score - y.score).abs() <= 1e-6 * x.score.abs().max(1e-12),
            "{} vs {}",
            x.score,
            y.score
        );
    }
    let (pa, pc) = (param_bytes(a.model()), param_bytes(c.model()));
    let differ = pa.iter().zip(&pc).filter(|(x, y)| x != y).count();
    let worst = pa
        .iter()
        .zip(&pc)
        .map(|(x, y)| (f32::from_bits(*x) - f32::from_bits(*y)).abs())
        .fold(0.0f32, f32::max);
    let loss_gap = ha
        .iter()
        .zip(hc)
        .map(|(x, y)| (x.loss - y.loss).abs())
        .fold(0.0, f64::max);
    assert!(
        differ == 0,
        "{}: {differ} of {} parameters differ after resume (max {worst:e}; max loss gap {loss_gap:e})",
        a.task().kind(),
        pa.len()
    );
    ha.iter().map(|h| h.loss).collect()
}

/// The mean of the last three losses is below the mean of the first three.
pub fn assert_learned(losses: &[f64], what: &str) {
    let n = losses.len();
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[n - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first, "{what}: loss {first:.4} -> {last:.4}");
}
