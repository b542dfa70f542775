//! Throughput of `mask-core`'s batch API, single-threaded, in tokens per second.
//!
//! Shape of the HuggingFace peer figure (`DataCollatorForLanguageModeling`, 1.88 M tokens/s on a
//! 2-core machine of this class, given a precomputed special-tokens mask): batch 256 x seq 128,
//! vocab 30522, `[CLS] ... [SEP]` then ~10% padding, `mask_prob` 0.15 with 80/10/10. The other
//! selectors are measured on the same batch for comparison.
//!
//! The content- and model-aware selectors (IDF, PMI-span, loss-aware, learned) are measured on
//! the same batch with statistics / a PMI table built from it, and the model-based ones after
//! feedback; a second group measures the feedback itself (`observe` of one batch's losses).
//!
//! Run: `cargo bench --bench mask_core`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

use mask_core::{
    BatchContext, BatchMasker, MaskRng, MaskedBatch, MaskingConfig, PmiTable, PmiTableConfig,
    RateSchedule, Regime, SelectionConfig, SelectorResources, SpanAnchor, TokenBatch, TokenMasker,
    TokenStats, VocabSpec, IGNORE_INDEX,
};

const BATCH: usize = 256;
const SEQ: usize = 128;
const VOCAB: u32 = 30522;

struct Data {
    ids: Vec<u32>,
    special: Vec<bool>,
    words: Vec<Option<u32>>,
    indices: Vec<u64>,
}

/// BERT-shaped rows: `[CLS]`, random word pieces, `[SEP]`, then 0-20% `[PAD]` (~10% on average).
fn data() -> Data {
    let mut rng = MaskRng::for_example(1, 2, 3, 4);
    let (mut ids, mut special, mut words) = (vec![], vec![], vec![]);
    for _ in 0..BATCH {
        let real = SEQ - rng.below((SEQ / 5) as u64) as usize;
        let mut w = 0;
        for i in 0..SEQ {
            let (id, sp) = match i {
                0 => (101, true),
                i if i == real - 1 => (102, true),
                i if i >= real => (0, true),
                _ => (1000 + rng.below(29_000) as u32, false),
            };
            ids.push(id);
            special.push(sp);
            if rng.below(3) != 0 {
                w += 1;
            }
            words.push((!sp).then_some(w));
        }
    }
    Data {
        ids,
        special,
        words,
        indices: (0..BATCH as u64).collect(),
    }
}

fn bench(c: &mut Criterion) {
    let d = data();
    let batch = TokenBatch {
        batch: BATCH,
        seq_len: SEQ,
        ids: &d.ids,
        special_mask: &d.special,
        word_ids: Some(&d.words),
        tags: None,
        example_indices: &d.indices,
    };
    let vocab = VocabSpec::new(VOCAB, 103, vec![0, 100, 101, 102, 103]);
    let cases = [
        (
            "bernoulli_15_dynamic",
            SelectionConfig::Bernoulli {},
            Regime::Dynamic {},
        ),
        (
            "bernoulli_15_static_k10",
            SelectionConfig::Bernoulli {},
            Regime::Static { dupe_factor: 10 },
        ),
        (
            "fixed_count_15",
            SelectionConfig::FixedCount {
                max_predictions: 20,
            },
            Regime::Dynamic {},
        ),
        (
            "whole_word_15",
            SelectionConfig::WholeWord {},
            Regime::Dynamic {},
        ),
        (
            "span_15_word",
            SelectionConfig::Span {
                geometric_p: 0.2,
                min_span: 1,
                max_span: 10,
                anchor: SpanAnchor::Word,
            },
            Regime::Dynamic {},
        ),
    ];
    let adaptive = [
        ("idf_15", SelectionConfig::Idf { exponent: 1.0 }),
        ("pmi_span_15", SelectionConfig::PmiSpan { max_ngram: 4 }),
        (
            "loss_aware_15",
            SelectionConfig::LossAware {
                ema_decay: 0.99,
                temperature: 1.0,
                uniform_mix: 0.2,
            },
        ),
        (
            "learned_15",
            SelectionConfig::Learned {
                embed_dim: 8,
                hidden: 16,
                learning_rate: 0.05,
                temperature: 1.0,
                uniform_mix: 0.2,
                init_seed: 0,
            },
        ),
    ];
    let res = resources(&d);
    let cases = cases
        .into_iter()
        .chain(adaptive.map(|(n, s)| (n, s, Regime::Dynamic {})));
    let mut group = c.benchmark_group("cpu/mask_core_batch_256x128");
    group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    for (name, selection, regime) in cases {
        let policy = MaskingConfig::new(vocab.clone())
            .with_selection(selection)
            .with_rate(RateSchedule::constant(0.15))
            .with_regime(regime)
            .build_with(&res)
            .unwrap();
        let mut masker = BatchMasker::new(policy);
        if masker.policy().is_adaptive() {
            warm_up(&mut masker, &batch); // the model-based ones, after some feedback
        }
        let mut out = MaskedBatch::default();
        let mut epoch = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                epoch += 1; // a fresh dynamic mask every iteration
                masker
                    .mask_batch_into(
                        black_box(&batch),
                        BatchContext {
                            seed: 42,
                            epoch,
                            step: epoch,
                        },
                        &mut out,
                    )
                    .unwrap();
                black_box(out.num_masked)
            })
        });
    }
    group.finish();
}

/// IDF statistics and a PMI table of the benchmark batch (its rows as documents).
fn resources(d: &Data) -> SelectorResources {
    let rows = || d.ids.chunks(SEQ);
    let cfg = PmiTableConfig {
        min_count: 2,
        special_ids: vec![0, 100, 101, 102, 103],
        ..PmiTableConfig::default()
    };
    SelectorResources {
        token_stats: Some(Arc::new(TokenStats::from_docs(VOCAB, rows()).unwrap())),
        pmi: Some(Arc::new(PmiTable::build(rows(), &cfg).unwrap())),
        tag_weights: None,
    }
}

/// One batch of synthetic feedback: every masked position's loss is a function of its id.
fn feed(masker: &mut BatchMasker<TokenMasker>, batch: &TokenBatch<'_>, out: &MaskedBatch) {
    for r in 0..batch.batch {
        let row = r * SEQ..(r + 1) * SEQ;
        let (ids, labels) = (&batch.ids[row.clone()], &out.labels[row]);
        let positions: Vec<u32> = (0..SEQ as u32)
            .filter(|&i| labels[i as usize] != IGNORE_INDEX)
            .collect();
        let losses: Vec<f32> = positions
            .iter()
            .map(|&i| (ids[i as usize] % 7) as f32)
            .collect();
        masker.policy_mut().observe(ids, &positions, &losses);
    }
}

fn warm_up(masker: &mut BatchMasker<TokenMasker>, batch: &TokenBatch<'_>) {
    let mut out = MaskedBatch::default();
    for step in 0..4 {
        let ctx = BatchContext {
            seed: 7,
            epoch: step,
            step,
        };
        masker.mask_batch_into(batch, ctx, &mut out).unwrap();
        feed(masker, batch, &out);
    }
}

/// The feedback of one batch (~4,300 masked tokens): what the learner pays per step for the
/// model-based policies.
fn bench_feedback(c: &mut Criterion) {
    let d = data();
    let batch = TokenBatch {
        batch: BATCH,
        seq_len: SEQ,
        ids: &d.ids,
        special_mask: &d.special,
        word_ids: Some(&d.words),
        tags: None,
        example_indices: &d.indices,
    };
    let vocab = VocabSpec::new(VOCAB, 103, vec![0, 100, 101, 102, 103]);
    let mut group = c.benchmark_group("cpu/mask_core_feedback_256x128");
    group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    for (name, selection) in [
        (
            "loss_aware",
            SelectionConfig::LossAware {
                ema_decay: 0.99,
                temperature: 1.0,
                uniform_mix: 0.2,
            },
        ),
        (
            "learned",
            SelectionConfig::Learned {
                embed_dim: 8,
                hidden: 16,
                learning_rate: 0.05,
                temperature: 1.0,
                uniform_mix: 0.2,
                init_seed: 0,
            },
        ),
    ] {
        let policy = MaskingConfig::new(vocab.clone())
            .with_selection(selection)
            .build()
            .unwrap();
        let mut masker = BatchMasker::new(policy);
        let mut out = MaskedBatch::default();
        let ctx = BatchContext {
            seed: 42,
            epoch: 0,
            step: 0,
        };
        masker.mask_batch_into(&batch, ctx, &mut out).unwrap();
        group.bench_function(name, |b| b.iter(|| feed(&mut masker, &batch, &out)));
    }
    group.finish();
}

criterion_group!(benches, bench, bench_feedback);
criterion_main!(benches);
