//! Cost of dynamic masking inside training: the same MLM training steps of the main job (2
//! layers, d_model 128, vocab 4096, batch 32 x <= 64) fed by (a) batches masked beforehand and
//! held in memory, (b) the learner's prefetching worker masking each batch on the fly. The
//! target: (b) within 1% of (a). One generic function per backend: `ndarray/...` and
//! `flex/...` always, `wgpu/...` when `DYNMASK_BENCH_WGPU` is set.
//!
//! Run: `cargo bench --bench masking_overhead`. `iter_custom` syncs the device before reading the
//! clock; both variants run the same steps 0..n of the same run (same data, masks and dropout).

use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dynmask::backend::{FlexBackend, NdArrayBackend, WgpuBackend};
use dynmask::studies::text::{TextData, TextStudy};
use mask_train::{Learner, TrainConfig, TrainTask};

const STEPS: u64 = 8;

fn overhead<B: AutodiffBackend>(c: &mut Criterion, name: &str, device: B::Device) {
    let study = TextStudy {
        out_dir: std::env::temp_dir()
            .join("dynmask-bench-overhead")
            .display()
            .to_string(),
        ..TextStudy::default()
    };
    let data = TextData::prepare(&study, &mut |_| {}).unwrap();
    let task = data.mlm_task(&study.arms[2]).unwrap();
    // A long run cut to its first STEPS steps: no evaluation falls inside.
    let config = TrainConfig {
        steps: 512,
        ..study.train_config(&study.arms[2], 0)
    };
    let pre: Vec<_> = (0..STEPS)
        .map(|s| TrainTask::<B>::batch(&mut task.clone(), 0, s, config.batch_size).unwrap())
        .collect();
    let tokens: usize = pre.iter().map(|b| b.lengths.iter().sum::<usize>()).sum();

    let mut group = c.benchmark_group(format!("{name}/mlm_training_8_steps"));
    group.throughput(Throughput::Elements(tokens as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    let fresh = || Learner::<B, _>::new(task.clone(), config.clone(), &device).unwrap();
    group.bench_function("masks_precomputed", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut l = fresh();
                let start = Instant::now();
                for batch in &pre {
                    l.step(batch).unwrap();
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
                let mut l = fresh();
                let start = Instant::now();
                l.fit_until(STEPS, &mut |_| {}).unwrap();
                B::sync(&device).unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    overhead::<NdArrayBackend>(c, "ndarray", Default::default());
    overhead::<FlexBackend>(c, "flex", Default::default());
    if std::env::var_os("DYNMASK_BENCH_WGPU").is_some() {
        overhead::<WgpuBackend>(c, "wgpu", Default::default());
    }
}

criterion_group!(group, benches);
criterion_main!(group);
