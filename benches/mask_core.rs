//! Throughput of `mask-core`'s batch API, single-threaded, in tokens per second.
//!
//! Shape of the HuggingFace peer figure (`DataCollatorForLanguageModeling`, 1.88 M tokens/s on a
//! 2-core machine of this class, given a precomputed special-tokens mask): batch 256 x seq 128,
//! vocab 30522, `[CLS] ... [SEP]` then ~10% padding, `mask_prob` 0.15 with 80/10/10. The other
//! selectors are measured on the same batch for comparison.
//!
//! Run: `cargo bench --bench mask_core`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mask_core::{
    BatchContext, BatchMasker, MaskRng, MaskedBatch, MaskingConfig, RateSchedule, Regime,
    SelectionConfig, SpanAnchor, TokenBatch, VocabSpec,
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
    let mut group = c.benchmark_group("cpu/mask_core_batch_256x128");
    group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    for (name, selection, regime) in cases {
        let policy = MaskingConfig::new(vocab.clone())
            .with_selection(selection)
            .with_rate(RateSchedule::constant(0.15))
            .with_regime(regime)
            .build()
            .unwrap();
        let mut masker = BatchMasker::new(policy);
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

criterion_group!(benches, bench);
criterion_main!(benches);
