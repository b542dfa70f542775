//! The frozen-encoder POS probe of the text protocol: a linear head trained on a pretrained
//! encoder that stays frozen, tagging every word of held-out Brown sentences with one of seven
//! coarse classes (`mask_data::pos`), read at the word's first word piece. It rewards
//! representations that know what a word does in its context, which held-out MLM loss alone
//! does not separate from fitted frequencies.
//!
//! Beside the probe, on exactly the words it scores:
//! - the training split's majority class;
//! - each word's most frequent class in the training split (unseen words: the majority class),
//!   the classic "most frequent tag" baseline: what a tagger gets from word identity alone;
//! - the most frequent training class of the word's first word piece (the token the probe
//!   reads): what a probe of a non-contextual embedding of its input could get at best;
//! - the same probe on the encoder the run started from (same seed, before pretraining): what
//!   the architecture gives without learning.
//!
//! The Brown subset is news text; the encoder and its tokenizer were trained on Austen. The
//! probe is the same for every arm, so the shift costs every arm alike.

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use mask_data::{pos, Encoded, TextTokenizer};
use mask_model::{MlmConfig, TextEncoder, TokenClassifierConfig};
use mask_train::tasks::classification::ClassificationEval;
use mask_train::tasks::token_classification::{first_pieces, TokenClassificationTask};
use mask_train::{backend_rng_lock, Decay, Learner, TrainConfig};
use serde::{Deserialize, Serialize};

use super::text::spread;
use super::{forward, invalid, Result, Sink};

/// Every `TEST_EVERY`-th sentence of the Brown subset is a test sentence, the rest train.
pub const TEST_EVERY: usize = 4;

/// Settings of the POS probe (`[pos_probe]` of a text study).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosProbeConfig {
    /// Probe every run after pretraining. Default: true
    pub enabled: bool,
    /// Training sentences, spread over the 3,000 of the training split. Default: 2000
    pub train_sentences: usize,
    /// Test sentences, spread over the 1,000 of the test split. Default: 1000
    pub test_sentences: usize,
    /// Tokens per sentence (longer ones are cut; their later words are not scored). Default: 64
    pub max_len: usize,
    /// Training steps of the head. Default: 250 (4 epochs of 2,000 sentences)
    pub steps: u64,
    /// Sentences per step. Default: 32
    pub batch_size: usize,
    /// Peak learning rate (AdamW, no weight decay, linear decay). Default: 1e-2
    pub lr: f64,
    /// Linear warm-up steps. Default: 25
    pub warmup_steps: u64,
}

impl Default for PosProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            train_sentences: 2000,
            test_sentences: 1000,
            max_len: 64,
            steps: 250,
            batch_size: 32,
            lr: 1e-2,
            warmup_steps: 25,
        }
    }
}

impl PosProbeConfig {
    /// The learner config of the head, seeded `seed`.
    pub fn train_config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            decay: Decay::Linear,
            weight_decay: 0.0,
            grad_clip: None,
            eval_every: 0,
            seed,
            ..TrainConfig::default()
        }
    }

    /// Checks every field, naming the first bad one; `encoder_len` is the longest input the
    /// study's encoder takes.
    pub fn validate(&self, encoder_len: usize) -> Result<()> {
        for (field, v) in [
            ("pos_probe.train_sentences", self.train_sentences),
            ("pos_probe.test_sentences", self.test_sentences),
            ("pos_probe.batch_size", self.batch_size),
        ] {
            if v == 0 {
                return Err(invalid(field, 0, "at least 1"));
            }
        }
        if self.max_len < 3 || self.max_len > encoder_len {
            return Err(invalid(
                "pos_probe.max_len",
                self.max_len,
                format!("3..={encoder_len} (the encoder's longest input)"),
            ));
        }
        if self.batch_size > self.train_sentences {
            return Err(invalid(
                "pos_probe.batch_size",
                self.batch_size,
                format!("at most train_sentences = {}", self.train_sentences),
            ));
        }
        Ok(self.train_config(0).validate()?)
    }
}

/// The probe's baselines on its test words.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PosBaselines {
    /// Test words scored (first word piece inside `max_len`).
    pub words: u64,
    /// Accuracy of always answering the training split's most frequent class.
    pub majority: f64,
    /// Accuracy of answering each word's most frequent training class (lower-cased; unseen
    /// words: the majority class; ties: the lower class id).
    pub word_type: f64,
    /// Accuracy of answering the most frequent training class of the word's first word piece
    /// (unseen pieces: the majority class; ties: the lower class id).
    pub first_piece: f64,
}

/// The probe's data: tagged, tokenized sentences and the baselines.
#[derive(Debug, Clone)]
pub struct PosData {
    /// Training sentences.
    pub train: Arc<Vec<Encoded>>,
    /// Test sentences.
    pub test: Arc<Vec<Encoded>>,
    /// Baselines on the test words.
    pub baselines: PosBaselines,
    /// The study's tokenizer, which encoded them.
    pub tokenizer: TextTokenizer,
}

/// The scored words of `doc` (first piece of each word, as the probe reads them): `(word index
/// in its sentence, first piece id, class)`.
fn scored_words(doc: &Encoded) -> Vec<(usize, u32, u16)> {
    let (positions, classes) = first_pieces(&[doc], doc.ids.len());
    positions
        .iter()
        .zip(classes)
        .filter_map(|(&t, c)| {
            let t = t as usize;
            doc.word_ids[t].map(|w| (w as usize, doc.ids[t], c as u16))
        })
        .collect()
}

/// Majority and word-type baselines: fitted on the scored words of `train`, scored on those of
/// `test` (`words` are each set's sentences, in the order of their documents).
pub fn baselines(
    train: (&[Encoded], &[Vec<String>]),
    test: (&[Encoded], &[Vec<String>]),
) -> PosBaselines {
    let n_classes = pos::CLASSES.len();
    let mut overall = vec![0u64; n_classes];
    let mut by_word: HashMap<String, Vec<u64>> = HashMap::new();
    let mut by_piece: HashMap<u32, Vec<u64>> = HashMap::new();
    for (doc, words) in train.0.iter().zip(train.1) {
        for (w, piece, c) in scored_words(doc) {
            overall[c as usize] += 1;
            by_word
                .entry(words[w].to_lowercase())
                .or_insert_with(|| vec![0; n_classes])[c as usize] += 1;
            by_piece.entry(piece).or_insert_with(|| vec![0; n_classes])[c as usize] += 1;
        }
    }
    // The most frequent class; ties go to the lower id.
    let argmax = |counts: &[u64]| {
        (0..counts.len()).fold(0, |best, c| if counts[c] > counts[best] { c } else { best })
    };
    let majority = argmax(&overall);
    let (mut n, mut hit_majority, mut hit_word, mut hit_piece) = (0u64, 0u64, 0u64, 0u64);
    for (doc, words) in test.0.iter().zip(test.1) {
        for (w, piece, c) in scored_words(doc) {
            let c = c as usize;
            let by_word = by_word
                .get(&words[w].to_lowercase())
                .map_or(majority, |counts| argmax(counts));
            let by_piece = by_piece
                .get(&piece)
                .map_or(majority, |counts| argmax(counts));
            n += 1;
            hit_majority += u64::from(c == majority);
            hit_word += u64::from(c == by_word);
            hit_piece += u64::from(c == by_piece);
        }
    }
    let share = |k: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    PosBaselines {
        words: n,
        majority: share(hit_majority),
        word_type: share(hit_word),
        first_piece: share(hit_piece),
    }
}

impl PosData {
    /// The embedded Brown subset, tokenized by `tokenizer`, split and sized as `cfg` says.
    pub fn prepare(cfg: &PosProbeConfig, tokenizer: &TextTokenizer) -> Result<Self> {
        let (mut train, mut test) = (vec![], vec![]);
        for (i, s) in pos::sentences()?.into_iter().enumerate() {
            if i % TEST_EVERY == 0 {
                test.push((s.words, s.classes));
            } else {
                train.push((s.words, s.classes));
            }
        }
        let train = spread(train, Some(cfg.train_sentences));
        let test = spread(test, Some(cfg.test_sentences));
        if train.len() < cfg.batch_size {
            return Err(invalid(
                "pos_probe.batch_size",
                cfg.batch_size,
                format!("at most the {} training sentences", train.len()),
            ));
        }
        let other = pos::CLASSES.len() as u16 - 1;
        let train_docs = tokenizer.encode_tagged(&train, other, cfg.max_len)?;
        let test_docs = tokenizer.encode_tagged(&test, other, cfg.max_len)?;
        let words = |set: &[(Vec<String>, Vec<u16>)]| -> Vec<Vec<String>> {
            set.iter().map(|(w, _)| w.clone()).collect()
        };
        let baselines = baselines((&train_docs, &words(&train)), (&test_docs, &words(&test)));
        Ok(Self {
            train: Arc::new(train_docs),
            test: Arc::new(test_docs),
            baselines,
            tokenizer: tokenizer.clone(),
        })
    }
}

/// The probe's scores of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PosProbeResult {
    /// Test accuracy of the head on the pretrained, frozen encoder.
    pub accuracy: f64,
    /// Its macro F1 over the seven classes.
    pub macro_f1: f64,
    /// Test accuracy of the same probe on the encoder the run started from.
    pub initial_encoder_accuracy: f64,
    /// The baselines on the same words.
    pub baselines: PosBaselines,
}

/// Trains a linear head on the frozen `encoder` with `seed` and scores it on the test split.
pub fn probe<B: AutodiffBackend>(
    cfg: &PosProbeConfig,
    data: &PosData,
    model: &MlmConfig,
    encoder: TextEncoder<B>,
    (seed, label): (u64, &str),
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<ClassificationEval> {
    let head = TokenClassifierConfig::new(model.encoder.clone(), pos::CLASSES.len())
        .with_classifier_dropout(0.0);
    let task = TokenClassificationTask::new(
        head,
        Some(encoder),
        true,
        Arc::clone(&data.train),
        Arc::clone(&data.test),
        &data.tokenizer,
    )?;
    let mut learner = Learner::new(task, cfg.train_config(seed), device)?;
    learner.fit(&mut forward(label, sink))?;
    learner
        .state()
        .evals
        .last()
        .map(|e| e.metrics.clone())
        .ok_or_else(|| invalid("pos_probe.steps", cfg.steps, "at least one step"))
}

/// The encoder a fresh run seeded `seed` starts from (the learner seeds the backend, then
/// builds the MLM model, under the same lock).
pub fn initial_encoder<B: AutodiffBackend>(
    model: &MlmConfig,
    seed: u64,
    device: &B::Device,
) -> Result<TextEncoder<B>> {
    let _rng = backend_rng_lock();
    B::seed(device, seed);
    Ok(model.init::<B>(device)?.encoder)
}

/// The probe of a pretrained `encoder` and of the run's initial one, beside the baselines.
pub fn probe_run<B: AutodiffBackend>(
    cfg: &PosProbeConfig,
    data: &PosData,
    model: &MlmConfig,
    encoder: TextEncoder<B>,
    (seed, run): (u64, &str),
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<PosProbeResult> {
    let label = format!("{run} / POS probe");
    let trained = probe(cfg, data, model, encoder, (seed, &label), device, sink)?;
    let label = format!("{run} / POS probe, initial encoder");
    let initial = probe(
        cfg,
        data,
        model,
        initial_encoder::<B>(model, seed, device)?,
        (seed, &label),
        device,
        sink,
    )?;
    Ok(PosProbeResult {
        accuracy: trained.report.accuracy,
        macro_f1: trained.report.macro_f1,
        initial_encoder_accuracy: initial.report.accuracy,
        baselines: data.baselines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document of `words` with 1 or 2 pieces per word (`pieces[i]`), tags per piece.
    fn doc(classes: &[u16], pieces: &[usize]) -> Encoded {
        let (mut ids, mut special, mut word_ids, mut tags) =
            (vec![1], vec![true], vec![None], vec![6]);
        for (w, (&c, &p)) in classes.iter().zip(pieces).enumerate() {
            for _ in 0..p {
                ids.push(10 + w as u32);
                special.push(false);
                word_ids.push(Some(w as u32));
                tags.push(c);
            }
        }
        ids.push(2);
        special.push(true);
        word_ids.push(None);
        tags.push(6);
        Encoded {
            ids,
            special_mask: special,
            word_ids,
            tags: Some(tags),
        }
    }

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|w| w.to_string()).collect()
    }

    /// By hand. Training words: the/FUNC, dog/NOUN, runs/VERB; the/FUNC, Runs/NOUN, runs/VERB.
    /// Classes tie at 2 each, so the majority is the lowest id, NOUN; by word (lower-cased):
    /// the -> FUNC, dog -> NOUN, runs -> VERB (2 of 3). Test: The/FUNC (word hit, majority
    /// miss), cat/NOUN (unseen: majority, hit both; its two pieces count once), runs/NOUN (word
    /// miss, majority hit): 2/3 each. By first piece (ids 10, 11, 12 by word position): 10 ->
    /// FUNC, 11 -> NOUN (dog, Runs), 12 -> VERB; the test's pieces 10, 11, 12 give 2/3 too.
    #[test]
    fn baselines_by_hand() {
        let (noun, verb, func) = (0u16, 1u16, 4u16);
        let train_docs = vec![
            doc(&[func, noun, verb], &[1, 2, 1]),
            doc(&[func, noun, verb], &[1, 1, 1]),
        ];
        let train_words = vec![
            words(&["the", "dog", "runs"]),
            words(&["the", "Runs", "runs"]),
        ];
        let test_docs = vec![doc(&[func, noun, noun], &[1, 2, 1])];
        let test_words = vec![words(&["The", "cat", "runs"])];
        let b = baselines((&train_docs, &train_words), (&test_docs, &test_words));
        assert_eq!(b.words, 3);
        assert!((b.majority - 2.0 / 3.0).abs() < 1e-12, "{b:?}");
        assert!((b.word_type - 2.0 / 3.0).abs() < 1e-12, "{b:?}");
        assert!((b.first_piece - 2.0 / 3.0).abs() < 1e-12, "{b:?}");
        // "RUNS"/VERB as the first word (piece 10, a FUNC piece): the word's class hits, the
        // majority (NOUN) and the piece's class (FUNC) miss.
        let test_docs = vec![doc(&[verb], &[1])];
        let b = baselines(
            (&train_docs, &train_words),
            (&test_docs, &[words(&["RUNS"])]),
        );
        assert_eq!(
            (b.words, b.majority, b.word_type, b.first_piece),
            (1, 0.0, 1.0, 0.0)
        );
    }

    #[test]
    fn bad_settings_name_their_field() {
        let ok = PosProbeConfig::default();
        assert!(ok.validate(64).is_ok());
        let e = ok.validate(32).unwrap_err().to_string();
        assert!(e.contains("pos_probe.max_len") && e.contains("64"), "{e}");
        let e = PosProbeConfig {
            batch_size: 0,
            ..ok.clone()
        }
        .validate(64)
        .unwrap_err()
        .to_string();
        assert!(e.contains("pos_probe.batch_size"), "{e}");
        let e = PosProbeConfig {
            train_sentences: 8,
            ..ok.clone()
        }
        .validate(64)
        .unwrap_err()
        .to_string();
        assert!(e.contains("pos_probe.batch_size") && e.contains("8"), "{e}");
        let e = PosProbeConfig { lr: -1.0, ..ok }
            .validate(64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lr"), "{e}");
    }
}
