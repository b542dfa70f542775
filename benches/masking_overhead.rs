//! Cost of dynamic masking inside training: the same MLM training steps (the main job's model:
//! 2 layers, d_model 128, vocab 4096, batch 32 x <= 64, Autodiff<NdArray>) fed by (a) batches
//! masked beforehand and held in memory, (b) the prefetching pipeline masking each batch on the
//! fly in a worker thread. The target: (b) within 1% of (a).
//!
//! Run: `cargo bench --bench masking_overhead`. `iter_custom` syncs the device before reading the
//! clock; both variants run the same steps 0..n of the same run (same data, masks and dropout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mask_core::{BatchMasker, MaskingConfig, VocabSpec};
use mask_train::experiment::{StudyConfig, StudyData};
use mask_train::pipeline::{batch_at, BatchSchedule, Prefetcher};
use mask_train::MlmTrainer;

type B = Autodiff<NdArray<f32>>;
const STEPS: u64 = 8;

fn overhead(c: &mut Criterion) {
    let device = Default::default();
    let config = StudyConfig {
        out_dir: std::env::temp_dir()
            .join("dynmask-bench-overhead")
            .display()
            .to_string(),
        ..StudyConfig::default()
    };
    let data = StudyData::prepare(&config).unwrap();
    let masking = MaskingConfig::new(VocabSpec::new(
        data.tokenizer.vocab_size() as u32,
        data.tokenizer.mask_id,
        data.tokenizer.special_ids(),
    ));
    let pad = data.tokenizer.pad_id;
    let schedule = BatchSchedule::new(data.train_docs.len(), config.train.batch_size, 0).unwrap();
    let mut masker = BatchMasker::new(masking.build().unwrap());
    let pre: Vec<_> = (0..STEPS)
        .map(|s| batch_at(&mut masker, &data.train_docs, &schedule, pad, s).unwrap())
        .collect();
    let tokens: usize = pre.iter().map(|b| b.lengths.iter().sum::<usize>()).sum();

    let mut group = c.benchmark_group("ndarray/mlm_training_8_steps");
    group.throughput(Throughput::Elements(tokens as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    let fresh = || {
        MlmTrainer::<B>::new(
            data.model_config.clone(),
            config.train.clone(),
            masking.clone(),
            &device,
        )
        .unwrap()
    };
    group.bench_function("masks_precomputed", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut t = fresh();
                let start = Instant::now();
                for batch in &pre {
                    t.train_step(batch).unwrap();
                }
                B::sync(&device).unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("masks_on_the_fly", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut t = fresh();
                let start = Instant::now();
                let policy = masking.build().unwrap();
                let mut p = Prefetcher::spawn(
                    Arc::clone(&data.train_docs),
                    policy,
                    schedule,
                    pad,
                    0,
                    STEPS,
                    1,
                    4,
                );
                while let Some(batch) = p.next_batch() {
                    t.train_step(&batch.unwrap()).unwrap();
                }
                B::sync(&device).unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
